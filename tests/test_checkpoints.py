"""tessera.models.load: reference checkpoint formats, family detection, and clear errors."""

from __future__ import annotations

import argparse
import hashlib
import logging
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import tessera.models as tm
from tessera.errors import CheckpointError, ConfigError
from tessera.models import demo, norms, v1, v1_1, v1_qat, v2

TINY_V2 = v2.StudentArgs(latent_dim=8, num_layers=2, nhead=2, dim_feedforward=64)


def seeded(model: nn.Module, seed: int = 1) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) / max(1, p.shape[-1]) ** 0.5)
    return model.eval()


def make_inputs(batch: int = 3, steps: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    s2, s1 = torch.randn(batch, steps, 11, generator=g), torch.randn(batch, steps, 3, generator=g)
    for x in (s2, s1):
        x[..., -1] = torch.randint(1, 366, (batch, steps), generator=g).float()
    return s2, s1


def fake_projector() -> dict[str, torch.Tensor]:
    """A few small stand-ins for the 1.3 B-parameter training projector the reference checkpoints carry."""
    return {
        "projector.net.0.weight": torch.ones(4, 128),
        "projector.net.0.bias": torch.zeros(4),
        "projector.net.1.running_mean": torch.zeros(4),
        "projector.net.1.num_batches_tracked": torch.tensor(3),
    }


@pytest.fixture(scope="module")
def v1_model() -> nn.Module:
    return seeded(v1.build())


@pytest.fixture(scope="module")
def v1_checkpoint(v1_model: nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """v1.0 as the reference saves it: torch.compile prefixes, training projector, extra training entries."""
    state = {f"_orig_mod.{k}": v for k, v in v1_model.state_dict().items()}
    state.update({f"_orig_mod.{k}": v for k, v in fake_projector().items()})
    payload = {"epoch": 12, "best_val_loss": np.float64(0.25), "model_state_dict": state}
    path = tmp_path_factory.mktemp("ckpt") / "best_model_fsdp.pt"
    torch.save(payload, path)
    return path


@pytest.mark.slow
def test_reference_v1_checkpoint_loads_and_reproduces_outputs(v1_model: nn.Module, v1_checkpoint: Path) -> None:
    loaded = tm.load(v1_checkpoint)
    assert loaded.family == "v1.0"
    assert loaded.checkpoint_sha256 == hashlib.sha256(v1_checkpoint.read_bytes()).hexdigest()
    assert not loaded.random_weights
    assert not loaded.module.training
    s2, s1 = make_inputs()
    with torch.no_grad():
        assert torch.equal(loaded.module(s2, s1), v1_model(s2, s1))
    assert loaded.spec.sampling == "random"
    assert loaded.spec.s2_mean == norms.V1_0.s2_mean
    assert (loaded.spec.output_dim, loaded.spec.save_dim, loaded.spec.quantisation) == (128, 128, "v1")


def test_wrong_explicit_family_lists_missing_and_unexpected_keys(v1_checkpoint: Path) -> None:
    with pytest.raises(CheckpointError) as err:
        tm.load(v1_checkpoint, family="v1.0-qat")
    message = str(err.value)
    assert "v1.0-qat" in message
    assert "missing keys" in message and "gru_cell.W_hh.weight" in message
    assert "unexpected keys" in message and "temporal_context.weight_ih_l0" in message
    assert str(v1_checkpoint) in message


def save(tmp_path: Path, payload: Any, name: str = "c.pt") -> Path:
    path = tmp_path / name
    torch.save(payload, path)
    return path


@pytest.mark.slow
def test_model_state_key_and_infix_compile_prefix_for_qat(tmp_path: Path) -> None:
    model = seeded(v1_qat.build())
    # the QAT loader removes "_orig_mod." anywhere in a key, not only at the start
    state = {k.replace("s2_backbone.", "s2_backbone._orig_mod."): v for k, v in model.state_dict().items()}
    path = save(tmp_path, {"model_state": {**state, **fake_projector()}})
    loaded = tm.load(path)
    assert loaded.family == "v1.0-qat"
    s2, s1 = make_inputs(batch=2, steps=4)
    with torch.no_grad():
        assert torch.equal(loaded.module(s2, s1), model(s2, s1))


@pytest.mark.parametrize(("source", "table"), [("planetary-computer", norms.V1_1_MPC), ("opera", norms.V1_1_AWS)])
def test_v1_1_detection_source_table_and_dropped_projectors(
    tmp_path: Path, source: str, table: norms.NormTable
) -> None:
    with torch.device("meta"):
        shapes = v1_1.build().state_dict()
    # only the keys and shapes matter for loading; zeros are cheap to write
    state = {k: torch.zeros(v.shape) for k, v in shapes.items()}
    state["segmented_matryoshka_projector.heads.0.weight"] = torch.zeros(2, 2)
    loaded = tm.load(save(tmp_path, {"model_state_dict": state, "config": {"latent_dim": 192}}), source=source)
    assert loaded.family == "v1.1"
    assert loaded.spec.s2_mean == table.s2_mean and loaded.spec.s1d_std == table.s1d_std
    assert (loaded.spec.sampling, loaded.spec.zero_bin, loaded.spec.output_dim, loaded.spec.save_dim) == (
        "bins-v1.1",
        8,
        192,
        128,
    )
    assert loaded.spec.bins == tuple(range(8, 257, 8))


def test_v1_1_loading_is_strict_unlike_the_reference(tmp_path: Path) -> None:
    with torch.device("meta"):
        shapes = v1_1.build().state_dict()
    state = {k: torch.zeros(v.shape) for k, v in shapes.items() if "layer_norm" not in k}
    with pytest.raises(CheckpointError, match=r"missing keys \(4\).*attn_pool.layer_norm"):
        tm.load(save(tmp_path, {"model_state_dict": state}))


def test_v2_student_payload_with_namespace_args_and_matryoshka_dimensions(tmp_path: Path) -> None:
    model = seeded(v2.build(TINY_V2))
    args = argparse.Namespace(**TINY_V2.to_dict())  # training scripts may store argparse args
    path = save(tmp_path, {"args": args, "model": model.state_dict()})
    loaded = tm.load(path, dimensions=16)
    assert loaded.family == "v2"  # a custom size, none of nano..large
    assert (loaded.spec.output_dim, loaded.spec.save_dim, loaded.spec.zero_bin) == (16, 16, 0)
    assert (loaded.spec.sampling, loaded.spec.quantisation) == ("bins-v2", "v2")
    s2, s1 = make_inputs()
    with torch.no_grad():
        assert torch.equal(loaded.module(s2, s1), model(s2, s1)[:, :16])
    with pytest.raises(ConfigError, match="Matryoshka"):
        tm.load(path, dimensions=48)
    with pytest.raises(CheckpointError, match="v2-small"):
        tm.load(path, family="v2-small")


def test_v2_size_family_name_from_args(tmp_path: Path) -> None:
    args = v2.StudentArgs(latent_dim=64, num_layers=4, dim_feedforward=1024)
    with torch.device("meta"):
        shapes = v2.build(args).state_dict()
    path = save(tmp_path, {"args": args.to_dict(), "model": {k: torch.zeros(v.shape) for k, v in shapes.items()}})
    assert tm.load(path, family="v2-small").family == "v2-small"


def test_demo_model_when_no_checkpoint(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="tessera.models"):
        first = tm.load(None)
    assert "MEANINGLESS" in caplog.text
    second = tm.load(None, family="demo")
    assert first.family == "demo" and first.random_weights and first.checkpoint_sha256 is None
    s2, s1 = make_inputs()
    with torch.no_grad():
        assert torch.equal(first.module(s2, s1), second.module(s2, s1))
    assert first.spec == demo.input_spec()


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pt"
    with pytest.raises(CheckpointError, match=r"nope\.pt does not exist"):
        tm.load(missing)
    with pytest.raises(CheckpointError, match=r"is a directory; set model\.checkpoint to the checkpoint file in it"):
        tm.load(tmp_path)


def test_corrupt_file(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.pt"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(CheckpointError, match="corrupt"):
        tm.load(path)


class _Opaque:
    """Stands for any object whose unpickling would run code from the file."""


def test_checkpoint_needing_code_is_refused(tmp_path: Path) -> None:
    path = save(tmp_path, {"model_state_dict": {}, "extra": _Opaque()})
    with pytest.raises(CheckpointError, match="re-save"):
        tm.load(path)


def test_unrecognised_checkpoint(tmp_path: Path) -> None:
    path = save(tmp_path, {"model_state_dict": {"encoder.weight": torch.zeros(2, 2)}})
    with pytest.raises(CheckpointError, match="cannot tell the model family"):
        tm.load(path)
    with pytest.raises(CheckpointError, match="no model state dict"):
        tm.load(save(tmp_path, {"weights": [1, 2]}, "other.pt"))


def test_shape_mismatch_is_reported(tmp_path: Path) -> None:
    # the demo model is the v1.0 architecture at a tiny width: same keys, other shapes
    path = save(tmp_path, {"model_state_dict": demo.build().state_dict()})
    with pytest.raises(
        CheckpointError, match=r"shape mismatches .*s1_backbone.embedding.0.weight: checkpoint \(64, 2\)"
    ):
        tm.load(path)


def test_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="unknown model family"):
        tm.load(None, family="v3")
    with pytest.raises(ConfigError, match="dimensions"):
        tm.load(None, dimensions=64)


def test_numpy_objects_pickled_under_numpy_1_are_accepted(tmp_path: Path) -> None:
    """Checkpoints written under NumPy 1 name ``numpy.core.multiarray``; NumPy 2 renamed it ``numpy._core``."""
    modern = save(tmp_path, {"best_val_loss": np.float64(0.5), "history": np.arange(3)}, "modern.pt")
    legacy = tmp_path / "legacy.pt"
    with zipfile.ZipFile(modern) as source, zipfile.ZipFile(legacy, "w", zipfile.ZIP_STORED) as target:
        for info in source.infolist():
            data = source.read(info)
            if info.filename.endswith("data.pkl"):
                assert b"numpy._core.multiarray" in data
                data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
            target.writestr(info, data)
    payload = tm.load_payload(legacy)
    assert payload["best_val_loss"] == 0.5
    np.testing.assert_array_equal(payload["history"], np.arange(3))
