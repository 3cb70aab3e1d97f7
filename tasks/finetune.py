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

import datetime as dt
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
from titlegen.models import resolve_base_model
from titlegen.params import TrainParams
from titlegen.paths import project_root, prompt_templates_dir
from titlegen.records import TrainingRecord, TrainWorkerConfig, WorkerResult
from titlegen.runs import atomic_dir, file_sha256, fingerprint, is_complete, slug
from titlegen.subproc import python_module, run_logged
from titlegen.finetune_outputs import (  # noqa: F401  (check_adapter: re-exported for callers and tests)
    ADAPTER_WEIGHTS, ProgressArtifact, adopt_adapter, check_adapter, loss_curve_png, publish_loss_curve, write_templates,
)

SPLITS = ("train", "validation")
# models.py is left out: converted base folders carry their own version in their path.
WORKER_FILES = ("train_worker.py", "train_data.py", "train_progress.py", "records.py", "finetune_outputs.py", "prompt.py")


def _logger() -> logging.Logger | logging.LoggerAdapter:
    if TaskRunContext.get() or FlowRunContext.get():
        from prefect import get_run_logger

        return get_run_logger()
    return logging.getLogger("titlegen.finetune")


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
    train: TrainParams, device: str = "auto", min_title_chars: int = 1,
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
        min_title_chars=min_title_chars,
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
    min_title_chars: int | None = None,
) -> dict:
    """Train a LoRA adapter; returns `adapter_dir`, `base_model_dir`, `training_json` (paths as str).

    `min_title_chars` (None = the `clean` section's default) matters only to `train.keep_adapter=checks`.
    `device`: `auto`, `cuda` or `cpu`. `on_event` receives each progress record of the worker
    (an exception raised there stops and kills the worker, as a cancelled task does).
    """
    logger = _logger()
    # Fail on a bad base_model before touching any data.
    base_model_dir = resolve_base_model(base_model)
    from titlegen.params import cuda_available

    cuda = device != "cpu" and cuda_available()
    train = _fill_defaults(train, cuda)
    if min_title_chars is None:
        from titlegen.params import CleanParams

        min_title_chars = CleanParams().min_title_chars
    if epochs is None:
        epochs = _preset_epochs(cuda)
    run = Path(run_dir).resolve()
    name = slug(base_model)
    adapter_dir = run / f"{name}-lora"
    hashes = data_hashes(split_dir)
    identity = {
        "base_model": base_model, "base_model_dir": base_model_dir, "data": hashes, "epochs": epochs,
        "max_steps": max_steps, "learning_rate": learning_rate, "lora_rank": lora_rank,
        "max_title_chars": max_title_chars, "min_title_chars": min_title_chars, "train": train.model_dump(mode="json"),
        "code": code_version(),
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
        max_title_chars=max_title_chars, train=train, device=device, min_title_chars=min_title_chars,
    )
    config_path = config.write(checkpoint_dir / "worker_config.json")
    logger.info(
        "Fine-tuning %s (%s) on %s: epochs=%s max_steps=%s lr=%s rank=%s, checkpoints in %s",
        base_model, base_model_dir, split_dir, epochs, max_steps, learning_rate, lora_rank, checkpoint_dir,
    )
    progress = ProgressArtifact(key=f"finetune-{slug(run.name).lower()}"[:60].replace(".", "-").replace("_", "-"), on_event=on_event)
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
        # How fast it trained and on what batches (docs/finetune.md "Speed").
        **{k: worker.get(k) for k in ("steady_tokens_per_second", "steady_steps_per_second", "first_step_seconds", "padding_free",
                                      "gradient_checkpointing", "unsloth_compile", "per_layer_embeddings_device", "peak_train_step_gib",
                                      "peak_validation_gib", "max_step_tokens", "split_steps")},
        # train.stop_token_weight above 1: which loss path weighted the stop token, on how many training losses.
        "stop_token_weight": worker.get("stop_token_weight"),
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
    min_title_chars: int | None = None,
) -> dict:
    """Prefect task around `finetune` (no retries: a crash is resumed from checkpoints by re-running).

    Cached (`StageCache`) on the inputs, the code it runs, the split files' and prompt templates'
    content, while the adapter folder is complete; a deleted adapter folder is trained again.
    """
    with stamped(_stamp({"run_dir": run_dir, "base_model": base_model})):
        return finetune(
            split_dir=split_dir, run_dir=run_dir, base_model=base_model, epochs=epochs, max_steps=max_steps,
            learning_rate=learning_rate, lora_rank=lora_rank, max_title_chars=max_title_chars, train=train,
            min_title_chars=min_title_chars,
        )
