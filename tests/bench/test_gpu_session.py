"""bench/gpu_session.sh: the next lease's queue names only configs, rules, training settings and cases that exist.

A lease is 30 minutes of device time a session; a typo in its queue (a 2.2 penalty EvalParams refuses, lease
2026-11-30v) costs the runs it cuts short. The queue's last stream is the next lease's plan: checked here, on CPU.
"""

import json
import re
import shlex
from pathlib import Path

import pytest

from tests.conftest import bench_module
from titlegen.params import TrainParams

BENCH = Path(__file__).resolve().parents[2] / "bench"
quality_sweep = bench_module("quality_sweep")
train_throughput = bench_module("train_throughput")


def last_stream(script: str) -> tuple[str, list[str]]:
    """The last `stream-…)` block of the script's `case`: its name and its command lines."""
    starts = list(re.finditer(r"^(stream-[a-z0-9]+)\)", script, flags=re.M))
    assert starts, "no stream-… block in gpu_session.sh"
    block = script[starts[-1].end():].split("\n  ;;", 1)[0]
    lines = [line.split("#", 1)[0].strip().rstrip("&").strip() for line in block.splitlines()]
    return starts[-1].group(1), [line for line in lines if line]


def calls(lines: list[str]) -> list[tuple[dict, str, list[str]]]:
    """(environment assignments, helper, arguments) of each line that calls a queue helper."""
    out = []
    for line in lines:
        words = shlex.split(line)
        env = {}
        while words and re.fullmatch(r"[A-Z_]+=.*", words[0]):
            key, _, value = words.pop(0).partition("=")
            env[key] = value
        if words and words[0] in ("q", "qseeds", "tb", "tbf"):
            out.append((env, words[0], words[1:]))
    return out


def train_set(extra: str, seed: int = 1) -> dict:
    """The `--train-set` JSON that `q` builds around a queue line's extra settings."""
    return json.loads(f'{{"seed": {seed}, "optimizer": "adamw_torch_fused"{", " + extra if extra else ""}}}')


SCRIPT = (BENCH / "gpu_session.sh").read_text()
NAME, LINES = last_stream(SCRIPT)
CALLS = calls(LINES)


def test_the_next_stream_calls_the_queue_helpers():
    assert CALLS, f"{NAME} calls none of q, qseeds, tb, tbf"


@pytest.mark.parametrize("env, helper, args", CALLS, ids=[" ".join([h, *a[:4]]) for _, h, a in CALLS])
def test_every_call_of_the_next_stream_names_what_exists(env, helper, args):
    if helper in ("q", "qseeds"):
        configs, extra = (args[2], args[4:5]) if helper == "q" else (args[3], args[5:6])
        for config in configs.split(","):
            assert config in quality_sweep.CONFIGS, f"{NAME}: {config!r} is not a quality_sweep config"
        if "QPEN" in env:
            quality_sweep.penalty_specs(env["QPEN"])  # SystemExit names a rule EvalParams refuses
        settings = train_set(extra[0] if extra else "")
        TrainParams(**settings)  # unknown or out-of-range training settings raise
        assert args[0] in ("0", "1"), f"{NAME}: GPU {args[0]!r}"
    else:
        for case in args[1].split(","):
            train_throughput.split_case(case)  # SystemExit names an unknown case or suffix


def test_a_wrong_rule_or_config_is_caught():
    with pytest.raises(SystemExit, match="2.2"):
        quality_sweep.penalty_specs("1.6:16,2.2:16")
    assert "e3-lr5e-4-r99-b16" not in quality_sweep.CONFIGS
    ((env, helper, args),) = calls(['QT=1200 QPEN=2.0:16 qseeds 1 42 51 e3-lr5e-4-r16-b16 quality_x_seed \'"keep_adapter": "best"\''])
    assert (env, helper, args) == ({"QT": "1200", "QPEN": "2.0:16"}, "qseeds", ["1", "42", "51", "e3-lr5e-4-r16-b16", "quality_x_seed", '"keep_adapter": "best"'])
    assert train_set('"keep_adapter": "best"') == {"seed": 1, "optimizer": "adamw_torch_fused", "keep_adapter": "best"}
    with pytest.raises(ValueError):
        TrainParams(**train_set('"keep_adapter": "worst"'))
    with pytest.raises(SystemExit, match="fusedew"):
        train_throughput.split_case("e4b-stage-4bit-b8+fusedew")  # removed after the fourteenth lease
