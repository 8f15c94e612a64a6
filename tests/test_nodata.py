"""Which pixels each model family embeds under each nodata policy, and how nodata is encoded
(`tessera.nodata`), on a crafted tile holding one pixel of every kind."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tessera.models.spec import InputSpec, LoadedModel
from tessera.nodata import (
    PixelClass,
    class_counts,
    classify,
    embedded,
    encode_nodata_float32,
    encode_nodata_int8,
    observations,
)
from tessera.tileio import TileArrays

OUT, E, S2F, S1F, BOTHF, N = (
    PixelClass.OUTSIDE_ROI,
    PixelClass.EMBEDDED,
    PixelClass.EMBEDDED_NO_VALID_S2,
    PixelClass.EMBEDDED_NO_VALID_S1,
    PixelClass.EMBEDDED_NO_VALID_OBSERVATION,
    PixelClass.NODATA,
)

#: The crafted pixels, one per column of a 1 x 8 tile.
KINDS = (
    "both valid",
    "always cloudy (S2 values, no valid S2), valid S1",
    "valid S2, SAR-dark (no valid S1)",
    "S2 values but neither valid",
    "no S2 scene at all, valid S1",
    "no data at all",
    "outside the ROI, with data",
    "outside the ROI, no data",
)


def _tile() -> tuple[np.ndarray, ...]:
    t2, ta, td, w = 3, 2, 2, len(KINDS)
    bands = np.full((t2, 1, w, 10), 1500, "<u2")
    masks = np.zeros((t2, 1, w), "|u1")
    asc = np.zeros((ta, 1, w, 2), "<i2")
    desc = np.zeros((td, 1, w, 2), "<i2")
    roi = np.ones((1, w), np.uint8)
    valid_s2 = [0, 2, 6]
    valid_s1 = [0, 1, 4, 6]
    no_s2_values = [4, 5, 7]
    masks[1, 0, valid_s2] = 1
    asc[0, 0, valid_s1, 0] = 9000  # one band non-zero is enough to count a frame
    desc[1, 0, 1, 1] = 4000
    bands[:, 0, no_s2_values] = 0
    roi[0, 6:] = 0
    return bands, masks, asc, desc, roi


def _classes(sampling: str, policy: str) -> list[int]:
    bands, masks, asc, desc, roi = _tile()
    n2, n1, any2 = observations(bands, masks, asc, desc)
    return [int(c) for c in classify(sampling, policy, roi, n2, n1, any2)[0]]


def test_observations_of_the_crafted_tile() -> None:
    bands, masks, asc, desc, _ = _tile()
    n2, n1, any2 = observations(bands, masks, asc, desc)
    assert n2[0].tolist() == [1, 0, 1, 0, 0, 0, 1, 0]
    assert n1[0].tolist() == [1, 2, 0, 0, 1, 0, 1, 0]
    assert any2[0].tolist() == [True, True, True, True, False, False, True, False]


# The reference's pixel sets (reference-spec 3.2, 4.2, 5.1) and today's strict behaviour, pixel by
# pixel in KINDS order. The random sampler (v1.0, v1.0-QAT, demo) embeds any pixel with an S2 value;
# v1.1 embeds every ROI pixel; the v2 students need a valid observation in one modality.
EXPECTED = {
    ("random", "reference"): [E, S2F, S1F, BOTHF, N, N, OUT, OUT],
    ("random", "strict"): [E, N, N, N, N, N, OUT, OUT],
    ("bins-v1.1", "reference"): [E, S2F, S1F, BOTHF, S2F, BOTHF, OUT, OUT],
    ("bins-v1.1", "strict"): [E, S2F, S1F, N, S2F, N, OUT, OUT],
    ("bins-v2", "reference"): [E, S2F, S1F, N, S2F, N, OUT, OUT],
    ("bins-v2", "strict"): [E, S2F, S1F, N, S2F, N, OUT, OUT],
}


@pytest.mark.parametrize(("sampling", "policy"), sorted(EXPECTED))
def test_pixel_set_per_family_and_policy(sampling: str, policy: str) -> None:
    got = _classes(sampling, policy)
    want = [int(c) for c in EXPECTED[sampling, policy]]
    assert got == want, {
        k: (PixelClass(g).name, PixelClass(w).name) for k, g, w in zip(KINDS, got, want, strict=True) if g != w
    }
    bands, masks, asc, desc, roi = _tile()
    n2, n1, any2 = observations(bands, masks, asc, desc)
    emb = embedded(sampling, policy, roi, n2, n1, any2)[0]
    assert emb.tolist() == [c not in (OUT, N) for c in EXPECTED[sampling, policy]]


def test_strict_is_the_earlier_releases_rule() -> None:
    """``strict`` is exactly what inference embedded before the policy existed, for every sampler."""
    bands, masks, asc, desc, roi = _tile()
    n2, n1, any2 = observations(bands, masks, asc, desc)
    for sampling in ("random", "bins-v1.1", "bins-v2"):
        # the rule of tessera.infer before issue 9, written out
        has_obs = (n2 > 0) & (n1 > 0) if sampling == "random" else (n2 > 0) | (n1 > 0)
        assert np.array_equal((roi > 0) & has_obs, embedded(sampling, "strict", roi, n2, n1, any2)), sampling


def test_class_counts_list_every_class() -> None:
    counts = class_counts(np.array(_classes("random", "reference")))
    assert counts == {
        "outside_roi": 2,
        "embedded": 1,
        "embedded_no_valid_s2": 1,
        "embedded_no_valid_s1": 1,
        "embedded_no_valid_observation": 1,
        "nodata": 2,
    }
    assert sum(class_counts(np.zeros((0,), np.uint8)).values()) == 0


def test_bad_sampler_or_policy() -> None:
    z = np.zeros((1, 1))
    with pytest.raises(ValueError, match="unknown sampler"):
        embedded("bins-v3", "reference", z, z, z, z)
    with pytest.raises(ValueError, match="unknown nodata policy"):
        embedded("random", "lenient", z, z, z, z)


def _family_spec(family: str) -> InputSpec:
    from tessera.models import demo, v1, v1_1, v1_qat, v2

    specs = {
        "v1.0": v1.input_spec,
        "v1.0-qat": v1_qat.input_spec,
        "v1.1": lambda: v1_1.input_spec("planetary-computer"),
        "v2-small": lambda: v2.input_spec(64),
        "demo": demo.input_spec,
    }
    return specs[family]()


FAMILY_RULES = [("v1.0", "v1"), ("v1.0-qat", "v1"), ("v1.1", "v1"), ("v2-small", "v2"), ("demo", "v1")]


@pytest.mark.parametrize(("family", "rule"), FAMILY_RULES)
def test_nodata_encodings_per_family(family: str, rule: str) -> None:
    """Every family's outputs (its saved width, its int8 rule) get the reference's filtered-pixel encoding:
    zeros (float32), code 0 and scale 0 (int8)."""
    from tessera.quantize import quantize

    spec = _family_spec(family)
    assert spec.quantisation == rule
    rng = np.random.default_rng(3)
    emb = (rng.normal(size=(2, 3, spec.save_dim)) * 0.02).astype(np.float32)
    valid = np.array([[True, False, True], [False, True, True]])
    f = encode_nodata_float32(emb, valid)
    assert f.dtype == np.float32 and f.shape == emb.shape
    assert np.array_equal(f[valid], emb[valid]) and not f[~valid].any()
    q, s = (t.numpy() for t in quantize(torch.from_numpy(emb), spec.quantisation))
    q2, s2 = encode_nodata_int8(q, s, valid)
    assert (q2.dtype, s2.dtype) == (np.int8, np.float32)
    assert np.array_equal(q2[valid], q[valid]) and np.array_equal(s2[valid], s[valid])
    assert not q2[~valid].any() and not s2[~valid].any()
    # dequantising gives the reference readers' 0 at nodata, never NaN
    assert not np.isnan(q2.astype(np.float32) * s2[..., None]).any()
    assert (s2[valid] > 0).all()  # scale 0 marks nodata only


# --- the same crafted pixels through inference and the tile files -----------------------------------


def _tile_arrays(asc_frames: int = 2, desc_frames: int = 2) -> TileArrays:
    bands, masks, asc, desc, roi = _tile()
    return TileArrays(
        bands=bands,
        masks=masks,
        doys=np.array([20, 150, 300], "<u2"),
        sar_ascending=np.ascontiguousarray(asc[:asc_frames]),
        sar_ascending_doy=np.array([33, 210], "<i2")[:asc_frames],
        sar_descending=np.ascontiguousarray(desc[:desc_frames]),
        sar_descending_doy=np.array([40, 250], "<i2")[:desc_frames],
        roi=roi,
    )


class _Pool(torch.nn.Module):
    """A small stand-in model: mean-pooled per-modality projections, then a linear head."""

    def __init__(self, output_dim: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(5)
        self.s2, self.s1, self.head = torch.nn.Linear(11, 8), torch.nn.Linear(3, 8), torch.nn.Linear(16, output_dim)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.rand(p.shape, generator=g) - 0.5)

    def forward(self, s2: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat((self.s2(s2).mean(1), self.s1(s1).mean(1)), -1))


def _model(sampling: str) -> LoadedModel:
    from tessera import models
    from tessera.models import v1_1, v2

    if sampling == "random":
        return models.load(None)
    spec = v1_1.input_spec("planetary-computer") if sampling == "bins-v1.1" else v2.input_spec(128)
    family = "v1.1" if sampling == "bins-v1.1" else "v2-small"
    return LoadedModel(_Pool(spec.output_dim).eval(), family, spec, checkpoint_sha256=None, random_weights=True)


@pytest.mark.parametrize(("sampling", "policy"), sorted(EXPECTED))
def test_inference_embeds_the_expected_pixel_set(sampling: str, policy: str) -> None:
    from tessera.infer import infer_arrays

    res = infer_arrays(_model(sampling), _tile_arrays(), origin=(100, -200), year=2022, nodata_policy=policy)
    want = np.array([c not in (OUT, N) for c in EXPECTED[sampling, policy]])
    assert res.valid[0].tolist() == want.tolist()
    assert np.isfinite(res.embeddings[0, want]).all() and np.isnan(res.embeddings[0, ~want]).all()
    assert res.pixel_classes == class_counts(np.array([EXPECTED[sampling, policy]], np.uint8))


@pytest.mark.parametrize("sampling", ["random", "bins-v1.1", "bins-v2"])
@pytest.mark.parametrize("frames", [(2, 2), (0, 2), (2, 0), (0, 0)])
def test_pixels_with_data_keep_their_bytes_under_either_policy(sampling: str, frames: tuple[int, int]) -> None:
    """A pixel strict embeds has the same bytes under reference, also when an orbit (or both) has no frame."""
    from tessera.infer import infer_arrays

    model, tile = _model(sampling), _tile_arrays(*frames)
    ref = infer_arrays(model, tile, origin=(100, -200), year=2022, nodata_policy="reference")
    strict = infer_arrays(model, tile, origin=(100, -200), year=2022, nodata_policy="strict")
    both = strict.valid[0]
    assert ref.valid[0][both].all()
    assert ref.embeddings[0, both].tobytes() == strict.embeddings[0, both].tobytes()
    if sampling == "random":
        # every ROI pixel with an S2 value is embedded under reference, whatever S1 has (empty orbits included)
        _, _, s2_any = observations(tile.bands, tile.masks, tile.sar_ascending, tile.sar_descending)
        assert ref.valid[0].tolist() == ((tile.roi[0] > 0) & s2_any[0]).tolist()
        assert np.isfinite(ref.embeddings[ref.valid]).all()


def test_fallback_pixels_are_seeded_by_position_and_year() -> None:
    from tessera.infer import infer_arrays

    model, tile = _model("random"), _tile_arrays()
    a = infer_arrays(model, tile, origin=(100, -200), year=2022).embeddings[0, 1:4]
    again = infer_arrays(model, tile, origin=(100, -200), year=2022, batch_size=1, chunk_pixels=1).embeddings[0, 1:4]
    moved = infer_arrays(model, tile, origin=(101, -200), year=2022).embeddings[0, 1:4]
    other = infer_arrays(model, tile, origin=(100, -200), year=2021).embeddings[0, 1:4]
    assert np.isfinite(a).all() and a.tobytes() == again.tobytes()
    assert not np.array_equal(a, moved) and not np.array_equal(a, other)


@pytest.mark.parametrize("sampling", ["random", "bins-v1.1", "bins-v2"])
@pytest.mark.parametrize("output", ["int8", "float32"])
def test_tile_files_encode_nodata_as_the_reference(tmp_path: Path, sampling: str, output: str) -> None:
    from tessera.config import ModelConfig
    from tessera.embedfiles import tile_files, write_tile_embeddings
    from tessera.infer import infer_arrays

    model = _model(sampling)
    res = infer_arrays(model, _tile_arrays(), origin=(100, -200), year=2022)
    mcfg = ModelConfig(None, "auto", output, 128, "fp32", "cpu", None, 1, "reference")
    files = tile_files(tmp_path, "0_0_8_1", output == "int8")
    write_tile_embeddings(files, res, model, mcfg, 2022, None)
    data = np.load(files.data)
    valid = res.valid
    assert not np.isnan(data).any() if output == "float32" else data.dtype == np.int8
    assert not data[~valid].any() and data[valid].any(axis=-1).all()
    if files.scales is not None:
        scales = np.load(files.scales)
        assert not scales[~valid].any() and (scales[valid] > 0).all() and not np.isnan(scales).any()
    side = json.loads(files.meta.read_text())
    assert side["nodata_policy"] == "reference"
    assert side["pixel_classes"] == class_counts(np.array([EXPECTED[sampling, "reference"]], np.uint8))
