"""Per-pixel symmetric int8 quantisation of embeddings, as the reference writes them (reference-spec 4.1, 5.1).

Two rules exist and both are kept bit-for-bit, because published int8 products are read back with
``q * scale``:

* ``v1`` (v1.0-QAT, v1.1): ``scale = max(max|x| / 127, 1e-8)``, ``q = clamp(round(x / scale), -128, 127)``.
* ``v2`` (students): ``scale = max(max|x|, 1e-12) / 127``, ``q = clip(round(x / scale), -127, 127)``.

``round`` is half-to-even in both (``torch.round`` / ``np.round``). All arithmetic is float32.
"""

from __future__ import annotations

from typing import Literal

import torch

__all__ = ["QuantRule", "dequantize", "quantize"]

QuantRule = Literal["v1", "v2"]


def quantize(x: torch.Tensor, rule: QuantRule) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantise each row of ``x`` to int8 with its own scale.

    Args:
        x: ``(..., D)`` finite embeddings (any float dtype; computed in float32).
        rule: ``v1`` or ``v2`` (`tessera.models.spec.InputSpec.quantisation`).

    Returns:
        ``(q, scale)``: int8 ``(..., D)`` codes and float32 ``(...)`` scales, with ``x ~= q * scale``.
    """
    x = x.float()
    absmax = x.abs().amax(dim=-1)
    if rule == "v1":
        scale = torch.clamp(absmax / 127.0, min=1e-8)
        low = -128.0
    elif rule == "v2":
        scale = torch.clamp(absmax, min=1e-12) / 127.0
        low = -127.0
    else:
        raise ValueError(f"unknown quantisation rule {rule!r}; expected 'v1' or 'v2'")
    q = torch.clamp(torch.round(x / scale.unsqueeze(-1)), low, 127.0).to(torch.int8)
    return q, scale


def dequantize(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``q * scale`` in float32: the reference's dequantisation (``q.astype(float32) * scale[..., None]``)."""
    return q.float() * scale.float().unsqueeze(-1)
