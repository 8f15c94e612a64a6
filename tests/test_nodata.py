"""Which pixels each model family embeds under each nodata policy, and how nodata is encoded
(`tessera.nodata`), on a crafted tile holding one pixel of every kind."""

from __future__ import annotations

import numpy as np
import pytest

from tessera.nodata import (
    PixelClass,
    class_counts,
    classify,
    embedded,
    encode_nodata_float32,
    encode_nodata_int8,
    observations,
)

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


def test_strict_is_todays_rule() -> None:
    """``strict`` is exactly what `tessera.infer._valid_pixels` embeds today, for every sampler."""
    from types import SimpleNamespace

    from tessera.infer import _valid_pixels

    bands, masks, asc, desc, roi = _tile()
    n2, n1, any2 = observations(bands, masks, asc, desc)
    for sampling in ("random", "bins-v1.1", "bins-v2"):
        today = _valid_pixels(SimpleNamespace(sampling=sampling), roi, n2, n1)  # type: ignore[arg-type]
        assert np.array_equal(today, embedded(sampling, "strict", roi, n2, n1, any2)), sampling


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


@pytest.mark.parametrize("family", ["v1.0", "v1.0-qat", "v1.1", "v2-small", "demo"])
def test_nodata_encodings_per_family(family: str) -> None:
    """Every family writes the reference's filtered-pixel encoding: zeros (float32), code 0 and scale 0 (int8)."""
    from tessera.quantize import quantize

    rng = np.random.default_rng(3)
    emb = rng.normal(size=(2, 3, 128)).astype(np.float32)
    valid = np.array([[True, False, True], [False, True, True]])
    f = encode_nodata_float32(emb, valid)
    assert f.dtype == np.float32
    assert np.array_equal(f[valid], emb[valid]) and not f[~valid].any()
    import torch

    rule = "v2" if family.startswith("v2") else "v1"
    q, s = (t.numpy() for t in quantize(torch.from_numpy(emb), rule))  # type: ignore[arg-type]
    q2, s2 = encode_nodata_int8(q, s, valid)
    assert (q2.dtype, s2.dtype) == (np.int8, np.float32)
    assert np.array_equal(q2[valid], q[valid]) and np.array_equal(s2[valid], s[valid])
    assert not q2[~valid].any() and not s2[~valid].any()
    # dequantising gives the reference readers' 0 at nodata, never NaN
    assert not np.isnan(q2.astype(np.float32) * s2[..., None]).any()
    assert (s2[valid] > 0).all()  # scale 0 marks nodata only
