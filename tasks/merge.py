"""merge stage: fold the LoRA adapter into the 16-bit base weights, verify, and export GGUF files.

`merge()` writes `<run>/final-hf/`, the standard Hugging Face layout (config, generation config whose
eos includes `<end_of_turn>`, tokenizer with titlegen's chat template, sharded safetensors,
`export.json`), through a temporary folder that is renamed into place only after verification:
plain transformers (no PEFT, no Unsloth) loads the written folder, renders the first
`publish.verify_articles` validation articles with the folder's own chat template, and its greedy
titles must equal those of base+adapter (a differing title passes only as a stated near-tie, see
`PublishParams.verify_tie_margin`), and its tensors must equal the merged model's bit for bit. A
mismatch fails the stage and leaves no final-hf. The one exception is a `rounding-sensitive` title:
where it differs, final-hf's token lies within twice the adapter model's own bf16-vs-float32 |Δlogit|
of its top token, so rounding decides it, not the weights (near-uniform logits of random weights:
`bench/merge_numerics.py`); it passes only with the tensors identical.

Then `<run>/gguf/` gets one GGUF per `publish.gguf_types` (see `titlegen.gguf`), each generated
from on an Ollama server and compared with final-hf's titles; with no server the check is
reported as `skipped`, in the return value and in `gguf/verification.json`.

A complete final-hf (or gguf/) made from the same adapter, base and settings is reused. On CUDA the
heavy part runs in a child process so its GPU memory is freed when it ends:

    python -m titlegen.tasks.merge SPEC.json        # what the task runs; SPEC as in `_build_spec`
"""

import gc
import hashlib
import json
import logging
import math
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from titlegen import gguf as gguf_lib
from titlegen.params import PublishParams
from titlegen.prompt import END_OF_TURN, chat_template, generation_prompt, prompt_messages
from titlegen.runs import atomic_dir, atomic_write_json, file_sha256, fingerprint, is_complete, read_jsonl, slug
from titlegen.subproc import python_module, run_logged

log = logging.getLogger(__name__)


class MergeVerificationError(RuntimeError):
    """final-hf or a GGUF does not reproduce the adapter model's titles; the message says where."""


class NotEnoughDiskSpace(OSError):
    """The run folder's disk cannot hold final-hf and the GGUF files; the message says what to change."""


# ---------------------------------------------------------------- inputs


def verification_articles(split_dir: str | Path, n: int) -> list[str]:
    """The first `n` article bodies of `validation.jsonl` (file order: fixed by the split's seed)."""
    path = Path(split_dir) / "validation.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: the split stage writes it; re-run the flow from the split stage.")
    rows = read_jsonl(path)[:n]
    if not rows:
        raise ValueError(f"{path} is empty: merge verification needs at least one validation article.")
    articles = []
    for i, row in enumerate(rows):
        text = row.get("input", row.get("content"))
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{path} row {i} has no article text under `input` (or `content`).")
        articles.append(text)
    return articles


def source_fingerprint(adapter_dir: str | Path, base_model_dir: str, publish: PublishParams) -> str:
    """What final-hf is a function of: the adapter's bytes, the base, the dtype and the chat template."""
    adapter_dir = Path(adapter_dir)
    files = {}
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        if not (adapter_dir / name).exists():
            raise FileNotFoundError(f"{adapter_dir / name} is missing: adapter_dir must be a PEFT save_pretrained folder (the fine-tune stage's output).")
        files[name] = file_sha256(adapter_dir / name)
    return fingerprint({
        "adapter": files, "base": str(base_model_dir), "dtype": publish.merged_dtype,
        "shard": publish.max_shard_size, "chat_template": hashlib.sha256(chat_template().encode()).hexdigest(),
    }, 16)


# Bytes per parameter of what merge writes: final-hf in its dtype, and each GGUF type (Q8_0 stores
# 32 int8 weights plus one fp16 scale per block). Measured on Gemma 3 270M: final-hf 536 MB,
# F16 543 MB, Q8_0 292 MB (bench/results/merge_export.json).
BYTES_PER_PARAM = {"bfloat16": 2.0, "float16": 2.0, "float32": 4.0, "f16": 2.0, "bf16": 2.0, "f32": 4.0, "q8_0": 34 / 32}


def checkpoint_parameters(folder: str | Path) -> tuple[int, str | None]:
    """(parameter count, widest floating dtype) of a folder's *.safetensors, read from their headers only."""
    from safetensors import safe_open

    count, dtypes = 0, set()
    for f in sorted(Path(folder).glob("*.safetensors")):
        with safe_open(str(f), framework="numpy") as st:
            for key in st.keys():
                tensor = st.get_slice(key)
                count += math.prod(tensor.get_shape())
                dtypes.add(tensor.get_dtype())
    widest = next((d for d in ("F32", "BF16", "F16") if d in dtypes), None)
    return count, widest


def disk_needed(base_model_dir: str | Path, publish: PublishParams, final_hf: bool, gguf: bool) -> dict[str, int]:
    """Bytes that merge is about to write, per output (`final-hf`, `gguf/<type>`); {} when the base size is unknown.

    An upper bound: the base's vision and audio towers count although Gemma 3n's GGUF leaves them out."""
    params, stored = checkpoint_parameters(base_model_dir)
    if not params:
        return {}
    dtype = merged_dtype_name(publish.merged_dtype, {"F16": "float16", "BF16": "bfloat16", "F32": "float32"}.get(stored or ""))
    out = {"final-hf": int(params * BYTES_PER_PARAM[dtype])} if final_hf else {}
    if gguf:
        out |= {f"gguf/{t}": int(params * BYTES_PER_PARAM[t]) for t in publish.gguf_types}
    return out


def check_disk_space(run: Path, needed: dict[str, int]) -> None:
    """Fail before any work when the run folder's disk cannot take `needed` (a full disk otherwise stops the GGUF conversion minutes in)."""
    if not needed:
        return
    probe = next(p for p in (run, *run.parents) if p.exists())
    free = shutil.disk_usage(probe).free
    total = sum(needed.values())
    if total > free:
        types = [k.split("/", 1)[1] for k in needed if k.startswith("gguf/")]
        parts = ", ".join(f"{k} ~{v / 1e9:.1f} GB" for k, v in needed.items())
        raise NotEnoughDiskSpace(
            f"merge needs about {total / 1e9:.1f} GB free on the disk of {run} ({parts}) but {free / 1e9:.1f} GB is free. "
            "Free space there, set output_root to a larger disk, or export fewer GGUF types "
            f"(publish.gguf_types; this run converts {types})."
        )


def _build_spec(adapter_dir, base_model_dir, out_dir, articles, max_title_chars, publish, source) -> dict:
    return {
        "adapter_dir": str(adapter_dir), "base_model_dir": str(base_model_dir), "out_dir": str(out_dir),
        "articles": articles, "max_title_chars": max_title_chars, "max_new_tokens": max_title_chars + 8,
        "merged_dtype": publish.merged_dtype, "max_shard_size": publish.max_shard_size,
        "tie_margin": publish.verify_tie_margin, "source": source,
    }


# ---------------------------------------------------------------- the heavy part (in process on CPU, child on CUDA)


def _greedy(model, tokenizer, text: str, max_new_tokens: int, eos_ids: list[int], keep_first_logits: bool = False) -> dict:
    """Greedy title for one rendered prompt, with each step's top-2 logit margin and token text offsets."""
    import torch

    enc = tokenizer(text, return_tensors="pt", add_special_tokens=False).to(model.device)
    with torch.inference_mode():
        out = model.generate(
            **enc, do_sample=False, max_new_tokens=max_new_tokens, eos_token_id=eos_ids,
            pad_token_id=tokenizer.pad_token_id, output_scores=True, return_dict_in_generate=True,
            top_k=None, top_p=None, temperature=None,
        )
    ids = out.sequences[0, enc["input_ids"].shape[1]:].tolist()
    scores = torch.stack(out.scores)[:, 0].float()
    top = scores.topk(2, dim=-1)
    body = [t for t in ids if t not in eos_ids]
    raw = tokenizer.decode(body, skip_special_tokens=True)
    result = {
        "ids": ids,
        "title": raw.strip(),
        "raw_text": raw,
        "margins": (top.values[:, 0] - top.values[:, 1]).tolist(),
        "second_ids": top.indices[:, 1].tolist(),
        "prefix_chars": [len(tokenizer.decode(body[: k + 1], skip_special_tokens=True)) for k in range(len(ids))],
        "prompt_tokens": int(enc["input_ids"].shape[1]),
    }
    if keep_first_logits:
        result["first_logits"] = scores[0].cpu()
    return result


def _divergence(ref: dict, ids: list[int], tie_margin: float) -> dict | None:
    """Where `ids` leaves the reference's greedy ids; None when equal. `tie`: a near-tie there (runner-up taken)."""
    if ids == ref["ids"]:
        return None
    step = next(k for k, (a, b) in enumerate(zip(ref["ids"] + [-1], ids + [-2])) if a != b)
    margin = ref["margins"][step] if step < len(ref["margins"]) else None
    tie = margin is not None and margin <= tie_margin and ids[step:step + 1] == ref["second_ids"][step:step + 1]
    return {"step": step, "margin": margin, "tie": tie}


def _compare_titles(reference: list[dict], merged: list[dict], tie_margin: float) -> dict:
    rows = []
    max_diff = 0.0
    for i, (ref, new) in enumerate(zip(reference, merged)):
        diff = float((ref.pop("first_logits") - new.pop("first_logits")).abs().max())
        max_diff = max(max_diff, diff)
        row = {"article": i, "adapter_model": ref["title"], "final_hf": new["title"], "first_token_max_abs_logit_diff": diff}
        d = _divergence(ref, new["ids"], tie_margin)
        if d is None:
            row["result"] = "equal"
        else:
            row.update(result="near-tie" if d["tie"] else "MISMATCH", divergence_token=d["step"], adapter_model_margin=d["margin"])
        rows.append(row)
    return _summarize({
        "max_first_token_abs_logit_diff": max_diff,
        "rule": f"greedy token ids equal; a difference passes only where the adapter model's top-2 logits were within {tie_margin} and final-hf took the runner-up",
        "articles": rows,
    })


def _summarize(comparison: dict) -> dict:
    """(Re)count the per-article results; passed = no MISMATCH and, when checked, final-hf's tensors identical."""
    rows = comparison["articles"]
    count = {r: sum(a["result"] == r for a in rows) for r in ("equal", "near-tie", "rounding-sensitive", "MISMATCH")}
    tensors_ok = comparison.get("tensors", {}).get("identical", True) and comparison.get("merge_tensors", {}).get("ok", True)
    head = {
        "passed": count["MISMATCH"] == 0 and tensors_ok, "n": len(rows), "equal": count["equal"], "near_ties": count["near-tie"],
        "rounding_sensitive": count["rounding-sensitive"], "mismatches": count["MISMATCH"],
    }
    return {**head, **{k: v for k, v in comparison.items() if k not in head}}


def _tensor_digests(model, dtype) -> dict[str, str]:
    """sha256 of every state-dict tensor (shape, dtype and bytes), floating ones as stored in `dtype`."""
    import torch

    digests = {}
    for name, t in model.state_dict().items():
        t = t.detach()
        if t.is_floating_point():
            t = t.to(dtype)
        elif t.dtype == torch.bool:
            t = t.to(torch.uint8)
        h = hashlib.sha256(f"{tuple(t.shape)}|{t.dtype}|".encode())
        h.update(t.contiguous().reshape(-1).view(torch.uint8).cpu().numpy())
        digests[name] = h.hexdigest()
    return digests


def _compare_tensors(expected: dict[str, str], found: dict[str, str]) -> dict:
    """final-hf as plain transformers loads it vs the merged model before saving: same names, bit-identical values."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    different = sorted(k for k in set(expected) & set(found) if expected[k] != found[k])
    return {
        "identical": not (missing or unexpected or different), "checked": len(expected),
        "missing": missing[:20], "unexpected": unexpected[:20], "different": different[:20],
        "counts": {"missing": len(missing), "unexpected": len(unexpected), "different": len(different)},
    }


def _lora_modules(peft_model, save_dtype) -> dict[str, int]:
    """LoRA-wrapped modules (names as in the merged model) -> how many elements of their weight the merge should
    change once rounded to `save_dtype` (W + ΔW in float32, from PEFT's own ΔW). A young adapter's ΔW can round away."""
    import torch
    from peft.tuners.lora import LoraLayer

    out = {}
    with torch.no_grad():
        for name, module in peft_model.base_model.model.named_modules():
            if isinstance(module, LoraLayer):
                w = module.get_base_layer().weight
                delta = sum(module.get_delta_weight(a).float() for a in module.active_adapters if a in module.scaling)
                out[name] = int(((w.float() + delta).to(save_dtype) != w.to(save_dtype)).sum())
    return out


def _check_merge(base: dict[str, str], merged: dict[str, str], lora: dict[str, int], min_changed: int = 16) -> dict:
    """The merged model vs the base it came from, tensor by tensor: same names; every LoRA-wrapped weight that the
    merge should visibly change (>= `min_changed` elements after rounding) changed; everything else (biases, norms,
    embeddings, AltUp/laurel/per-layer-input modules, vision and audio towers) bit-identical to the base.
    Catches a LoRA that merge_and_unload left out, or a tensor it touched that it should not have."""
    base = {k.replace(".base_layer.", "."): v for k, v in base.items() if ".lora_" not in k}
    targeted = {f"{m}.weight" for m in lora}
    changing = {f"{m}.weight" for m, n in lora.items() if n >= min_changed}
    missing = sorted(set(base) - set(merged))
    unexpected = sorted(set(merged) - set(base))
    unchanged = sorted(k for k in changing & set(merged) if merged[k] == base.get(k))
    altered = sorted(k for k in (set(base) & set(merged)) - targeted if merged[k] != base[k])
    return {
        "ok": not (missing or unexpected or unchanged or altered), "tensors": len(merged), "lora_weights": len(targeted),
        "lora_weights_expected_to_change": len(changing), "lora_weights_changed": len(changing) - len(unchanged),
        "missing": missing[:20], "unexpected": unexpected[:20], "lora_not_merged": unchanged[:20], "altered_without_lora": altered[:20],
    }


def _teacher_forced_logits(model, tokenizer, text: str, ids: list[int], step: int):
    """The model's logits (float32, CPU) for token `step` of `ids` when fed the prompt plus ids[:step]."""
    import torch

    prompt = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
    full = torch.cat([prompt, torch.tensor([ids[:step]], dtype=prompt.dtype)], dim=1)
    with torch.inference_mode():
        return model(input_ids=full.to(model.device), logits_to_keep=1).logits[0, -1].float().cpu()


def _precision_probe(load_adapter_model, tokenizer, prompts, reference, results, comparison, compute_dtype) -> dict:
    """For each MISMATCH: is final-hf's token within the adapter model's own arithmetic noise at that step?

    At the first differing token the adapter model is run twice along its own greedy path: in the compute
    dtype and in the other precision (bf16 autocast when computing in float32, float32 when computing in
    bf16). `noise` is the largest |Δlogit| between the two; `gap` is how far final-hf's token lies below
    the adapter model's top token. A per-logit change of `noise` can reorder two logits up to 2 × noise
    apart, so with gap <= 2 × noise the token is decided by rounding, not by the weights (near-uniform
    logits: random or untrained weights) and the article is `rounding-sensitive`. A trained model's top
    token stands far above that noise (peaked logits), so its MISMATCH stands. Only called when final-hf's
    tensors equal the merged model's.
    """
    import contextlib

    import torch

    rows = [r for r in comparison["articles"] if r["result"] == "MISMATCH"]
    model = load_adapter_model(compute_dtype)
    refs = {r["article"]: _teacher_forced_logits(model, tokenizer, prompts[r["article"]], reference[r["article"]]["ids"], r["divergence_token"])
            for r in rows}
    if compute_dtype == torch.float32:
        probe_name, context = "bfloat16", torch.autocast(model.device.type, dtype=torch.bfloat16)
    else:
        probe_name, context = "float32", contextlib.nullcontext()
        model = model.to(torch.float32)  # the base was bf16 and the adapter float32: exact
    with context:
        probes = {r["article"]: _teacher_forced_logits(model, tokenizer, prompts[r["article"]], reference[r["article"]]["ids"], r["divergence_token"])
                  for r in rows}
    del model
    gc.collect()
    for row in rows:
        i, k = row["article"], row["divergence_token"]
        a, b = refs[i], probes[i]
        new_ids = results[i]["ids"]
        noise = float((a - b).abs().max())
        gap = float(a.max() - a[new_ids[k]]) if k < len(new_ids) else None
        sensitive = gap is not None and gap <= 2 * noise
        row["precision_probe"] = {"dtype": probe_name, "noise": noise, "gap": gap, "within_noise": sensitive}
        if sensitive:
            row["result"] = "rounding-sensitive"
    comparison["rule"] += (
        f"; or where final-hf's token lies within 2 x the adapter model's own {str(compute_dtype).removeprefix('torch.')} vs {probe_name} "
        "|Δlogit| below its top token (rounding-sensitive: near-uniform logits); final-hf's tensors must equal the merged model's bit for bit"
    )
    return _summarize(comparison)


def merged_dtype_name(setting: str, base_dtype: str | None) -> str:
    """`publish.merged_dtype` resolved: an explicit dtype as set; `auto` keeps the base's own 16-bit dtype, else bfloat16."""
    if setting != "auto":
        return setting
    return base_dtype if base_dtype in ("bfloat16", "float16") else "bfloat16"


def _resolve_dtype(name: str, config) -> "Any":
    import torch

    text = getattr(config, "text_config", None) or config
    current = getattr(text, "dtype", None) or getattr(config, "dtype", None)
    return getattr(torch, merged_dtype_name(name, str(current).removeprefix("torch.") if current else None))


def build_final_hf(spec: dict) -> dict:
    """Merge, save into `spec["out_dir"]` (a fresh temporary folder), reload with plain transformers, compare.

    Returns the report that becomes export.json; raises MergeVerificationError on a mismatch.
    """
    import torch
    import transformers
    from peft import PeftModel
    from transformers import AutoConfig, AutoTokenizer

    out = Path(spec["out_dir"])
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    base = spec["base_model_dir"]
    adapter = Path(spec["adapter_dir"])
    config = AutoConfig.from_pretrained(base)
    arch = (config.architectures or ["AutoModelForCausalLM"])[0]
    model_cls = getattr(transformers, arch)
    save_dtype = _resolve_dtype(spec["merged_dtype"], config)
    # CPU computes in float32 (bf16 matmuls there are slow and coarse); both sides see the same
    # save-dtype-rounded base weights, so the only difference left is the rounding of W + BA.
    compute_dtype = save_dtype if cuda else torch.float32
    timings: dict[str, float] = {}

    t = time.perf_counter()
    tok_source = adapter if (adapter / "tokenizer_config.json").exists() else Path(base)
    tokenizer = AutoTokenizer.from_pretrained(str(tok_source))
    tokenizer.chat_template = chat_template()

    def load_adapter_model(dtype):
        # base rounded to the save dtype (what final-hf starts from), computed in `dtype`, adapter unmerged
        m = model_cls.from_pretrained(base, dtype=save_dtype).to(device=device, dtype=dtype)
        return PeftModel.from_pretrained(m, str(adapter)).eval()

    model = load_adapter_model(compute_dtype)
    timings["load_base_and_adapter_s"] = time.perf_counter() - t

    eot = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    eos_ids = sorted({i for i in (tokenizer.eos_token_id, eot) if i is not None})
    prompts = [
        tokenizer.apply_chat_template(prompt_messages(a, spec["max_title_chars"]), tokenize=False, add_generation_prompt=True)
        for a in spec["articles"]
    ]
    t = time.perf_counter()
    reference = [_greedy(model, tokenizer, p, spec["max_new_tokens"], eos_ids, True) for p in prompts]
    timings["reference_generate_s"] = time.perf_counter() - t

    t = time.perf_counter()
    lora = _lora_modules(model, save_dtype)
    base_tensors = _tensor_digests(model.base_model.model, save_dtype)
    merged = model.merge_and_unload().to(dtype=save_dtype)
    merged.config.dtype = save_dtype
    expected_tensors = _tensor_digests(merged, save_dtype)
    merge_check = _check_merge(base_tensors, expected_tensors, lora)
    merged.generation_config.eos_token_id = eos_ids
    if tokenizer.pad_token_id is not None:
        merged.generation_config.pad_token_id = tokenizer.pad_token_id
    merged.save_pretrained(out, max_shard_size=spec["max_shard_size"])
    tokenizer.save_pretrained(out)
    # transformers 5 saves Gemma's fast tokenizer only; the converter builds a sentencepiece vocab
    # when tokenizer.model is present, so keep it where the source had one.
    for src in (tok_source, Path(base)):
        if (src / "tokenizer.model").exists() and not (out / "tokenizer.model").exists():
            shutil.copy2(src / "tokenizer.model", out / "tokenizer.model")
    timings["merge_and_save_s"] = time.perf_counter() - t
    del model, merged
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()

    t = time.perf_counter()
    kv = gguf_lib.restore_kv_shared_tensors(out, base)
    timings["restore_kv_shared_s"] = time.perf_counter() - t

    # The check: a user's plain transformers load of exactly what was written.
    t = time.perf_counter()
    loaded_tok = AutoTokenizer.from_pretrained(str(out))
    final = getattr(transformers, arch).from_pretrained(str(out))
    tensors = _compare_tensors(expected_tensors, _tensor_digests(final, save_dtype))
    final = final.to(device=device, dtype=compute_dtype).eval()
    gen_eos = final.generation_config.eos_token_id
    gen_eos = sorted(gen_eos if isinstance(gen_eos, list) else [gen_eos])
    if eot not in gen_eos:
        raise MergeVerificationError(f"final-hf generation_config eos_token_id {gen_eos} lacks {END_OF_TURN} ({eot}).")
    final_prompts = [
        loaded_tok.apply_chat_template(prompt_messages(a, spec["max_title_chars"]), tokenize=False, add_generation_prompt=True)
        for a in spec["articles"]
    ]
    if final_prompts != prompts:
        raise MergeVerificationError("final-hf's saved chat template renders a different prompt from titlegen's template.")
    timings["load_final_hf_s"] = time.perf_counter() - t
    t = time.perf_counter()
    results = [_greedy(final, loaded_tok, p, spec["max_new_tokens"], gen_eos, True) for p in final_prompts]
    timings["final_hf_generate_s"] = time.perf_counter() - t
    del final
    gc.collect()

    comparison = _compare_titles(reference, results, spec["tie_margin"])
    comparison = _summarize({**comparison, "merge_tensors": merge_check, "tensors": tensors})
    if comparison["mismatches"] and tensors["identical"] and merge_check["ok"]:
        t = time.perf_counter()
        comparison = _precision_probe(load_adapter_model, tokenizer, prompts, reference, results, comparison, compute_dtype)
        timings["precision_probe_s"] = time.perf_counter() - t
    for article, r in zip(spec["articles"], results):
        r["gguf_prompt"] = generation_prompt(article, spec["max_title_chars"])
        r.pop("ids"), r.pop("second_ids")
    multimodal = any(k in config.to_dict() for k in ("vision_config", "audio_config"))
    report = {
        "source_fingerprint": spec["source"],
        "base_model": base,
        "adapter_dir": str(adapter),
        "architecture": arch,
        "dtype": str(save_dtype).removeprefix("torch."),
        "modalities": (
            "text fine-tuned; vision and audio towers copied unchanged from the base (the GGUF holds the text model only)"
            if multimodal else "text only"
        ),
        "kv_shared_tensors": kv,
        "device": device,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": __import__("peft").__version__},
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
        "verification": comparison,
        "final_hf_titles": results,
    }
    return report


def _worker(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    try:
        report = build_final_hf(spec)
    except MergeVerificationError as e:
        report = {"error": str(e)}
    atomic_write_json(Path(spec_path).with_suffix(".result.json"), report)
    return 0


# ---------------------------------------------------------------- orchestration


def _readable(folder: Path) -> None:
    """mkdtemp makes 0700 folders; final-hf and gguf/ are read by other users (containers, the upload CLI)."""
    folder.chmod(0o755)
    for p in folder.iterdir():
        if p.is_file():
            p.chmod(0o644)


def _files_report(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")}


def _write_final_hf(spec: dict, final: Path, run: Path, logger) -> dict:
    import torch

    with atomic_dir(final) as tmp:
        spec = {**spec, "out_dir": str(tmp)}
        if torch.cuda.is_available():
            spec_path = run / ".merge-spec.json"
            atomic_write_json(spec_path, spec)
            run_logged(python_module("titlegen.tasks.merge", str(spec_path)), logger)
            report = json.loads(spec_path.with_suffix(".result.json").read_text())
            if "error" in report:
                raise MergeVerificationError(report["error"])
        else:
            report = build_final_hf(spec)
        verification = report["verification"]
        atomic_write_json(run / "merge-verification.json", verification)
        check = verification.get("merge_tensors", {"ok": True})
        if not check["ok"]:
            raise MergeVerificationError(
                f"The merge did not fold the adapter in as expected: {check['lora_weights_changed']}/"
                f"{check['lora_weights_expected_to_change']} LoRA-wrapped weights changed; not merged: {check['lora_not_merged'][:3]}, changed without a LoRA: "
                f"{check['altered_without_lora'][:3]}, missing: {check['missing'][:3]}, unexpected: {check['unexpected'][:3]}. "
                f"Details in {run / 'merge-verification.json'}; no final-hf was written."
            )
        tensors = verification.get("tensors", {"identical": True})
        if not tensors["identical"]:
            c = tensors["counts"]
            raise MergeVerificationError(
                f"final-hf does not reproduce the adapter model: loaded with plain transformers, its tensors differ from the "
                f"merged model's ({c['missing']} missing, {c['unexpected']} unexpected, {c['different']} different; first: "
                f"{(tensors['missing'] + tensors['different'] + tensors['unexpected'])[:3]}). "
                f"Details in {run / 'merge-verification.json'}; no final-hf was written."
            )
        if not verification["passed"]:
            bad = [a for a in verification["articles"] if a["result"] == "MISMATCH"]
            raise MergeVerificationError(
                f"final-hf does not reproduce the adapter model: {len(bad)}/{verification['n']} greedy titles differ "
                f"beyond a near-tie (first: adapter {bad[0]['adapter_model']!r} vs final-hf {bad[0]['final_hf']!r}). "
                f"Details in {run / 'merge-verification.json'}; no final-hf was written."
            )
        report["files"] = _files_report(tmp)
        atomic_write_json(tmp / "export.json", {k: v for k, v in report.items() if k != "final_hf_titles"})
        atomic_write_json(tmp / "verification-titles.json", report["final_hf_titles"])
        _readable(tmp)
    return report


def _reusable(folder: Path, source: str) -> dict | None:
    try:
        if is_complete(folder):
            meta = json.loads((folder / "export.json").read_text())
            if meta.get("source_fingerprint") == source:
                return meta
    except (OSError, ValueError):
        pass
    return None


def merge(
    adapter_dir: str,
    base_model_dir: str,
    split_dir: str,
    run_dir: str,
    max_title_chars: int,
    publish: PublishParams | None = None,
    ollama_host: str | None = None,
    logger: logging.Logger | logging.LoggerAdapter | None = None,
) -> dict[str, Any]:
    """Write and verify `<run>/final-hf` and `<run>/gguf/*.gguf`; returns paths and verification results.

    Keys: `final_hf` (folder), `gguf` ({type: file}), `verification` (final-hf vs adapter model),
    `gguf_verification` (`status` passed/failed/skipped, per type), `reused` ({final_hf, gguf}).
    """
    publish = publish or PublishParams()
    logger = logger or log
    run = Path(run_dir)
    final = run / "final-hf"
    source = source_fingerprint(adapter_dir, base_model_dir, publish)
    articles = verification_articles(split_dir, publish.verify_articles)

    meta = _reusable(final, source)
    reused_final = meta is not None
    gguf_dir = run / "gguf"
    stem = f"titlegen-{slug(str(base_model_dir))}"
    gguf_source = fingerprint({"final_hf": source, "types": sorted(publish.gguf_types), "converter": gguf_lib.CONVERTER_REQUIREMENT}, 16)
    gmeta = _reusable(gguf_dir, gguf_source)
    reused_gguf = gmeta is not None
    check_disk_space(run, disk_needed(base_model_dir, publish, final_hf=not reused_final, gguf=not reused_gguf))
    if reused_final:
        logger.info("final-hf for this adapter is complete at %s: reusing it", final)
    else:
        spec = _build_spec(adapter_dir, base_model_dir, final, articles, max_title_chars, publish, source)
        meta = _write_final_hf(spec, final, run, logger)
        v = meta["verification"]
        logger.info("final-hf written and verified: %d/%d titles equal, %d near-ties, %d rounding-sensitive, in %s",
                    v["equal"], v["n"], v["near_ties"], v.get("rounding_sensitive", 0), final)
        if v.get("rounding_sensitive"):
            logger.warning(
                "%d/%d verification titles differ from the adapter model's only within its own float32-vs-bf16 rounding "
                "noise: its logits are near-uniform (random or untrained weights?), so there final-hf is verified by its "
                "tensors alone. A trained adapter's titles do not do that.", v["rounding_sensitive"], v["n"])
    references = json.loads((final / "verification-titles.json").read_text())

    if not reused_gguf:
        gmeta = {"source_fingerprint": gguf_source, "converter": gguf_lib.CONVERTER_REQUIREMENT, "files": {}, "convert_s": {}}
        with atomic_dir(gguf_dir) as tmp:
            for gguf_type in publish.gguf_types:
                name = gguf_lib.gguf_file_name(stem, gguf_type)
                logger.info("Converting final-hf to %s", name)
                gmeta["convert_s"][gguf_type] = round(gguf_lib.convert(final, tmp / name, gguf_type, logger), 2)
                gmeta["files"][gguf_type] = {"name": name, "bytes": (tmp / name).stat().st_size, "sha256": file_sha256(tmp / name)}
            atomic_write_json(tmp / "export.json", gmeta)
            _readable(tmp)
    gguf_files = {t: str(gguf_dir / f["name"]) for t, f in gmeta["files"].items()}

    vpath = gguf_dir / "verification.json"
    gver = None
    if vpath.exists():
        previous = json.loads(vpath.read_text())
        if previous.get("source_fingerprint") == gguf_source and previous.get("status") == "passed":
            gver = previous
    if gver is None:
        if publish.verify_gguf:
            gver = gguf_lib.verify_gguf_files(
                gguf_files, references, ollama_host, publish.verify_tie_margin, publish.min_q8_0_agreement,
                max_title_chars + 8, [END_OF_TURN], stem, logger,
            )
        else:
            gver = {"status": "skipped", "reason": "publish.verify_gguf is false", "types": {}}
        gver["source_fingerprint"] = gguf_source
        atomic_write_json(vpath, gver)
    if gver["status"] == "failed":
        bad = {t: e for t, e in gver["types"].items() if e.get("status") == "failed"}
        entry = next(iter(bad.values()))
        why = entry.get("tokenization_differs") or entry["mismatches"][:1]
        raise MergeVerificationError(
            f"GGUF verification failed for {', '.join(bad)} on {gver['server']}: "
            f"{entry['equal']}/{entry['n']} titles equal final-hf; {why}. Details in {vpath}."
        )
    return {
        "final_hf": str(final),
        "gguf": gguf_files,
        "export_json": str(final / "export.json"),
        "verification": {k: v for k, v in meta["verification"].items() if k != "articles"},
        "gguf_verification": gver,
        "reused": {"final_hf": reused_final, "gguf": reused_gguf},
    }


def _artifact(result: dict) -> str:
    v, g = result["verification"], result["gguf_verification"]
    lines = [
        "# merge + GGUF export", "",
        f"final-hf: `{result['final_hf']}` ({'reused' if result['reused']['final_hf'] else 'written'})", "",
        f"final-hf vs adapter model: **{'passed' if v['passed'] else 'FAILED'}**: {v['equal']}/{v['n']} greedy titles equal, "
        f"{v['near_ties']} near-ties, {v.get('rounding_sensitive', 0)} rounding-sensitive; max first-token |Δlogit| "
        f"{v['max_first_token_abs_logit_diff']:.4f}", "",
        f"GGUF on Ollama: **{g['status'].upper()}**" + (f" ({g.get('reason')})" if g["status"] == "skipped" else ""), "",
        "| type | file | status | equal to final-hf |", "| --- | --- | --- | --- |",
    ]
    for t, path in result["gguf"].items():
        e = g.get("types", {}).get(t, {})
        agree = f"{e['equal']}/{e['n']}" if "n" in e else "-"
        lines.append(f"| {t} | `{Path(path).name}` | {e.get('status', g['status'])} | {agree} |")
    return "\n".join(lines)


@task(name="merge", task_run_name="merge-export")
def merge_task(
    adapter_dir: str,
    base_model_dir: str,
    split_dir: str,
    run_dir: str,
    max_title_chars: int,
    publish: PublishParams,
    ollama_host: str | None = None,
) -> dict:
    """Merge the adapter into `final-hf`, export GGUFs, verify both (see `merge`)."""
    result = merge(adapter_dir, base_model_dir, split_dir, run_dir, max_title_chars, publish, ollama_host, get_run_logger())
    create_markdown_artifact(key="titlegen-merge", markdown=_artifact(result), description="Merge and GGUF verification")
    return result


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1]))
