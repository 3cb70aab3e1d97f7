"""bench/gpu_session.sh: the next lease's queue names only configs, rules, training settings and cases that exist.

A lease is 30 minutes of device time a session; a typo in its queue (a 2.2 penalty EvalParams refuses, lease
2026-11-30v) costs the runs it cuts short. The queue's last stream is the next lease's plan: checked here, on CPU.
"""

import json
import re
import shlex
import subprocess
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
        if words and words[0] in ("q", "qseeds", "qpool", "tb", "tbf"):
            out.append((env, words[0], words[1:]))
    return out


def train_set(extra: str, seed: int = 1) -> dict:
    """The `--train-set` JSON that `q` builds around a queue line's extra settings."""
    return json.loads(f'{{"seed": {seed}, "optimizer": "adamw_torch_fused"{", " + extra if extra else ""}}}')


SCRIPT = (BENCH / "gpu_session.sh").read_text()
NAME, LINES = last_stream(SCRIPT)
CALLS = calls(LINES)


def test_the_next_stream_calls_the_queue_helpers():
    assert CALLS, f"{NAME} calls none of q, qseeds, qpool, tb, tbf"


@pytest.mark.parametrize("env, helper, args", CALLS, ids=[" ".join([h, *a[:4]]) for _, h, a in CALLS])
def test_every_call_of_the_next_stream_names_what_exists(env, helper, args):
    if helper in ("q", "qseeds", "qpool"):
        configs, extra = {"q": (args[2], args[4:5]), "qseeds": (args[3], args[5:6]), "qpool": (args[2], args[4:5])}[helper]
        for config in configs.split(","):
            assert config in quality_sweep.CONFIGS, f"{NAME}: {config!r} is not a quality_sweep config"
        if "QPEN" in env:
            quality_sweep.penalty_specs(env["QPEN"])  # SystemExit names a rule EvalParams refuses
        settings = train_set(extra[0] if extra else "")
        TrainParams(**settings)  # unknown or out-of-range training settings raise
        if helper == "qpool":
            assert int(args[0]) <= int(args[1]), f"{NAME}: no seeds in {args[0]}-{args[1]}"
        else:
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


def pool(tmp_path: Path, gpus: int, cores: int, qend: int, phase_s: int = 0, mib: int = 143_771) -> tuple[list[list[str]], str]:
    """Run `qpool 82 141 …` with `qseeds` (sleeping phase_s), `nvidia-smi` and `nproc` stood in: its qseeds calls, its log."""
    bin_ = tmp_path / "bin"
    bin_.mkdir(parents=True)
    listing = "".join(f"echo 'GPU {g}: NVIDIA H200'\n" for g in range(gpus))
    memory = "".join(f"echo {mib}\n" for _ in range(gpus))
    (bin_ / "nvidia-smi").write_text(f'#!/bin/sh\nif [ "$1" = -L ]; then\n{listing}else\n{memory}fi\n')
    (bin_ / "nproc").write_text(f"#!/bin/sh\necho {cores}\n")
    for tool in bin_.iterdir():
        tool.chmod(0o755)
    script = f"""
        source {BENCH / "gpu_session.sh"} none
        log() {{ echo "$*" >> {tmp_path}/log; }}
        qseeds() {{ (IFS=$'\\t'; echo "$*") >> {tmp_path}/calls; sleep {phase_s}; }}
        QEND={qend} qpool 82 141 e3-lr5e-4-r32-b16 quality_r32_seed '"keep_adapter": "best"'
    """
    env = {"PATH": f"{bin_}:/usr/bin:/bin", "HOME": str(tmp_path)}
    subprocess.run(["bash", "-c", script], check=True, env=env, cwd=tmp_path, timeout=60)
    calls_file = tmp_path / "calls"
    lines = calls_file.read_text().splitlines() if calls_file.exists() else []
    return sorted((line.split("\t") for line in lines), key=lambda c: int(c[1])), (tmp_path / "log").read_text()


def test_the_pool_gives_every_gpu_runs_of_three_seeds_and_starts_none_past_the_last(tmp_path):
    calls_, _ = pool(tmp_path, gpus=2, cores=32, qend=10_000, mib=300_000)
    assert [c[:3] for c in calls_] == [["0", "82", "96"], ["1", "97", "111"], ["0", "112", "126"], ["1", "127", "141"]]
    assert all(c[3:] == ["e3-lr5e-4-r32-b16", "quality_r32_seed", '"keep_adapter": "best"'] for c in calls_)


def test_an_h200_trains_nine_at_once_and_few_cores_fewer(tmp_path):
    """Fifteen at once ran out of an H200's memory (lease y): 143,771 MiB at 14,000 a seed is ten, nine in runs of three."""
    calls_, _ = pool(tmp_path / "h200", gpus=1, cores=16, qend=10_000)
    assert [c[1:3] for c in calls_][:2] == [["82", "90"], ["91", "99"]]
    calls_, _ = pool(tmp_path / "cores", gpus=1, cores=8, qend=10_000, mib=300_000)
    assert [c[1:3] for c in calls_][:2] == [["82", "87"], ["88", "93"]]  # 7 cores for seeds -> 6 at once
    assert calls_[-1][1:3] == ["136", "141"]


def test_the_pool_shrinks_its_phases_to_the_pace_and_stops_before_qend(tmp_path):
    # 2-second phases: a pace of 1 s a seed; 228 s to QEND, less a phase's 220-second start, leaves room for 6 seeds, then fewer.
    calls_, log = pool(tmp_path, gpus=1, cores=16, qend=230, phase_s=2, mib=300_000)
    sizes = [int(c[2]) - int(c[1]) + 1 for c in calls_]
    assert sizes[0] == 15 and sizes[1] <= 6 and all(size % 3 == 0 for size in sizes)
    assert [int(c[1]) for c in calls_] == [82 + sum(sizes[:i]) for i in range(len(sizes))]
    assert f"seeds {82 + sum(sizes)}-141 left untrained" in log


def test_the_pool_starts_no_phase_when_what_ran_before_it_left_less_than_a_phases_start(tmp_path):
    """A stream that benchmarks first (stream-aa's training bench) may leave the pool less than QSTART (220 s)."""
    calls_, log = pool(tmp_path, gpus=1, cores=16, qend=200, phase_s=2, mib=300_000)
    assert calls_ == [] and "seeds 82-141 left untrained" in log
