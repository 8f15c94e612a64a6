"""Per-tile inference: bitwise determinism across tilings and batches, T invariance, nodata, outputs, sidecar."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from tessera import models
from tessera.config import ModelConfig
from tessera.errors import ConfigError
from tessera.infer import infer_arrays, observation_counts
from tessera.inferjob import embed_tile_dir
from tessera.models import v1_1, v2
from tessera.models.spec import InputSpec, LoadedModel
from tessera.quantize import dequantize
from tessera.staging import GPU_GRANULE, GPU_MAX_BATCH, Runner, batch_for_memory, resolve_device
from tessera.tileio import TileArrays
from tests.tilegen import cut, make_world, with_extra_dates, write_tile_dir

YEAR = 2024


@pytest.fixture(scope="module")
def demo() -> LoadedModel:
    return models.load(None)


class PoolModel(nn.Module):
    """A small stand-in with the model contract: mean-pooled per-modality projections, then a linear head."""

    def __init__(self, output_dim: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.s2 = nn.Linear(11, 16)
        self.s1 = nn.Linear(3, 16)
        self.head = nn.Linear(32, output_dim)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.rand(p.shape, generator=g) - 0.5)

    def forward(self, s2: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat((self.s2(s2).mean(1), self.s1(s1).mean(1)), -1))


def standin(spec: InputSpec, family: str) -> LoadedModel:
    return LoadedModel(PoolModel(spec.output_dim).eval(), family, spec, checkpoint_sha256=None, random_weights=True)


def run(model: LoadedModel, tile: TileArrays, origin: tuple[int, int], **kw: Any) -> np.ndarray:
    return infer_arrays(model, tile, origin=origin, year=YEAR, **kw).embeddings


@pytest.mark.slow
def test_same_pixel_same_bytes_across_tilings_and_batches(demo: LoadedModel) -> None:
    world = make_world(21, 20, 20)
    full, grid = cut(world, 0, 0, 20)
    a = run(demo, full, (grid.col, grid.row))
    assert np.isfinite(a).any()
    part, pgrid = cut(world, 6, 9, 8)
    b = run(demo, part, (pgrid.col, pgrid.row), batch_size=5, chunk_pixels=16)
    assert a[9:17, 6:14].tobytes() == b.tobytes()
    again = run(demo, full, (grid.col, grid.row), batch_size=1000, chunk_pixels=60)
    assert a.tobytes() == again.tobytes()


def test_seed_depends_on_global_position_and_year(demo: LoadedModel) -> None:
    tile, grid = cut(make_world(22, 8, 8), 0, 0, 8)
    a = run(demo, tile, (grid.col, grid.row))
    shifted = run(demo, tile, (grid.col + 1, grid.row))
    other_year = infer_arrays(demo, tile, origin=(grid.col, grid.row), year=YEAR - 1).embeddings
    ok = np.isfinite(a[..., 0])
    assert not np.array_equal(a[ok], shifted[ok]) and not np.array_equal(a[ok], other_year[ok])


@pytest.mark.parametrize("family", ["random", "bins-v1.1", "bins-v2"])
def test_invariant_to_extra_invalid_dates(demo: LoadedModel, family: str) -> None:
    world = make_world(23, 10, 10)
    tile, grid = cut(world, 0, 0, 10)
    model = {"random": demo, "bins-v1.1": standin(v1_1.input_spec("planetary-computer"), "v1.1")}.get(
        family, standin(v2.input_spec(128), "v2-small")
    )
    used = lambda d: sorted(set(range(1, 366)) - {int(v) for v in d})  # noqa: E731
    extra = with_extra_dates(
        tile, used(tile.doys)[:7], used(tile.sar_ascending_doy)[5:8], used(tile.sar_descending_doy)[100:102]
    )
    assert extra.bands.shape[0] == tile.bands.shape[0] + 7
    a = run(model, tile, (grid.col, grid.row))
    b = run(model, extra, (grid.col, grid.row))
    if family != "random":
        assert a.tobytes() == b.tobytes()
        return
    # the reference's fallback draws over all T dates: pixels that use it depend on the date set
    # (as the reference's depend on its ROI's); pixels with valid S2 and S1 never do
    n2, n1, _ = observation_counts(tile)
    data = (tile.roi > 0) & (n2 > 0) & (n1 > 0)
    fallback = (tile.roi > 0) & ~data
    assert data.any() and fallback.any()
    assert a[data].tobytes() == b[data].tobytes()
    assert not np.array_equal(a[fallback], b[fallback])
    strict = run(model, extra, (grid.col, grid.row), nodata_policy="strict")
    assert strict.tobytes() == run(model, tile, (grid.col, grid.row), nodata_policy="strict").tobytes()


@pytest.mark.parametrize("policy", ["reference", "strict"])
def test_random_family_nodata(demo: LoadedModel, policy: str) -> None:
    tile, grid = cut(make_world(24, 12, 12), 0, 0, 12)
    tile.bands[:, 5:7, 5:7] = 0  # no S2 value at all: not embedded under either policy
    res = infer_arrays(demo, tile, origin=(grid.col, grid.row), year=YEAR, nodata_policy=policy)
    n2 = tile.masks.sum(0)
    n1 = (tile.sar_ascending != 0).any(-1).sum(0) + (tile.sar_descending != 0).any(-1).sum(0)
    s2_any = (tile.bands != 0).any(axis=(0, -1))
    want = (tile.roi > 0) & (s2_any if policy == "reference" else (n2 > 0) & (n1 > 0))
    assert np.array_equal(res.valid, want) and want.any() and (~want & (tile.roi > 0)).any()
    assert np.isnan(res.embeddings[~want]).all() and np.isfinite(res.embeddings[want]).all()
    assert res.outside_roi == int((tile.roi == 0).sum())
    assert res.no_valid_observation == int(((tile.roi > 0) & ~want).sum())
    assert res.device == "cpu" and res.precision == "fp32" and res.nodata_policy == policy
    assert sum(res.pixel_classes.values()) == 144 and res.pixel_classes["outside_roi"] == res.outside_roi
    fallbacks = res.pixel_classes["embedded_no_valid_s1"] + res.pixel_classes["embedded_no_valid_observation"]
    assert (fallbacks > 0) == (policy == "reference")


@pytest.mark.parametrize("policy", ["reference", "strict"])
@pytest.mark.parametrize("spec", [v1_1.input_spec("planetary-computer"), v2.input_spec(32)])
def test_bin_family_nodata_and_dims(spec: InputSpec, policy: str) -> None:
    tile, grid = cut(make_world(25, 12, 12), 0, 0, 12)
    res = infer_arrays(
        standin(spec, "x"), tile, origin=(grid.col, grid.row), year=YEAR, repeats=3, nodata_policy=policy
    )
    n2 = tile.masks.sum(0)
    n1 = (tile.sar_ascending != 0).any(-1).sum(0) + (tile.sar_descending != 0).any(-1).sum(0)
    assert res.embeddings.shape == (12, 12, spec.save_dim)
    # v1.1 under the reference policy embeds every ROI pixel (zero bins); v2 needs one valid modality
    every = policy == "reference" and spec.sampling == "bins-v1.1"
    assert np.array_equal(res.valid, (tile.roi > 0) & (every | (n2 > 0) | (n1 > 0)))
    assert ((n1 == 0) & (n2 > 0) & res.valid).any()  # S2-only pixels are embedded, as the reference does
    assert (((n1 == 0) & (n2 == 0) & res.valid).any()) == every
    assert np.isfinite(res.embeddings[res.valid]).all() and np.isnan(res.embeddings[~res.valid]).all()


@pytest.mark.slow
def test_repeats_average(demo: LoadedModel) -> None:
    tile, grid = cut(make_world(26, 6, 6), 0, 0, 6)
    one = run(demo, tile, (grid.col, grid.row))
    two = run(demo, tile, (grid.col, grid.row), repeats=2)
    ok = np.isfinite(one[..., 0])
    assert np.isfinite(two[ok]).all() and not np.allclose(one[ok], two[ok])
    assert two.tobytes() == run(demo, tile, (grid.col, grid.row), repeats=2).tobytes()


class Exploding(nn.Module):
    def forward(self, s2: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        raise AssertionError("the model must not run on an all-nodata tile")


def cfg(output: str, device: str = "cpu", policy: str = "reference") -> ModelConfig:
    return ModelConfig(None, "auto", output, 128, "bf16", device, None, 1, policy)


def infer_tile(model: ModelConfig, year: int, tile_dir: Path, out: Path) -> None:
    embed_tile_dir(model, "planetary-computer", year, tile_dir, out)


def test_all_nodata_tile(tmp_path: Path) -> None:
    tile, grid = cut(make_world(27, 6, 6), 0, 0, 6)
    # no valid S2 and not a single S2 value: nodata under both policies of the random family
    tile = TileArrays(**{**tile.__dict__, "masks": np.zeros_like(tile.masks), "bands": np.zeros_like(tile.bands)})
    res = infer_arrays(standin(models.load(None).spec, "demo"), tile, origin=(0, 0), year=YEAR)
    assert not res.valid.any() and np.isnan(res.embeddings).all()
    model = LoadedModel(Exploding(), "demo", models.load(None).spec, None)
    assert np.isnan(infer_arrays(model, tile, origin=(0, 0), year=YEAR).embeddings).all()
    out = tmp_path / "emb" / "0_0_6_6.npy"
    infer_tile(cfg("int8"), YEAR, write_tile_dir(tmp_path / "0_0_6_6", tile, grid), out)
    q, scales = np.load(out), np.load(tmp_path / "emb" / "0_0_6_6_scales.npy")
    # the reference's encoding of pixels it did not embed: code 0 and scale 0
    assert q.dtype == np.int8 and q.shape == (6, 6, 128) and not q.any() and not scales.any()
    side = json.loads((tmp_path / "emb" / "0_0_6_6.json").read_text())
    assert side["valid_pixels"] == 0 and side["nodata_pixels"] == 36
    outside = int((tile.roi == 0).sum())
    assert side["nodata_reasons"] == {"outside_roi": outside, "no_valid_observation": 36 - outside}


def test_infer_tile_int8_and_float32(tmp_path: Path) -> None:
    tile, grid = cut(make_world(28, 9, 9), 0, 0, 9)
    tdir = write_tile_dir(tmp_path / "0_0_9_9", tile, grid, roi_value=255)
    infer_tile(cfg("float32"), YEAR, tdir, tmp_path / "f" / "t.npy")
    infer_tile(cfg("int8"), YEAR, tdir, tmp_path / "q" / "t.npy")
    f = np.load(tmp_path / "f" / "t.npy")
    q, s = np.load(tmp_path / "q" / "t.npy"), np.load(tmp_path / "q" / "t_scales.npy")
    assert f.dtype == np.float32 and f.shape == (9, 9, 128) and s.dtype == np.float32 and s.shape == (9, 9)
    ok = f.any(axis=-1)  # nodata is an all-zero vector (float32) and code 0, scale 0 (int8)
    assert ok.any() and (~ok).any() and np.array_equal(ok, s > 0) and not q[~ok].any() and not f[~ok].any()
    deq = dequantize(torch.from_numpy(q[ok]), torch.from_numpy(s[ok])).numpy()
    assert (np.abs(deq - f[ok]) <= s[ok][:, None] * (0.5 + 1e-5)).all()
    side = json.loads((tmp_path / "q" / "t.json").read_text())
    assert side["model_family"] == "demo" and side["random_weights"] is True and side["checkpoint_sha256"] is None
    assert side["output"] == "int8" and side["precision"] == "fp32" and side["device"] == "cpu"
    assert side["year"] == YEAR and side["dimensions"] == 128 and side["nodata_policy"] == "reference"
    assert side["nodata_encoding"] == "code 0, scale 0"
    assert sum(side["pixel_classes"].values()) == 81 and side["pixel_classes"]["embedded"] < side["valid_pixels"]
    assert side["valid_pixels"] == int(ok.sum()) and side["valid_pixels"] + side["nodata_pixels"] == 81
    assert not list((tmp_path / "q").glob(".tmp-*"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible")
def test_cuda_without_gpu_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"model\.device to auto or cpu"):
        resolve_device("cuda")
    assert resolve_device("auto").type == "cpu"


def test_the_gpu_batching_rule_runs_on_the_cpu(demo: LoadedModel) -> None:
    """The GPU's padding (the last batch to the next multiple of 64, not to the full batch) and its memory
    arithmetic, run here on the CPU: the same embeddings as the CPU's fixed batches, other batch shapes."""
    shapes: list[int] = []
    module = demo.module
    hook = module.register_forward_pre_hook(lambda _m, args: shapes.append(int(args[0].shape[0])))
    try:
        g = torch.Generator().manual_seed(4)
        s2, s1 = torch.randn(300, 40, 11, generator=g), torch.randn(300, 40, 3, generator=g)
        cpu = torch.device("cpu")
        with torch.inference_mode():
            fixed = Runner(demo, cpu, False, 128)(s2, s1)
            assert shapes == [128, 128, 128]  # the CPU pads every batch to the full 128
            shapes.clear()
            granular = Runner(demo, cpu, False, 128, fixed=False)(s2, s1)
            assert shapes == [128, 128, 64]  # 300 = 128 + 128 + 44, padded to 64
            shapes.clear()
            assert Runner(demo, cpu, False, 128, fixed=False)(s2[:10], s1[:10]).shape == (10, fixed.shape[1])
            assert shapes == [64]
    finally:
        hook.remove()
    assert torch.allclose(fixed, granular, atol=1e-5)
    gib, mib = 2**30, 2**20
    assert batch_for_memory(10 * gib, mib) == 6144  # 60 % of 10 GiB at 1 MiB per pixel
    assert batch_for_memory(10 * gib, 3 * mib) == 2048  # 2048.0 rounded down to a multiple of 64
    assert batch_for_memory(100 * mib, 10 * mib) == GPU_GRANULE  # never below one granule
    assert batch_for_memory(80 * gib, 1) == GPU_MAX_BATCH


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_matches_cpu(demo: LoadedModel) -> None:
    tile, grid = cut(make_world(29, 16, 16), 0, 0, 16)
    cpu = run(demo, tile, (grid.col, grid.row))
    gpu = run(demo, tile, (grid.col, grid.row), device="cuda", precision="fp32", chunk_pixels=64)
    ok = np.isfinite(cpu[..., 0])
    assert np.array_equal(ok, np.isfinite(gpu[..., 0]))
    assert np.allclose(cpu[ok], gpu[ok], atol=1e-3)
    demo.module.to("cpu")
