"""Architectures of tessera.models: parameter counts, state-dict round trips, shapes, pooling and GRU equations."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from torch import nn

from tessera.models import demo, v1, v1_1, v1_qat, v2
from tessera.models.blocks import AttentionPool, CellGRU, CellGruAttentionPool, GruAttentionPool, doy_encoding

SMALL = v2.StudentArgs(latent_dim=64, num_layers=4, dim_feedforward=1024)
LARGE = v2.StudentArgs(latent_dim=160, num_layers=4, dim_feedforward=2560)
QK_NORM = v2.StudentArgs(latent_dim=8, num_layers=2, nhead=2, dim_feedforward=64, enable_qk_norm=True)


def make_inputs(batch: int = 2, steps: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Standardised-looking bands with sorted DOYs 1..365 in the last channel."""
    g = torch.Generator().manual_seed(seed)

    def one(bands: int) -> torch.Tensor:
        x = torch.randn(batch, steps, bands + 1, generator=g)
        x[..., -1] = torch.randint(1, 366, (batch, steps), generator=g).sort(dim=1).values.float()
        return x

    return one(10), one(2)


def seeded(model: nn.Module, seed: int = 1) -> nn.Module:
    """Give every parameter distinct seeded values (LayerNorm gains not 1), so a bad load would show."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) / max(1, p.shape[-1]) ** 0.5)
    return model.eval()


@pytest.mark.parametrize(
    ("build", "total", "parts"),
    [
        (v1.build, 87_841_922, (43_857_409, 43_853_313, 131_200)),
        (v1_qat.build, 45_828_226, (22_850_561, 22_846_465, 131_200)),
        (v1_1.build, 57_708_738, (26_198_529, 26_192_385, 5_317_824)),
        (lambda: v2.build(SMALL), 7_112_322, None),
        (lambda: v2.build(LARGE), 43_831_170, None),
    ],
    ids=["v1.0", "v1.0-qat", "v1.1", "v2-small", "v2-large"],
)
def test_parameter_counts_match_the_reference(build, total, parts) -> None:  # type: ignore[no-untyped-def]
    with torch.device("meta"):  # shapes only: no memory, no initialisation
        model = build()

    def count(m: nn.Module) -> int:
        return sum(p.numel() for p in m.parameters())

    assert count(model) == total
    if parts is not None:
        assert (count(model.s2_backbone), count(model.s1_backbone), count(model.dim_reducer)) == parts


def test_v2_sizes_are_named_from_their_parameter_count() -> None:
    with torch.device("meta"):
        counts = {name: sum(p.numel() for p in v2.build(a).parameters()) for name, a in [("s", SMALL), ("l", LARGE)]}
    assert v2.size_name(counts["s"]) == "small"
    assert v2.size_name(counts["l"]) == "large"
    assert v2.size_name(123_456) is None


def test_v1_state_dict_keys_follow_the_reference_names() -> None:
    with torch.device("meta"):
        keys = set(v1.build().state_dict())
    assert "s2_backbone.transformer_encoder.layers.7.self_attn.in_proj_weight" in keys
    assert "s1_backbone.attn_pool.temporal_context.bias_hh_l0" in keys
    assert "dim_reducer.0.weight" in keys
    assert not any("layers.8." in k for k in keys)


BUILDERS = {
    "v1.0": v1.build,
    "v1.0-qat": v1_qat.build,
    "v1.1": v1_1.build,
    "v2-small": lambda: v2.build(SMALL),
    "v2-qk-norm": lambda: v2.build(QK_NORM),
    "demo": demo.build,
}


#: The reference-sized families take seconds each on a CPU: run with the slow tests.
_LARGE = ("v1.0", "v1.0-qat", "v1.1")


@pytest.fixture(
    scope="module", params=[pytest.param(f, marks=pytest.mark.slow) if f in _LARGE else f for f in sorted(BUILDERS)]
)
def family_model(request: pytest.FixtureRequest) -> tuple[str, nn.Module]:
    """One seeded model per family, built once per module (the v1 models are large)."""
    return request.param, seeded(BUILDERS[request.param]())


def test_state_dict_round_trip_reproduces_outputs(family_model: tuple[str, nn.Module]) -> None:
    name, model = family_model
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    rebuilt = seeded(BUILDERS[name](), seed=2)  # different weights until the load
    rebuilt.load_state_dict(torch.load(buffer, weights_only=True), strict=True)
    s2, s1 = make_inputs()
    with torch.no_grad():
        expected = model(s2, s1)
        assert torch.equal(rebuilt(s2, s1), expected)
    width = {"v1.1": 192}.get(name, 128)
    assert expected.shape == (2, width)
    assert torch.isfinite(expected).all()


def test_outputs_do_not_depend_on_the_batch(family_model: tuple[str, nn.Module]) -> None:
    _, model = family_model
    s2, s1 = make_inputs(batch=3, steps=5, seed=3)
    with torch.no_grad():
        whole = model(s2, s1)
        single = model(s2[1:2], s1[1:2])
    torch.testing.assert_close(single[0], whole[1], rtol=1e-5, atol=1e-6)


def test_v2_output_is_layer_normalised_and_matryoshka_prefix_is_a_truncation() -> None:
    full = seeded(v2.build(QK_NORM))
    prefix = v2.build(QK_NORM, keep_dims=32)
    prefix.load_state_dict(full.state_dict())
    prefix.eval()
    s2, s1 = make_inputs(batch=4)
    with torch.no_grad():
        out = full(s2, s1)
        short = prefix(s2, s1)
    assert short.shape == (4, 32)
    assert torch.equal(short, out[:, :32])
    torch.testing.assert_close(out.mean(dim=1), torch.zeros(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.var(dim=1, unbiased=False), torch.ones(4), atol=1e-3, rtol=0)


def test_v2_takes_sequences_of_different_lengths_per_modality() -> None:
    model = seeded(v2.build(QK_NORM))
    s2, _ = make_inputs(batch=2, steps=16)
    zero_s1 = torch.zeros(2, 1, 3)  # a modality without data is fed one all-zero step
    with torch.no_grad():
        assert model(s2, zero_s1).shape == (2, 128)


def test_doy_encoding_interleaves_sin_and_cos() -> None:
    doy = torch.tensor([[1.0, 200.0]])
    pe = doy_encoding(doy, 8)
    freq = np.exp(np.arange(0, 8, 2) * -(np.log(10000.0) / 8))
    expected = np.empty((2, 8))
    expected[:, 0::2] = np.sin(np.array([[1.0], [200.0]]) * freq)
    expected[:, 1::2] = np.cos(np.array([[1.0], [200.0]]) * freq)
    assert pe.dtype == torch.float32
    np.testing.assert_allclose(pe[0].numpy(), expected, atol=1e-5)


@pytest.mark.parametrize("pool_type", [AttentionPool, GruAttentionPool, CellGruAttentionPool])
def test_pooling_edge_cases(pool_type: type[AttentionPool]) -> None:
    pool = seeded(pool_type(4))
    x = torch.randn(3, 1, 4)
    with torch.no_grad():
        assert torch.equal(pool(x), x[:, 0])
        assert torch.equal(pool(torch.randn(3, 0, 4)), torch.zeros(3, 4))
        many = torch.randn(3, 5, 4)
        out = pool(many)
    # a convex combination of the steps stays within their per-channel range
    assert (out <= many.max(dim=1).values + 1e-6).all()
    assert (out >= many.min(dim=1).values - 1e-6).all()


def test_cell_gru_follows_the_spec_equations() -> None:
    gru = seeded(CellGRU(3, 4), seed=5)
    x = torch.randn(2, 5, 3, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        out = gru(x).numpy().astype(np.float64)
    w = {name: p.detach().numpy().astype(np.float64) for name, p in gru.gru_cell.named_parameters()}

    def sigmoid(a: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-a))

    xs = x.numpy().astype(np.float64)
    h = np.zeros((2, 4))
    expected = []
    for t in range(5):
        xt = xs[:, t]
        r = sigmoid(xt @ w["W_ir.weight"].T + h @ w["W_hr.weight"].T + w["b_r"])
        z = sigmoid(xt @ w["W_iz.weight"].T + h @ w["W_hz.weight"].T + w["b_z"])
        candidate = np.tanh(xt @ w["W_ih.weight"].T + (r * h) @ w["W_hh.weight"].T + w["b_h"])
        h = (1 - z) * h + z * candidate
        expected.append(h)
    np.testing.assert_allclose(out, np.stack(expected, axis=1), rtol=1e-5, atol=1e-6)


def test_demo_model_is_deterministic_and_leaves_the_global_rng_alone() -> None:
    state = torch.get_rng_state()
    first, second = demo.build(), demo.build()
    assert torch.equal(torch.get_rng_state(), state)
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert not torch.equal(demo.build(seed=1).dim_reducer[0].weight, first.dim_reducer[0].weight)
    spec = demo.input_spec()
    assert (spec.sampling, spec.s2_steps, spec.s1_steps) == ("random", 40, 40)


def test_bf16_model_cast_runs_and_autocast_keeps_float32_encoding() -> None:
    # the reference's model.to(bfloat16) path crashes on the float32 positional encoding
    model = demo.build().eval()
    s2, s1 = make_inputs()
    with torch.no_grad():
        reference = model(s2, s1)
        cast = model.to(torch.bfloat16)(s2.bfloat16(), s1.bfloat16())
        model.float()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            auto = model(s2, s1)
    assert cast.dtype == torch.bfloat16
    torch.testing.assert_close(cast.float(), reference, atol=0.1, rtol=0.1)
    torch.testing.assert_close(auto.float(), reference, atol=0.1, rtol=0.1)
