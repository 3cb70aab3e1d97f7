"""Check each exported GGUF on an Ollama server (llama.cpp inside) against final-hf's own titles.

Verification uploads each GGUF as a blob, creates a temporary model (the old `{"name", "modelfile"}`
form before 0.5.5, `files` after), generates greedily with `raw: true` on the exact prompts final-hf
was checked on, compares the titles and deletes the model again. An unreachable server makes the
result `skipped`, never `passed`.
"""

import logging
import time
from pathlib import Path
from typing import Any

from titlegen.ollama_client import OllamaClient, OllamaError, OllamaUnreachable, create_form, gguf_only_request

EXACT_TYPES = {"f16", "bf16", "f32"}

log = logging.getLogger(__name__)


def first_divergence(reference: dict, other_text: str) -> int:
    """The generation step of `reference` at which `other_text` stops agreeing with it."""
    common = 0
    ref_text = reference["raw_text"]
    while common < min(len(ref_text), len(other_text)) and ref_text[common] == other_text[common]:
        common += 1
    for step, chars in enumerate(reference["prefix_chars"]):
        if chars > common:
            return step
    return max(len(reference["prefix_chars"]) - 1, 0)


def verify_gguf_files(
    gguf_files: dict[str, str],
    references: list[dict],
    host: str | None,
    tie_margin: float,
    min_q8_0_agreement: float,
    max_new_tokens: int,
    stop: list[str],
    name_stem: str,
    logger: logging.Logger | logging.LoggerAdapter | None = None,
) -> dict[str, Any]:
    """Generate from each GGUF on Ollama with final-hf's prompts and compare with final-hf's titles.

    `references` are final-hf's greedy results (see tasks.merge): `gguf_prompt`, `title`,
    `raw_text`, `prefix_chars`, `margins`, `prompt_tokens`. Returns `{"status", "server", "types": {type: ...}}`
    where status is `passed`, `failed` or `skipped` (with `reason`).
    """
    logger = logger or log
    with OllamaClient(host) as client:
        try:
            version = client.version()
        except (OllamaUnreachable, OllamaError) as e:
            reason = f"no Ollama server reachable at {client.base} ({type(e).__name__}); start one or set OLLAMA_HOST / ollama.host"
            logger.warning("GGUF verification skipped: %s", reason)
            return {"status": "skipped", "reason": reason, "server": client.base, "types": {}}
        num_ctx = max(2048, -(-(max(r["prompt_tokens"] for r in references) + max_new_tokens + 16) // 256) * 256)
        # repeat_penalty 1 = off: llama.cpp applies its default 1.1 even at temperature 0, which
        # changes greedy output at the first repeated token.
        options = {"temperature": 0, "top_k": 1, "repeat_penalty": 1.0, "seed": 0, "num_predict": max_new_tokens, "num_ctx": num_ctx, "stop": stop}
        results: dict[str, Any] = {}
        for gguf_type, path in gguf_files.items():
            name = f"{name_stem}-verify-{gguf_type}".lower()
            start = time.perf_counter()
            entry: dict[str, Any] = {"model": name}
            try:
                digest = client.push_blob(Path(path))
                try:
                    client.create(gguf_only_request(create_form(version), name, digest))
                except OllamaError as e:
                    if "architecture" in str(e).lower() or "unsupported" in str(e).lower():
                        entry.update(status="skipped", reason=f"Ollama {version} cannot load this architecture: {e}")
                        results[gguf_type] = entry
                        logger.warning("GGUF %s verification skipped: %s", gguf_type, entry["reason"])
                        continue
                    raise
                answers = [client.generate(name, r["gguf_prompt"], keep_alive="30s", raw=True, options=options) for r in references]
                outputs = [(a.get("response") or "", int(a.get("prompt_eval_count") or 0)) for a in answers]
                texts = [text for text, _ in outputs]
            finally:
                try:
                    client.delete(name)
                except (OllamaError, OllamaUnreachable):
                    pass
            entry["seconds"] = round(time.perf_counter() - start, 2)
            entry.update(_compare(gguf_type, references, texts, tie_margin))
            # The first request of a freshly created model has no prompt cache, so its count is the whole
            # prompt: a different count means llama.cpp tokenizes the prompt differently from final-hf.
            entry["prompt_tokens"] = {"final_hf": references[0]["prompt_tokens"], "gguf": outputs[0][1]}
            if outputs[0][1] and outputs[0][1] != references[0]["prompt_tokens"]:
                entry["tokenization_differs"] = (
                    f"llama.cpp reads article 0's prompt as {outputs[0][1]} tokens, final-hf's tokenizer as "
                    f"{references[0]['prompt_tokens']}: the HF tokenizer and the GGUF vocabulary disagree, so titles cannot match"
                )
                for row in entry["mismatches"]:
                    row["reason"] = entry["tokenization_differs"]
            exact = gguf_type in EXACT_TYPES
            if exact:
                entry["status"] = "passed" if entry["unexplained"] == 0 else "failed"
                entry["rule"] = f"every title equal, or a near-tie (final-hf top-2 margin <= {tie_margin})"
            else:
                entry["status"] = "passed" if entry["agreement"] >= min_q8_0_agreement else "failed"
                entry["rule"] = f"agreement >= {min_q8_0_agreement}; differences are reported with final-hf's margin"
            logger.info("GGUF %s on Ollama %s: %d/%d titles equal final-hf (%s)", gguf_type, version,
                        entry["equal"], entry["n"], entry["status"])
            results[gguf_type] = entry
    statuses = {e["status"] for e in results.values()}
    status = "failed" if "failed" in statuses else ("skipped" if statuses <= {"skipped"} else "passed")
    out = {"status": status, "server": client.base, "server_version": version, "options": options, "types": results}
    if status == "skipped":
        out["reason"] = "; ".join(e.get("reason", "") for e in results.values())
    return out


def _compare(gguf_type: str, references: list[dict], texts: list[str], tie_margin: float) -> dict[str, Any]:
    equal, unexplained, rows = 0, 0, []
    for i, (ref, text) in enumerate(zip(references, texts)):
        title = text.strip()
        if title == ref["title"]:
            equal += 1
            continue
        step = first_divergence(ref, text)
        margin = ref["margins"][step] if ref["margins"] else None
        near_tie = margin is not None and margin <= tie_margin
        if near_tie:
            reason = (f"near-tie: at token {step} final-hf's top two logits were {margin:.3f} apart "
                      f"(<= {tie_margin}); {gguf_type} rounding and llama.cpp's f16 KV cache can flip that")
        elif gguf_type in EXACT_TYPES:
            unexplained += 1
            reason = (f"at token {step} final-hf preferred its token by {margin:.3f} logits, beyond rounding: "
                      "suspect the conversion or the prompt/BOS handling")
        else:
            reason = (f"at token {step} {gguf_type}'s 8-bit weight rounding moved the logits past final-hf's "
                      f"top-2 margin of {margin:.3f}")
        rows.append({"article": i, "final_hf": ref["title"], "gguf": title, "divergence_token": step,
                     "final_hf_margin": margin, "near_tie": near_tie, "reason": reason})
    n = len(references)
    # A title that differs only after a near-tie agrees as well as rounding allows: it counts.
    agreeing = equal + sum(row["near_tie"] for row in rows)
    return {"n": n, "equal": equal, "agreement": agreeing / n if n else 0.0, "unexplained": unexplained, "mismatches": rows}
