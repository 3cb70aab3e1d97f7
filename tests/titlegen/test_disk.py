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
