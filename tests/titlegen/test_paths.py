"""titlegen.paths: the compile-cache folder that torch.compile's caches keep between runs."""

from pathlib import Path

from titlegen.paths import compile_cache_dir, compile_cache_env


def test_the_compile_cache_is_titlegen_compile_cache_else_under_xdg_cache_home_else_home(monkeypatch, tmp_path):
    assert compile_cache_dir({"TITLEGEN_COMPILE_CACHE": "/data/cc", "XDG_CACHE_HOME": "/x"}) == Path("/data/cc")
    assert compile_cache_dir({"XDG_CACHE_HOME": "/x"}) == Path("/x/titlegen/torch-compile")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert compile_cache_dir({}) == tmp_path / ".cache" / "titlegen" / "torch-compile"


def test_compile_cache_env_fills_only_what_the_environment_leaves_unset():
    assert compile_cache_env({"TITLEGEN_COMPILE_CACHE": "/cc"}) == {
        "TORCHINDUCTOR_CACHE_DIR": "/cc/inductor", "TRITON_CACHE_DIR": "/cc/triton"}
    assert compile_cache_env({"TITLEGEN_COMPILE_CACHE": "/cc", "TORCHINDUCTOR_CACHE_DIR": "/mine"}) == {"TRITON_CACHE_DIR": "/cc/triton"}
    assert compile_cache_env({"TORCHINDUCTOR_CACHE_DIR": "/a", "TRITON_CACHE_DIR": "/b"}) == {}
