"""Masked reductions over padded token tensors.

Responses in a batch have different lengths, so every per-token tensor comes
with a ``mask`` (True / 1 on real response tokens, False / 0 on padding).
These helpers make sure padding never reaches a mean, a variance or a
whitened advantage. Masked entries are selected away with ``torch.where``
rather than multiplied by zero, so a padded ``inf`` or ``nan`` cannot leak
into the result (``inf * 0`` is ``nan``).
"""

import torch

# Added under the square root when whitening, so a constant tensor (variance 0)
# does not divide by zero.
_WHITEN_EPS = 1e-8


def masked_sum(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Sum of ``x`` over the entries where ``mask`` is set.

    Args:
        x: any shape, e.g. ``(batch, response_len)``.
        mask: same shape as ``x``; bool or 0/1.
        dim: reduce over this dimension only; ``None`` reduces over all.

    Returns:
        A 0-dim tensor, or ``x`` with ``dim`` removed.
    """
    selected = torch.where(mask.bool(), x, torch.zeros_like(x))
    if dim is None:
        return selected.sum()
    return selected.sum(dim=dim)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``x`` over the entries where ``mask`` is set.

    A row (or tensor) with no unmasked entry has mean 0 rather than ``nan``:
    an empty response then contributes nothing to a loss instead of
    poisoning the whole batch.

    Args:
        x: any shape, e.g. ``(batch, response_len)``.
        mask: same shape as ``x``; bool or 0/1.
        dim: reduce over this dimension only; ``None`` reduces over all.

    Returns:
        A 0-dim tensor, or ``x`` with ``dim`` removed.
    """
    bool_mask = mask.bool()
    count = bool_mask.sum() if dim is None else bool_mask.sum(dim=dim)
    return masked_sum(x, bool_mask, dim) / count.to(x.dtype).clamp(min=1.0)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of ``x`` over the entries where ``mask`` is set (all dims).

    Args:
        x: any shape, e.g. ``(batch, response_len)``.
        mask: same shape as ``x``; bool or 0/1.
        unbiased: apply Bessel's correction n / (n - 1). With fewer than two
            entries the correction is undefined and the biased value is used.

    Returns:
        A 0-dim tensor.
    """
    bool_mask = mask.bool()
    mean = masked_mean(x, bool_mask)
    var = masked_mean((x - mean) ** 2, bool_mask)
    count = bool_mask.sum().to(x.dtype)
    if unbiased and count > 1:
        var = var * count / (count - 1)
    return var


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """Normalise ``x`` to unit variance using statistics of unmasked entries only.

    Used on PPO advantages: whitening over the batch keeps the policy-gradient
    step size independent of the reward scale (as in TRL / OpenAI baselines).

    Args:
        x: any shape, e.g. ``(batch, response_len)``.
        mask: same shape as ``x``; bool or 0/1.
        shift_mean: if True the result has mean 0; if False the original mean
            is kept and only the spread is rescaled (TRL's convention).

    Returns:
        Same shape as ``x``; masked entries are 0.
    """
    bool_mask = mask.bool()
    mean = masked_mean(x, bool_mask)
    var = masked_var(x, bool_mask)
    whitened = (x - mean) * torch.rsqrt(var + _WHITEN_EPS)
    if not shift_mean:
        whitened = whitened + mean
    return torch.where(bool_mask, whitened, torch.zeros_like(whitened))
