"""Typed files that cross a process or stage boundary: worker configs and the records stages write.

Each file is written and read through one model here, so a writer and its readers cannot drift
apart on key names. Worker configs are strict (an unknown key is an error: a typo never passes);
records allow extra keys (a record grows, and an older run's file must stay readable) but type
every key a reader uses.

| file | model | written by | read by |
| --- | --- | --- | --- |
| `<checkpoints>/worker_config.json` | `TrainWorkerConfig` | tasks/finetune.py | titlegen/train_worker.py |
| `<run>/.merge-spec.<pid>.<tmp>.json` | `MergeSpec` | tasks/merge.py | titlegen/merge_worker.py |
| `<staging>/worker_result.json` | `WorkerResult` | titlegen/train_worker.py | tasks/finetune.py |
| `<run>/<model>-lora/training.json` | `TrainingRecord` | tasks/finetune.py | tasks/finetune.py (reuse, adoption), titlegen/model_card.py |
| `<run>/eval/metrics.json` (+ `<adapter>/eval_metrics.json`) | `MetricsRecord` | tasks/evaluate.py | gate, champion comparison, model card |
| `<run>/final-hf/export.json` | `ExportRecord` | tasks/merge.py | merge reuse, model card |
| `<run>/gguf/export.json` | `GgufExportRecord` | titlegen/gguf_export.py | merge reuse, upload plan, model card |
"""

from pathlib import Path
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from titlegen.params import TrainParams


class Record(BaseModel):
    """A JSON record file: extra keys kept, the keys readers use typed."""

    model_config = ConfigDict(extra="allow")

    def write(self, path: str | Path) -> Path:
        """Write atomically (temp file, then rename)."""
        from titlegen.runs import atomic_write_json

        return atomic_write_json(Path(path), self.model_dump(mode="json"))

    @classmethod
    def read(cls, path: str | Path) -> Self:
        """The record at `path`; a missing or malformed file is an error naming the file."""
        path = Path(path)
        try:
            return cls.model_validate_json(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(f"{path} is missing: the stage that writes it ({cls.__name__}) has not run or was interrupted.") from None
        except ValidationError as e:
            raise ValueError(f"{path} is not a valid {cls.__name__}: {e}") from None

    @classmethod
    def read_optional(cls, path: str | Path) -> Self | None:
        """The record at `path`, or None when it is absent or unreadable (for reports such as the model card)."""
        try:
            return cls.read(path)
        except (OSError, ValueError):
            return None


# ---------------------------------------------------------------- worker configs


class TrainWorkerConfig(Record):
    """What `python -m titlegen.train_worker CONFIG.json` trains (docs/finetune.md)."""

    model_config = ConfigDict(extra="forbid")

    base_model_dir: str = Field(description="Local base model folder (or Hub id).")
    train_file: str = Field(description="The train split (JSONL).")
    validation_file: str | None = Field(None, description="The validation split (JSONL), or None.")
    output_dir: str = Field(description="Where the adapter, tokenizer, log_history.json and worker_result.json go.")
    checkpoint_dir: str = Field(description="Resumable checkpoints (also the worker's working directory).")
    max_title_chars: int = Field(ge=1, description="The title limit written into the instruction.")
    min_title_chars: int = Field(1, ge=1, description="The shortest title the headline checks accept (`train.keep_adapter=checks`).")
    epochs: float = Field(gt=0, description="Training epochs.")
    max_steps: int | None = Field(None, description="Stop after this many optimizer steps; None = the epochs decide.")
    learning_rate: float = Field(gt=0)
    lora_rank: int = Field(ge=1)
    train: TrainParams = Field(description="The `train` section of the run, presets resolved.")
    max_validation_rows: int | None = Field(None, description="Validation loss on at most this many rows.")
    max_train_rows: int | None = Field(None, description="Train on the first this many rows only (benchmarks).")
    device: str = Field("auto", description="`auto`, `cuda` or `cpu`.")
    input_key: str | None = Field(None, description="Row key of the article (default: input, else content).")
    target_key: str | None = Field(None, description="Row key of the title (default: target, else title).")

    @model_validator(mode="after")
    def _presets_resolved(self) -> Self:
        unset = [k for k in ("per_device_batch_size", "gradient_accumulation_steps", "max_seq_length", "optimizer")
                 if getattr(self.train, k) is None]
        if unset:
            raise ValueError(f"train.{', train.'.join(unset)} unset: resolve the preset first (TitlegenParams.resolve or tasks.finetune).")
        return self


class MergeSpec(Record):
    """What `python -m titlegen.merge_worker SPEC.json` (or `build_final_hf` in process) merges and verifies."""

    model_config = ConfigDict(extra="forbid")

    adapter_dir: str = Field(description="The PEFT adapter folder (the fine-tune stage's output).")
    base_model_dir: str = Field(description="The base's local folder (a Hub id's snapshot in the HF cache where it has one).")
    base_model: str | None = Field(None, description="The base as given, for the records (default: base_model_dir).")
    out_dir: str = Field(description="A fresh temporary folder that becomes final-hf.")
    articles: list[str] = Field(min_length=1, description="Validation articles whose greedy titles are compared.")
    max_title_chars: int = Field(ge=1)
    max_new_tokens: int = Field(ge=1, description="Generation budget (titlegen.generate.max_new_tokens_for).")
    merged_dtype: str
    max_shard_size: str
    tie_margin: float = Field(ge=0)
    source: str = Field(description="source_fingerprint written into export.json.")


# ---------------------------------------------------------------- records


class WorkerResult(Record):
    """`worker_result.json`: what the training process reports back to the fine-tune stage."""

    engine: str
    device: str
    quantization: str
    resumed_from: str | None = None
    global_step: int
    epochs_done: float | None = None
    first_train_loss: float | None = None
    final_train_loss: float | None = None
    final_eval_loss: float | None = None
    best_eval_loss: float | None = None
    best_step: int | None = None
    kept_adapter: dict[str, Any]
    tokens_seen: int
    train_rows: int
    validation_rows: int
    label_stats: dict[str, Any] = Field(default_factory=dict)
    peak_gpu_gib: float | None = None
    train_seconds: float
    libraries: dict[str, str] = Field(default_factory=dict)


class TrainingRecord(Record):
    """`<model>-lora/training.json`: how the adapter was made (or where an adopted one came from)."""

    config_hash: str | None = Field(None, description="Identity of data + parameters + code: equal hash, same adapter (None in an adapter trained elsewhere).")
    finished_at: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    data: dict[str, Any] | None = None
    code_version: str | None = None
    git_commit: str | None = None
    device: str | None = None
    global_step: int | None = None
    final_train_loss: float | None = None
    best_eval_loss: float | None = None
    tokens_seen: int | None = None
    train_seconds: float | None = None
    adopted: dict[str, Any] | None = Field(None, description="Set when `train.adapter_dir` was copied instead of trained.")


class MetricsRecord(Record):
    """`eval/metrics.json`: the evaluation of a candidate, the gate's only input."""

    n: int
    candidate: dict[str, Any] = Field(description="Summary of the candidate: rouge_1/2/l, bleu_1, ci, checks.")
    baselines: dict[str, dict[str, Any] | None] = Field(description="lead, base, champion summaries (None when not run).")
    differences: dict[str, Any] = Field(default_factory=dict)
    validation: dict[str, Any] | None = None
    predictions_path: str | None = None
    max_title_chars: int | None = None
    min_title_chars: int | None = None
    test_sha256: str | None = None
    inputs_fingerprint: str | None = None
    inputs: dict[str, Any] = Field(default_factory=dict)
    generation: dict[str, Any] | None = None


class SourcedRecord(Record):
    """A folder's record naming what the folder was made from (read by reuse checks of either export)."""

    source_fingerprint: str = Field(description="Hash of everything the folder is a function of.")


class ExportRecord(SourcedRecord):
    """`final-hf/export.json`: what the merged folder was made from and how it was verified."""

    verification: dict[str, Any]
    files: dict[str, int] = Field(default_factory=dict)


class GgufFile(BaseModel):
    name: str
    bytes: int
    sha256: str


class GgufExportRecord(SourcedRecord):
    """`gguf/export.json`: the GGUF files, their converter and their source."""

    converter: str
    files: dict[str, GgufFile]
    convert_s: dict[str, float] = Field(default_factory=dict)
