"""The merge stage's disk-space estimate (titlegen.disk): parameter counts from safetensors headers."""

from titlegen import disk


def _tensors(folder):
    from safetensors.torch import load_file

    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


def test_checkpoint_parameters_read_from_headers(tiny_gemma3_dir):
    params, dtype = disk.checkpoint_parameters(tiny_gemma3_dir)
    assert params == sum(t.numel() for t in _tensors(tiny_gemma3_dir).values())
    assert dtype in {"F32", "BF16", "F16"}
    assert disk.checkpoint_parameters(tiny_gemma3_dir / "nowhere") == (0, None)


def _cache_with(tmp_path, repo_id: str, source) -> tuple:
    """A Hugging Face cache holding `source`'s files as the snapshot of `repo_id` (what training's download leaves)."""
    import shutil

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(source, repo / "snapshots" / commit)
    return tmp_path / "hub", repo / "snapshots" / commit


def test_a_hub_id_base_is_sized_from_its_snapshot_in_the_hf_cache(tiny_gemma3_dir, tmp_path, monkeypatch):
    """The default GPU run names its base by Hub id: the estimate must not come back empty (issue #15 item 7)."""
    from huggingface_hub import constants

    from titlegen.params import PublishParams

    cache, snapshot = _cache_with(tmp_path, "titlegen-test/tiny-gemma3", tiny_gemma3_dir)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    publish = PublishParams(gguf_types=["q8_0", "f16"])
    assert disk.local_checkpoint("titlegen-test/tiny-gemma3") == snapshot
    from_hub_id = disk.disk_needed("titlegen-test/tiny-gemma3", publish, final_hf=True, gguf=True)
    assert from_hub_id and from_hub_id == disk.disk_needed(tiny_gemma3_dir, publish, final_hf=True, gguf=True)
    assert set(from_hub_id) == {"final-hf", "gguf/q8_0", "gguf/f16"}


def test_an_uncached_hub_id_is_sized_from_the_hubs_safetensors_metadata(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from huggingface_hub import HfApi, constants

    from titlegen.params import PublishParams

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    asked = []

    def metadata(self, repo_id, **kwargs):
        asked.append(repo_id)
        return SimpleNamespace(parameter_count={"BF16": 3_000_000, "F32": 1_000})

    monkeypatch.setattr(HfApi, "get_safetensors_metadata", metadata)
    needed = disk.disk_needed("org/not-cached", PublishParams(gguf_types=["q8_0"], merged_dtype="auto"), final_hf=True, gguf=True)
    assert asked == ["org/not-cached"]
    # auto keeps a 16-bit base dtype; the base's widest stored dtype is F32 here, so bf16: 2 bytes a parameter
    assert needed == {"final-hf": 2 * 3_001_000, "gguf/q8_0": int(3_001_000 * 34 / 32)}
