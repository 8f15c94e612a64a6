"""The reference's checkpoint loaders, step by step, read what `tessera train` writes (README "Checkpoints").

Each loader below repeats the reference's steps (reference-spec 3.3, 4.1, 4.2, 5.1) on a checkpoint of
a one-step training run of the matching architecture; the package's model classes stand in for the
reference's, as their state-dict names are the reference's (`tests/test_models.py`). The loaded weights
must then give what `tessera.models.load` gives. The full-size v1.x models write 0.5-1 GB per
checkpoint, so those cases are slow tests; the demo (v1.0 layout) and v2-nano cases are fast.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from tessera import models
from tessera.models import v2
from tessera.models.arch import Architecture, architecture
from tessera.train import ProjectionHead, TrainConfig, find_tiles, train
from tests.traindata import tiny_config, write_results

_REFERENCE_PROJECTOR_BLOCKS = 5  # ProjectionHead(128, hidden, out): 5 x [Linear, BatchNorm1d, ReLU] + Linear


def _state(payload: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The reference's pick of the state: ``model_state`` if present, else ``model_state_dict``."""
    state: dict[str, torch.Tensor] = payload["model_state"] if "model_state" in payload else payload["model_state_dict"]
    return state


def _strip_leading_compile_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    prefix = "_orig_mod."
    return {(k[len(prefix) :] if k.startswith(prefix) else k): v for k, v in state.items()}


def load_v1_0(run: Path, arch: Architecture, cfg: TrainConfig) -> torch.nn.Module:
    """v1.0 (3.3): ``build_ssl_model(config)`` with the projector of the configured width, strict load."""
    payload = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)
    state = _strip_leading_compile_prefix(_state(payload))
    model = arch.build()  # s2_backbone, s1_backbone, dim_reducer
    model.projector = ProjectionHead(arch.output_dim(), cfg.projector_dim, _REFERENCE_PROJECTOR_BLOCKS)
    model.load_state_dict(state, strict=True)
    # the projector under the reference's key names: Linear at net.{0,3,...,15}, BatchNorm1d between
    linears = {f"projector.net.{3 * i}.{w}" for i in range(6) for w in ("weight", "bias")}
    norm_keys = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    norms = {f"projector.net.{3 * i + 1}.{w}" for i in range(5) for w in norm_keys}
    assert {k for k in state if k.startswith("projector.")} == linears | norms
    return model.eval()


def load_v1_0_qat(run: Path, arch: Architecture, cfg: TrainConfig) -> torch.nn.Module:
    """v1.0-QAT (4.1): ``_orig_mod.`` removed anywhere, split by prefix, strict per part, the rest ignored."""
    payload = torch.load(run / "encoder.pt", map_location="cpu", weights_only=True)
    state = {k.replace("_orig_mod.", ""): v for k, v in _state(payload).items()}
    model = arch.build()
    for prefix in ("s2_backbone.", "s1_backbone.", "dim_reducer."):
        part = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        getattr(model, prefix[:-1]).load_state_dict(part, strict=True)
    return model.eval()


def load_v1_1(run: Path, arch: Architecture, cfg: TrainConfig) -> torch.nn.Module:
    """v1.1 (4.2, ``load_v1_1_checkpoint``): projectors dropped, ``strict=False``: nothing may be missing or extra."""
    payload = torch.load(run / "encoder.pt", map_location="cpu", weights_only=True)
    state = _strip_leading_compile_prefix(_state(payload))
    state = {k: v for k, v in state.items() if not k.startswith(("projector.", "segmented_matryoshka_projector."))}
    model = arch.build()
    result = model.load_state_dict(state, strict=False)  # the reference only logs these: they must be empty
    assert result.missing_keys == [] and result.unexpected_keys == []
    return model.eval()


def load_v2(run: Path, arch: Architecture, cfg: TrainConfig) -> torch.nn.Module:
    """v2 (5.1): ``PixelStudent(**args)`` (dropout 0), then ``load_state_dict(payload["model"])`` (strict)."""
    payload = torch.load(run / "encoder.pt", map_location="cpu", weights_only=True)
    args = payload["args"]
    student = v2.StudentArgs(
        repr_dim=args["repr_dim"],
        latent_dim=args["latent_dim"],
        num_layers=args["num_layers"],
        nhead=args["nhead"],
        dim_feedforward=args["dim_feedforward"],
        max_seq_len=args["max_seq_len"],
        matryoshka_dims=tuple(int(d) for d in args["matryoshka_dims"].split(",")),
        enable_qk_norm=args["enable_qk_norm"],
    )
    model = v2.build(student)
    model.load_state_dict(payload["model"])
    return model.eval()


Loader = Callable[[Path, Architecture, TrainConfig], torch.nn.Module]


@pytest.fixture(scope="module")
def tiles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_results(tmp_path_factory.mktemp("results"), side=24, size=24)


@pytest.fixture(scope="module")
def runs(tiles: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], tuple[Path, TrainConfig]]:
    """One step of training per architecture (once per module), with the reference's 5-block projector."""
    done: dict[str, tuple[Path, TrainConfig]] = {}

    def run(name: str) -> tuple[Path, TrainConfig]:
        if name not in done:
            cfg = tiny_config(arch=name, steps=1, batch_size=8, projector_dim=16, projector_layers=5)
            out = tmp_path_factory.mktemp(name)
            train(cfg, find_tiles([tiles], [2022]), out, resume=False)
            done[name] = (out, cfg)
        return done[name]

    return run


@pytest.mark.parametrize(
    ("arch_name", "loader"),
    [
        ("demo", load_v1_0),  # the demo model has the v1.0 layout
        ("demo", load_v1_0_qat),
        ("v2-nano", load_v2),
        pytest.param("v1.0", load_v1_0, marks=pytest.mark.slow),
        pytest.param("v1.0-qat", load_v1_0_qat, marks=pytest.mark.slow),
        pytest.param("v1.1", load_v1_1, marks=pytest.mark.slow),
    ],
)
def test_the_reference_loader_of_the_family_reads_our_checkpoint(
    runs: Callable[[str], tuple[Path, TrainConfig]], arch_name: str, loader: Loader
) -> None:
    out, cfg = runs(arch_name)
    arch = architecture(arch_name)
    reference = loader(out, arch, cfg)
    ours = models.load(out / "encoder.pt")
    s2, s1 = torch.randn(3, 8, 11), torch.randn(3, 8, 3)
    with torch.no_grad():
        expected = ours.module(s2, s1)
        got = reference(s2, s1)[:, : expected.shape[1]]  # v1.1 computes 192 dimensions and keeps 128
    torch.testing.assert_close(got, expected)
    # the trained weights, not a fresh build: one step moved them away from the seeded start
    fresh = arch.build(seed=cfg.seed).eval()
    with torch.no_grad():
        assert not torch.allclose(fresh(s2, s1)[:, : expected.shape[1]], expected)
