"""Loading a state dict of a FINE block built before it dropped its K, V and eq. 10 biases.

Pre-change blocks had biases on the shared K/V convolution (``kv.bias``, 2C values: b_k then b_v) and on the eq. 10
projection (``proj_high.bias``, C values). They add nothing to what the block computes (see :mod:`fine_yolo.nn.fine`,
"Biases"): with K = W_k (W_p x + b_p) + b_k and V = W_v (W_p x + b_p) + b_v,

* every key gains the same vector ``W_k b_p + b_k``, which shifts all logits of a query equally: softmax ignores it;
* every value gains ``c = W_v b_p + b_v``; attention rows sum to 1, so every head output gains c (its head's part),
  and W_O maps that to the constant ``W_O c``. Hence ``b_O' = b_O + W_O c`` gives the same M with no V bias.

:func:`fold_pre_change_biases` rewrites such a state dict in place into the current form, computing in float64 and
casting back to b_O's dtype, so ``load_state_dict`` of an old state dict gives a block with the old outputs (up to
float rounding). A dict that has the old keys but not what folding needs is reported, never half-loaded.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["fold_pre_change_biases"]


def _shape_problem(state_dict: dict[str, Any], key: str, shape: tuple[int, ...]) -> str | None:
    value = state_dict.get(key)
    if not isinstance(value, torch.Tensor):
        return f"'{key}' is missing"
    if tuple(value.shape) != shape:
        return f"'{key}' has shape {tuple(value.shape)}, expected {shape}"
    return None


def fold_pre_change_biases(
    state_dict: dict[str, Any], prefix: str, c_low: int, has_proj: bool, kv_bias: bool, proj_bias: bool
) -> str | None:
    """Fold the pre-change ``kv.bias`` / ``proj_high.bias`` under ``prefix`` into ``out.bias``, in place.

    Args:
        state_dict: the (local) state dict ``load_state_dict`` hands the block; keys start with ``prefix``.
        prefix: the block's key prefix (``"model.13."`` inside a YOLO model, ``""`` for a bare block).
        c_low: the block's channels C.
        has_proj: whether the block has the eq. 10 projection (``c_high != c_low``).
        kv_bias / proj_bias: whether the *receiving* block has those biases (a pre-change module unpickled from a
            checkpoint does; then nothing is folded and its own biases load as usual).

    Returns:
        None when nothing needed folding or the fold succeeded; else a message for ``load_state_dict``'s error list
        (the old keys are then left in place, so torch also reports them as unexpected).
    """
    kv_key, proj_key = prefix + "kv.bias", prefix + "proj_high.bias"
    fold_kv = not kv_bias and kv_key in state_dict
    fold_proj = has_proj and not proj_bias and proj_key in state_dict
    if not (fold_kv or fold_proj):
        return None
    c = c_low
    need = {prefix + "out.weight": (c, c, 1, 1), prefix + "out.bias": (c,)}
    if fold_kv:
        need[kv_key] = (2 * c,)
    if fold_proj:
        need[proj_key] = (c,)
        need[prefix + "kv.weight"] = (2 * c, c, 1, 1)
    problems = [p for key, shape in need.items() if (p := _shape_problem(state_dict, key, shape))]
    if problems:
        old = ", ".join(f"'{k}'" for k, fold in ((kv_key, fold_kv), (proj_key, fold_proj)) if fold)
        return (f"FINE state dict from before the K/V/projection biases were dropped ({old}) cannot be folded into "
                f"'{prefix}out.bias': {'; '.join(problems)}")
    offset = torch.zeros(c, dtype=torch.float64)  # c = W_v b_p + b_v, the constant every value gains
    if fold_kv:
        offset += state_dict.pop(kv_key).detach().to(torch.float64)[c:]
    if fold_proj:
        w_v = state_dict[prefix + "kv.weight"].detach().to(torch.float64).flatten(1)[c:]
        offset += w_v @ state_dict.pop(proj_key).detach().to(torch.float64)
    b_o = state_dict[prefix + "out.bias"]
    w_o = state_dict[prefix + "out.weight"].detach().to(torch.float64).flatten(1)
    state_dict[prefix + "out.bias"] = (b_o.detach().to(torch.float64) + w_o @ offset).to(b_o.dtype)
    return None
