"""The `titlegen` flow: ingest -> clean -> split -> fine-tune -> evaluate-gate -> merge -> upload -> ollama-create.

It only composes. Each stage is a plain function in `tasks/<stage>.py` behind a thin `@task`;
stages pass paths, ids and small dicts. When the gate fails the flow returns a `Failed` state
named `GateBlocked` and merge, upload and ollama-create never run. The gate compares the model with
the one now served (the champion, `titlegen.champion`), which a promoting run records; a run whose
model already serves (unchanged data, code and parameters) stops after fine-tune in the Completed
state `NothingChanged` (docs/deployment.md "Retraining").

    prefect deployment run titlegen/full --watch --param dataset=../shared/data/zh-tw-news-2017
    python -m titlegen.flows.titlegen '{"dataset": "../shared/data/zh-tw-news-2017"}'   # no server
"""

import json
import sys
from typing import Annotated, Any, Literal

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.states import Completed
from pydantic import Field

from titlegen.params import (
    CleanParams,
    ColumnMap,
    EvalParams,
    GateParams,
    HubRepoId,
    OllamaParams,
    PublishParams,
    RunName,
    SplitParams,
    Text,
    TitlegenParams,
    TrainParams,
)
from titlegen.champion import find_champion_task, nothing_changed_task, record_champion_task
from titlegen.models import check_base_model
from titlegen.outcomes import gate_blocked
from titlegen.runs import atomic_write_json, default_run_name, lock_run_folder, releases_run_locks, run_dir
from titlegen.tasks.clean import CLEAN_FILE, REPORT_FILE, clean_task
from titlegen.tasks.evaluate import evaluate_task, gate_task
from titlegen.tasks.finetune import finetune_task
from titlegen.tasks.ingest import data_fingerprint, ingest_task
from titlegen.tasks.merge import merge_task
from titlegen.tasks.ollama import ollama_create_task
from titlegen.tasks.split import split_task
from titlegen.tasks.upload import upload_task

_FIELDS = TitlegenParams.model_fields


def _p(name: str) -> tuple:
    """Constraints and description of a top-level field, so Prefect validates a run at creation."""
    f = _FIELDS[name]
    return (Field(description=f.description, json_schema_extra=f.json_schema_extra), *f.metadata)


def _d(name: str) -> Any:
    return _FIELDS[name].get_default(call_default_factory=True)


def _documented(fn):
    """Append an `Args:` section built from `TitlegenParams`, which Prefect shows in the UI's run form."""
    lines = [f"    {name}: {field.description or (field.annotation.__doc__ or '').strip().splitlines()[0]}"
             for name, field in _FIELDS.items()]
    fn.__doc__ = f"{fn.__doc__.rstrip()}\n\n    Args:\n" + "\n".join("    " + line for line in lines) + "\n"
    return fn


@flow(name="titlegen", log_prints=True, validate_parameters=True)
@_documented
@releases_run_locks
def titlegen(
    dataset: Annotated[str, *_p("dataset")] = _d("dataset"),
    dataset_revision: Annotated[Text | None, *_p("dataset_revision")] = _d("dataset_revision"),
    preset: Annotated[Literal["auto", "gpu", "cpu"], *_p("preset")] = _d("preset"),
    base_model: Annotated[Text | None, *_p("base_model")] = _d("base_model"),
    run_name: Annotated[RunName | None, *_p("run_name")] = _d("run_name"),
    output_root: Annotated[str, *_p("output_root")] = _d("output_root"),
    epochs: Annotated[float | None, *_p("epochs")] = _d("epochs"),
    max_steps: Annotated[int | None, *_p("max_steps")] = _d("max_steps"),
    learning_rate: Annotated[float, *_p("learning_rate")] = _d("learning_rate"),
    lora_rank: Annotated[int, *_p("lora_rank")] = _d("lora_rank"),
    min_rouge_l: Annotated[float, *_p("min_rouge_l")] = _d("min_rouge_l"),
    hf_repo: Annotated[HubRepoId | None, *_p("hf_repo")] = _d("hf_repo"),
    ollama_model: Annotated[str, *_p("ollama_model")] = _d("ollama_model"),
    columns: ColumnMap = _d("columns"),
    clean: CleanParams = _d("clean"),
    split: SplitParams = _d("split"),
    train: TrainParams = _d("train"),
    evaluation: EvalParams = _d("evaluation"),
    gate: GateParams = _d("gate"),
    publish: PublishParams = _d("publish"),
    ollama: OllamaParams = _d("ollama"),
):
    """Fine-tune Gemma to write zh-TW headlines, gate it on ROUGE, publish to the Hub and Ollama.

    Every parameter is documented on `titlegen.params.TitlegenParams`.
    """
    logger = get_run_logger()
    params = TitlegenParams(**{k: v for k, v in locals().items() if k in _FIELDS}).resolve()
    # An unknown model id or path fails now, before any data is loaded.
    check_base_model(params.base_model)
    name = params.run_name or default_run_name(
        params.base_model,
        params.dataset,
        params.model_dump(include={"dataset", "dataset_revision", "base_model", "epochs", "max_steps",
                                   "learning_rate", "lora_rank", "columns", "clean", "split", "train"})
        | {"data": data_fingerprint({"dataset": params.dataset, "revision": params.dataset_revision})},
    )
    run = run_dir(params.output_root, name)
    # One run per folder: a second run on it fails here, naming the holder (released when the flow ends).
    lock_run_folder(run)
    atomic_write_json(run / "params.json", params.model_dump(mode="json"))
    logger.info("Run folder %s (preset %s, base model %s)", run, params.preset, params.base_model)
    create_markdown_artifact(
        key="titlegen-params",
        markdown=f"# titlegen run `{name}`\n\nFolder: `{run}`\n\n```json\n{params.model_dump_json(indent=2)}\n```",
        description="Resolved parameters of this run",
    )

    # --- champion (#19): the model now served under params.ollama_model, found without parameters ---
    champion = find_champion_task(params.ollama_model, params.output_root)
    raw = ingest_task(params.dataset, params.dataset_revision, params.columns, run / "data",
                      stale=[str(run / "data" / CLEAN_FILE), str(run / "data" / REPORT_FILE), str(run / "split")])
    cleaned = clean_task(raw["path"], params.columns, params.clean, run / "data")
    splits = split_task(cleaned["path"], params.split, run / "split")
    trained = finetune_task(
        split_dir=splits["dir"],
        run_dir=str(run),
        base_model=params.base_model,
        epochs=params.epochs,
        max_steps=params.max_steps,
        learning_rate=params.learning_rate,
        lora_rank=params.lora_rank,
        max_title_chars=params.clean.max_title_chars,
        min_title_chars=params.clean.min_title_chars,
        train=params.train,
    )
    # --- champion (#19): this run's model is the one served -> nothing to evaluate, gate or publish ---
    unchanged = nothing_changed_task(champion, trained["adapter_dir"], params.base_model, params.ollama.host)
    if unchanged["nothing_changed"]:
        logger.info("Nothing changed: %s", unchanged["reason"])
        return Completed(name="NothingChanged", message=f"Nothing changed: {unchanged['reason']}")
    # --- end champion (#19) ---
    evaluated = evaluate_task(
        adapter_dir=trained["adapter_dir"],
        base_model_dir=trained["base_model_dir"],
        split_dir=splits["dir"],
        run_dir=str(run),
        max_title_chars=params.clean.max_title_chars,
        min_title_chars=params.clean.min_title_chars,
        evaluation=params.evaluation,
        champion=champion,
    )
    decision = gate_task(evaluated["metrics_path"], min_rouge_l=params.min_rouge_l, gate=params.gate)
    if not decision["passed"]:
        logger.error("Gate blocked the model: %s", "; ".join(decision["reasons"]))
        return gate_blocked(decision["reasons"])  # an expected end: red in the UI, no traceback in the log

    merged = merge_task(
        adapter_dir=trained["adapter_dir"],
        base_model_dir=trained["base_model_dir"],
        split_dir=splits["dir"],
        run_dir=str(run),
        max_title_chars=params.clean.max_title_chars,
        publish=params.publish,
        ollama_host=params.ollama.host,
    )
    uploaded = upload_task(
        final_hf=merged["final_hf"],
        gguf_files=merged["gguf"],
        run_dir=str(run),
        hf_repo=params.hf_repo,
        publish=params.publish,
    )
    served = ollama_create_task(
        gguf_files=merged["gguf"],
        hub=uploaded,
        split_dir=splits["dir"],
        run_dir=str(run),
        model_name=params.ollama_model,
        max_title_chars=params.clean.max_title_chars,
        min_title_chars=params.clean.min_title_chars,
        ollama=params.ollama,
        # The evaluation's decoding rule, so Ollama serves the titles that passed the gate.
        repeat_penalty=params.evaluation.repeat_penalty,
        repeat_last_n=params.evaluation.repeat_last_n,
    )
    # --- champion (#19): what now serves becomes the champion the next run must beat ---
    recorded = record_champion_task(
        params.ollama_model, params.output_root, str(run), trained["adapter_dir"], params.base_model,
        trained["base_model_dir"], evaluated["metrics_path"], merged["final_hf"], uploaded, served,
    ) if served.get("promoted") else None
    return {
        "run_dir": str(run),
        "data": raw["provenance"],
        "splits": splits["sizes"],
        "adapter_dir": trained["adapter_dir"],
        "metrics": decision["metrics"],
        "final_hf": merged["final_hf"],
        "hub": uploaded,
        "ollama": served,
        "champion": recorded,
    }


if __name__ == "__main__":
    overrides = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    state = titlegen(**overrides, return_state=True)
    sys.exit(0 if state.is_completed() else 1)
