"""Why final-hf and the adapter model disagree on a *random* Gemma 3n: a merge bug, or bf16 rounding amplified?

    python bench/merge_numerics.py                      # CPU: reduced random Gemma 3n text models (minutes)
    python bench/merge_numerics.py --model reduced-cg   # CPU: the same text model inside Gemma3nForConditionalGeneration
    python bench/merge_numerics.py --model e4b          # CUDA: random Gemma3nForConditionalGeneration(Gemma3nConfig())

For each base the script makes the same kind of adapter as bench/merge_export.py (LoRA r=8 on the
language model's q/k/v/o/gate/up/down projections, lora_B ~ N(0, 0.01)), then measures the largest
|Δlogit| over the vocabulary at the last prompt position (the first generated token), over a few
random prompts, between

    adapter model   base (rounded to bf16, as saved) + PEFT adapter, unmerged
    final-hf        what the merge stage writes: merge_and_unload(), rounded to bf16, save_pretrained,
                    loaded back from disk with plain transformers

in float32 and in bf16 compute, with Gemma 3n's activation sparsity as configured and switched off
(every `Gemma3nTextMLP.activation_sparsity` set to 0 on both sides). Controls separate the steps:
`merged_fp32` (merge_and_unload in float32, never rounded: exactness of the merge itself) and
`merged_in_memory` (the bf16 model before saving vs final-hf from disk: exactness of save/load, which
is where a lost or mis-mapped tensor would show). `layer_divergence` follows the relative L2 gap of
the residual stream after each decoder layer (float32, final-hf vs adapter model).

Results go to bench/results/merge_numerics.json keyed by model and device.
"""

import argparse
import gc
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "merge_numerics.json"
sys.path.insert(0, str(ROOT / "bench"))
from merge_export import random_adapter  # noqa: E402  (the adapter the E4B benchmark used)


def reduced_config(hidden: int, layers: int, vocab: int, sparsity: float):
    """Gemma3nTextConfig() (E4B) with small sizes; keeps its layer pattern, KV sharing, AltUp, laurel, sparsity."""
    from transformers import Gemma3nTextConfig

    e4b = Gemma3nTextConfig()
    scale = layers / e4b.num_hidden_layers
    n_sparse = round(sum(p > 0 for p in e4b.activation_sparsity_pattern) * scale)
    return Gemma3nTextConfig(
        vocab_size=vocab, vocab_size_per_layer_input=vocab, hidden_size=hidden, hidden_size_per_layer_input=32,
        intermediate_size=4 * hidden, num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
        head_dim=64, laurel_rank=16, num_kv_shared_layers=round(e4b.num_kv_shared_layers * scale),
        layer_types=(e4b.layer_types * 2)[: layers - 1] + ["full_attention"],
        activation_sparsity_pattern=[sparsity] * n_sparse + [0.0] * (layers - n_sparse), sliding_window=512,
    )


def stub_vision_tower() -> None:
    """Let Gemma3nForConditionalGeneration build without timm: its vision tower becomes a one-matrix stub.

    Only for the reduced multimodal model on a machine without timm (this CPU box): the text path, the
    `model.language_model.*` names and the audio tower are the real ones; the stub's weight is saved and
    loaded like any other tensor, so "towers copied unchanged" is still checked.
    """
    import torch.nn as nn
    import transformers.models.gemma3n.modeling_gemma3n as mg
    from transformers import AutoModel

    class VisionStub(nn.Module):
        def __init__(self, config):
            super().__init__()
            self.config = config
            self.proj = nn.Linear(8, 8, bias=False)

    class Auto:
        @staticmethod
        def from_config(config, **kw):
            return VisionStub(config) if config.model_type in ("timm_wrapper", "gemma3n_vision") else AutoModel.from_config(config, **kw)

    mg.AutoModel = Auto


def make_base(kind: str, out: Path, args) -> Path:
    import torch

    torch.manual_seed(0)
    if kind == "reduced-cg":
        from transformers import Gemma3nAudioConfig, Gemma3nConfig, Gemma3nForConditionalGeneration

        stub_vision_tower()
        text = reduced_config(args.hidden, args.layers, args.vocab, 0.95)
        audio = Gemma3nAudioConfig(hidden_size=64, conf_num_hidden_layers=1, conf_num_attention_heads=2)
        model = Gemma3nForConditionalGeneration(Gemma3nConfig(text_config=text.to_dict(), audio_config=audio.to_dict())).to(torch.bfloat16)
    elif kind == "e4b":
        from transformers import Gemma3nConfig, Gemma3nForConditionalGeneration

        with torch.device("cuda"):
            model = Gemma3nForConditionalGeneration(Gemma3nConfig()).to(torch.bfloat16)
    else:
        from transformers import Gemma3nForCausalLM

        model = Gemma3nForCausalLM(reduced_config(args.hidden, args.layers, args.vocab, 0.95)).to(torch.bfloat16)
    model.save_pretrained(out)
    del model
    gc.collect()
    return out


def set_sparsity(model, on: bool, pattern: list[float]) -> None:
    from transformers.models.gemma3n.modeling_gemma3n import Gemma3nTextMLP

    mlps = [m for m in model.modules() if isinstance(m, Gemma3nTextMLP)]
    for i, m in enumerate(mlps):
        m.activation_sparsity = pattern[i] if on else 0.0


def first_token_logits(model, prompts, layer_trace: bool = False) -> dict:
    """Last-position logits (float32, CPU) per prompt and sparsity setting; optionally the active stream per layer."""
    import torch
    from transformers.models.gemma3n.modeling_gemma3n import Gemma3nTextDecoderLayer

    text = model.config.get_text_config()
    pattern = list(text.activation_sparsity_pattern)
    layers = [m for m in model.modules() if isinstance(m, Gemma3nTextDecoderLayer)]
    out = {}
    for on in (True, False):
        set_sparsity(model, on, pattern)
        logits, traces = [], []
        for ids in prompts:
            trace = []
            hooks = [l.register_forward_hook(lambda m, a, o: trace.append(o[0, 0, -1].float().cpu())) for l in layers] if layer_trace else []
            with torch.inference_mode():
                logits.append(model(input_ids=ids.to(model.device)).logits[0, -1].float().cpu())
            for h in hooks:
                h.remove()
            traces.append(trace)
        out["on" if on else "off"] = {"logits": logits, "trace": traces}
    set_sparsity(model, True, pattern)
    return out


def compare(ref: dict, new: dict) -> dict:
    res = {}
    for sp in ("on", "off"):
        rows = []
        for a, b in zip(ref[sp]["logits"], new[sp]["logits"]):
            top = a.topk(2)
            pick = int(b.argmax())
            rows.append({
                "max_abs_logit_diff": round(float((a - b).abs().max()), 6),
                "argmax_equal": int(a.argmax()) == int(b.argmax()),
                "ref_top2_margin": round(float(top.values[0] - top.values[1]), 4),
                "ref_logit_std": round(float(a.std()), 4),
                # how far below the adapter model's top logit the token final-hf picks lies (0: same pick)
                "ref_gap_to_new_pick": round(float(a.max() - a[pick]), 4),
            })
        res[f"sparsity_{sp}"] = {
            "max_abs_logit_diff": max(r["max_abs_logit_diff"] for r in rows),
            "argmax_equal": sum(r["argmax_equal"] for r in rows), "n": len(rows), "prompts": rows,
        }
    return res


def divergence(ref: dict, new: dict) -> dict:
    """Per decoder layer: relative L2 gap of the active residual stream at the last position, mean over prompts."""
    res = {}
    for sp in ("on", "off"):
        per = []
        for ta, tb in zip(ref[sp]["trace"], new[sp]["trace"]):
            per.append([float((a - b).norm() / a.norm()) for a, b in zip(ta, tb)])
        res[f"sparsity_{sp}"] = [round(sum(col) / len(col), 6) for col in zip(*per)]
    return res


def run(kind: str, args) -> dict:
    import torch
    import transformers
    from peft import PeftModel
    from transformers import AutoConfig

    device = "cuda" if kind == "e4b" else "cpu"
    torch.backends.cuda.matmul.allow_tf32 = False  # float32 means float32 (TF32 would round like bf16-ish)
    t_start = time.perf_counter()

    def step(msg):
        print(f"[{time.perf_counter() - t_start:7.1f}s] {msg}", flush=True)

    work = Path(args.work or tempfile.mkdtemp(prefix="merge-numerics-"))
    t0 = time.perf_counter()
    base = make_base(kind, work / "base", args)
    adapter = random_adapter(base, work / "adapter", device, save_tokenizer=False)
    config = AutoConfig.from_pretrained(base)
    cls = getattr(transformers, config.architectures[0])
    text = config.get_text_config()
    g = torch.Generator().manual_seed(1)
    vocab = min(text.vocab_size, text.vocab_size_per_layer_input)
    prompts = [torch.randint(10, vocab, (1, args.prompt_tokens), generator=g) for _ in range(args.prompts)]
    step("base and adapter written")
    report = {"prep_s": round(time.perf_counter() - t0, 1)}
    logits = {}

    def peft_model(dtype):
        # As the merge stage: base rounded to bf16 (as saved), moved to the compute dtype, adapter applied.
        m = cls.from_pretrained(base, dtype=torch.bfloat16).to(device=device, dtype=dtype)
        return PeftModel.from_pretrained(m, str(adapter)).eval()

    step("prompts ready")
    # 1. bf16 compute: what the stage did on CUDA (merge on the bf16 model, save, reload in bf16).
    m = peft_model(torch.bfloat16)
    logits["adapter_bf16"] = first_token_logits(m, prompts)
    merged = m.merge_and_unload().to(dtype=torch.bfloat16)
    logits["merged_in_memory_bf16"] = first_token_logits(merged, prompts)
    step("merged (bf16) in memory measured")
    merged.save_pretrained(work / "final-hf")
    del m, merged
    gc.collect()
    torch.cuda.empty_cache() if device == "cuda" else None
    step("final-hf saved")
    f = cls.from_pretrained(work / "final-hf").to(device=device, dtype=torch.bfloat16).eval()
    logits["final_hf_bf16"] = first_token_logits(f, prompts)
    f = f.to(dtype=torch.float32)
    logits["final_hf_fp32"] = first_token_logits(f, prompts, layer_trace=True)
    del f
    gc.collect()
    torch.cuda.empty_cache() if device == "cuda" else None

    step("final-hf measured (bf16, fp32)")
    # 2. float32 compute: adapter model, merge in float32 (exact), then that merge rounded to bf16.
    m = peft_model(torch.float32)
    logits["adapter_fp32"] = first_token_logits(m, prompts, layer_trace=True)
    step("adapter model (fp32) measured")
    merged = m.merge_and_unload()
    logits["merged_fp32"] = first_token_logits(merged, prompts)
    merged = merged.to(torch.bfloat16).to(torch.float32)
    logits["merged_fp32_rounded_bf16"] = first_token_logits(merged, prompts)
    del m, merged
    gc.collect()

    step("float32 merge measured")
    c = {
        "A merge itself, float32 (merged_fp32 vs adapter_fp32)": compare(logits["adapter_fp32"], logits["merged_fp32"]),
        "B save/load, bf16 (final_hf_bf16 vs merged_in_memory_bf16)": compare(logits["merged_in_memory_bf16"], logits["final_hf_bf16"]),
        "C stage as run on CUDA, bf16 compute (final_hf_bf16 vs adapter_bf16)": compare(logits["adapter_bf16"], logits["final_hf_bf16"]),
        "D float32 compute, bf16 final-hf (final_hf_fp32 vs adapter_fp32)": compare(logits["adapter_fp32"], logits["final_hf_fp32"]),
        "E float32 compute, fp32 merge rounded once to bf16 (vs adapter_fp32)": compare(logits["adapter_fp32"], logits["merged_fp32_rounded_bf16"]),
        "F bf16 compute noise alone (adapter_bf16 vs adapter_fp32)": compare(logits["adapter_fp32"], logits["adapter_bf16"]),
    }
    report.update({
        "device": torch.cuda.get_device_name(0) if device == "cuda" else f"CPU ({os.cpu_count()} cores, {platform.machine()})",
        "date": time.strftime("%Y-%m-%d"), "architecture": config.architectures[0],
        "config": {k: getattr(text, k) for k in ("hidden_size", "num_hidden_layers", "num_kv_shared_layers", "vocab_size",
                                                 "hidden_size_per_layer_input", "laurel_rank", "altup_num_inputs")}
        | {"intermediate_size": text.intermediate_size[0], "sparse_layers": sum(p > 0 for p in text.activation_sparsity_pattern),
           "sparsity": max(text.activation_sparsity_pattern)},
        "prompts": args.prompts, "prompt_tokens": args.prompt_tokens,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": __import__("peft").__version__},
        "summary": {k: {sp: v[sp]["max_abs_logit_diff"] for sp in ("sparsity_on", "sparsity_off")} | {
            "argmax_equal_on": f"{v['sparsity_on']['argmax_equal']}/{v['sparsity_on']['n']}",
            "argmax_equal_off": f"{v['sparsity_off']['argmax_equal']}/{v['sparsity_off']['n']}"} for k, v in c.items()},
        "comparisons": c,
        "layer_divergence_fp32_final_hf_vs_adapter": divergence(logits["adapter_fp32"], logits["final_hf_fp32"]),
        "total_s": round(time.perf_counter() - t0, 1),
    })
    return report


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=["reduced", "reduced-cg", "e4b"], default="reduced")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=35)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--prompt-tokens", type=int, default=64)
    ap.add_argument("--work", default=None)
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()

    import torch

    from titlegen.runs import atomic_write_json

    report = run(args.model, args)
    key = f"{args.model}" + (f"-h{args.hidden}-l{args.layers}" if args.model != "e4b" else "") + f"@{'cuda' if args.model == 'e4b' else 'cpu'}"
    out = Path(args.out)
    existing = json.loads(out.read_text()) if out.exists() else {}
    existing[key] = report
    atomic_write_json(out, existing)
    print(key, json.dumps(report["config"]))
    print(f"{'comparison (max |Δlogit| first token)':72} {'sparsity on':>12} {'off':>10}  argmax equal on/off")
    for k, v in report["summary"].items():
        print(f"{k:72} {v['sparsity_on']:>12.4g} {v['sparsity_off']:>10.4g}  {v['argmax_equal_on']} / {v['argmax_equal_off']}")
    for sp, per in report["layer_divergence_fp32_final_hf_vs_adapter"].items():
        print(f"layer divergence fp32 ({sp}):", " ".join(f"{x:.2g}" for x in per))
    print("total", report["total_s"], "s; torch", torch.__version__)
    return 0


if __name__ == "__main__":
    sys.exit(main())
