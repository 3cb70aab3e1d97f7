"""Model changes that keep the numbers (titlegen.model_patches)."""

import contextlib

import pytest

torch = pytest.importorskip("torch")

from titlegen.model_patches import (  # noqa: E402
    ALTUP_FLOOR,
    altup_mixing_fused,
    GROUPED_DECODE,
    GROUPED_DECODE_FP32,
    GROUPED_DECODE_FUSED,
    _grouped_decode_sdpa,
    fused_pointwise,
    grouped_decode_attention,
    static_weights_in_cuda_graphs,
    without_altup_copies,
    without_host_syncs,
)
from tests.tiny_models import left_padded_prompts, tiny_gemma3, tiny_gemma3n  # noqa: E402


def test_without_host_syncs_keeps_gemma3n_outputs_identical():
    # E4B's first 10 layers are sparse; two sparse layers of four here, on the real Gemma 3n classes.
    model = tiny_gemma3n(sparsity=(0.95, 0.95, 0.0, 0.0))
    ids = torch.randint(3, 500, (2, 24))
    with torch.inference_mode():
        before = model(input_ids=ids).logits
        assert without_host_syncs(model) == 2
        after = model(input_ids=ids).logits
    assert torch.equal(before, after)
    assert without_host_syncs(tiny_gemma3n()) == 0


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


@pytest.mark.slow
def test_altup_mixing_fused_keeps_prompt_logits_and_greedy_titles():
    # Inductor's CPU backend compiles the same mixing the stage's CUDA prefill would; decode steps keep transformers' product.
    model = tiny_gemma3n(sparsity=(0.95, 0.95, 0.0, 0.0), sliding_window=8, vocab=300)
    ids, mask = left_padded_prompts()
    with torch.inference_mode():
        before = model(input_ids=ids, attention_mask=mask).logits
        titles = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=12, do_sample=False, pad_token_id=0)
        assert altup_mixing_fused(model) == model.config.get_text_config().num_hidden_layers
        assert altup_mixing_fused(model) == 0  # already changed: left alone
        after = model(input_ids=ids, attention_mask=mask).logits
        again = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=12, do_sample=False, pad_token_id=0)
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)
    assert torch.equal(again, titles)
    assert altup_mixing_fused(tiny_gemma3()) == 0  # no AltUp: nothing to change


def decode_step_logits(model, ids, mask):
    """The logits of one decode step after the prefill of the left-padded `ids`."""
    with torch.inference_mode():
        prefill = model(input_ids=ids, attention_mask=mask, use_cache=True)
        return model(input_ids=torch.full((ids.shape[0], 1), 7), attention_mask=torch.cat([mask, torch.ones(ids.shape[0], 1, dtype=torch.long)], 1),
                     past_key_values=prefill.past_key_values).logits


@pytest.mark.parametrize("kind", ["gemma3", "gemma3n"])
def test_grouped_decode_attention_keeps_decode_logits_and_greedy_titles(kind):
    # Query heads share a KV head (Gemma 3: four to one, the 270M's ratio; Gemma 3n: two to one, with KV-shared
    # layers); left padding gives every step a mask; a sliding window shorter than the prompts puts the static
    # cache's sliding layers in play.
    model = tiny_gemma3() if kind == "gemma3" else tiny_gemma3n(sliding_window=8, vocab=300)
    ids, mask = left_padded_prompts()

    def titles(cache):
        with torch.inference_mode():
            return model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=12, do_sample=False, cache_implementation=cache, pad_token_id=0)

    before, before_static, before_step = titles(None), titles("static"), decode_step_logits(model, ids, mask)
    calls = []
    from transformers import AttentionInterface

    assert grouped_decode_attention(model) and model.config._attn_implementation == GROUPED_DECODE
    assert not grouped_decode_attention(model)  # already switched
    grouped = AttentionInterface._global_mapping[GROUPED_DECODE]
    AttentionInterface._global_mapping[GROUPED_DECODE] = lambda m, q, *a, **k: calls.append(q.shape[2]) or grouped(m, q, *a, **k)
    try:
        after_step = decode_step_logits(model, ids, mask)
        assert torch.equal(titles(None), before) and torch.equal(titles("static"), before_static)
    finally:
        AttentionInterface._global_mapping[GROUPED_DECODE] = grouped
    assert 1 in calls and 20 in calls  # decode steps and the prefill both went through it
    torch.testing.assert_close(after_step, before_step, rtol=0, atol=1e-5)


def test_grouped_decode_scores_can_stay_in_float32():
    # bf16 inputs as on CUDA (CPU takes the upcast branch; CUDA's `bmm(..., out_dtype=float32)` is measured in the
    # lease): float32 scores land closer to an exact float64 attention than scores rounded to bf16 first.
    torch.manual_seed(0)
    batch, heads, kv_heads, kv_len, dim = 3, 8, 2, 40, 64
    q, k, v = (torch.randn(batch, h, n, dim) * 2 for h, n in ((heads, 1), (kv_heads, kv_len), (kv_heads, kv_len)))
    mask = torch.ones(batch, 1, 1, kv_len, dtype=torch.bool)
    mask[0, ..., :10] = False  # a left-padded row

    def exact():
        kk, vv = (t.double().repeat_interleave(heads // kv_heads, 1) for t in (k, v))
        scores = (q.double() @ kk.transpose(-1, -2) * dim ** -0.5).masked_fill(~mask, float("-inf"))
        return (scores.softmax(-1) @ vv).transpose(1, 2)

    def error(fp32_scores, fused=False):
        out, _ = _grouped_decode_sdpa(None, q.bfloat16(), k.bfloat16(), v.bfloat16(), mask, fp32_scores=fp32_scores, fused=fused)
        assert out.dtype == torch.bfloat16 and out.shape == (batch, 1, heads, dim)
        return (out.double() - exact()).abs().max().item()

    assert error(True) < error(False)
    assert error(False, fused=True) < error(False)  # the fused kernel keeps its scores in float32 too
    model = tiny_gemma3()
    assert grouped_decode_attention(model) and grouped_decode_attention(model, fp32_scores=True)  # one grouped kind to the other
    assert model.config._attn_implementation == GROUPED_DECODE_FP32 and not grouped_decode_attention(model, fp32_scores=True)
    assert grouped_decode_attention(model, fused=True) and model.config._attn_implementation == GROUPED_DECODE_FUSED


@pytest.mark.parametrize("kind", ["gemma3", "gemma3n"])
def test_fused_grouped_decode_keeps_decode_logits_and_greedy_titles(kind):
    model = tiny_gemma3() if kind == "gemma3" else tiny_gemma3n(sliding_window=8, vocab=300)
    ids, mask = left_padded_prompts()

    def run():
        with torch.inference_mode():
            titles = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=12, do_sample=False, pad_token_id=0)
        return titles, decode_step_logits(model, ids, mask)

    before_titles, before_step = run()
    assert grouped_decode_attention(model, fused=True)
    after_titles, after_step = run()
    assert torch.equal(after_titles, before_titles)
    torch.testing.assert_close(after_step, before_step, rtol=0, atol=1e-5)


def test_without_altup_copies_keeps_gemma3n_outputs_and_takes_the_copies_out():
    import inspect

    model = tiny_gemma3n(sliding_window=8, vocab=300)
    ids, mask = left_padded_prompts()

    def run():
        with torch.inference_mode():
            logits = model(input_ids=ids, attention_mask=mask).logits
            titles = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=8, do_sample=False, pad_token_id=0)
        return logits, titles

    before_logits, before_titles = run()
    text_model = model.model
    class_forward = type(text_model).forward
    assert inspect.getsource(class_forward).count(ALTUP_FLOOR) == 2  # the transformers source it rewrites
    assert without_altup_copies(model) == 1
    assert "forward" in vars(text_model) and type(text_model).forward is class_forward  # the instance changed, not the class
    names = inspect.unwrap(text_model.forward.__func__).__code__.co_names
    assert "clamp_min" in names and "maximum" not in names  # the floors no longer copy epsilon_tensor to the device
    after_logits, after_titles = run()
    assert torch.equal(after_titles, before_titles)
    torch.testing.assert_close(after_logits, before_logits, rtol=0, atol=0)
    assert without_altup_copies(tiny_gemma3()) == 0  # no Gemma 3n text model: unchanged


def test_cuda_graphs_of_the_cudagraphs_backend_get_the_weights_as_static_inputs(monkeypatch):
    # The `cudagraphs` backend hands `cudagraphify_impl` range(num_fw_fixed_arguments) as its static inputs: zero
    # with inlined nn modules, so every weight would be copied before each replay. A real AOT trace on CPU with a
    # stand-in for cudagraphify_impl (CUDA graphs need a GPU) shows what the backend would pass, without and with.
    import torch._inductor.cudagraph_trees as trees
    from torch._dynamo.backends.common import aot_autograd

    passed = []
    monkeypatch.setattr(trees, "cudagraphify_impl", lambda fn, inputs, static_idxs, *a, **k: passed.append(list(static_idxs)) or fn)

    def backend(gm, example_inputs):
        def forward(aot_gm, aot_inputs):
            trees.cudagraphify_impl(aot_gm, aot_inputs, range(0))  # what the `cudagraphs` backend does
            return aot_gm
        return aot_autograd(fw_compiler=forward)(gm, example_inputs)

    model = tiny_gemma3()
    ids = torch.randint(3, 100, (2, 8))
    weights = sum(1 for _ in model.parameters())
    for patched in (False, True):
        torch._dynamo.reset()
        with static_weights_in_cuda_graphs() if patched else contextlib.nullcontext(), torch.no_grad():
            logits = torch.compile(model, backend=backend)(input_ids=ids).logits
        assert torch.equal(logits, model(input_ids=ids).logits)
    assert passed[0] == [] and len(passed[1]) >= weights  # weights (and buffers) now static; input_ids is not
    assert trees.cudagraphify_impl.__name__ == "<lambda>"  # the context put the function back


def _decode_steps(model, ids, compile_backend=None, steps: int = 3):
    """Logits of `steps` greedy decode steps after prefilling `ids` into titlegen's static cache, the steps compiled with
    `compile_backend` when given."""
    from titlegen.generate import unrolled_static_cache

    rows, width = ids.shape
    torch._dynamo.reset()
    with torch.inference_mode():
        cache = unrolled_static_cache(model, rows, width + steps)
        model(input_ids=ids, past_key_values=cache, use_cache=True, cache_position=torch.arange(width))
        step = torch.compile(model.forward, backend=compile_backend) if compile_backend else model.forward
        token, logits = ids[:, -1:], []
        for s in range(steps):
            out = step(input_ids=token, past_key_values=cache, use_cache=True, cache_position=torch.tensor([width + s]),
                       position_ids=torch.full((rows, 1), width + s))
            logits.append(out.logits.clone())
            token = out.logits[:, -1:].argmax(-1)
    return logits


def test_cache_writes_become_in_place_in_the_graph_and_keep_the_logits():
    # AOT autograd with input mutations kept, as the `cudagraphs` backend runs under `cache_writes_in_place`: each
    # static-cache write arrives as index_copy of the whole cache plus a copy back; after the pass, one index_copy_.
    from torch._dynamo.backends.common import aot_autograd

    from titlegen.model_patches import reinplace_cache_writes

    graphs, changed = [], []

    def compiler(gm, example_inputs):
        changed.append(reinplace_cache_writes(gm))
        graphs.append(gm)
        return gm

    backend = aot_autograd(fw_compiler=compiler, inference_compiler=compiler, keep_inference_input_mutations=True)
    model = tiny_gemma3n(sparsity=(0.95, 0.95, 0.0, 0.0), sliding_window=8, vocab=300)
    ids = torch.randint(3, 300, (3, 20))
    eager = _decode_steps(model, ids)
    compiled = _decode_steps(model, ids, backend)
    for a, b in zip(compiled, eager):
        assert torch.equal(a, b)
    kv_tensors = 2 * (model.config.num_hidden_layers - model.config.num_kv_shared_layers)
    assert changed[0] == kv_tensors
    ops = [str(n.target) for n in graphs[0].graph.nodes if n.op == "call_function"]
    assert ops.count("aten.index_copy_.default") == kv_tensors and "aten.index_copy.default" not in ops
    # What is left of the copies back is the cache's scalar position counters.
    copies = [n for n in graphs[0].graph.nodes if n.op == "call_function" and n.target is torch.ops.aten.copy_.default]
    assert all(n.args[0].meta["val"].numel() == 1 for n in copies)


def test_a_cache_write_whose_old_value_is_read_later_keeps_its_copy():
    from torch.fx.experimental.proxy_tensor import make_fx

    from titlegen.model_patches import reinplace_cache_writes

    def write_then_read_old(cache, index, values):
        new = torch.ops.aten.index_copy.default(cache, 0, index, values)
        old_sum = cache.sum()  # the old value, read after the write
        cache.copy_(new)
        return new * 2, old_sum

    gm = make_fx(write_then_read_old)(torch.zeros(4, 2), torch.tensor([1]), torch.ones(1, 2))
    assert reinplace_cache_writes(gm) == 0
    cache = torch.zeros(4, 2)
    doubled, old_sum = gm(cache, torch.tensor([1]), torch.ones(1, 2))
    assert old_sum.item() == 0 and cache[1].tolist() == [1.0, 1.0] and doubled[1].tolist() == [2.0, 2.0]


def test_cache_writes_in_place_hooks_the_cudagraphs_backend_only_while_active():
    import torch._dynamo.backends.cudagraphs as backend
    import torch._dynamo.config as config
    from torch.fx.experimental.proxy_tensor import make_fx

    from titlegen.model_patches import cache_writes_in_place

    def write(cache, index, values):
        new = torch.ops.aten.index_copy.default(cache, 0, index, values)
        cache.copy_(new)
        return new * 2

    flags = ("cudagraph_backend_keep_input_mutation", "cudagraph_backend_support_input_mutation")
    before = (backend.boxed_nop, *(getattr(config, f) for f in flags))
    gm = make_fx(write)(torch.zeros(4, 2), torch.tensor([1]), torch.ones(1, 2))
    with cache_writes_in_place():
        assert all(getattr(config, f) for f in flags)
        backend.boxed_nop(gm, [])  # what the backend calls on each graph before recording it
    assert [str(n.target) for n in gm.graph.nodes if n.op == "call_function"][0] == "aten.index_copy_.default"
    assert (backend.boxed_nop, *(getattr(config, f) for f in flags)) == before
    with cache_writes_in_place(reinplace=False):  # the tenth lease's `-inplace`: mutations kept, graphs untouched
        assert backend.boxed_nop is before[0] and all(getattr(config, f) for f in flags)
