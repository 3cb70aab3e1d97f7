"""Changes to a loaded model that keep its numbers and remove waiting: used by generation and training."""

import contextlib
import functools
from collections.abc import Iterator


def without_host_syncs(model) -> int:
    """Take the host-to-device copies out of Gemma 3n's MLP; returns how many modules changed.

    transformers' `Gemma3nTextMLP._gaussian_topk` turns its activation-sparsity target (a Python
    float) into a GPU tensor on every call. That copy makes the host wait for the GPU, in each of
    E4B's 10 sparse layers, at every decode step and every training forward, so the host can never
    queue work ahead. Here the normal quantile is computed once per module on its device, with the
    same float32 arithmetic, and cast to the input's dtype at each call as before: the same numbers,
    no copy. Models without such modules are left as they are.
    """
    import types

    import torch

    changed = 0
    for module in model.modules():
        if type(module).__name__ != "Gemma3nTextMLP" or not getattr(module, "activation_sparsity", 0.0) > 0.0:
            continue
        target = torch.tensor(module.activation_sparsity, dtype=torch.float32, device=module.gate_proj.weight.device)
        module.register_buffer("sparsity_std_multiplier", torch.distributions.normal.Normal(0, 1).icdf(target), persistent=False)
        module._gaussian_topk = types.MethodType(_gaussian_topk_without_copy, module)
        changed += 1
    return changed


def _gaussian_topk_without_copy(self, inputs):
    """`Gemma3nTextMLP._gaussian_topk` with its cutoff multiplier precomputed (see `without_host_syncs`)."""
    import torch

    if self.sparsity_std_multiplier.device != inputs.device:  # the module moved after the patch: follow it, once
        self.sparsity_std_multiplier = self.sparsity_std_multiplier.to(inputs.device)
    multiplier = self.sparsity_std_multiplier.type(inputs.dtype)
    cutoff = torch.mean(inputs, dim=-1, keepdim=True) + torch.std(inputs, dim=-1, keepdim=True, unbiased=False) * multiplier
    return torch.nn.functional.relu(inputs - cutoff)


# The two AltUp magnitude floors of `Gemma3nTextModel.forward` (transformers 5.x), each a copy of a CPU scalar
# tensor to the GPU: `torch.maximum(new_magnitude, epsilon_tensor.to(target_magnitude.device))`.
ALTUP_FLOOR = "torch.maximum(new_magnitude, epsilon_tensor.to(target_magnitude.device))"


@contextlib.contextmanager
def static_weights_in_cuda_graphs() -> Iterator[None]:
    """While active, CUDA graphs recorded by torch.compile's `cudagraphs` backend read the weights in place.

    With nn modules inlined (torch.compile's default), the weights reach that backend as ordinary graph inputs,
    and it declares only `num_fw_fixed_arguments` of its inputs static, which is then zero: before every replay
    the graph copies each weight into a buffer of its own (an E4B profile of 2026-11-30: ~990 device-to-device
    copies per decode step, 1.9 s of a 15.6 s pass). Inductor's own CUDA graphs use the static inputs that
    AOT autograd records (`get_static_input_idxs`: parameters, buffers, tensors marked with
    `mark_static_address` such as the static KV cache); here the `cudagraphs` backend gets the same list. A
    static input whose address changes makes the graph record again, so this trades no correctness for speed.
    Without that torch function (another torch version) nothing changes. Measured (one H200, E4B random weights,
    500 titles, one invocation, 2026-11-30g): 19.73 against 18.79 titles/s, and ~350 instead of ~990 copies per
    replay (the rest not yet broken down); docs/evaluate.md "Ninth lease"."""
    try:
        import torch._inductor.cudagraph_trees as trees
        from torch._inductor.compile_fx import get_static_input_idxs
    except ImportError:
        yield
        return
    original = trees.cudagraphify_impl

    def with_static_weights(fn, inputs, static_input_idxs, *args, **kwargs):
        return original(fn, inputs, sorted({*static_input_idxs, *get_static_input_idxs(0)}), *args, **kwargs)

    trees.cudagraphify_impl = with_static_weights
    try:
        yield
    finally:
        trees.cudagraphify_impl = original


def reinplace_cache_writes(gm) -> int:
    """Rewrite a functional inference graph (AOT autograd's, input mutations kept) so that each KV-cache write happens
    in place: `new = index_copy(cache, dim, index, values)` ... `cache.copy_(new)` becomes `index_copy_(cache, ...)`
    where `new` was, and the closing copy goes; returns how many writes changed (the graph is recompiled when any did).

    A static cache's `index_copy_` reaches a compiled graph as that functional pair: the whole cache tensor copied
    into a new one with the row written, read by attention, then copied back over the cache. Inductor removes it
    (its reinplacing pass); the `cudagraphs` backend, which replays the ATen graph as it is, does not: E4B's decode
    step at 500 rows copies each of its 40 cache tensors (584 MB at 1,140 positions) twice, ~47 GB a step
    (docs/evaluate.md "The decode step copies the KV cache twice"). A write is changed only when `cache` is a graph
    input and nothing reads its old value after the write."""
    import torch

    graph = gm.graph
    order = {node: i for i, node in enumerate(graph.nodes)}
    changed = 0
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target is not torch.ops.aten.copy_.default:
            continue
        cache, new = node.args[0], node.args[1]
        if not (cache.op == "placeholder" and getattr(new, "target", None) is torch.ops.aten.index_copy.default and new.args[0] is cache):
            continue
        if any(user is not new and user is not node and order[user] > order[new] for user in cache.users):
            continue  # the old value is read after the write: keep the copy
        new.target = torch.ops.aten.index_copy_.default  # writes `cache` and returns it: `new`'s readers read the cache
        graph.erase_node(node)
        changed += 1
    if changed:
        graph.lint()
        gm.recompile()
    return changed


@contextlib.contextmanager
def cache_writes_in_place(reinplace: bool = True) -> Iterator[None]:
    """While active, the `cudagraphs` backend keeps a graph's input mutations in the graph
    (`torch._dynamo.config.cudagraph_backend_keep_input_mutation`), records graphs that mutate their (static) inputs
    (`cudagraph_backend_support_input_mutation`) and, with `reinplace`, writes the static KV cache in place
    (`reinplace_cache_writes`) instead of copying it twice per decode step; CUDA graphs read the weights in place too
    (`static_weights_in_cuda_graphs`). Without the backend's hook (another torch version) only the rest applies."""
    import torch._dynamo.config as dynamo_config

    names = ("cudagraph_backend_keep_input_mutation", "cudagraph_backend_support_input_mutation")
    saved = [getattr(dynamo_config, n) for n in names]
    try:
        import torch._dynamo.backends.cudagraphs as backend
        original = backend.boxed_nop
    except (ImportError, AttributeError):
        backend = original = None

    def reinplaced_nop(graph_module, inputs):
        reinplace_cache_writes(graph_module)
        return original(graph_module, inputs)

    for n in names:
        setattr(dynamo_config, n, True)
    if backend is not None and reinplace:
        backend.boxed_nop = reinplaced_nop
    try:
        with static_weights_in_cuda_graphs():
            yield
    finally:
        for n, v in zip(names, saved):
            setattr(dynamo_config, n, v)
        if backend is not None and reinplace:
            backend.boxed_nop = original


def without_altup_copies(model) -> int:
    """Take the host-to-device copies out of Gemma 3n's AltUp setup and readout; returns how many modules changed.

    `Gemma3nTextModel.forward` floors the magnitude of each AltUp stream at 1e-5 with a CPU tensor that it
    copies to the GPU, three times before the decoder layers and three times after, at every forward: every
    decode step of generation. A blocking copy from host memory makes the host wait for the GPU, so the
    host cannot queue the next kernels ahead; under torch.compile the CPU tensor also makes it decline
    CUDA graphs (`cudagraph_skips`). Here that forward is recompiled from transformers' own source with the
    floor written `new_magnitude.clamp_min(1e-5)`: the same bf16 maximum, no copy, nothing else changed.
    The source is used only when it holds exactly the two expected floors (`ALTUP_FLOOR`); otherwise, or
    for models without the module, nothing changes (0). Applied to instances, never to the class (Unsloth
    patches Gemma 3n's classes for training); `titlegen.generate.load_base` applies it on CUDA.

    Measured (E4B random weights, 500 titles, one H200, 2026-11-30, docs/evaluate.md "Eighth lease"): the dynamic
    cache 21.4 against 20.9 titles/s, and the static cache's CUDA graphs now record (`cudagraph_skips` 0, was 1):
    30.4 titles/s after a 76 s first pass.
    """
    import types

    changed = 0
    for module in model.modules():
        if type(module).__name__ != "Gemma3nTextModel":
            continue
        forward = _altup_forward_without_copies(type(module))
        if forward is not None:
            module.forward = types.MethodType(forward, module)
            changed += 1
    return changed


@functools.cache
def _altup_forward_without_copies(cls):
    """`cls.forward` rebuilt from its source with `ALTUP_FLOOR` replaced and its decorators reapplied (but `@auto_docstring`); None if it does not match."""
    import inspect
    import sys
    import textwrap

    try:
        lines, first = inspect.getsourcelines(cls.forward)
        filename = inspect.getsourcefile(cls.forward)
    except (OSError, TypeError):
        return None
    source = textwrap.dedent("".join(lines))
    if not filename or source.count(ALTUP_FLOOR) != 2 or "super(" in source or "__class__" in source:
        return None
    # Compiled under transformers' own file name and line numbers, so tracebacks point at the original.
    # `@auto_docstring` only writes the docstring, and needs the class body: its line is left blank.
    source = "\n".join("" if line.strip() == "@auto_docstring" else line for line in source.split("\n"))
    source = "\n" * (first - 1) + source.replace(ALTUP_FLOOR, "new_magnitude.clamp_min(1e-5)")
    namespace = dict(vars(sys.modules[cls.__module__]))
    exec(compile(source, filename, "exec"), namespace)  # noqa: S102
    return namespace["forward"]


# Module classes whose forward is element-wise work around at most two matrix multiplies: Gemma's float32
# RMSNorm (upcast, square, mean, rsqrt, scale, downcast) and its GELU-gated MLP.
FUSED_CLASSES = ("Gemma3RMSNorm", "Gemma3nRMSNorm", "Gemma3MLP", "Gemma3nTextMLP")


def fused_pointwise(model) -> int:
    """Compile each RMSNorm and MLP module of a Gemma 3 / 3n model with dynamic shapes (torch.compile,
    in place); returns how many modules changed.

    Profiled on an H200 (docs/evaluate.md "Fourth lease"), the 270M's prefill of 500 prompts spends
    most of its GPU time on these modules' unfused element-wise kernels (multiplies, casts, `pow`,
    `mean`: ~60 %), the matrix multiplies 12 %: memory-bound passes over 255k tokens that Inductor
    fuses into a few kernels. transformers compiles only the decode step of a static cache, never
    the prefill, so that is left to do here. Dynamic shapes: one compilation serves every batch and
    prompt width. The arithmetic stays float32 where the module asks for it; fused reductions may
    round the last bit differently, which can flip only near-tie tokens. Modules already compiled are
    left alone (a second call changes nothing).

    Measured (one H200, 500 prompts, docs/evaluate.md "Fused prefill"): the 270M's prefill 4.5x faster,
    a static-cache run 1.38x; E4B's prefill 1.44x. Compiling costs ~5 s (270M) to ~35 s (E4B) once per
    process, so `titlegen.generate` applies it with the static cache only, the mode that already
    compiles for long evaluations.

    Gemma 3n's AltUp mixing is fused for prompts too (`altup_mixing_fused`, counted with the modules): E4B's static
    mode 36.92 against 32.54 titles/s in one invocation (H200, eleventh lease, docs/evaluate.md).
    """
    import torch

    # One graph per module class and input rank, plus the 0/1 specialisations of single-row batches
    # and single-token decode steps: more than dynamo's default of 8 recompilations per function.
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    changed = 0
    for module in model.modules():
        if type(module).__name__ in FUSED_CLASSES and getattr(module, "_compiled_call_impl", None) is None:
            module.compile(dynamic=True)
            changed += 1
    return changed + altup_mixing_fused(model)


def altup_mixing_fused(model) -> int:
    """Gemma 3n's AltUp `predict` mixes its four streams with a 4 x 4 matrix per token as element-wise float32 work
    that torch.compile fuses (dynamic shapes), for inputs longer than one token (prefill); returns how many modules
    changed.

    transformers writes that mixing as `torch.matmul` of a (batch, tokens, hidden, 4) view with (batch, tokens, 4, 4)
    coefficients: a batched product with one 4 x 4 problem per token, which cuBLAS runs with a 16 x 16-tile WMMA
    kernel. An E4B prefill of 128 prompts x 576 tokens spent 8.0 ms per layer in it (H200, 2026-11-30,
    `bench/decode_ops.py`), 35 times per prefill; the same arithmetic as one fused pass reads and writes each stream
    once. Each output stream is the float32 sum of the four products (bf16 products are exact in float32), rounded to
    the model's dtype, then the input added as before: the same numbers but for the last bit where float32 sums in
    another order, which can flip only near-tie tokens. A decode step (one token) keeps transformers' product, so
    the decode graphs do not change. Models without the module are left as they are (0); a second call changes
    nothing. `fused_pointwise` applies it (the static cache's mode). Measured (H200, 500 titles, one invocation,
    eleventh lease, docs/evaluate.md): one layer's predict over 250 x 576 prompt tokens 25.5 -> 2.1 ms, E4B's
    static mode 32.54 -> 36.92 titles/s."""
    import types

    import torch

    mixing = torch.compile(_altup_predict_elementwise, dynamic=True)  # one compiled function: every layer's graphs
    changed = 0
    for module in model.modules():
        if type(module).__name__ == "Gemma3nTextAltUp" and getattr(module, "_titlegen_mixing", None) is None:
            module._titlegen_mixing = mixing
            module.predict = types.MethodType(_altup_predict_fused, module)
            changed += 1
    return changed


def _altup_predict_fused(self, hidden_states):
    """`Gemma3nTextAltUp.predict`, its mixing compiled for prompts (see `altup_mixing_fused`)."""
    if hidden_states.shape[2] == 1 or self.training:  # a decode step, or training: transformers' own
        return type(self).predict(self, hidden_states)
    return self._titlegen_mixing(self, hidden_states)


def _altup_predict_elementwise(altup, hidden_states):
    """`Gemma3nTextAltUp.predict` (inference) with the 4 x 4 mixing as broadcast float32 products and a sum."""
    modalities = altup.compute_router_modalities(hidden_states[altup.config.altup_active_idx])
    n = altup.config.altup_num_inputs
    # coefs[..., j, k] weighs input stream k in output stream j (transformers transposes it for its matmul).
    coefs = altup.prediction_coefs(modalities).reshape(*modalities.shape[:-1], n, n)
    mixed = (coefs.permute(2, 3, 0, 1).unsqueeze(-1).float() * hidden_states.unsqueeze(0).float()).sum(1)
    return (mixed.to(hidden_states.dtype) + hidden_states).contiguous()


# The attention implementation `grouped_decode_attention` switches a model to (registered with transformers once).
GROUPED_DECODE = "titlegen_sdpa_grouped_decode"
# The same with the scores out of the first product in float32 (`grouped_decode_attention(model, fp32_scores=True)`).
GROUPED_DECODE_FP32 = "titlegen_sdpa_grouped_decode_fp32"
# The grouped heads through one fused SDPA kernel (`grouped_decode_attention(model, fused=True)`): bench only, slower
# (H200, 2026-11-30: E4B dynamic 16.76 against 21.08 titles/s for float32 grouped, the 270M static 313 against 350).
GROUPED_DECODE_FUSED = "titlegen_sdpa_grouped_decode_fused"
GROUPED_KINDS = (GROUPED_DECODE, GROUPED_DECODE_FP32, GROUPED_DECODE_FUSED)


def grouped_decode_attention(model, fp32_scores: bool = False, fused: bool = False) -> bool:
    """Decode steps attend without copying the KV cache once per query head; returns whether the model changed.

    Gemma's attention has fewer key/value heads than query heads (the 270M 1 for 4, E4B 2 for 8). With an
    attention mask, which left-padded batches always have, transformers' SDPA path expands every key and
    value `num_key_value_groups` times (`repeat_kv`) before calling the kernel, so each decode step reads
    the whole cache that many times over. In a decode step there is one query position, so the query heads
    of a group can stand in as that many query rows against their one key/value head: the same dot
    products and softmax, with the row's mask broadcast to each of them and no copy. Prefill (more than one
    query position) keeps transformers' own SDPA path. The result may round differently in the last bits
    (another kernel order), which can flip only near-tie tokens.

    `fp32_scores` keeps the scores in float32 from the product on (`torch.bmm(..., out_dtype=torch.float32)` on
    CUDA, as SDPA kernels keep them), instead of rounding them to the model's dtype first; a model already on one
    grouped implementation can be switched to the other.

    The model's attention implementation becomes `GROUPED_DECODE` or `GROUPED_DECODE_FP32` (SDPA masks). Models
    not on SDPA, or a transformers without these interfaces, are left as they are (False).

    Measured (one H200, 500 real article bodies, full budget, one invocation per model; docs/evaluate.md "Seventh
    lease" and "Eighth lease"): Gemma 3 270M with real weights, bf16 scores, 76.2 against 67.6 titles/s for SDPA
    (dynamic cache) and 305.4 against 289.2 (static cache, whose decode-step graph took 321 instead of 615 ms);
    float32 scores as fast on the 270M (147.9 against 135.7 bf16 and 39.4 SDPA in a later invocation; static 338.7
    against 343.0) but slower on E4B (18.4 against 21.4). Each title that differs from the SDPA path's, judged by an
    unpatched copy of the model: with float32 scores every one is a near-tie (base weights and a fine-tuned
    adapter); with bf16 scores one title of 500 on base weights was not.
    The evaluate stage applies it on CUDA (`evaluation.decode_attention`: `grouped` = float32 scores, the default;
    `grouped-bf16`).

    `fused` (bench only: measured slower, docs/evaluate.md "Tenth lease") hands the grouped heads to one SDPA kernel instead of the two products and
    the softmax: a group's query heads become that many query positions against their one KV head, all under the
    row's mask, so the kernel reads each key and value once and keeps its scores in float32 as SDPA does.
    """
    name = GROUPED_DECODE_FUSED if fused else GROUPED_DECODE_FP32 if fp32_scores else GROUPED_DECODE
    current = getattr(model.config, "_attn_implementation", None)
    if current == name or current not in ("sdpa", *GROUPED_KINDS):  # switched already, or not on SDPA
        return False
    try:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
    except ImportError:
        return False
    AttentionInterface.register(GROUPED_DECODE, _grouped_decode_sdpa)
    AttentionInterface.register(GROUPED_DECODE_FP32, functools.partial(_grouped_decode_sdpa, fp32_scores=True))
    AttentionInterface.register(GROUPED_DECODE_FUSED, functools.partial(_grouped_decode_sdpa, fused=True))
    for registered in GROUPED_KINDS:
        AttentionMaskInterface.register(registered, sdpa_mask)
    model.set_attn_implementation(name)
    return model.config._attn_implementation == name


def _grouped_decode_sdpa(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, is_causal=None,
                         fp32_scores: bool = False, fused: bool = False, **kwargs):
    """`sdpa_attention_forward` for prefill; for one query position, grouped heads against their shared KV head.

    The decode step is two batched matrix products and a float32 softmax, not an SDPA kernel: with one query
    position per row, a fused attention kernel works on tiles of 64+ query rows with one (or a group's few) in
    use, while a batched product reads each key and value once at memory speed. The scores come out of the
    product in the model's dtype (bf16 on CUDA: rounded to ~3 significant digits, as in transformers' eager
    attention, where SDPA kernels keep them in float32), then are masked and normalised in float32. The
    measured titles (docs/evaluate.md "Seventh lease") include that rounding. `fp32_scores` keeps them in float32:
    `torch.bmm(..., out_dtype=torch.float32)` on CUDA (no float32 copy of the cache), the inputs upcast elsewhere.
    `fused`: the same grouping through one `scaled_dot_product_attention` call (`grouped_decode_attention`)."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    batch, heads, q_len, dim = query.shape
    kv_heads, kv_len = key.shape[1], key.shape[2]
    if (q_len != 1 or heads == kv_heads or dropout or kwargs.get("output_attentions", False)
            or kwargs.get("position_bias") is not None or kwargs.get("softcap") is not None):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, is_causal=is_causal, **kwargs)
    groups = heads // kv_heads
    scale = dim ** -0.5 if scaling is None else scaling
    grouped = query.reshape(batch, kv_heads, groups, dim)  # query head h = kv head h // groups, as repeat_kv pairs them
    mask = None if attention_mask is None else attention_mask[:, :, :, :kv_len]  # (batch, 1, 1, kv_len): broadcast
    if fused:  # the group's query heads as query positions of their KV head, each under the row's mask
        out = torch.nn.functional.scaled_dot_product_attention(grouped, key, value, attn_mask=mask, scale=scale)
    else:
        rows = grouped * scale
        if not fp32_scores or query.dtype == torch.float32:
            scores = torch.matmul(rows, key.transpose(-1, -2)).float()  # (batch, kv heads, groups, kv_len)
        elif query.is_cuda:
            scores = torch.bmm(rows.reshape(batch * kv_heads, groups, dim), key.reshape(batch * kv_heads, kv_len, dim).transpose(1, 2),
                               out_dtype=torch.float32).view(batch, kv_heads, groups, kv_len)
        else:
            scores = torch.matmul(rows.float(), key.float().transpose(-1, -2))
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
        out = torch.matmul(scores.softmax(-1).to(value.dtype), value)  # (batch, kv heads, groups, dim)
    return out.reshape(batch, heads, 1, dim).transpose(1, 2).contiguous(), None
