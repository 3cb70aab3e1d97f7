"""The merge worker: fold the LoRA adapter into the base, save final-hf, reload it, verify (see `titlegen.merge_checks`).

`build_final_hf(spec)` does the heavy part. The merge stage (`tasks/merge.py`) calls it in process
on CPU and, on CUDA, in a child so the GPU memory is freed when the child ends:

    python -m titlegen.merge_worker SPEC.json    # writes SPEC.result.json (the report, or {"error": ...})

SPEC is a `titlegen.records.MergeSpec`, built by `tasks.merge.build_spec`: `adapter_dir`,
`base_model_dir` (a local folder where there is one), `base_model` (the name as given), `out_dir`
(a fresh temporary folder), `articles`, `max_title_chars`, `max_new_tokens`, `merged_dtype`,
`max_shard_size`, `tie_margin`, `source`.
"""

import gc
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from titlegen import gguf as gguf_lib
from titlegen.merge_checks import (
    MergeVerificationError,
    check_merge,
    compare_tensors,
    compare_titles,
    greedy,
    lora_modules,
    precision_probe,
    summarize,
    tensor_digests,
)
from titlegen.prompt import END_OF_TURN, chat_template, generation_prompt, prompt_messages
from titlegen.records import MergeSpec
from titlegen.runs import atomic_write_json


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


def build_final_hf(spec: MergeSpec) -> dict:
    """Merge, save into `spec.out_dir` (a fresh temporary folder), reload with plain transformers, compare.

    Returns the report that becomes export.json; raises MergeVerificationError on a mismatch.
    """
    import torch
    import transformers
    from peft import PeftModel
    from transformers import AutoConfig, AutoTokenizer

    out = Path(spec.out_dir)
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    base = spec.base_model_dir
    adapter = Path(spec.adapter_dir)
    config = AutoConfig.from_pretrained(base)
    arch = (config.architectures or ["AutoModelForCausalLM"])[0]
    model_cls = getattr(transformers, arch)
    save_dtype = _resolve_dtype(spec.merged_dtype, config)
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
        tokenizer.apply_chat_template(prompt_messages(a, spec.max_title_chars), tokenize=False, add_generation_prompt=True)
        for a in spec.articles
    ]
    t = time.perf_counter()
    reference = [greedy(model, tokenizer, p, spec.max_new_tokens, eos_ids, True) for p in prompts]
    timings["reference_generate_s"] = time.perf_counter() - t

    t = time.perf_counter()
    lora = lora_modules(model, save_dtype)
    base_tensors = tensor_digests(model.base_model.model, save_dtype)
    merged = model.merge_and_unload().to(dtype=save_dtype)
    merged.config.dtype = save_dtype
    expected_tensors = tensor_digests(merged, save_dtype)
    merge_check = check_merge(base_tensors, expected_tensors, lora)
    merged.generation_config.eos_token_id = eos_ids
    if tokenizer.pad_token_id is not None:
        merged.generation_config.pad_token_id = tokenizer.pad_token_id
    merged.save_pretrained(out, max_shard_size=spec.max_shard_size)
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
    tensors = compare_tensors(expected_tensors, tensor_digests(final, save_dtype))
    final = final.to(device=device, dtype=compute_dtype).eval()
    gen_eos = final.generation_config.eos_token_id
    gen_eos = sorted(gen_eos if isinstance(gen_eos, list) else [gen_eos])
    if eot not in gen_eos:
        raise MergeVerificationError(f"final-hf generation_config eos_token_id {gen_eos} lacks {END_OF_TURN} ({eot}).")
    final_prompts = [
        loaded_tok.apply_chat_template(prompt_messages(a, spec.max_title_chars), tokenize=False, add_generation_prompt=True)
        for a in spec.articles
    ]
    if final_prompts != prompts:
        raise MergeVerificationError("final-hf's saved chat template renders a different prompt from titlegen's template.")
    timings["load_final_hf_s"] = time.perf_counter() - t
    t = time.perf_counter()
    results = [greedy(final, loaded_tok, p, spec.max_new_tokens, gen_eos, True) for p in final_prompts]
    timings["final_hf_generate_s"] = time.perf_counter() - t
    del final
    gc.collect()

    comparison = compare_titles(reference, results, spec.tie_margin)
    comparison = summarize({**comparison, "merge_tensors": merge_check, "tensors": tensors})
    if comparison["mismatches"] and tensors["identical"] and merge_check["ok"]:
        t = time.perf_counter()
        comparison = precision_probe(load_adapter_model, tokenizer, prompts, reference, results, comparison, compute_dtype)
        timings["precision_probe_s"] = time.perf_counter() - t
    for article, r in zip(spec.articles, results):
        r["gguf_prompt"] = generation_prompt(article, spec.max_title_chars)
        r.pop("ids"), r.pop("second_ids")
    multimodal = any(k in config.to_dict() for k in ("vision_config", "audio_config"))
    report = {
        "source_fingerprint": spec.source,
        "base_model": spec.base_model or base,
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


def main(spec_path: str) -> int:
    """Run `build_final_hf` on SPEC.json; the report (or the verification error) goes to SPEC.result.json."""
    spec = MergeSpec.read(spec_path)
    try:
        report = build_final_hf(spec)
    except MergeVerificationError as e:
        report = {"error": str(e)}
    atomic_write_json(Path(spec_path).with_suffix(".result.json"), report)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
