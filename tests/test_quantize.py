"""int8 quantisation rules v1 (v1.0-QAT, v1.1) and v2 (students): round trip and edge cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tessera.quantize import dequantize, quantize


def _embeddings(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((500, 128), generator=g) * torch.rand((500, 1), generator=g) * 5
    x[0] = 0.0  # an all-zero row exercises the scale floor
    return x


@pytest.mark.parametrize("rule", ["v1", "v2"])
def test_round_trip_within_half_a_step(rule: str) -> None:
    x = _embeddings(1)
    q, scale = quantize(x, rule)  # type: ignore[arg-type]
    assert q.dtype == torch.int8 and scale.dtype == torch.float32 and scale.shape == (500,)
    err = (x - dequantize(q, scale)).abs()
    # half a step, plus float32 rounding of x / scale
    assert bool((err <= scale.unsqueeze(1) * (0.5 + 1e-5)).all())
    assert torch.equal(q[0], torch.zeros(128, dtype=torch.int8))


def test_v1_rule_matches_its_formula() -> None:
    x = _embeddings(2)
    q, scale = quantize(x, "v1")
    assert torch.equal(scale, torch.clamp(x.abs().amax(1) / 127, min=1e-8))
    assert float(scale[0]) == pytest.approx(1e-8)
    assert int(q.max()) == 127  # the largest magnitude maps to +-127
    # half-to-even: 2.5 steps rounds to 2, 3.5 to 4
    row = torch.tensor([[127.0, 2.5, 3.5, -2.5]])
    qr, _ = quantize(row, "v1")
    assert qr.tolist() == [[127, 2, 4, -2]]


def test_v2_rule_matches_numpy_reference() -> None:
    x = _embeddings(3)
    q, scale = quantize(x, "v2")
    xn = x.numpy()
    absmax = np.maximum(np.abs(xn).max(axis=1), np.float32(1e-12))
    want_scale = (absmax / np.float32(127)).astype(np.float32)
    want_q = np.clip(np.round(xn / want_scale[:, None]), -127, 127).astype(np.int8)
    assert np.array_equal(scale.numpy(), want_scale)
    assert np.array_equal(q.numpy(), want_q)
    assert int(q.min()) >= -127
