"""Model changes that keep the numbers (titlegen.model_patches)."""

import pytest

torch = pytest.importorskip("torch")

from titlegen.model_patches import fused_pointwise, without_host_syncs  # noqa: E402


def test_without_host_syncs_keeps_gemma3n_outputs_identical():
    # E4B's first 10 layers are sparse; two sparse layers of four here, on the real Gemma 3n classes.
    from transformers import Gemma3nForCausalLM, Gemma3nTextConfig

    torch.manual_seed(0)
    config = Gemma3nTextConfig(
        vocab_size=512, vocab_size_per_layer_input=512, hidden_size=64, hidden_size_per_layer_input=8,
        intermediate_size=128, num_hidden_layers=4, num_attention_heads=2, num_key_value_heads=1, head_dim=32,
        sliding_window=16, num_kv_shared_layers=2, laurel_rank=4, layer_types=["sliding_attention", "full_attention"] * 2,
        activation_sparsity_pattern=[0.95, 0.95, 0.0, 0.0],
    )
    model = Gemma3nForCausalLM(config).eval()
    ids = torch.randint(3, 500, (2, 24))
    with torch.inference_mode():
        before = model(input_ids=ids).logits
        assert without_host_syncs(model) == 2
        after = model(input_ids=ids).logits
    assert torch.equal(before, after)
    assert without_host_syncs(Gemma3nForCausalLM(Gemma3nTextConfig(**{**config.to_dict(), "activation_sparsity_pattern": [0.0] * 4}))) == 0


@pytest.mark.slow
def test_fused_pointwise_compiles_norms_and_mlps_once_and_keeps_greedy_titles(tiny_gemma3_dir):
    # CUDA is where the stage applies it (static cache); Inductor's CPU backend compiles the same graphs.
    from titlegen.generate import generate_titles, load_base, load_tokenizer

    model, tokenizer = load_base(str(tiny_gemma3_dir), "cpu"), load_tokenizer(str(tiny_gemma3_dir))
    articles = ["立法院今天三讀通過修正案。" * 5, "股市收盤上漲，成交量放大。" * 2, "棒球隊贏得冠軍。"]
    eager = generate_titles(model, tokenizer, articles, 20, 2, 10)
    layers = model.config.num_hidden_layers
    # Per layer: four norms around attention and MLP, the q and k norms, the MLP; plus the final norm.
    assert fused_pointwise(model) == layers * 7 + 1
    assert fused_pointwise(model) == 0  # already compiled: left alone
    fused = generate_titles(model, tokenizer, articles, 20, 2, 10)
    assert [r["raw"] for r in fused] == [r["raw"] for r in eager]
