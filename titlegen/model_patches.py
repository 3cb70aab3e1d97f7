"""Changes to a loaded model that keep its numbers and remove waiting: used by generation and training."""


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
