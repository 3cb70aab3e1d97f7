"""Fine-tune stage: LoRA/QLoRA of the base model on the train split, in a child process.

`finetune()` resolves the base model (failing on a bad `base_model` before any data is read),
hashes the split files, writes the worker config, and runs `python -m titlegen.train_worker`
through `titlegen.subproc.run_logged`: every line of the child goes into the Prefect run log,
its `@@titlegen` progress lines drive a Prefect progress artifact, and the loss curve becomes a
PNG (in the adapter folder and, inline as a data: URI, in a markdown artifact).

Resume: checkpoints live in `<run>/checkpoints/<model>-<config hash>/`, where the hash covers the
split files' sha256, the base model, every training parameter, the prompt template and the code
version. Re-running after a crash or a kill resumes from the newest checkpoint of the same hash;
a changed dataset or parameter gets a new hash, so stale checkpoints are never resumed (they are
deleted). A finished adapter folder whose `training.json` carries the same hash is returned as
is, and the Prefect task cache (`titlegen.caching.StageCache`: inputs, the code the stage runs,
the split and prompt files' content, while the adapter folder is complete) skips the task
altogether.
"""

import base64
import datetime as dt
import io
import json
import logging
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from prefect import task
from prefect.context import FlowRunContext, TaskRunContext

from titlegen.caching import STAMP_SUFFIX, StageCache, stamped
from titlegen.models import TOKENIZER_FILES, resolve_base_model
from titlegen.params import TrainParams
from titlegen.paths import project_root, prompt_templates_dir
from titlegen.prompt import chat_template, instruction_template, ollama_template
from titlegen.records import TrainingRecord, TrainWorkerConfig, WorkerResult
from titlegen.runs import atomic_dir, file_sha256, fingerprint, is_complete, slug
from titlegen.subproc import python_module, run_logged
from titlegen.train_worker import PROGRESS_PREFIX, parse_progress

SPLITS = ("train", "validation")
# models.py is left out: converted base folders carry their own version in their path.
WORKER_FILES = ("train_worker.py", "prompt.py")


def _logger() -> logging.Logger | logging.LoggerAdapter:
    if TaskRunContext.get() or FlowRunContext.get():
        from prefect import get_run_logger

        return get_run_logger()
    return logging.getLogger("titlegen.finetune")


def _in_prefect_run() -> bool:
    return TaskRunContext.get() is not None or FlowRunContext.get() is not None


def code_version() -> str:
    """Hash of the code that decides what training produces (worker, model sources, prompt, this file)."""
    here = Path(__file__).resolve()
    pkg = Path(__import__("titlegen").__file__).resolve().parent
    files = [here, *(pkg / f for f in WORKER_FILES), *sorted(prompt_templates_dir().glob("*"))]
    return fingerprint({f.name: file_sha256(f) for f in files if f.is_file()}, 12)


def data_hashes(split_dir: str | Path) -> dict:
    """sha256 of the train/validation files (what training reads) plus the split manifest's own hash."""
    split_dir = Path(split_dir)
    out = {}
    for name in SPLITS:
        path = split_dir / f"{name}.jsonl"
        if not path.exists():
            if name == "train":
                raise FileNotFoundError(f"{path} is missing: run the split stage first (split_dir={split_dir}).")
            continue
        out[f"{name}.jsonl"] = file_sha256(path)
    manifest = split_dir / "manifest.json"
    if manifest.exists():
        out["manifest.json"] = file_sha256(manifest)
    return out


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=project_root(), capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=project_root(), capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def worker_config(
    *, split_dir: str | Path, base_model_dir: str, checkpoint_dir: str | Path, output_dir: str | Path,
    epochs: float, max_steps: int | None, learning_rate: float, lora_rank: int, max_title_chars: int,
    train: TrainParams, device: str = "auto",
) -> TrainWorkerConfig:
    """The config the worker reads (`titlegen.records.TrainWorkerConfig`, documented in docs/finetune.md)."""
    # Absolute paths: the worker runs with the checkpoint folder as its working directory.
    split_dir = Path(split_dir).resolve()
    validation = split_dir / "validation.jsonl"
    return TrainWorkerConfig(
        base_model_dir=base_model_dir,
        train_file=str(split_dir / "train.jsonl"),
        validation_file=str(validation) if validation.exists() else None,
        output_dir=str(Path(output_dir).resolve()),
        checkpoint_dir=str(Path(checkpoint_dir).resolve()),
        max_title_chars=max_title_chars,
        epochs=epochs,
        max_steps=max_steps,
        learning_rate=learning_rate,
        lora_rank=lora_rank,
        train=train,
        max_validation_rows=train.max_validation_rows,
        device=device,
    )


def _fill_defaults(train: TrainParams, cuda: bool) -> TrainParams:
    """Fill preset-dependent `None`s when called outside the flow (which resolves them already)."""
    from titlegen.params import PRESETS

    preset = PRESETS["gpu" if cuda else "cpu"]["sections"]["train"]
    return train.model_copy(update={k: v for k, v in preset.items() if getattr(train, k) is None})


def _preset_epochs(cuda: bool) -> float:
    """The preset's epochs, when called outside the flow with `epochs=None`."""
    from titlegen.params import PRESETS

    return PRESETS["gpu" if cuda else "cpu"]["top"]["epochs"]


def loss_curve_png(log_history: list[dict], title: str) -> bytes:
    """Train loss per logging step and validation loss per evaluation, as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(h["step"], h["loss"]) for h in log_history if "loss" in h and "step" in h]
    evals = [(h["step"], h["eval_loss"]) for h in log_history if "eval_loss" in h]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    if train:
        ax.plot(*zip(*train), label="train loss", color="tab:blue")
    if evals:
        ax.plot(*zip(*evals), "o-", label="validation loss", color="tab:orange")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (title tokens)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


class _Progress:
    """Turns the worker's progress lines into a Prefect progress artifact (when inside a run)."""

    def __init__(self, key: str, on_event=None):
        self.key = key
        self.on_event = on_event
        self.artifact_id = None
        self.last = -1.0
        self.events: list[dict] = []

    def __call__(self, line: str) -> None:
        record = parse_progress(line)
        if record is None:
            return
        self.events.append(record)
        if self.on_event is not None:
            self.on_event(record)
        if not _in_prefect_run():
            return
        from prefect.artifacts import create_progress_artifact, update_progress_artifact

        if record["event"] == "start" and self.artifact_id is None:
            self.artifact_id = create_progress_artifact(
                progress=0.0, key=self.key, description="Fine-tuning: share of optimizer steps done"
            )
        if record["event"] in ("log", "checkpoint") and self.artifact_id and record.get("max_steps"):
            pct = round(100.0 * record["step"] / record["max_steps"], 1)
            if pct - self.last >= 1.0:
                update_progress_artifact(self.artifact_id, pct)
                self.last = pct
        if record["event"] == "done" and self.artifact_id:
            update_progress_artifact(self.artifact_id, 100.0)


def finetune(
    split_dir: str,
    run_dir: str,
    base_model: str,
    epochs: float | None,
    max_steps: int | None,
    learning_rate: float,
    lora_rank: int,
    max_title_chars: int,
    train: TrainParams,
    device: str = "auto",
    on_event: Callable[[dict], None] | None = None,
) -> dict:
    """Train a LoRA adapter; returns `adapter_dir`, `base_model_dir`, `training_json` (paths as str).

    `device`: `auto`, `cuda` or `cpu`. `on_event` receives each progress record of the worker
    (an exception raised there stops and kills the worker, as a cancelled task does).
    """
    logger = _logger()
    # Fail on a bad base_model before touching any data.
    base_model_dir = resolve_base_model(base_model)
    from titlegen.params import cuda_available

    cuda = device != "cpu" and cuda_available()
    train = _fill_defaults(train, cuda)
    if epochs is None:
        epochs = _preset_epochs(cuda)
    run = Path(run_dir).resolve()
    name = slug(base_model)
    adapter_dir = run / f"{name}-lora"
    hashes = data_hashes(split_dir)
    identity = {
        "base_model": base_model, "base_model_dir": base_model_dir, "data": hashes, "epochs": epochs,
        "max_steps": max_steps, "learning_rate": learning_rate, "lora_rank": lora_rank,
        "max_title_chars": max_title_chars, "train": train.model_dump(mode="json"), "code": code_version(),
        "cuda": cuda,
    }
    if train.adapter_dir:
        adopted = check_adapter(train.adapter_dir, base_model_dir)
        identity["adopted_adapter_sha256"] = file_sha256(adopted / ADAPTER_WEIGHTS)
    config_hash = fingerprint(identity, 16)
    result = {"adapter_dir": str(adapter_dir), "base_model_dir": base_model_dir, "training_json": str(adapter_dir / "training.json")}

    done = TrainingRecord.read_optional(adapter_dir / "training.json") if is_complete(adapter_dir) else None
    if done is not None:
        if done.config_hash == config_hash:
            logger.info("Adapter %s already trained with the same data and parameters (hash %s): reusing it.", adapter_dir, config_hash)
            return result

    if train.adapter_dir:
        adopt_adapter(adopted, identity["adopted_adapter_sha256"], adapter_dir, base_model, base_model_dir, config_hash,
                      max_title_chars, logger)
        return result

    ckpt_root = run / "checkpoints"
    checkpoint_dir = ckpt_root / f"{name}-{config_hash}"
    for stale in ckpt_root.glob(f"{name}-*"):
        if stale != checkpoint_dir:
            logger.warning("Removing checkpoints of a different dataset or configuration: %s", stale)
            shutil.rmtree(stale, ignore_errors=True)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    staging = run / f".{name}-lora.staging"
    config = worker_config(
        split_dir=split_dir, base_model_dir=base_model_dir, checkpoint_dir=checkpoint_dir, output_dir=staging,
        epochs=epochs, max_steps=max_steps, learning_rate=learning_rate, lora_rank=lora_rank,
        max_title_chars=max_title_chars, train=train, device=device,
    )
    config_path = config.write(checkpoint_dir / "worker_config.json")
    logger.info(
        "Fine-tuning %s (%s) on %s: epochs=%s max_steps=%s lr=%s rank=%s, checkpoints in %s",
        base_model, base_model_dir, split_dir, epochs, max_steps, learning_rate, lora_rank, checkpoint_dir,
    )
    progress = _Progress(key=f"finetune-{slug(run.name).lower()}"[:60].replace(".", "-").replace("_", "-"), on_event=on_event)
    started = time.time()
    env = {"UNSLOTH_FORCE_CPU": "1"} if device == "cpu" else None
    # cwd = the checkpoint folder: Unsloth writes its compiled modules to ./unsloth_compiled_cache.
    run_logged(python_module("titlegen.train_worker", str(config_path)), logger, env=env, on_line=progress, cwd=str(checkpoint_dir))
    wall = time.time() - started

    worker = WorkerResult.read(staging / "worker_result.json").model_dump()
    history = json.loads((staging / "log_history.json").read_text(encoding="utf-8"))
    png = loss_curve_png(history, f"{name} · {run.name}")
    training = TrainingRecord(**{
        "config_hash": config_hash,
        "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "parameters": {
            "base_model": base_model, "base_model_dir": base_model_dir, "epochs": epochs, "max_steps": max_steps,
            "learning_rate": learning_rate, "lora_rank": lora_rank, "max_title_chars": max_title_chars,
            "train": train.model_dump(mode="json"),
        },
        "data": {"split_dir": str(split_dir), "sha256": hashes},
        "code_version": identity["code"],
        "git_commit": _git_commit(),
        "libraries": worker["libraries"],
        "engine": worker["engine"],
        "device": worker["device"],
        "quantization": worker["quantization"],
        "resumed_from_checkpoint": worker["resumed_from"],
        "global_step": worker["global_step"],
        "epochs_done": worker["epochs_done"],
        "first_train_loss": worker["first_train_loss"],
        "final_train_loss": worker["final_train_loss"],
        "final_eval_loss": worker["final_eval_loss"],
        "best_eval_loss": worker["best_eval_loss"],
        "best_step": worker["best_step"],
        "kept_adapter": worker["kept_adapter"],
        "tokens_seen": worker["tokens_seen"],
        "train_rows": worker["train_rows"],
        "validation_rows": worker["validation_rows"],
        "label_stats": worker["label_stats"],
        "peak_gpu_gib": worker["peak_gpu_gib"],
        "train_seconds": worker["train_seconds"],
        "wall_seconds": round(wall, 2),
    })
    with atomic_dir(adapter_dir) as tmp:
        for f in staging.iterdir():
            if f.name != "worker_result.json":
                shutil.copy2(f, tmp / f.name)
        write_templates(tmp, max_title_chars)
        (tmp / "loss_curve.png").write_bytes(png)
        training.write(tmp / "training.json")
    shutil.rmtree(staging, ignore_errors=True)
    # The adapter is complete; checkpoints only served resume and can be large (optimizer state).
    shutil.rmtree(checkpoint_dir, ignore_errors=True)
    logger.info(
        "Adapter written to %s: steps=%s final train loss=%s best validation loss=%s tokens=%s wall=%.0fs",
        adapter_dir, training.global_step, training.final_train_loss, training.best_eval_loss,
        training.tokens_seen, wall,
    )
    publish_loss_curve(name, adapter_dir, training, png, f"{wall:.0f} s")
    return result


def write_templates(folder: Path, max_title_chars: int) -> None:
    """The prompt, Ollama and chat templates of this run, rendered from prompt_templates/ into the adapter folder."""
    (folder / "prompt_template.txt").write_text(
        instruction_template().replace("{max_title_chars}", str(max_title_chars)) + "\n", encoding="utf-8"
    )
    (folder / "ollama_template.txt").write_text(ollama_template(max_title_chars), encoding="utf-8")
    (folder / "chat_template.jinja").write_text(chat_template(), encoding="utf-8")


def publish_loss_curve(name: str, adapter_dir: Path, training: TrainingRecord, png: bytes, wall: str, note: str = "") -> None:
    """The `finetune-loss-curve` markdown artifact (PNG inline as a data URI), inside a Prefect run only."""
    if not _in_prefect_run():
        return
    from prefect.artifacts import create_markdown_artifact

    uri = "data:image/png;base64," + base64.b64encode(png).decode()
    create_markdown_artifact(
        key="finetune-loss-curve",
        markdown=(
            f"# Fine-tuning loss: `{name}`\n\n{note}![loss curve]({uri})\n\n"
            f"| | |\n|---|---|\n| steps | {training.global_step} |\n"
            f"| final train loss | {training.final_train_loss} |\n| best validation loss | {training.best_eval_loss} |\n"
            f"| tokens seen | {training.tokens_seen} |\n| wall time | {wall} |\n| device | {training.device} |\n\n"
            f"Adapter: `{adapter_dir}` (PNG: `{adapter_dir / 'loss_curve.png'}`)"
        ),
        description="Train and validation loss of the fine-tune",
    )


ADAPTER_WEIGHTS = "adapter_model.safetensors"


def _hidden_size(base_model_dir: str) -> int | None:
    """The text model's hidden size from a local base model's config.json (None for a Hub id)."""
    config = Path(base_model_dir) / "config.json"
    if not config.exists():
        return None
    data = json.loads(config.read_text(encoding="utf-8"))
    return (data.get("text_config") or data).get("hidden_size")


def check_adapter(adapter: str | Path, base_model_dir: str) -> Path:
    """The adapter folder, after checking it is a PEFT LoRA adapter whose shapes fit the base model."""
    from safetensors import safe_open

    folder = Path(adapter).expanduser().resolve()
    missing = [f for f in ("adapter_config.json", ADAPTER_WEIGHTS) if not (folder / f).is_file()]
    if missing:
        raise ValueError(
            f"train.adapter_dir={adapter!r} is not a LoRA adapter folder (missing {', '.join(missing)}); "
            "pass the `<model>-lora/` folder of a finished run, or unset train.adapter_dir to train."
        )
    hidden = _hidden_size(base_model_dir)
    with safe_open(str(folder / ADAPTER_WEIGHTS), framework="numpy") as f:
        for key in f.keys():
            if ".lora_A." in key and key.split(".lora_A.")[0].endswith(("q_proj", "gate_proj")):
                fan_in = f.get_slice(key).get_shape()[1]
                if hidden is not None and fan_in != hidden:
                    raise ValueError(
                        f"train.adapter_dir={adapter!r} was trained for a model of hidden size {fan_in}, but the base "
                        f"model {base_model_dir} has hidden size {hidden}; set base_model to the model it was trained on."
                    )
                break
    return folder


def adopt_adapter(source: Path, sha256: str, adapter_dir: Path, base_model: str, base_model_dir: str, config_hash: str,
                  max_title_chars: int, logger) -> None:
    """Copy a trained adapter (already passed by `check_adapter`) into the run's adapter folder (same contract as a trained one)."""
    record = TrainingRecord.read_optional(source / "training.json")
    original = record.model_dump() if record else {}
    training = {
        **original,
        "config_hash": config_hash,
        "adopted": {
            "from": str(source), "adapter_sha256": sha256,
            "at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "original_base_model": (original.get("parameters") or {}).get("base_model"),
        },
    }
    training["parameters"] = {**(original.get("parameters") or {}), "base_model": base_model, "base_model_dir": base_model_dir}
    with atomic_dir(adapter_dir) as tmp:
        for f in source.iterdir():
            if f.is_file() and f.name not in (".complete", "training.json"):
                shutil.copy2(f, tmp / f.name)
        # The base model's tokenizer where the adapter folder travelled without one.
        for name in TOKENIZER_FILES:
            if not (tmp / name).exists() and (Path(base_model_dir) / name).exists():
                shutil.copy2(Path(base_model_dir) / name, tmp / name)
        write_templates(tmp, max_title_chars)
        TrainingRecord(**training).write(tmp / "training.json")
    png_path = adapter_dir / "loss_curve.png"
    if not png_path.exists() and (adapter_dir / "log_history.json").exists():
        png_path.write_bytes(loss_curve_png(json.loads((adapter_dir / "log_history.json").read_text(encoding="utf-8")), adapter_dir.name))
    if png_path.exists():
        publish_loss_curve(
            adapter_dir.name, adapter_dir, TrainingRecord(**training), png_path.read_bytes(), f"{original.get('train_seconds', '?')} s (training elsewhere)",
            note=f"Adopted adapter, trained on {original.get('device', 'another machine')} (`train.adapter_dir={source}`).\n\n",
        )
    logger.info(
        "Using the trained adapter %s (trained on %s, %s steps, best validation loss %s) instead of training; copied to %s",
        source, original.get("device", "unknown device"), original.get("global_step"), original.get("best_eval_loss"), adapter_dir,
    )


def _adapter_dir(inputs: dict) -> Path:
    return Path(inputs["run_dir"]) / f"{slug(inputs['base_model'])}-lora"


def _stamp(inputs: dict) -> Path:
    return Path(inputs["run_dir"]) / f".{slug(inputs['base_model'])}-lora{STAMP_SUFFIX}"


def _data_fingerprint(inputs: dict) -> dict:
    """What the key must see beyond the inputs: the split files' and prompt templates' sha256 and,
    for `train.adapter_dir`, the adopted adapter's weights (a file rewritten in place is a miss)."""
    try:
        hashes = data_hashes(inputs["split_dir"])
    except FileNotFoundError:
        hashes = None
    prompts = {f.name: file_sha256(f) for f in sorted(prompt_templates_dir().glob("*")) if f.is_file()}
    train = inputs.get("train")
    adopted = Path(train.adapter_dir).expanduser() / ADAPTER_WEIGHTS if isinstance(train, TrainParams) and train.adapter_dir else None
    return {"data": hashes, "prompts": prompts, "adopted": file_sha256(adopted) if adopted and adopted.is_file() else None}


@task(
    name="fine-tune",
    cache_policy=StageCache(
        code_of=__name__,
        fingerprint=_data_fingerprint,
        outputs=lambda inputs: [_adapter_dir(inputs) / ".complete", _adapter_dir(inputs) / "training.json"],
        stamp=_stamp,
    ),
)
def finetune_task(
    split_dir: str,
    run_dir: str,
    base_model: str,
    epochs: float | None,
    max_steps: int | None,
    learning_rate: float,
    lora_rank: int,
    max_title_chars: int,
    train: TrainParams,
) -> dict:
    """Prefect task around `finetune` (no retries: a crash is resumed from checkpoints by re-running).

    Cached (`StageCache`) on the inputs, the code it runs, the split files' and prompt templates'
    content, while the adapter folder is complete; a deleted adapter folder is trained again.
    """
    with stamped(_stamp({"run_dir": run_dir, "base_model": base_model})):
        return finetune(
            split_dir=split_dir, run_dir=run_dir, base_model=base_model, epochs=epochs, max_steps=max_steps,
            learning_rate=learning_rate, lora_rank=lora_rank, max_title_chars=max_title_chars, train=train,
        )
