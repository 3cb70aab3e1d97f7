"""Scores for Chinese headlines: character ROUGE-1/2/L, BLEU-1, bootstrap intervals, headline checks.

Chinese has no spaces, and `rouge_score`'s default tokenizer keeps only `[a-z0-9]`, so it scores
every Chinese pair 0 (huggingface/evaluate#256). We score characters instead, as the LCSTS
papers do: deterministic and segmenter-free. `char_tokens` defines a token as

* one CJK character (or any other letter or digit outside ASCII), or
* one run of ASCII letters and digits (`iPhone`, `2017`, `NBA`), lowercased,

after NFKC normalisation (full-width `ＡＢ１` becomes `ab1`). Whitespace, punctuation and symbols
are not tokens. Scores from this tokenization must never be compared with word-level (jieba, CKIP)
figures.

* ROUGE-1, ROUGE-2, ROUGE-L: `rouge_score` with that tokenizer, F1 per example, averaged over
  examples (macro), as `rouge_score`'s own aggregator does.
* BLEU-1: corpus-level (Papineni et al.): clipped unigram matches summed over the corpus, divided
  by the summed candidate length, times the brevity penalty exp(1 - r/c) when the summed candidate
  length c is below the summed reference length r. It equals `nltk`'s `corpus_bleu` with
  weights (1,) (a test checks this).
* 95% confidence intervals: percentile bootstrap over examples (the same resampled indices for
  every metric and, for a paired difference, for both systems).

`evaluate.load("rouge")` is not used: it fetches its script from the Hub at run time and fails
offline, and it wraps the same `rouge_score`.
"""

import re
import unicodedata
from collections import Counter
from collections.abc import Sequence

import numpy as np
from rouge_score import rouge_scorer

from titlegen.prompt import TEMPLATE_MARKERS

METRICS = ("rouge_1", "rouge_2", "rouge_l", "bleu_1")
_TOKEN = re.compile(r"[a-z0-9]+|[^\W_]")
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ffff]")
# A sentence ends at Chinese or Latin terminal punctuation or a line break.
_SENTENCE_END = re.compile(r"(?<=[。！？!?；;])|\n+")
# Gemma control tokens and answer labels that a clean headline never contains.
_RESIDUE = re.compile(r"<(?:start|end)_of_\w+>|<unused\d+>|<(?:bos|eos|pad|mask|unk)>|^\s*(?:標題|新聞標題|title)\s*[:：]", re.IGNORECASE)


def char_tokens(text: str) -> list[str]:
    """The scoring tokens of `text` (see the module docstring)."""
    return _TOKEN.findall(unicodedata.normalize("NFKC", text or "").lower())


class CharTokenizer:
    """`rouge_score` tokenizer interface (an object with `tokenize`)."""

    def tokenize(self, text: str) -> list[str]:
        return char_tokens(text)


_SCORER = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], tokenizer=CharTokenizer())


def score_examples(predictions: Sequence[str], references: Sequence[str]) -> dict[str, np.ndarray]:
    """Per-example ROUGE F1s and the BLEU-1 counts (`bleu_matches`, `cand_len`, `ref_len`)."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    out: dict[str, list[float]] = {k: [] for k in ("rouge_1", "rouge_2", "rouge_l", "bleu_matches", "cand_len", "ref_len")}
    for pred, ref in zip(predictions, references, strict=True):
        s = _SCORER.score(ref, pred)  # rouge_score takes (target, prediction)
        out["rouge_1"].append(s["rouge1"].fmeasure)
        out["rouge_2"].append(s["rouge2"].fmeasure)
        out["rouge_l"].append(s["rougeL"].fmeasure)
        cand, refc = Counter(char_tokens(pred)), Counter(char_tokens(ref))
        out["bleu_matches"].append(sum(min(n, refc[t]) for t, n in cand.items()))
        out["cand_len"].append(sum(cand.values()))
        out["ref_len"].append(sum(refc.values()))
    return {k: np.asarray(v, dtype=float) for k, v in out.items()}


def _bleu_1(matches: np.ndarray, cand: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Corpus BLEU-1 from count sums (works on scalars or on arrays of bootstrap sums)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(cand > 0, matches / np.maximum(cand, 1), 0.0)
        bp = np.where(cand >= ref, 1.0, np.exp(1.0 - ref / np.maximum(cand, 1e-12)))
    return np.where(cand > 0, precision * bp, 0.0)


def aggregate(per: dict[str, np.ndarray], idx: np.ndarray | None = None) -> dict[str, np.ndarray | float]:
    """The four metrics of a set of examples; `idx` (shape [B, n]) gives B bootstrap resamples."""
    take = (lambda a: a) if idx is None else (lambda a: a[idx])
    axis = -1
    res = {k: take(per[k]).mean(axis=axis) for k in ("rouge_1", "rouge_2", "rouge_l")}
    res["bleu_1"] = _bleu_1(take(per["bleu_matches"]).sum(axis), take(per["cand_len"]).sum(axis), take(per["ref_len"]).sum(axis))
    if idx is None:
        res = {k: float(v) for k, v in res.items()}
    return res


def _indices(n: int, samples: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(samples, n))


def summarize(per: dict[str, np.ndarray], samples: int = 1000, seed: int = 3407) -> dict:
    """Point estimates and 95% percentile-bootstrap intervals: `{metric: value, "ci": {metric: [lo, hi]}, "n"}`."""
    n = len(per["rouge_1"])
    if n == 0:
        raise ValueError("no examples to score")
    point = aggregate(per)
    boot = aggregate(per, _indices(n, samples, seed))
    ci = {k: [float(np.percentile(boot[k], 2.5)), float(np.percentile(boot[k], 97.5))] for k in METRICS}
    return {**point, "ci": ci, "n": n, "bootstrap_samples": samples}


def mean_interval(values: Sequence[float], samples: int = 1000, seed: int = 3407) -> list[float]:
    """95% percentile-bootstrap interval of the mean of `values` (resampled as `summarize` resamples examples)."""
    a = np.asarray(values, dtype=float)
    if a.size == 0:
        raise ValueError("no values to resample")
    means = a[_indices(a.size, samples, seed)].mean(axis=1)
    return [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]


def paired_difference(cand: dict[str, np.ndarray], base: dict[str, np.ndarray], samples: int = 1000, seed: int = 3407) -> dict:
    """candidate - baseline on the same examples: `{metric: {"diff", "ci": [lo, hi]}}` (paired bootstrap)."""
    n = len(cand["rouge_1"])
    if len(base["rouge_1"]) != n:
        raise ValueError("a paired difference needs both systems scored on the same examples")
    idx = _indices(n, samples, seed)
    pa, pb = aggregate(cand), aggregate(base)
    ba, bb = aggregate(cand, idx), aggregate(base, idx)
    return {
        k: {"diff": pa[k] - pb[k], "ci": [float(np.percentile(ba[k] - bb[k], 2.5)), float(np.percentile(ba[k] - bb[k], 97.5))]}
        for k in METRICS
    }


# ---- headline checks -------------------------------------------------------------------------

CHECKS = ("empty", "too_long", "too_short", "line_break", "template_residue", "repeats", "copies_first_sentence", "mostly_non_chinese", "no_stop")


def first_sentence(article: str) -> str:
    """The article's first non-empty sentence, its terminal punctuation kept."""
    for part in _SENTENCE_END.split(article.strip()):
        if part and part.strip():
            return part.strip()
    return ""


def lead_title(article: str, max_title_chars: int) -> str:
    """The Lead baseline: the first sentence cut to the title budget (characters)."""
    return first_sentence(article)[:max_title_chars].strip()


def _repeats(tokens: list[str], n: int = 4) -> bool:
    """True when some token n-gram occurs twice (overlaps count), or the title is one half twice."""
    half = len(tokens) // 2
    if half >= 2 and len(tokens) % 2 == 0 and tokens[:half] == tokens[half:]:
        return True
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    return len(grams) != len(set(grams))


def headline_checks(prediction: str, article: str, min_title_chars: int, max_title_chars: int, stopped: bool = True) -> dict[str, bool]:
    """Which checks `prediction` fails (True = failed). Lengths count characters of the stripped text.

    * `empty`: nothing but whitespace.
    * `too_long` / `too_short`: more than `max_title_chars` / fewer than `min_title_chars` (non-empty only).
    * `line_break`: contains a line break.
    * `template_residue`: a turn marker or other Gemma control token, or an answer label such as `標題：`.
    * `repeats`: some 4-token sequence occurs twice, or the title is one half written twice.
    * `copies_first_sentence`: the title (punctuation and spaces ignored) is a verbatim piece of the
      article's first sentence and at least `min_title_chars` tokens long. Lead always fails this.
    * `mostly_non_chinese`: fewer than half of its tokens are CJK characters.
    * `no_stop`: generation hit `max_new_tokens` before `<end_of_turn>` (the model rambles).
    """
    text = prediction.strip()
    tokens = char_tokens(text)
    lead = "".join(char_tokens(first_sentence(article)))
    joined = "".join(tokens)
    return {
        "empty": not text,
        "too_long": len(text) > max_title_chars,
        "too_short": 0 < len(text) < min_title_chars,
        "line_break": "\n" in text or "\r" in text,
        "template_residue": any(m in text for m in TEMPLATE_MARKERS) or bool(_RESIDUE.search(text)),
        "repeats": _repeats(tokens),
        "copies_first_sentence": len(tokens) >= min_title_chars and joined in lead,
        "mostly_non_chinese": bool(text) and (not tokens or 2 * sum(1 for t in tokens if _CJK.fullmatch(t)) < len(tokens)),
        "no_stop": not stopped,
    }


def check_rates(rows: Sequence[dict[str, bool]]) -> dict[str, float]:
    """Share of predictions failing each check, plus `any` (failing at least one)."""
    n = len(rows)
    if n == 0:
        raise ValueError("no predictions to check")
    rates = {c: sum(r[c] for r in rows) / n for c in CHECKS}
    rates["any"] = sum(any(r[c] for c in CHECKS) for r in rows) / n
    return rates

