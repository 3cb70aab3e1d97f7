"""The smoke-test and latency checks of a served candidate (pure functions)."""

import pytest

from titlegen.ollama_checks import latency_problems, summarize_latency, title_problems


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        ({"response": "政院通過明年度總預算", "done_reason": "stop"}, None),
        ({"response": "  ", "done_reason": "stop"}, "empty title"),
        ({"response": "政院通過明年度總預算", "done_reason": "length"}, "done_reason 'length'"),
        ({"response": "短", "done_reason": "stop"}, "outside [4, 20]"),
        ({"response": "政院通過明年度總預算案並送交立法院審議中", "done_reason": "stop"}, None),
        ({"response": "政院通過明年度總預算案並送交立法院審議中了", "done_reason": "stop"}, "21 characters"),
        ({"response": "政院通過預算<end_of_turn>", "done_reason": "stop"}, "template residue"),
        ({"response": "新聞內容：政院通過預算", "done_reason": "stop"}, "template residue"),
    ],
)
def test_title_problems(answer, problem):
    problems = title_problems(answer, min_title_chars=4, max_title_chars=20)
    if problem is None:
        assert problems == []
    else:
        assert any(problem in p for p in problems), problems


def test_latency_summary_and_gate():
    requests = [{"wall_ms": float(ms), "eval_tokens": 10, "tokens_per_s": 100.0} for ms in range(100, 1100, 10)]
    summary = summarize_latency(requests)
    assert summary["requests"] == 100
    assert summary["wall_ms"]["p50"] == pytest.approx(595.0)
    assert summary["wall_ms"]["p95"] == pytest.approx(1040.5)
    assert summary["tokens_per_s"]["mean"] == 100.0
    assert latency_problems(summary, 500, 1000) == ["p50 595 ms > 500 ms", "p95 1040 ms > 1000 ms"]
    assert latency_problems(summary, 595, 1040.5) == []  # equal to the limit passes
