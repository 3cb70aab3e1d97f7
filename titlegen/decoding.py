"""The decoding rule shared by evaluation (`titlegen.generate`) and the Ollama Modelfile.

Greedy decoding with llama.cpp's repeat penalty (Ollama's `repeat_penalty` / `repeat_last_n`): each
distinct token among the last `REPEAT_LAST_N` context tokens, the prompt's included, has its logit
divided by `REPEAT_PENALTY` when positive and multiplied by it when negative
(`titlegen.generate.LastNRepetitionPenalty` does exactly that in transformers; a real Ollama 0.5.4
server penalises the prompt's tokens too, `tests/serving/test_ollama_decoding_rule.py`).

Why 1.4 over 16 tokens (issue #14; docs/evaluate.md "The decoding rule"): plain greedy lets the
fine-tuned Gemma 3 270M fall into loops such as 「蓋蓋蓋…」 that run to the token budget (7.2 % of
test titles failed a headline check, 2.6 % never stopped). A window of 64 tokens made that worse,
because it reaches back into the prompt's tail `<end_of_turn>\\n<start_of_turn>model\\n` and lowers
the stop token itself; a 16-token window lets `<end_of_turn>` leave it after 11 title tokens while a
loop stays in it. Chosen on the validation split among 10 rules (H200, 2026-11-29,
`bench/results/quality_sweep.json`): 0.9 % of validation titles fail a check, none runs away; on the
test split 2.1 % and 0.4 %, ROUGE-L minus Lead +0.076 (plain greedy +0.069).

A title is one line of plain text: a line break or a `<` ends it (`TITLE_STOPS`). `<` opens every Gemma control token
(`<end_of_turn>`, `<unused26>`) and HTML tag (`</strong>`) the fine-tuned 270M leaked into titles; none of 14,777 real
titles (zh-tw-news-2017, president-news) holds either character. The Modelfile stops at both (the line break inside
triple quotes, which Ollama 0.5.4 accepts and applies, `tests/serving/test_ollama_decoding_rule.py`; Ollama renders
control tokens as their text, so `<unused26>` meets the `<` stop there as in evaluation). Greedy decoding is causal, so a
stop string only cuts text the model already wrote: `cut_at_stop` applies it to the decoded text in evaluation, as
llama.cpp does, and `bench/quality_sweep.py restop` scores it exactly on earlier runs' titles. Twelfth lease, 25
trainings of the 270M (2026-11-30, docs/evaluate.md): failed headline checks 3.05 -> 2.37 % on average (the line break
alone: 2.83 %), `no_stop` 0.26 -> 0.15 %, ROUGE-L +0.0004; of the 48 titles it cut none fails a check it passed before
(「聚紡副理蔡秋鴻：7月1日起…1折 kiện\n聚紡副理蔡秋鴻：7月起…」, a two-line repeat that ran to the budget, now passes every
check).
"""

from collections.abc import Sequence

REPEAT_PENALTY = 1.4
REPEAT_LAST_N = 16
# Stop strings besides the stop token `<end_of_turn>`, in evaluation and in the Modelfile (in this order).
TITLE_STOPS = ("\n", "<")


def cut_at_stop(raw: str, stop_strings: Sequence[str]) -> tuple[str, bool]:
    """`raw` cut before the earliest occurrence of any stop string, and True; `(raw, False)` when none occurs.

    What Ollama / llama.cpp do with a stop string: generation ends there and the text before it is kept, even
    the part of the same token that came before the stop string. Empty stop strings are ignored.
    """
    cut = min((i for s in stop_strings if s and (i := raw.find(s)) >= 0), default=None)
    return (raw, False) if cut is None else (raw[:cut], True)
