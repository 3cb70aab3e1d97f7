"""merge verification: does final-hf reproduce the adapter model, and did the merge fold in every LoRA?

Used by the merge worker (`titlegen.merge_worker`), which runs these on the adapter model and on
final-hf as plain transformers loads it, and by the merge stage (`tasks/merge.py`), which turns a
failed report into `MergeVerificationError` (`raise_on_failure`). Two kinds of evidence:

- titles: greedy token ids of base+adapter vs final-hf (`greedy`, `compare_titles`); a difference
  passes only as a near-tie (the adapter model's top-2 logits within `tie_margin` and final-hf took
  the runner-up), or as `rounding-sensitive` (`precision_probe`: final-hf's token lies within twice
  the adapter model's own bf16-vs-float32 |Δlogit| of its top token, with tensors identical);
- tensors: sha256 of every tensor (`tensor_digests`): final-hf as loaded vs the merged model
  (`compare_tensors`), and the merged model vs its base (`check_merge`: every LoRA-wrapped weight
  that should change changed, nothing else did).

torch and peft are imported inside the functions that need them.
"""

import gc
import hashlib
from pathlib import Path


class MergeVerificationError(RuntimeError):
    """final-hf or a GGUF does not reproduce the adapter model's titles; the message says where."""


def greedy(model, tokenizer, text: str, max_new_tokens: int, eos_ids: list[int], keep_first_logits: bool = False) -> dict:
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


def divergence(ref: dict, ids: list[int], tie_margin: float) -> dict | None:
    """Where `ids` leaves the reference's greedy ids; None when equal. `tie`: a near-tie there (runner-up taken)."""
    if ids == ref["ids"]:
        return None
    step = next(k for k, (a, b) in enumerate(zip(ref["ids"] + [-1], ids + [-2])) if a != b)
    margin = ref["margins"][step] if step < len(ref["margins"]) else None
    tie = margin is not None and margin <= tie_margin and ids[step:step + 1] == ref["second_ids"][step:step + 1]
    return {"step": step, "margin": margin, "tie": tie}


def compare_titles(reference: list[dict], merged: list[dict], tie_margin: float) -> dict:
    rows = []
    max_diff = 0.0
    for i, (ref, new) in enumerate(zip(reference, merged)):
        diff = float((ref.pop("first_logits") - new.pop("first_logits")).abs().max())
        max_diff = max(max_diff, diff)
        row = {"article": i, "adapter_model": ref["title"], "final_hf": new["title"], "first_token_max_abs_logit_diff": diff}
        d = divergence(ref, new["ids"], tie_margin)
        if d is None:
            row["result"] = "equal"
        else:
            row.update(result="near-tie" if d["tie"] else "MISMATCH", divergence_token=d["step"], adapter_model_margin=d["margin"])
        rows.append(row)
    return summarize({
        "max_first_token_abs_logit_diff": max_diff,
        "rule": f"greedy token ids equal; a difference passes only where the adapter model's top-2 logits were within {tie_margin} and final-hf took the runner-up",
        "articles": rows,
    })


def summarize(comparison: dict) -> dict:
    """(Re)count the per-article results; passed = no MISMATCH and, when checked, final-hf's tensors identical."""
    rows = comparison["articles"]
    count = {r: sum(a["result"] == r for a in rows) for r in ("equal", "near-tie", "rounding-sensitive", "MISMATCH")}
    tensors_ok = comparison.get("tensors", {}).get("identical", True) and comparison.get("merge_tensors", {}).get("ok", True)
    head = {
        "passed": count["MISMATCH"] == 0 and tensors_ok, "n": len(rows), "equal": count["equal"], "near_ties": count["near-tie"],
        "rounding_sensitive": count["rounding-sensitive"], "mismatches": count["MISMATCH"],
    }
    return {**head, **{k: v for k, v in comparison.items() if k not in head}}


def tensor_digests(model, dtype) -> dict[str, str]:
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


def compare_tensors(expected: dict[str, str], found: dict[str, str]) -> dict:
    """final-hf as plain transformers loads it vs the merged model before saving: same names, bit-identical values."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    different = sorted(k for k in set(expected) & set(found) if expected[k] != found[k])
    return {
        "identical": not (missing or unexpected or different), "checked": len(expected),
        "missing": missing[:20], "unexpected": unexpected[:20], "different": different[:20],
        "counts": {"missing": len(missing), "unexpected": len(unexpected), "different": len(different)},
    }


def lora_modules(peft_model, save_dtype) -> dict[str, int]:
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


def check_merge(base: dict[str, str], merged: dict[str, str], lora: dict[str, int], min_changed: int = 16) -> dict:
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


def teacher_forced_logits(model, tokenizer, text: str, ids: list[int], step: int):
    """The model's logits (float32, CPU) for token `step` of `ids` when fed the prompt plus ids[:step]."""
    import torch

    prompt = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
    full = torch.cat([prompt, torch.tensor([ids[:step]], dtype=prompt.dtype)], dim=1)
    with torch.inference_mode():
        return model(input_ids=full.to(model.device), logits_to_keep=1).logits[0, -1].float().cpu()


def precision_probe(load_adapter_model, tokenizer, prompts, reference, results, comparison, compute_dtype) -> dict:
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
    refs = {r["article"]: teacher_forced_logits(model, tokenizer, prompts[r["article"]], reference[r["article"]]["ids"], r["divergence_token"])
            for r in rows}
    if compute_dtype == torch.float32:
        probe_name, context = "bfloat16", torch.autocast(model.device.type, dtype=torch.bfloat16)
    else:
        probe_name, context = "float32", contextlib.nullcontext()
        model = model.to(torch.float32)  # the base was bf16 and the adapter float32: exact
    with context:
        probes = {r["article"]: teacher_forced_logits(model, tokenizer, prompts[r["article"]], reference[r["article"]]["ids"], r["divergence_token"])
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
    return summarize(comparison)


def raise_on_failure(verification: dict, record: Path) -> None:
    """Raise `MergeVerificationError` naming what failed when `verification` (the worker's report) did not pass.

    Checked in order: the merge itself (`merge_tensors`), final-hf's tensors as loaded (`tensors`), the titles.
    `record` is where the full report was written (named in the message)."""
    check = verification.get("merge_tensors", {"ok": True})
    if not check["ok"]:
        raise MergeVerificationError(
            f"The merge did not fold the adapter in as expected: {check['lora_weights_changed']}/"
            f"{check['lora_weights_expected_to_change']} LoRA-wrapped weights changed; not merged: {check['lora_not_merged'][:3]}, changed without a LoRA: "
            f"{check['altered_without_lora'][:3]}, missing: {check['missing'][:3]}, unexpected: {check['unexpected'][:3]}. "
            f"Details in {record}; no final-hf was written."
        )
    tensors = verification.get("tensors", {"identical": True})
    if not tensors["identical"]:
        c = tensors["counts"]
        raise MergeVerificationError(
            f"final-hf does not reproduce the adapter model: loaded with plain transformers, its tensors differ from the "
            f"merged model's ({c['missing']} missing, {c['unexpected']} unexpected, {c['different']} different; first: "
            f"{(tensors['missing'] + tensors['different'] + tensors['unexpected'])[:3]}). "
            f"Details in {record}; no final-hf was written."
        )
    if not verification["passed"]:
        bad = [a for a in verification["articles"] if a["result"] == "MISMATCH"]
        raise MergeVerificationError(
            f"final-hf does not reproduce the adapter model: {len(bad)}/{verification['n']} greedy titles differ "
            f"beyond a near-tie (first: adapter {bad[0]['adapter_model']!r} vs final-hf {bad[0]['final_hf']!r}). "
            f"Details in {record}; no final-hf was written."
        )
