"""Batched greedy headline generation with plain transformers (+ an optional PEFT adapter).

The prompt is the one shared with training and Ollama: `titlegen.prompt.prompt_messages` rendered
by the tokenizer's chat template (titlegen's own template is set on the tokenizer, so a base
model's differing template cannot creep in), with `<bos>` written once by the template and the
text tokenized with `add_special_tokens=False`. Prompts are left-padded and batched in order of
length (longest first, so an out-of-memory error shows up on the first batch, and padding is
small); decoding is greedy and stops at `<end_of_turn>` (id 106) or `<eos>`.

`max_new_tokens` comes from the title length limit: Gemma's tokenizer spends 0.85 tokens per
character on real zh-TW headlines on average and at most 1.05 tokens per allowed character on
any title within a 40-character limit (2,424 zh-tw-news-2017 and 12,353 president-news titles,
measured 2026-11-28; see docs/evaluate.md; the fine-tune stage saw up to 48 tokens for one
40-character title, docs/finetune.md), so `ceil(1.2 * max_title_chars) + 4` tokens leave room
for every in-limit title plus the stop token. The Ollama Modelfile's `num_predict` is the same
budget (`titlegen.modelfile.num_predict_for`). A generation that hits the limit is marked
`stopped: false` and fails the `no_stop` headline check.

What a prediction is: the generated text before the stop token, the first line break or the first `<`
(`titlegen.decoding.TITLE_STOPS`: a title is one line of plain text, and the Modelfile stops there too), special padding
removed and surrounding whitespace stripped; nothing else is cleaned, so repeats and runaway text remain visible to the
headline checks (the deployed Ollama model, with the same stops, would print the same text).

On CUDA the model runs in bf16 and the adapter is merged into the weights (exactly what the merge
stage ships); on CPU it runs in float32. Speed on CUDA (docs/evaluate.md "Speed"): the batch size
comes from the free GPU memory and one row's memory, measured by a 4-row probe prefill
(`batch_size=None`; batches are evened out, and an out-of-memory batch is retried at half the
size), prompts of similar length are batched together and padded to a multiple of 64 tokens, a
batch stops as soon as every row has stopped, and `cache="static"` decodes with a static KV cache
that transformers compiles (CUDA graphs) once per batch shape, and compiles the RMSNorm and MLP
modules (and Gemma 3n's AltUp mixing) with dynamic shapes for the prefill (`titlegen.model_patches.fused_pointwise`),
which it runs a few rows at a time (`prefill_rows_for`), each chunk only as wide as its own prompts (`prefill_in_chunks`).

Decoding rule (`titlegen.decoding`: 1.4 over 16 tokens by default; 1 = plain greedy): greedy with a
repetition penalty that is exactly llama.cpp's (the engine inside Ollama), so the Ollama Modelfile
serves the titles that passed the gate: every
token among the last `repeat_last_n` tokens of the context (prompt included) has its logit divided
by `repeat_penalty` when positive, multiplied when negative (`LastNRepetitionPenalty`). GPU work runs in a child process
(`python -m titlegen.generate CONFIG.json`) so its memory is freed when it ends:

    python -m titlegen.generate outputs/<run>/eval/generate.json

The config (`GenerateConfig`) names the base model, the optional adapter and a list of jobs
(input JSONL with `content`, output JSONL); jobs without the adapter run first, then the adapter
is loaded on the same weights, so the base-model baseline costs no second load.
"""

import contextlib
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from titlegen.decoding import REPEAT_LAST_N, REPEAT_PENALTY, TITLE_STOPS, cut_at_stop
from titlegen.model_patches import (
    cache_writes_in_place,
    fused_pointwise,
    grouped_decode_attention,
    without_altup_copies,
    without_host_syncs,
)
from titlegen.prompt import END_OF_TURN, chat_template, prompt_messages
from titlegen.runs import read_jsonl, write_jsonl

# Upper bound of tokens per allowed title character, and tokens kept for the stop token (see above).
TOKENS_PER_CHAR_BOUND = 1.2
STOP_MARGIN = 4
# Prompt widths are padded to a multiple of this, so a static cache sees a few shapes, not hundreds.
WIDTH_MULTIPLE = 64
# Auto batch size: at most this many rows, using at most this share of the free GPU memory.
MAX_AUTO_BATCH = 512
FREE_MEMORY_SHARE = 0.8
# The static mode prefills each batch this many rows at a time (`prefill_in_chunks`, `prefill_rows_for`). One H200, 500
# real article prompts, 2026-11-30 (docs/evaluate.md, "Twelfth lease"): E4B as one batch of 500 at 49.9 titles/s with
# 32-row chunks, 48.1 with 64, 46.1 with 128, against 38.1 for whole batches of 250 (one invocation); Gemma 3 270M
# 401 titles/s with 64-row chunks against 371 with 32 (one invocation) and 410 against 66 for the dynamic cache, its
# greedy titles as close to the dynamic cache's as before.
PREFILL_ROWS = 64
PREFILL_ROWS_GEMMA3N = 32
# Bytes a row holds in a decode step besides its KV cache: the last position's logits over a 262k vocabulary in bf16,
# their float32 copy and the repeat penalty's scores (a chunked static batch's rows hold nothing else).
DECODE_BYTES_PER_VOCAB_ENTRY = 12


def max_new_tokens_for(max_title_chars: int) -> int:
    """Generation budget for a title of at most `max_title_chars` characters."""
    return math.ceil(TOKENS_PER_CHAR_BOUND * max_title_chars) + STOP_MARGIN


class GenerateJob(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Label in the log, e.g. `candidate/test`.")
    input: str = Field(description="JSONL with a `content` field per row.")
    output: str = Field(description="JSONL written with `prediction`, `raw`, `stopped`, `prompt_tokens`, `new_tokens` per row, in input order.")
    use_adapter: bool = Field(True, description="Generate with the adapter (False: the base model alone).")


class GenerateConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="Base model: local HF folder or Hub id.")
    adapter: str | None = Field(None, description="PEFT adapter folder (save_pretrained output), or None.")
    jobs: list[GenerateJob]
    max_title_chars: int = Field(ge=1)
    max_new_tokens: int | None = Field(None, ge=1, description="None = max_new_tokens_for(max_title_chars).")
    batch_size: int | None = Field(8, ge=1, description="Rows per generate() call; None = from the free GPU memory (8 on CPU).")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    cache: Literal["dynamic", "static"] = Field("dynamic", description="KV cache; `static` is the compiled mode (CUDA only): the decode step by transformers, the prefill's norms, MLPs and AltUp mixing by `fused_pointwise`.")
    repeat_penalty: float = Field(REPEAT_PENALTY, gt=0, description="llama.cpp's repetition penalty (1 = off); the Modelfile sets the same.")
    repeat_last_n: int = Field(REPEAT_LAST_N, ge=0, description="How many last context tokens the repetition penalty looks at (llama.cpp/Ollama `repeat_last_n`).")
    decode_attention: Literal["grouped", "grouped-bf16", "sdpa"] = Field(
        "grouped", description="Decode-step attention on CUDA: `grouped` = each KV head's query heads as batched products "
        "with float32 scores (`titlegen.model_patches.grouped_decode_attention`), `grouped-bf16` = the same with the scores "
        "rounded to bf16, `sdpa` = transformers' SDPA path. CPU always uses SDPA.")


def load_model(model_path: str, adapter: str | None = None, device: str = "auto", merge: bool | None = None):
    """(model, tokenizer) ready for `generate_titles`: eval mode, on `device`, left padding.

    With `adapter` the PEFT weights are loaded on top and checked to have attached somewhere; on
    CUDA (or with `merge=True`) they are merged into the base weights for speed.
    """
    device = resolve_device(device)
    model = load_base(model_path, device)
    tokenizer = load_tokenizer(adapter if adapter and _has_tokenizer(adapter) else model_path)
    if adapter:
        model = attach_adapter(model, adapter, merge=(device == "cuda") if merge is None else merge)
    return model, tokenizer


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def load_base(model_path: str, device: str):
    """The base model in eval mode: bf16 with SDPA attention on CUDA, float32 on CPU (bf16 matmuls are slow on most CPUs)."""
    import torch
    from transformers import AutoModelForCausalLM

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    kwargs = {"attn_implementation": "sdpa"} if device == "cuda" else {}
    # AutoModelForCausalLM maps a Gemma 3n checkpoint to Gemma3nForConditionalGeneration, the class
    # Unsloth trains, so the adapter's module names match.
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype, **kwargs)
    model = model.to(device).eval()
    if device == "cuda":  # both keep the numbers (tests/titlegen/test_model_patches.py); no-ops for models without those modules
        without_host_syncs(model)
        without_altup_copies(model)
    return model


def _has_tokenizer(folder: str) -> bool:
    return (Path(folder) / "tokenizer_config.json").exists()


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.chat_template = chat_template()
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def attach_adapter(model, adapter: str, merge: bool):
    """Load a PEFT adapter onto `model`; fail loudly if none of its modules matched."""
    from peft import PeftModel
    from peft.tuners.lora import LoraLayer

    if not (Path(adapter) / "adapter_config.json").exists():
        raise FileNotFoundError(f"{adapter} has no adapter_config.json: pass the fine-tune stage's adapter folder (PEFT save_pretrained output).")
    peft_model = PeftModel.from_pretrained(model, adapter)
    if not any(isinstance(m, LoraLayer) for m in peft_model.modules()):
        raise ValueError(f"adapter {adapter} attached to no module of the base model: base model and adapter do not match.")
    peft_model.eval()
    return peft_model.merge_and_unload() if merge else peft_model


def stop_token_ids(tokenizer) -> list[int]:
    """`<end_of_turn>` and `<eos>`."""
    ids = {tokenizer.convert_tokens_to_ids(END_OF_TURN)}
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    ids.discard(tokenizer.unk_token_id)
    if not ids:
        raise ValueError(f"the tokenizer knows neither {END_OF_TURN} nor an eos token; it is not a Gemma tokenizer.")
    return sorted(ids)


class LastNRepetitionPenalty:
    """llama.cpp's repeat penalty as a transformers logits processor (Ollama's `repeat_penalty`/`repeat_last_n`).

    Each distinct token among the last `last_n` tokens of the sequence (prompt included, as Ollama
    feeds the prompt to its sampler) gets its logit divided by `penalty` if positive, multiplied by
    it otherwise; once per token, whatever its count. Left padding never enters the window when
    prompts are at least `last_n` tokens long (titlegen's prompts are), and pads carry no logit
    that matters anyway.
    """

    def __init__(self, penalty: float, last_n: int):
        self.penalty = penalty
        self.last_n = last_n

    def __call__(self, input_ids, scores):
        import torch

        window = input_ids[:, -self.last_n :]
        picked = torch.gather(scores, 1, window)
        picked = torch.where(picked <= 0, picked * self.penalty, picked / self.penalty)
        return scores.scatter(1, window, picked)


def auto_batch_size(model, rows: int, row_bytes: int | None, fixed_bytes: int = 0) -> int:
    """Rows per batch that fit `FREE_MEMORY_SHARE` of the free GPU memory, less `fixed_bytes` a batch holds whatever its
    size (CPU, or no row measured: 8), balanced over `rows`.

    `row_bytes` is one row's peak memory (`measure_row_bytes`). An underestimate costs one
    out-of-memory retry at half the size, never a failed stage. The batch is then evened out: 500
    rows that fit 352 at a time run as two batches of 250, not 352 + 148 (one shape fewer for a
    static cache, no small last batch).
    """
    import torch

    if next(model.parameters()).device.type != "cuda" or not row_bytes:
        return min(rows, 8)
    free, _ = torch.cuda.mem_get_info()
    # Memory PyTorch holds in its cache (an earlier, larger batch) is free for this one too.
    free += torch.cuda.memory_reserved() - torch.cuda.memory_allocated()
    return balanced_batch(rows, min(MAX_AUTO_BATCH, max(1, int((free * FREE_MEMORY_SHARE - fixed_bytes) // row_bytes))))


def balanced_batch(rows: int, max_batch: int) -> int:
    """The smallest batch that still needs no more batches than `max_batch` would: equal batches."""
    max_batch = max(1, min(rows, max_batch))
    return -(-rows // -(-rows // max_batch)) if rows else 1


def kv_heads_and_dim(cfg) -> tuple[int, int]:
    """(key/value heads, head dimension) of a text config: one layer's cache is rows x heads x positions x dim."""
    heads = cfg.num_attention_heads
    return getattr(cfg, "num_key_value_heads", heads), getattr(cfg, "head_dim", None) or cfg.hidden_size // heads


def kv_bytes_per_token(cfg) -> int:
    """KV cache bytes per token of one row, bf16, over the layers that keep their own cache."""
    kv_heads, head_dim = kv_heads_and_dim(cfg)
    layers = cfg.num_hidden_layers - (getattr(cfg, "num_kv_shared_layers", 0) or 0)
    return layers * 2 * kv_heads * head_dim * 2


# Rows of the probe prefill that measures one row's memory, and the margin put on its result.
PROBE_ROWS = 4
PROBE_MARGIN = 1.15


def measure_row_bytes(model, width: int, new_tokens: int, pad_token_id: int) -> int:
    """One row's peak memory, measured: a prefill of `PROBE_ROWS` rows at `width` tokens exactly as
    `generate()` runs it (KV cache kept, logits for the last position only), its peak above the memory
    already allocated divided by the rows, times `PROBE_MARGIN`, plus the KV cache of `new_tokens`.
    (An estimate from the config, used before 2026-11-29, was right within 1.35x for Gemma 3 270M
    but 2.6x too low for Gemma 3n E4B, ~300 MB a row at 576 tokens, and ran it out of memory.)

    Resets PyTorch's peak-memory counter (a later `max_memory_allocated` covers from here on)."""
    import torch

    device = next(model.parameters()).device
    ids = torch.full((PROBE_ROWS, width), pad_token_id, dtype=torch.long, device=device)
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    # generate() asks for the last position's logits only where the model can (a 262k vocabulary at every position would dominate).
    last_only = {"logits_to_keep": 1} if getattr(model, "_supports_logits_to_keep", lambda: False)() else {}
    with torch.inference_mode():
        out = model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True, **last_only)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - before
    del out, ids
    return int(peak / PROBE_ROWS * PROBE_MARGIN) + kv_bytes_per_token(model.config.get_text_config()) * new_tokens


def chunked_row_bytes(model, width: int, new_tokens: int) -> int:
    """One row's memory in a static batch prefilled in chunks (`prefill_in_chunks`): its KV cache over the prompt and
    the title, and a decode step's logits. The prefill's activations are one chunk's, a fixed cost (`measure_row_bytes`
    x the chunk's rows), so a batch is no longer bounded by them: E4B's 500 prompts fit one batch on an H200."""
    cfg = model.config.get_text_config(decoder=True)
    return kv_bytes_per_token(cfg) * (width + new_tokens) + cfg.vocab_size * DECODE_BYTES_PER_VOCAB_ENTRY


def encode_prompts(tokenizer, contents: Sequence[str], max_title_chars: int) -> list[list[int]]:
    """Token ids of each article's prompt, `<bos>` included once (written by the chat template)."""
    texts = [
        tokenizer.apply_chat_template(prompt_messages(c, max_title_chars), tokenize=False, add_generation_prompt=True)
        for c in contents
    ]
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


def padded_width(longest: int, device) -> int:
    """Prompt width of a batch: on CUDA rounded up to a multiple of WIDTH_MULTIPLE (extra left padding
    is masked out), so a static cache sees few shapes; on CPU the longest prompt."""
    return -(-longest // WIDTH_MULTIPLE) * WIDTH_MULTIPLE if device.type == "cuda" else longest


def reuse_static_cache(previous, rows: int, length: int):
    """`previous` (a static KV cache, or None) reset for the next batch when it has `rows` rows and room for
    `length` positions (its longest layers, as transformers compares its own), else None."""
    if previous is None or max(layer.max_cache_len for layer in previous.layers) < length:
        return None
    if getattr(previous.layers[0], "batch_size", rows) != rows:
        return None
    previous.reset()
    return previous


def unrolled_static_cache(model, rows: int, length: int, previous=None):
    """A static KV cache of `rows` x `length` positions in which every layer, sliding-window ones included, keeps
    every position: the window is applied by the attention mask (transformers builds the sliding-window mask from
    absolute positions), so attention sees the same keys. transformers' own static sliding layers hold only the
    window and, once it is full, roll the whole cache by one slot at every decode step: 19 % of a Gemma 3 270M
    static pass's GPU time (fifth lease profile, docs/evaluate.md), and a Python position counter the compiled
    step is specialised on. `previous` is reset and reused when it has the rows and room enough (batches come
    longest first, so one cache serves every batch of the same row count and the compiled step keeps its
    addresses); call it under `torch.inference_mode()` like `generate`."""
    import copy

    from transformers import StaticCache

    reused = reuse_static_cache(previous, rows, length)
    if reused is not None:
        return reused
    text = copy.copy(model.config.get_text_config(decoder=True))
    text.layer_types = ["full_attention"] * text.num_hidden_layers
    return StaticCache(config=text, max_cache_len=length)


def prefill_in_chunks(model, ids, mask, cache, chunk_rows: int) -> None:
    """Write every prompt token but the last of a left-padded batch (`ids`, `mask`: rows x width, rows longest
    first) into the static `cache`, `chunk_rows` rows at a time, each chunk only as wide as its own longest prompt.

    Left padding puts every row's prompt at the end of the batch width, so a chunk of shorter prompts reads and
    writes only its last `padded_width` positions: each chunk's keys land where the whole batch's prefill would
    have put them, with the same positions (from the mask, as `generate` counts them) and the same mask. The cache
    then holds `width - 1` positions, and `generate(input_ids=ids, attention_mask=mask, past_key_values=cache)`
    feeds the last column alone before decoding the batch as one. A prefill no longer pads every row to the
    batch's longest prompt (500 real bodies: 1.55x the real tokens at two batches of 250), and its activations
    are a chunk's, not the batch's. Call it under `torch.inference_mode()`, with a cache of `unrolled_static_cache`."""
    import copy

    import torch

    rows, width = ids.shape
    heads, head_dim = kv_heads_and_dim(model.config.get_text_config(decoder=True))
    # Every cache layer gets its tensors now, as its first update would (a static cache holds only the layers that
    # keep their own keys: E4B's 20 of 35); the chunks write into slices of them.
    shape = torch.empty(rows, heads, 1, head_dim, dtype=next(model.parameters()).dtype, device=ids.device)
    for layer in cache.layers:
        if not layer.is_initialized:
            layer.lazy_initialization(shape, shape)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # as generate() derives them from the mask
    lengths = mask.sum(-1).tolist()
    for r0 in range(0, rows, chunk_rows):
        r1 = min(rows, r0 + chunk_rows)
        start = width - min(width, padded_width(max(lengths[r0:r1]), ids.device))
        if start >= width - 1:  # prompts of one token: nothing before the last column
            continue
        part = copy.copy(cache)
        part.layers = []
        for layer in cache.layers:  # the chunk's rows of every layer, in place, written from `start` on
            view = copy.copy(layer)
            view.keys, view.values = layer.keys[r0:r1], layer.values[r0:r1]
            view.batch_size = r1 - r0
            view.cumulative_length = torch.full_like(layer.cumulative_length, start)
            part.layers.append(view)
        model(input_ids=ids[r0:r1, start : width - 1], attention_mask=mask[r0:r1, : width - 1],
              position_ids=positions[r0:r1, start : width - 1], past_key_values=part, use_cache=True, logits_to_keep=1)
    for layer in cache.layers:
        layer.cumulative_length.fill_(width - 1)


# How the `cudagraphs` backend's graphs treat their inputs: the weights read in place (not copied before each replay)
# and the static KV cache written in place by the decode graph (not copied twice a step). E4B, 500 titles on an H200,
# 2026-11-30 (docs/evaluate.md "Fourteenth lease"): 54.08 and 53.66 titles/s against 48.18 and 48.02 with the weights
# alone, in two invocations, every title equal. The benchmark swaps in the older contexts to measure them.
cuda_graph_inputs = cache_writes_in_place


def is_gemma3n(model) -> bool:
    """Whether `model` is a Gemma 3n (E2B/E4B), whose static mode differs (compile backend, prefill chunks)."""
    return str(getattr(model.config, "model_type", "")).startswith("gemma3n")


def static_compile_backend(model) -> str:
    """The static cache's compile backend for `model`: `cudagraphs` for Gemma 3n, `inductor` (transformers'
    default) otherwise. Measured on one H200 (docs/evaluate.md): Inductor's compile of E4B's decode step never
    ended within 560 s (fifth lease), while CUDA graphs of the eager kernels record in 47-90 s and decode E4B at
    23-30 titles/s against 19-24 with the dynamic cache (eighth lease, AltUp copies out); for Gemma 3 270M
    Inductor is the faster one (234 against 156 titles/s, 2026-11-29)."""
    return "cudagraphs" if is_gemma3n(model) else "inductor"


def prefill_rows_for(model) -> int:
    """Rows per prefill chunk of the static mode: `PREFILL_ROWS_GEMMA3N` for Gemma 3n (E4B's prefill is heavy per
    row, and smaller chunks also hold less memory), `PREFILL_ROWS` otherwise (the 270M's is launch-bound)."""
    return PREFILL_ROWS_GEMMA3N if is_gemma3n(model) else PREFILL_ROWS


def generate_titles(
    model,
    tokenizer,
    contents: Sequence[str],
    max_title_chars: int,
    batch_size: int | None = 8,
    max_new_tokens: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    cache: str = "dynamic",
    repeat_penalty: float = REPEAT_PENALTY,
    repeat_last_n: int = REPEAT_LAST_N,
    with_ids: bool = False,
    compile_backend: str = "auto",
    prefill_rows: int | None = None,
) -> list[dict]:
    """Greedy titles for `contents`, in input order: `{prediction, raw, stopped, prompt_tokens, new_tokens}`,
    with `with_ids` also `ids` (the new token ids, the stop token included) and `prompt_ids`. `compile_backend`:
    the torch.compile backend of the static cache's decode step (transformers' default `inductor`; `cudagraphs`
    records CUDA graphs of the eager kernels, no code generation; `auto` = `static_compile_backend(model)`).
    `prefill_rows` (static cache only; None = `prefill_rows_for(model)`, 0 = the whole batch at once): each batch's prompts are
    prefilled that many rows at a time, each chunk as wide as its own longest prompt (`prefill_in_chunks`), then decoded
    as one batch; the auto batch size then counts a row's KV cache and logits, and one chunk's prefill."""
    import torch
    from transformers import GenerationConfig, LogitsProcessorList

    max_new_tokens = max_new_tokens or max_new_tokens_for(max_title_chars)
    stops = stop_token_ids(tokenizer)
    pad = tokenizer.pad_token_id
    config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=stops, pad_token_id=pad)
    if compile_backend == "auto":
        compile_backend = static_compile_backend(model)
    # CUDA graphs of the `cudagraphs` backend read the weights in place instead of copying them before each replay.
    graph_inputs = cuda_graph_inputs if cache == "static" and compile_backend == "cudagraphs" else contextlib.nullcontext
    if cache == "static" and compile_backend != "inductor":
        from transformers import CompileConfig

        config.compile_config = CompileConfig(backend=compile_backend, mode=None)
    static = None  # the static KV cache, reused by every batch of its row count (see `unrolled_static_cache`)
    processors = LogitsProcessorList()
    if repeat_penalty != 1.0 and repeat_last_n > 0:
        processors.append(LastNRepetitionPenalty(repeat_penalty, repeat_last_n))
    prompts = encode_prompts(tokenizer, contents, max_title_chars)
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    device = next(model.parameters()).device
    if cache == "static" and device.type == "cuda":
        # The compiled mode: transformers compiles the decode step, the prefill's norms, MLPs and AltUp mixing are fused here.
        fused_pointwise(model)
    prefill_rows = (prefill_rows_for(model) if prefill_rows is None else prefill_rows) if cache == "static" else 0
    if batch_size is None:
        row_bytes, fixed_bytes = None, 0
        if device.type == "cuda" and order:
            width = padded_width(len(prompts[order[0]]), device)
            row_bytes = measure_row_bytes(model, width, max_new_tokens, pad)
            print(f"generation: {row_bytes / 2**20:.0f} MiB a row, measured at {width} tokens", flush=True)
            if prefill_rows:  # a chunk's prefill once, then each row's cache and logits
                fixed_bytes, row_bytes = row_bytes * min(prefill_rows, len(order)), chunked_row_bytes(model, width, max_new_tokens)
                print(f"generation: {row_bytes / 2**20:.0f} MiB a row decoding, {fixed_bytes / 2**30:.1f} GiB for a "
                      f"prefill of {prefill_rows} rows", flush=True)
        batch_size = auto_batch_size(model, len(order), row_bytes, fixed_bytes)
        print(f"generation batch size {batch_size} (from free memory)", flush=True)
    results: list[dict | None] = [None] * len(prompts)
    done = 0
    start = 0
    while start < len(order):
        chunk = order[start : start + batch_size]
        longest = max(len(prompts[i]) for i in chunk)
        width = padded_width(longest, device)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, i in enumerate(chunk):  # left padding: the prompt ends where generation starts
            ids[row, width - len(prompts[i]) :] = torch.tensor(prompts[i])
            mask[row, width - len(prompts[i]) :] = 1
        ids, mask = ids.to(device), mask.to(device)
        try:
            with torch.inference_mode(), graph_inputs():
                if cache == "static":
                    static = unrolled_static_cache(model, len(chunk), width + max_new_tokens, static)
                    if prefill_rows:
                        prefill_in_chunks(model, ids, mask, static, prefill_rows)
                out = model.generate(input_ids=ids, attention_mask=mask, generation_config=config,
                                     logits_processor=processors, **({"past_key_values": static} if static is not None else {}))
        except torch.OutOfMemoryError:
            if batch_size == 1:
                raise
            # Retry the same chunk with half the batch (down to 1) instead of failing the stage.
            batch_size = max(1, batch_size // 2)
            print(f"WARNING: out of GPU memory; generation batch size lowered to {batch_size} "
                  "(set evaluation.batch_size to that to skip this retry)", flush=True)
            del ids, mask
            static = None
            torch.cuda.empty_cache()
            continue
        new_rows = out[:, width:].tolist()
        for row, i in enumerate(chunk):
            new = new_rows[row]
            stop_at = next((k for k, t in enumerate(new) if t in stops), None)
            kept = new if stop_at is None else new[:stop_at]
            raw = tokenizer.decode([t for t in kept if t != pad], skip_special_tokens=False)
            used = len(kept) + (stop_at is not None)  # new tokens, the stop token's included
            raw, cut = cut_at_stop(raw, TITLE_STOPS)  # a line break or `<` ends the title, as the Modelfile's stops do
            if cut:  # the tokens up to the one that wrote the stop string
                used = next(k for k in range(1, len(kept) + 1) if cut_at_stop(tokenizer.decode(kept[:k], skip_special_tokens=False), TITLE_STOPS)[1])
            results[i] = {
                "prediction": raw.strip(),
                "raw": raw,
                "stopped": stop_at is not None or cut,
                "prompt_tokens": len(prompts[i]),
                "new_tokens": used,
                **({"ids": new[:used], "prompt_ids": prompts[i]} if with_ids else {}),
            }
        start += len(chunk)
        done += len(chunk)
        if progress:
            progress(done, len(order))
    return results  # type: ignore[return-value]


def run_config(cfg: GenerateConfig, log: Callable[[str], None] = print) -> None:
    """Run every job of `cfg` with one model load (base-only jobs first, then with the adapter)."""
    import torch

    if any(j.use_adapter for j in cfg.jobs) and not cfg.adapter:
        raise ValueError("a job asks for the adapter but the config names none")
    device = resolve_device(cfg.device)
    t0 = time.perf_counter()
    model = load_base(cfg.model, device)
    tokenizer = load_tokenizer(cfg.adapter if cfg.adapter and _has_tokenizer(cfg.adapter) else cfg.model)
    log(f"loaded {cfg.model} on {device} in {time.perf_counter() - t0:.1f}s")
    if device == "cuda" and cfg.decode_attention != "sdpa" and grouped_decode_attention(model, fp32_scores=cfg.decode_attention == "grouped"):
        log(f"decode attention: grouped by KV head (batched products, {'float32' if cfg.decode_attention == 'grouped' else 'bf16'} scores)")
    budget = cfg.max_new_tokens or max_new_tokens_for(cfg.max_title_chars)
    with_adapter = False
    for job in sorted(cfg.jobs, key=lambda j: j.use_adapter):
        if job.use_adapter and not with_adapter:
            model = attach_adapter(model, cfg.adapter, merge=(device == "cuda"))
            with_adapter = True
            log(f"attached adapter {cfg.adapter}")
        rows = read_jsonl(job.input)
        t1 = time.perf_counter()

        def progress(done: int, total: int, name: str = job.name, t1: float = t1) -> None:
            log(f"{name}: {done}/{total} titles, {done / (time.perf_counter() - t1):.2f} titles/s")

        out = generate_titles(model, tokenizer, [r["content"] for r in rows], cfg.max_title_chars, cfg.batch_size, budget, progress,
                              cache=cfg.cache, repeat_penalty=cfg.repeat_penalty, repeat_last_n=cfg.repeat_last_n)
        write_jsonl(job.output, out)
        log(f"{job.name}: wrote {job.output} ({len(out)} titles in {time.perf_counter() - t1:.1f}s)")
    if device == "cuda":
        log(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")


def run_in_child(cfg: GenerateConfig, config_path: str | Path, logger) -> None:
    """Write `cfg` to `config_path` and run it in a child process whose output goes to `logger`."""
    from titlegen.runs import atomic_write_json
    from titlegen.subproc import python_module, run_logged

    atomic_write_json(config_path, cfg.model_dump(mode="json"))
    run_logged(python_module("titlegen.generate", str(config_path)), logger)


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        raise SystemExit("usage: python -m titlegen.generate CONFIG.json")
    cfg = GenerateConfig.model_validate(json.loads(Path(args[0]).read_text(encoding="utf-8")))
    run_config(cfg)


if __name__ == "__main__":
    main()
