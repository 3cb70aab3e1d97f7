"""Tiny randomly initialised Gemma 3 / Gemma 3n text models built in memory (the real classes), and
left-padded prompts for them: for tests of attention, caches and model patches that need no tokenizer."""

import torch


def tiny_gemma3(sliding_window: int = 8):
    """A 4-layer Gemma 3 with four query heads to one KV head (the 270M's ratio), SDPA attention, eval mode."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    config = Gemma3TextConfig(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                              num_key_value_heads=1, head_dim=16, sliding_window=sliding_window, max_position_embeddings=256)
    config._attn_implementation = "sdpa"
    return Gemma3ForCausalLM(config).eval()


def tiny_gemma3n(sparsity=(0.0, 0.0, 0.0, 0.0), sliding_window: int = 16, vocab: int = 512):
    """A 4-layer Gemma 3n (two KV-shared layers, sliding and full attention alternating), SDPA attention,
    `sparsity` per layer (E4B's first 10 layers are sparse); eval mode."""
    from transformers import Gemma3nForCausalLM, Gemma3nTextConfig

    torch.manual_seed(0)
    config = Gemma3nTextConfig(
        vocab_size=vocab, vocab_size_per_layer_input=vocab, hidden_size=64, hidden_size_per_layer_input=8,
        intermediate_size=128, num_hidden_layers=4, num_attention_heads=2, num_key_value_heads=1, head_dim=32,
        max_position_embeddings=256, sliding_window=sliding_window, num_kv_shared_layers=2, laurel_rank=4,
        layer_types=["sliding_attention", "full_attention"] * 2, activation_sparsity_pattern=list(sparsity),
    )
    config._attn_implementation = "sdpa"
    return Gemma3nForCausalLM(config).eval()


def left_padded_prompts(vocab: int = 300) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, attention mask) of three 20-token rows, two of them left-padded (5 and 2 pad positions)."""
    mask = torch.ones(3, 20, dtype=torch.long)
    mask[0, :5] = 0
    mask[1, :2] = 0
    return torch.randint(3, vocab, (3, 20)) * mask, mask


def greedy_with_scores(model, ids: torch.Tensor, mask: torch.Tensor, cache=None, new_tokens: int = 12):
    """(sequences, stacked per-step scores) of greedy `generate` on the left-padded `ids`, with `cache` if given."""
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens, do_sample=False, pad_token_id=0,
                             output_scores=True, return_dict_in_generate=True, past_key_values=cache)
    return out.sequences, torch.stack(out.scores)
