"""Character ROUGE/BLEU pinned to hand-computed values, bootstrap behaviour, and headline checks."""

import math

import numpy as np
import pytest

from titlegen.metrics import (
    CHECKS,
    aggregate,
    char_tokens,
    check_rates,
    first_sentence,
    headline_checks,
    lead_title,
    paired_difference,
    score_examples,
    summarize,
)

ARTICLE = "總統府今天表示，台灣的經濟成長穩定。行政院長也說明了預算。"


def test_char_tokens_cjk_per_character_ascii_runs_whole_punctuation_dropped():
    assert char_tokens("台灣的經濟，成長！") == list("台灣的經濟成長")
    assert char_tokens("iPhone 15發表") == ["iphone", "15", "發", "表"]
    assert char_tokens("ＮＢＡ季後賽") == ["nba", "季", "後", "賽"]  # NFKC: full-width Latin
    assert char_tokens("") == []


def test_hand_computed_pair():
    # pred 台灣經濟成長 (6 tokens), ref 台灣的經濟成長快 (8 tokens).
    per = score_examples(["台灣經濟成長"], ["台灣的經濟成長快"])
    # ROUGE-1 and ROUGE-L: 6 matches (the prediction is a subsequence) -> P 1, R 6/8, F 12/14.
    assert per["rouge_1"][0] == pytest.approx(12 / 14)
    assert per["rouge_l"][0] == pytest.approx(12 / 14)
    # ROUGE-2: 4 of the prediction's 5 bigrams are among the reference's 7 -> P 4/5, R 4/7, F 2/3.
    assert per["rouge_2"][0] == pytest.approx(2 / 3)
    # BLEU-1: precision 6/6, brevity penalty exp(1 - 8/6).
    assert aggregate(per)["bleu_1"] == pytest.approx(math.exp(1 - 8 / 6))


def test_rouge_l_order_matters_rouge_1_does_not():
    per = score_examples(["成長經濟"], ["經濟成長"])
    assert per["rouge_1"][0] == pytest.approx(1.0)
    assert per["rouge_l"][0] == pytest.approx(0.5)  # LCS 2 of 4
    assert per["rouge_2"][0] == pytest.approx(2 / 3)  # 成長 and 經濟 shared of 3 bigrams each


def test_chinese_pair_never_scores_zero_unlike_rouge_score_default():
    from rouge_score import rouge_scorer

    default = rouge_scorer.RougeScorer(["rougeL"]).score("台灣的經濟成長", "台灣經濟")
    assert default["rougeL"].fmeasure == 0.0  # the bug this module exists to avoid
    assert score_examples(["台灣經濟"], ["台灣的經濟成長"])["rouge_l"][0] > 0.5


def test_corpus_bleu_1_matches_nltk():
    from nltk.translate.bleu_score import corpus_bleu

    preds = ["台灣經濟成長", "總統出訪友邦", "颱風來襲停班停課"]
    refs = ["台灣的經濟成長快", "總統今出訪中南美友邦", "颱風停班"]
    ours = aggregate(score_examples(preds, refs))["bleu_1"]
    nltk = corpus_bleu([[char_tokens(r)] for r in refs], [char_tokens(p) for p in preds], weights=(1,))
    assert ours == pytest.approx(nltk)


def test_corpus_averaging_is_macro_for_rouge():
    per = score_examples(["台灣", "完全不同"], ["台灣", "經濟成長"])
    assert aggregate(per)["rouge_l"] == pytest.approx(0.5)


def test_empty_prediction_scores_zero_and_bleu_handles_it():
    per = score_examples([""], ["台灣"])
    assert per["rouge_l"][0] == 0.0
    assert aggregate(per)["bleu_1"] == 0.0


def test_bootstrap_interval_is_seeded_and_brackets_the_estimate():
    rng = np.random.default_rng(0)
    refs = ["台灣的經濟成長快", "總統今出訪中南美友邦", "颱風停班", "立法院三讀通過預算"] * 10
    preds = ["".join(rng.permutation(list(r))[: len(r) - 1]) for r in refs]
    per = score_examples(preds, refs)
    a, b = summarize(per, 500, seed=1), summarize(per, 500, seed=1)
    assert a == b
    for k in ("rouge_1", "rouge_2", "rouge_l", "bleu_1"):
        lo, hi = a["ci"][k]
        assert lo <= a[k] <= hi and lo < hi


def test_identical_scores_give_zero_width_interval_and_zero_paired_difference():
    per = score_examples(["台灣"] * 5, ["台灣"] * 5)
    s = summarize(per, 200)
    assert s["rouge_l"] == 1.0 and s["ci"]["rouge_l"] == [1.0, 1.0]
    d = paired_difference(per, per, 200)
    assert d["rouge_l"] == {"diff": 0.0, "ci": [0.0, 0.0]}


def test_paired_difference_sign_and_length_check():
    good = score_examples(["台灣經濟", "颱風停班"], ["台灣經濟", "颱風停班"])
    bad = score_examples(["股市", "選舉"], ["台灣經濟", "颱風停班"])
    d = paired_difference(good, bad, 200)
    assert d["rouge_l"]["diff"] == pytest.approx(1.0) and d["rouge_l"]["ci"][0] > 0
    with pytest.raises(ValueError, match="same examples"):
        paired_difference(good, score_examples(["a"], ["a"]), 200)


def test_first_sentence_and_lead():
    assert first_sentence(ARTICLE) == "總統府今天表示，台灣的經濟成長穩定。"
    assert first_sentence("\n\n第一行\n第二行") == "第一行"
    assert lead_title(ARTICLE, 8) == "總統府今天表示，"[:8].strip()
    assert len(lead_title(ARTICLE, 10)) == 10


def _failed(pred, stopped=True, article=ARTICLE):
    return {k for k, v in headline_checks(pred, article, 6, 20, stopped).items() if v}


@pytest.mark.parametrize(
    ("pred", "expected"),
    [
        ("行政院長說明明年度預算案", set()),
        ("", {"empty"}),
        ("   ", {"empty"}),
        ("行政院長說明明年度預算案並回應立委質詢內容", {"too_long"}),
        ("預算案", {"too_short"}),
        ("行政院長說明\n明年度預算案", {"line_break"}),
        ("說明預算<end_of_turn>", {"template_residue"}),
        ("標題：行政院長說明預算案", {"template_residue"}),
        ("<start_of_turn>說明預算", {"template_residue"}),
        ("預算案說明預算案說明", {"repeats"}),
        ("颱風颱風颱風颱風", {"repeats"}),
        ("總統府今天表示台灣的經濟", {"copies_first_sentence"}),
        ("Taiwan economy grows 3% in 2025", {"too_long", "mostly_non_chinese"}),
        ("Apple says iPhone sales up", {"too_long", "mostly_non_chinese"}),
        ("iPhone 15在台開賣", set()),  # 2 ASCII tokens, 4 CJK: mostly Chinese
    ],
)
def test_headline_checks(pred, expected):
    assert _failed(pred) == expected


def test_no_stop_check():
    assert _failed("行政院長說明明年度預算案", stopped=False) == {"no_stop"}


def test_check_rates():
    rows = [headline_checks(p, ARTICLE, 6, 20) for p in ("行政院長說明明年度預算案", "", "預算案")]
    rates = check_rates(rows)
    assert set(rates) == {*CHECKS, "any"}
    assert rates["empty"] == pytest.approx(1 / 3) and rates["too_short"] == pytest.approx(1 / 3)
    assert rates["any"] == pytest.approx(2 / 3)


def test_mean_interval_brackets_the_mean_and_narrows_with_more_values():
    from titlegen.metrics import mean_interval

    few = [0.0, 0.01, 0.02, 0.03, 0.04]
    lo, hi = mean_interval(few)
    assert lo < 0.02 < hi and 0.0 <= lo and hi <= 0.04
    lo9, hi9 = mean_interval(few * 9)  # the same spread over nine times the values: a narrower interval
    assert hi9 - lo9 < hi - lo
    assert mean_interval([0.05] * 3) == pytest.approx([0.05, 0.05])
    with pytest.raises(ValueError, match="no values"):
        mean_interval([])
