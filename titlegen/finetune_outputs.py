"""What the fine-tune stage writes and shows besides training: the adapter folder's templates, the
loss curve (PNG and Prefect artifact), the progress artifact, and adopted adapters (`train.adapter_dir`).
"""

import base64
import datetime as dt
import io
import json
import shutil
from pathlib import Path

from prefect.context import FlowRunContext, TaskRunContext

from titlegen.models import TOKENIZER_FILES
from titlegen.prompt import chat_template, instruction_template, ollama_template
from titlegen.records import TrainingRecord
from titlegen.runs import atomic_dir
from titlegen.train_progress import parse_progress


def _in_prefect_run() -> bool:
    return TaskRunContext.get() is not None or FlowRunContext.get() is not None


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


class ProgressArtifact:
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
