"""Where one Gemma 3n decode step spends its GPU time, by operator and input shape, and what each of its
products costs alone (issue #14: E4B's static pass decodes at ~1/10 of what its GEMM sizes predict).

    python3 bench/decode_ops.py --device cuda --rows 250 --width 576          # E4B dimensions, random weights
    python3 bench/decode_ops.py --device cpu --rows 2 --width 16 --layers 10 --vocab 4096 --reps 2   # a dry run

Three parts, one JSON file (`--out`, default bench/results/decode_ops.json, merged by device and date) and tables:

1. **The decode step, eagerly, under torch.profiler** (`record_shapes`): a text-only Gemma 3n built from
   `Gemma3nTextConfig()` (E4B's dimensions) with the evaluate stage's CUDA patches (host syncs and AltUp copies out,
   grouped decode attention with float32 scores), `--rows` left-padded prompts of `--width` tokens prefilled into
   the stage's unrolled static cache (`width + new` positions), then `--steps` decode steps. Operators by input
   shape and self GPU time: which shapes a step's time is made of (a CUDA-graph replay hides them).
2. **Each product alone** (`torch.nn.functional.linear` / `matmul` at the step's shapes, CUDA events, median of
   `--reps`): achieved TFLOP/s and weight GB/s, at `--rows` and at the next multiple of 64, and the candidates
   that would replace them (gate and up projections as one product; AltUp's 4 x 4 mixing as element-wise work;
   attention over a cache length rounded to a multiple of 64).
3. The eager step's wall time (CUDA events) over the same steps, and one prefill of the batch profiled the same way.

Random weights: the kernels and shapes are the real architecture's; the values are not.
"""

import argparse
import copy
import datetime as dt
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results" / "decode_ops.json"
# `titlegen.generate.max_new_tokens_for(40)`, written out: the GPU image lacks pydantic, which that module imports.
STAGE_BUDGET = 52


def build(device: str, layers: int | None, vocab: int | None):
    """Text-only Gemma 3n with E4B's dimensions (`Gemma3nTextConfig()`), random weights, the stage's CUDA patches."""
    import torch
    from transformers import Gemma3nForCausalLM, Gemma3nTextConfig

    from titlegen.model_patches import grouped_decode_attention, without_altup_copies, without_host_syncs

    cfg = Gemma3nTextConfig()
    if layers:  # fewer layers (a dry run): keep the layer pattern and share the last half's KV cache, as E4B does
        cfg.num_hidden_layers, cfg.num_kv_shared_layers = layers, layers // 2
        cfg.layer_types = cfg.layer_types[:layers]
        cfg.activation_sparsity_pattern = cfg.activation_sparsity_pattern[:layers]
        if isinstance(cfg.intermediate_size, list):
            cfg.intermediate_size = cfg.intermediate_size[:layers]
    if vocab:
        cfg.vocab_size = cfg.vocab_size_per_layer_input = vocab
    cfg._attn_implementation = "sdpa"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    torch.manual_seed(0)
    with torch.device(device):
        torch.set_default_dtype(dtype)
        model = Gemma3nForCausalLM(cfg).eval()
        torch.set_default_dtype(torch.float32)
    without_host_syncs(model)
    without_altup_copies(model)
    grouped_decode_attention(model, fp32_scores=True)
    return model, cfg


def op_table(prof, rows: int = 45) -> tuple[str, list[dict]]:
    """Operators by name and input shapes, by self GPU time (what the kernels under each operator took)."""
    events = [e for e in prof.key_averages(group_by_input_shape=True) if e.self_device_time_total > 0]
    total = sum(e.self_device_time_total for e in events) or 1
    out, lines = [], [f"Operators by input shapes, self GPU time ({len(events)} kinds, {total / 1e3:.1f} ms in all)",
                      f"{'share':>6} {'self ms':>9} {'calls':>6} {'avg us':>8}  operator  input shapes"]
    for e in sorted(events, key=lambda e: e.self_device_time_total, reverse=True)[:rows]:
        t = e.self_device_time_total
        out.append({"op": e.key, "shapes": str(e.input_shapes), "self_ms": round(t / 1e3, 3), "calls": e.count})
        lines.append(f"{100 * t / total:5.1f}% {t / 1e3:9.2f} {e.count:6d} {t / max(e.count, 1):8.1f}  {e.key}  {e.input_shapes}")
    return "\n".join(lines), out


def timed_ms(fn, reps: int, cuda: bool, inner: int = 20) -> float:
    """Median time of one `fn` call in ms, after two warm-up calls: on CUDA, CUDA events around `inner` calls queued
    back to back (one call alone would time its launch, ~50 us, not its kernel)."""
    import torch

    for _ in range(2):
        fn()
    times = []
    for _ in range(reps):
        if cuda:
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            for _ in range(inner):
                fn()
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b) / inner)
        else:
            t = time.perf_counter()
            fn()
            times.append(1e3 * (time.perf_counter() - t))
    return statistics.median(times)


def product_rows(cfg, rows: int, length: int, device: str, reps: int) -> list[dict]:
    """Each product of a decode step alone, at `rows` and at `rows` rounded up to 64, with its candidates."""
    import torch

    cuda = device == "cuda"
    dtype = torch.bfloat16 if cuda else torch.float32
    d, inter = cfg.hidden_size, cfg.intermediate_size[0] if isinstance(cfg.intermediate_size, list) else cfg.intermediate_size
    heads, kv, hd = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    n_alt, ple = cfg.altup_num_inputs, cfg.hidden_size_per_layer_input
    linears = {  # name: (in, out), as one decode step runs them (per layer unless said)
        "q_proj / o_proj": (d, heads * hd), "k_proj / v_proj": (d, kv * hd), "gate_proj / up_proj": (d, inter),
        "down_proj": (inter, d), "gate+up as one product (candidate)": (d, 2 * inter),
        "q+k+v as one product (candidate)": (d, (heads + 2 * kv) * hd), "per_layer_input_gate": (d, ple),
        "per_layer_projection": (ple, d), "laurel left": (d, cfg.laurel_rank), "laurel right": (cfg.laurel_rank, d),
        "lm_head (once a step)": (d, cfg.vocab_size),
    }
    out = []
    for m in sorted({rows, -(-rows // 64) * 64}):
        for name, (k, n) in linears.items():
            x = torch.randn(m, 1, k, device=device, dtype=dtype)
            w = torch.randn(n, k, device=device, dtype=dtype) * 0.02
            ms = timed_ms(lambda: torch.nn.functional.linear(x, w), reps, cuda)
            out.append({"part": "linear", "name": name, "rows": m, "in": k, "out": n, "ms": round(ms, 4),
                        "tflops": round(2 * m * k * n / ms / 1e9, 1), "weight_gb_s": round(2 * k * n / ms / 1e6, 1)})
        # AltUp's predict: (batch, 1, hidden, 4) @ (batch, 1, 4, 4) from a (4, batch, 1, hidden) stack, as transformers runs it,
        # against the same mixing as float32 element-wise work (the candidate).
        h = torch.randn(n_alt, m, 1, d, device=device, dtype=dtype)
        coefs = torch.randn(m, 1, n_alt, n_alt, device=device, dtype=dtype)
        ms = timed_ms(lambda: torch.matmul(h.permute(1, 2, 3, 0), coefs), reps, cuda)
        out.append({"part": "altup", "name": "AltUp predict as matmul (transformers)", "rows": m, "ms": round(ms, 4)})
        ms = timed_ms(lambda: (h.unsqueeze(1).float() * coefs.permute(2, 3, 0, 1).unsqueeze(-1).float()).sum(0).to(dtype), reps, cuda)
        out.append({"part": "altup", "name": "AltUp predict as float32 element-wise sum (candidate)", "rows": m, "ms": round(ms, 4)})
        # Grouped decode attention's two products over the unrolled static cache, at its length and rounded up to 64.
        for ln in sorted({length, -(-length // 64) * 64}):
            q = torch.randn(m * kv, heads // kv, hd, device=device, dtype=dtype)
            key = torch.randn(m * kv, ln, hd, device=device, dtype=dtype)
            p = torch.randn(m * kv, heads // kv, ln, device=device, dtype=dtype)
            scores = (lambda: torch.bmm(q, key.transpose(1, 2), out_dtype=torch.float32)) if cuda else (lambda: torch.bmm(q, key.transpose(1, 2)))
            ms = timed_ms(scores, reps, cuda)
            gb = 2 * m * kv * ln * hd / ms / 1e6
            out.append({"part": "attention", "name": "scores q.k (float32 out)", "rows": m, "cache_len": ln, "ms": round(ms, 4), "cache_gb_s": round(gb, 1)})
            ms = timed_ms(lambda: torch.bmm(p, key), reps, cuda)
            out.append({"part": "attention", "name": "probabilities.v", "rows": m, "cache_len": ln, "ms": round(ms, 4),
                        "cache_gb_s": round(2 * m * kv * ln * hd / ms / 1e6, 1)})
    return out


def altup_prefill_rows(model, rows: int, width: int, reps: int) -> list[dict]:
    """One AltUp `predict` over a prefill's (4, rows, width, hidden) streams: transformers' against
    `titlegen.model_patches.altup_mixing_fused` (compiled), on the model's first layer."""
    import torch

    from titlegen.model_patches import altup_mixing_fused

    altup = next(m for m in model.modules() if type(m).__name__ == "Gemma3nTextAltUp")
    p = next(model.parameters())
    h = torch.randn(altup.config.altup_num_inputs, rows, width, altup.config.hidden_size, device=p.device, dtype=p.dtype)
    cuda = p.device.type == "cuda"
    out = []
    with torch.inference_mode():
        ms = timed_ms(lambda: type(altup).predict(altup, h), reps, cuda, inner=3)
        out.append({"part": "altup prefill", "name": "AltUp predict (transformers)", "rows": rows, "width": width, "ms": round(ms, 3)})
        reference = type(altup).predict(altup, h)
        altup_mixing_fused(model)
        ms = timed_ms(lambda: altup.predict(h), reps, cuda, inner=3)
        diff = (altup.predict(h).float() - reference.float()).abs().max().item()
        out.append({"part": "altup prefill", "name": "AltUp predict, mixing fused (altup_mixing_fused)", "rows": rows, "width": width,
                    "ms": round(ms, 3), "max_abs_diff": diff})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cuda")
    ap.add_argument("--rows", type=int, default=250, help="batch rows (the evaluate stage's auto batch for 500 E4B titles)")
    ap.add_argument("--width", type=int, default=576, help="prompt width (500 real bodies: longest batch 576 after padding to 64)")
    ap.add_argument("--new", type=int, default=0, help="new tokens the cache holds room for (0 = the stage's budget)")
    ap.add_argument("--steps", type=int, default=4, help="decode steps profiled and timed")
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--layers", type=int, default=0, help="fewer layers than E4B's 35 (a dry run)")
    ap.add_argument("--vocab", type=int, default=0, help="a smaller vocabulary (a dry run)")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--profile-out", default="", help="where the profile tables go (default: beside --out)")
    args = ap.parse_args()

    import torch
    from transformers import StaticCache

    cuda = args.device == "cuda"
    new = args.new or STAGE_BUDGET
    length = args.width + new
    model, cfg = build(args.device, args.layers or None, args.vocab or None)
    text = copy.copy(cfg)
    # The stage's unrolled static cache, built as `titlegen.generate.unrolled_static_cache` builds it (that module
    # imports pydantic, which the GPU image lacks without the lease's wheels).
    text.layer_types = ["full_attention"] * cfg.num_hidden_layers
    cache = StaticCache(config=text, max_cache_len=length)
    g = torch.Generator().manual_seed(0)
    # Token ids the per-layer embeddings can look up (Gemma 3n's output vocabulary is larger than theirs).
    limit = min(cfg.vocab_size, cfg.vocab_size_per_layer_input)
    ids = torch.randint(10, limit, (args.rows, args.width), generator=g)
    pad = torch.randint(0, args.width // 2, (args.rows,), generator=g)
    mask = (torch.arange(length)[None, :] >= pad[:, None]).long()  # left padding, then every position to come
    ids, mask = ids.to(args.device), mask.to(args.device)

    def step(pos: int, tokens):
        return model(input_ids=tokens, attention_mask=mask[:, : pos + tokens.shape[1]], past_key_values=cache, use_cache=True,
                     cache_position=torch.arange(pos, pos + tokens.shape[1], device=args.device), logits_to_keep=1)

    with torch.inference_mode():
        nxt = step(0, ids).logits[:, -1:].argmax(-1) % limit
        for k in range(2):  # warm-up decode steps
            nxt = step(args.width + k, nxt).logits[:, -1:].argmax(-1) % limit
        pos = args.width + 2
        # Timed steps (each one its own position, as generation runs them).
        times = []
        for k in range(args.steps):
            if cuda:
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
            t = time.perf_counter()
            nxt = step(pos + k, nxt).logits[:, -1:].argmax(-1) % limit
            if cuda:
                b.record()
                b.synchronize()
                times.append(a.elapsed_time(b))
            else:
                times.append(1e3 * (time.perf_counter() - t))
        pos += args.steps
        from torch.profiler import ProfilerActivity, profile

        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        with profile(activities=acts, record_shapes=True) as prof:
            for k in range(args.steps):
                nxt = step(pos + k, nxt).logits[:, -1:].argmax(-1) % limit
            if cuda:
                torch.cuda.synchronize()
        cache.reset()  # one prefill of the batch, profiled apart (its shapes are the prompt's, not a step's)
        with profile(activities=acts, record_shapes=True) as prefill_prof:
            step(0, ids)
            if cuda:
                torch.cuda.synchronize()
    ops_text, ops = op_table(prof) if cuda else ("(CPU: no GPU times)", [])
    prefill_text, prefill_ops = op_table(prefill_prof, rows=25) if cuda else ("", [])
    products = product_rows(cfg, args.rows, length, args.device, args.reps) + altup_prefill_rows(model, args.rows, args.width, min(args.reps, 10))
    card = torch.cuda.get_device_name(0) if cuda else "cpu"
    lines = [f"decode_ops: {card}, {cfg.num_hidden_layers} layers, rows {args.rows}, width {args.width}, cache {length}",
             f"eager decode step: {statistics.median(times):.2f} ms (median of {args.steps})", "", f"{args.steps} decode steps:", ops_text, "",
             "one prefill:", prefill_text, "",
             "| part | product | rows | in x out / cache | ms | TFLOP/s | GB/s |", "|---|---|---|---|---|---|---|"]
    for r in products:
        size = f"{r['in']} x {r['out']}" if "in" in r else str(r.get("cache_len", r.get("width", "")))
        lines.append(f"| {r['part']} | {r['name']} | {r['rows']} | {size} | {r['ms']} | {r.get('tflops', '')} | "
                     f"{r.get('weight_gb_s', r.get('cache_gb_s', ''))} |")
    report = "\n".join(lines)
    print(report, flush=True)
    Path(args.profile_out or Path(args.out).with_name(f"decode-ops-{args.device}.txt")).write_text(report + "\n")
    results = json.loads(Path(args.out).read_text()) if Path(args.out).exists() else {}
    results[f"{args.device}/e4b-text-random/rows{args.rows}-width{args.width}"] = {
        "device": card, "measured_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "torch": torch.__version__,
        "command": "python3 " + " ".join(sys.argv), "layers": cfg.num_hidden_layers, "cache_len": length,
        "eager_step_ms": round(statistics.median(times), 3), "steps_profiled": args.steps, "ops": ops, "prefill_ops": prefill_ops,
        "products": products}
    tmp = Path(f"{args.out}.tmp")
    tmp.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")
    tmp.replace(args.out)


if __name__ == "__main__":
    main()
