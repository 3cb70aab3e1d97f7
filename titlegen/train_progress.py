"""Progress of the fine-tune worker: `@@titlegen {json}` lines, the best-adapter callback, throughput, profiles.

Progress goes to stdout as lines `@@titlegen {json}` with an `event` key (`start`, `log`, `eval`,
`checkpoint`, `profile`, `labels`, `done`), which the parent (`tasks/finetune.py`, `titlegen/watch.py`)
turns into Prefect progress, the loss curve and terminal lines.
"""

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from titlegen.records import TrainWorkerConfig

PROGRESS_PREFIX = "@@titlegen "
BEST_DIR = "best-adapter"
_T0 = time.time()


def emit(event: str, **fields: Any) -> None:
    """One machine-readable progress line for the parent process (`t`: seconds since the worker started)."""
    print(PROGRESS_PREFIX + json.dumps({"event": event, "t": round(time.time() - _T0, 1), **fields}, default=str), flush=True)


def parse_progress(line: str) -> dict | None:
    """The progress record of an output line, or None for ordinary log lines."""
    if not line.startswith(PROGRESS_PREFIX):
        return None
    try:
        return json.loads(line[len(PROGRESS_PREFIX):])
    except json.JSONDecodeError:
        return None


FAILED_CHECKS = "eval_failed_checks"  # the log-history key of a validation pass's failed-check share (keep_adapter=checks)


def eval_rank(entry: dict, keep: str) -> tuple:
    """How a validation pass ranks for the adapter the stage keeps, lower first: under `train.keep_adapter=checks`
    its share of failed headline checks, then its loss (a pass without titles counts as all failed); else its loss."""
    if keep == "checks":
        return (entry.get(FAILED_CHECKS, 1.0), entry["eval_loss"])
    return (entry["eval_loss"],)


def validation_failed_checks(model, tokenizer, config: TrainWorkerConfig, engine: str) -> float:
    """Greedy titles for the validation rows (at most `max_validation_rows`) from the weights as they are now, under
    the evaluate stage's decoding rule, and the share of them failing a headline check (`titlegen.metrics`)."""
    import torch

    from titlegen.generate import generate_titles
    from titlegen.metrics import check_rates, headline_checks
    from titlegen.runs import read_jsonl
    from titlegen.train_data import field_names

    rows = read_jsonl(config.validation_file)[: config.max_validation_rows or None]
    content_key, _ = field_names(rows[0], config)
    contents = [r[content_key] for r in rows]
    cuda = next(model.parameters()).device.type == "cuda"
    fast = None
    if engine == "unsloth":
        from unsloth import FastModel as fast
    was_training = model.training
    model.eval()
    if fast:
        fast.for_inference(model)
    try:
        titles = generate_titles(model, tokenizer, contents, config.max_title_chars, None if cuda else 8)
    finally:
        if fast:  # back to training, with gradient checkpointing as get_peft_model set it (Unsloth's default: on)
            fast.for_training(model, use_gradient_checkpointing="unsloth" if config.train.gradient_checkpointing else False)
        model.train(was_training)
        if cuda:
            torch.cuda.empty_cache()
    checks = [headline_checks(t["prediction"], c, config.min_title_chars, config.max_title_chars, t["stopped"])
              for t, c in zip(titles, contents)]
    return check_rates(checks)["any"]


def make_callback(config: TrainWorkerConfig, engine: str = "transformers"):
    """Progress lines plus bookkeeping of the adapter to keep (`train.keep_adapter`: the best validation pass by
    `eval_rank`, saved as it happens)."""
    from transformers import TrainerCallback

    best_dir = Path(config.checkpoint_dir) / BEST_DIR
    profile_steps = profile_window()

    class Progress(TrainerCallback):
        began: float = 0.0

        def __init__(self):
            # (step, seconds, tokens) at the end of each optimizer step, for steady-state throughput. The seconds
            # leave out the gaps between steps that held a validation pass or a checkpoint save (`paused`), so a
            # whole run's rate is its training steps' rate.
            self.marks: list[tuple[int, float, int]] = []
            self.paused = 0.0
            self.last_step_end: float | None = None
            self.gap_holds_other_work = False
            # Peak GPU memory of training steps and of validation passes, apart (CUDA only).
            self.peaks: dict[str, int] = {"train": 0, "eval": 0}
            # TITLEGEN_PROFILE_STEPS: None before the window, the running profiler inside it, False once written.
            self.profiler = None

        def on_step_begin(self, args, state, control, **kw):
            if self.gap_holds_other_work and self.last_step_end is not None:
                self.paused += time.perf_counter() - self.last_step_end
            self.gap_holds_other_work = False
            if profile_steps and state.global_step == profile_steps[0] and self.profiler is None:
                self.profiler = start_profiler()

        def on_step_end(self, args, state, control, **kw):
            if self.profiler:
                if state.global_step >= min(profile_steps[1], state.max_steps or profile_steps[1]):
                    self.close_profile()  # step B, or the last step when training ends inside the window
                return  # profiled steps are slower: kept out of the throughput marks
            self.marks.append((state.global_step, time.perf_counter() - self.paused, int(state.num_input_tokens_seen or 0)))
            self.take_peak("train")
            self.last_step_end = time.perf_counter()

        def take_peak(self, phase: str) -> None:
            """Fold the peak since the last call into `peaks[phase]` and start a new window."""
            import torch

            if torch.cuda.is_available() and torch.cuda.is_initialized():
                self.peaks[phase] = max(self.peaks[phase], torch.cuda.max_memory_allocated())
                torch.cuda.reset_peak_memory_stats()

        def close_profile(self) -> None:
            """Write the profile of the window so far to checkpoint_dir/profile.txt, once."""
            prof, self.profiler = self.profiler, False
            write_profile(prof, Path(config.checkpoint_dir) / "profile.txt")

        def on_train_end(self, args, state, control, **kw):
            # Training stopped early inside the window (a callback's should_training_stop): the steps it did profile.
            if self.profiler:
                self.close_profile()

        def on_train_begin(self, args, state, control, **kw):
            self.began = time.perf_counter()
            emit("start", max_steps=state.max_steps, epochs=args.num_train_epochs, global_step=state.global_step)

        def on_log(self, args, state, control, logs=None, **kw):
            logs = dict(logs or {})
            if "eval_loss" in logs:
                return
            emit("log", **{"epoch": state.epoch, **logs, "step": state.global_step, "max_steps": state.max_steps})

        def on_save(self, args, state, control, **kw):
            self.gap_holds_other_work = True
            emit("checkpoint", step=state.global_step, dir=str(Path(args.output_dir) / f"checkpoint-{state.global_step}"))

        def on_evaluate(self, args, state, control, metrics=None, model=None, processing_class=None, **kw):
            self.gap_holds_other_work = True
            self.take_peak("eval")
            loss = (metrics or {}).get("eval_loss")
            if loss is None:
                return
            # log_history already holds this evaluation (its last entry); it survives resume inside each checkpoint.
            keep = config.train.keep_adapter
            extra = {}
            entry = state.log_history[-1]
            if keep == "checks" and model is not None and entry.get("eval_loss") == loss:
                entry[FAILED_CHECKS] = extra["failed_checks"] = round(
                    validation_failed_checks(model, processing_class, config, engine), 4)
                self.take_peak("eval")
            evals = [h for h in state.log_history if "eval_loss" in h]
            best = min(evals, key=lambda h: eval_rank(h, keep))
            is_best = best["step"] == state.global_step
            emit("eval", step=state.global_step, epoch=state.epoch, eval_loss=loss, best=is_best, **extra)
            if is_best and model is not None:
                tmp = best_dir.with_name(BEST_DIR + ".tmp")
                shutil.rmtree(tmp, ignore_errors=True)
                model.save_pretrained(tmp)
                (tmp / "best.json").write_text(json.dumps({"step": state.global_step, "eval_loss": loss, **extra}))
                shutil.rmtree(best_dir, ignore_errors=True)
                os.replace(tmp, best_dir)

    return Progress()


def profile_window() -> tuple[int, int] | None:
    """`TITLEGEN_PROFILE_STEPS=A:B` profiles optimizer steps A+1..B (torch.profiler) into checkpoint_dir/profile.txt."""
    spec = os.environ.get("TITLEGEN_PROFILE_STEPS")
    if not spec:
        return None
    first, _, last = spec.partition(":")
    return int(first), int(last)


def start_profiler():
    import torch
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    # Input shapes recorded (cheap, unlike stacks): a copy's shape says whose it is (activations, weights, logits).
    prof = profile(activities=activities, record_shapes=True)
    prof.__enter__()
    prof.titlegen_started = time.perf_counter()
    return prof


def write_profile(prof, path: Path) -> None:
    """The top operators by device time and by host time, as text (evidence of where a step's time goes)."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()
    wall = time.perf_counter() - prof.titlegen_started
    prof.__exit__(None, None, None)
    table = prof.key_averages()
    sort = "self_cuda_time_total" if torch.cuda.is_available() else "self_cpu_time_total"
    # A step is host-bound when the GPU's kernels fill little of the window's wall time (the profiler's own
    # overhead slows the host, so the busy share is a lower bound).
    kernels = sum(e.self_device_time_total for e in table if getattr(e, "device_type", None) == torch.autograd.DeviceType.CUDA) / 1e6
    head = f"profiled window: {wall:.3f} s wall, {kernels:.3f} s of GPU kernels ({100 * kernels / wall:.0f} % busy)\n\n"
    by_shape = prof.key_averages(group_by_input_shape=True)
    text = (head + table.table(sort_by=sort, row_limit=30) + "\n\nby input shapes:\n" + by_shape.table(sort_by=sort, row_limit=20)
            + "\n\n" + table.table(sort_by="self_cpu_time_total", row_limit=20))
    path.write_text(text)
    emit("profile", path=str(path))


def memory_split(marks: list[tuple[int, float, int]], peaks: dict[str, int]) -> dict:
    """Where the GPU memory peak comes from: training steps or validation passes, and the most
    non-padding tokens one optimizer step held (group_by_length puts the longest rows first)."""
    gib = 2**30
    return {
        "peak_train_step_gib": round(peaks["train"] / gib, 3) if peaks["train"] else None,
        "peak_validation_gib": round(peaks["eval"] / gib, 3) if peaks["eval"] else None,
        "max_step_tokens": max((b[2] - a[2] for a, b in zip(marks, marks[1:])), default=None),
    }


def steady_rate(marks: list[tuple[int, float, int]]) -> dict:
    """Steps/s and tokens/s after the first steps (compilation, allocator warm-up)."""
    if len(marks) < 4:
        return {"steady_steps_per_second": None, "steady_tokens_per_second": None}
    first = marks[min(5, len(marks) // 3)]
    last = marks[-1]
    seconds = last[1] - first[1]
    return {
        "steady_steps_per_second": round((last[0] - first[0]) / seconds, 3),
        "steady_tokens_per_second": round((last[2] - first[2]) / seconds, 1),
    }
