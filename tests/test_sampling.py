"""Sequence builders: the seeded random sampler's properties and the bin samplers against the spec in NumPy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tessera.models import v1_1, v2
from tessera.models.spec import InputSpec
from tessera.sampling import (
    Norms,
    PixelSeries,
    bin_inputs,
    mix32,
    pad_pattern_ranks,
    pixel_seeds,
    random_steps,
    resample_ranks,
    sequence_lengths,
)


def lowbias32(x: int) -> int:
    """Plain-Python reference of the 32-bit finaliser (arbitrary-precision ints, masked)."""
    x ^= x >> 16
    x = (x * 0x7FEB352D) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * 0x846CA68B) & 0xFFFFFFFF
    return x ^ (x >> 16)


def test_hash_matches_python_reference() -> None:
    values = [0, 1, 2, 12345, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 987654321]
    got = mix32(torch.tensor(values, dtype=torch.int64)).tolist()
    assert got == [lowbias32(v) for v in values]


def test_seeds_differ_by_position_year_and_repeat() -> None:
    cols = torch.tensor([-5, -5, 7, 7], dtype=torch.int64)
    rows = torch.tensor([-520000, -519999, -520000, -519999], dtype=torch.int64)
    s = pixel_seeds(cols, rows, 2024, 0)
    assert len(set(s.tolist())) == 4 and bool(((s >= 0) & (s < 2**32)).all())
    assert not torch.equal(s, pixel_seeds(cols, rows, 2023, 0))
    assert not torch.equal(s, pixel_seeds(cols, rows, 2024, 1))
    assert torch.equal(s, pixel_seeds(cols.clone(), rows.clone(), 2024, 0))


def _random_case(seed: int, n: int, t: int, p_valid: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    valid = torch.rand((n, t), generator=g) < p_valid
    valid[:, 0] |= ~valid.any(1)  # at least one valid observation per pixel
    keys = torch.sort(torch.randperm(365, generator=g)[:t] + 1).values.to(torch.int64)
    seeds = pixel_seeds(torch.arange(n, dtype=torch.int64), torch.zeros(n, dtype=torch.int64), 2024, 0)
    return valid, keys, seeds


def test_random_without_replacement_when_enough_valid() -> None:
    valid, keys, seeds = _random_case(1, 200, 120, 0.7)
    idx = random_steps(valid, keys, seeds, 40)
    assert idx.shape == (200, 40)
    assert bool((idx[:, 1:] > idx[:, :-1]).all())  # sorted and no repeat
    assert bool(torch.gather(valid, 1, idx).all())
    # different pixels draw different subsets
    assert len({tuple(r) for r in idx.tolist()}) > 190


def test_random_with_replacement_when_few_valid() -> None:
    valid, keys, seeds = _random_case(2, 300, 60, 0.2)
    n_valid = valid.sum(1)
    assert bool((n_valid < 40).all())
    idx = random_steps(valid, keys, seeds, 40)
    assert bool((idx[:, 1:] >= idx[:, :-1]).all())
    assert bool(torch.gather(valid, 1, idx).all())
    assert bool(((idx[:, 1:] == idx[:, :-1]).any(1)).all())  # 40 draws from < 40 valid must repeat
    # draws are spread evenly over each pixel's valid observations: quartiles of rank / n_valid
    rank = torch.gather(valid.cumsum(1) - 1, 1, idx)
    share = torch.bincount((4 * rank // n_valid.unsqueeze(1)).flatten(), minlength=4) / idx.numel()
    assert bool(((share > 0.2) & (share < 0.3)).all()), share


def test_random_draw_ignores_extra_invalid_dates() -> None:
    valid, keys, seeds = _random_case(3, 100, 50, 0.6)
    idx = random_steps(valid, keys, seeds, 40)
    # insert 30 invalid dates with unused keys between the existing ones
    extra = torch.tensor(sorted(set(range(1, 366)) - set(keys.tolist()))[:30], dtype=torch.int64)
    all_keys, order = torch.sort(torch.cat((keys, extra)))
    all_valid = torch.cat((valid, torch.zeros((100, 30), dtype=torch.bool)), 1)[:, order]
    idx2 = random_steps(all_valid, all_keys, seeds, 40)
    assert torch.equal(keys[idx], all_keys[idx2])


def np_build_resample_indices(length: int, target: int) -> np.ndarray:
    """Reference-spec 4.2, written out per pixel."""
    if length <= 0:
        return np.empty(0, np.int64)
    if target == length:
        return np.arange(length)
    if target < length:
        return np.array([c[len(c) // 2] for c in np.array_split(np.arange(length), target)])
    extra = target - length
    dup = np.clip(np.rint(np.linspace(0, length - 1, extra + 2)[1:-1]), 0, length - 1).astype(np.int64)
    return np.concatenate((np.arange(length), dup))


def np_pad_pattern(n: int, b: int) -> np.ndarray:
    """Reference-spec 5.1, written out per pixel."""
    if n == 0:
        return np.zeros(b, np.int64)
    if n >= b:
        return np.linspace(0, n - 1, b, dtype=np.int64)
    remain = b - n
    if remain <= n:
        fill = np.array([g[len(g) // 2] for g in np.array_split(np.arange(n), remain)])
    else:
        fill = np.arange(remain) % n
    return np.concatenate((np.arange(n), fill))


@pytest.mark.parametrize("target", [8, 16, 40, 96, 256])
def test_bin_ranks_equal_numpy_spec(target: int) -> None:
    n = np.unique(np.concatenate((np.arange(1, 300), np.random.default_rng(target).integers(1, 2000, 200))))
    got_v11 = resample_ranks(torch.as_tensor(n), target).numpy()
    got_v2 = pad_pattern_ranks(torch.as_tensor(n), target).numpy()
    for k, length in enumerate(n):
        assert np.array_equal(got_v11[k], np_build_resample_indices(int(length), target)), (length, target)
        assert np.array_equal(got_v2[k], np_pad_pattern(int(length), target)), (length, target)


def test_sequence_lengths_follow_bins() -> None:
    n = np.array([0, 1, 8, 9, 16, 255, 256, 257, 1000])
    spec11, spec2 = v1_1.input_spec("planetary-computer"), v2.input_spec(128)
    assert sequence_lengths(n, spec11).tolist() == [8, 8, 8, 16, 16, 256, 256, 256, 256]
    assert sequence_lengths(n, spec2).tolist() == [1, 8, 8, 16, 16, 256, 256, 256, 256]


def _np_bin_pixel(spec: InputSpec, b: np.ndarray, m: np.ndarray, doys: np.ndarray, sar: list, length: tuple) -> tuple:
    """Per-pixel NumPy construction of the bin samplers' inputs (reference-spec 4.2 / 5.1)."""
    rule = np_build_resample_indices if spec.sampling == "bins-v1.1" else np_pad_pattern
    f32 = np.float32
    s2_rows = np.flatnonzero(m)
    s2 = np.zeros((length[0], 11), f32)
    if len(s2_rows):
        x = (b[s2_rows].astype(f32) - np.array(spec.s2_mean, f32)) / (np.array(spec.s2_std, f32) + f32(1e-9))
        seq = np.hstack((x, doys[s2_rows, None].astype(f32)))
        s2 = seq[rule(len(s2_rows), length[0])]
    parts = []
    for (values, doy), mean, std in zip(sar, (spec.s1a_mean, spec.s1d_mean), (spec.s1a_std, spec.s1d_std), strict=True):
        rows = np.flatnonzero((values != 0).any(-1))
        x = (values[rows].astype(f32) - np.array(mean, f32)) / (np.array(std, f32) + f32(1e-9))
        parts.append(np.hstack((x, doy[rows, None].astype(f32))))
    s1_seq = np.concatenate(parts)
    s1 = s1_seq[rule(len(s1_seq), length[1])] if len(s1_seq) else np.zeros((length[1], 3), f32)
    return s2, s1


@pytest.mark.parametrize("family", ["bins-v1.1", "bins-v2"])
def test_bin_inputs_equal_per_pixel_numpy(family: str) -> None:
    spec = v1_1.input_spec("earth-search") if family == "bins-v1.1" else v2.input_spec(64)
    rng = np.random.default_rng(5)
    n, t2, ta, td = 40, 30, 7, 6
    bands = rng.integers(0, 15000, (n, t2, 10)).astype(np.uint16)
    masks = rng.random((n, t2)) < rng.random((n, 1))
    masks[:5] = False  # no S2 at all
    asc = rng.integers(1, 9000, (n, ta, 2)).astype(np.int16)
    desc = rng.integers(1, 9000, (n, td, 2)).astype(np.int16)
    asc[rng.random((n, ta)) < 0.5] = 0
    desc[rng.random((n, td)) < 0.5] = 0
    asc[5:9], desc[5:9] = 0, 0  # no S1
    doys = np.sort(rng.choice(np.arange(1, 366), t2, replace=False)).astype(np.uint16)
    a_doy = np.sort(rng.choice(np.arange(1, 366), ta, replace=False)).astype(np.int16)
    d_doy = np.sort(rng.choice(np.arange(1, 366), td, replace=False)).astype(np.int16)
    s1 = np.concatenate((asc, desc), 1)
    px = PixelSeries(
        s2=torch.from_numpy(bands.view(np.int16)),
        s2_valid=torch.from_numpy(masks),
        s2_doy=torch.from_numpy(doys.astype(np.int64)),
        s1=torch.from_numpy(s1),
        s1_valid=torch.from_numpy((s1 != 0).any(-1)),
        s1_doy=torch.from_numpy(np.concatenate((a_doy, d_doy)).astype(np.int64)),
        s1_desc=torch.tensor([0] * ta + [1] * td),
    )
    norms = Norms.from_spec(spec, torch.device("cpu"))
    l2 = sequence_lengths(masks.sum(1), spec)
    l1 = sequence_lengths((s1 != 0).any(-1).sum(1), spec)
    for key in set(zip(l2.tolist(), l1.tolist(), strict=True)):
        sel = np.flatnonzero((l2 == key[0]) & (l1 == key[1]))
        got2, got1 = bin_inputs(px.select(torch.as_tensor(sel)), key[0], key[1], spec, norms)
        for k, p in enumerate(sel):
            want2, want1 = _np_bin_pixel(spec, bands[p], masks[p], doys, [(asc[p], a_doy), (desc[p], d_doy)], key)
            assert np.array_equal(got2[k].numpy(), want2)
            assert np.array_equal(got1[k].numpy(), want1)


# --- the S1 fallback when an orbit has no frame: v1.0 and v1.0-QAT differ (reference-spec 3.2, 4.1) ---


def _orbit_case(asc: int, desc: int) -> PixelSeries:
    """Pixel 0 has valid S2 and S1 observations, pixel 1 valid S2 only (every S1 frame all zero)."""
    g = torch.Generator().manual_seed(7)
    t2, t1 = 6, asc + desc
    s1 = torch.randint(1, 9000, (2, t1, 2), generator=g, dtype=torch.int16)
    s1[1] = 0
    return PixelSeries(
        s2=torch.randint(1, 9000, (2, t2, 10), generator=g, dtype=torch.int16),
        s2_valid=torch.ones((2, t2), dtype=torch.bool),
        s2_doy=torch.arange(10, 10 + 30 * t2, 30),
        s1=s1,
        s1_valid=s1.ne(0).any(-1),
        s1_doy=torch.tensor([5 + 12 * i for i in range(asc)] + [11 + 12 * i for i in range(desc)], dtype=torch.int64),
        s1_desc=torch.tensor([0] * asc + [1] * desc, dtype=torch.int64),
    )


@pytest.mark.parametrize(("asc", "desc"), [(0, 3), (3, 0)])
def test_empty_orbit_frame_is_the_qat_datasets_only(asc: int, desc: int) -> None:
    from tessera.models import v1, v1_qat
    from tessera.sampling import EMPTY_ORBIT_DOY, random_inputs

    px, seeds = _orbit_case(asc, desc), pixel_seeds(torch.tensor([3, 4]), torch.tensor([9, 9]), 2022, 0)
    out = {}
    for family, spec in (("v1.0", v1.input_spec()), ("v1.0-qat", v1_qat.input_spec())):
        _, s1 = random_inputs(px, seeds, spec, Norms.from_spec(spec, torch.device("cpu")), fallback=True)
        out[family] = s1
    assert not v1.input_spec().empty_orbit_frame and v1_qat.input_spec().empty_orbit_frame
    # a pixel with valid S1 never draws the stand-in: the same inputs for both families
    assert out["v1.0"][0].numpy().tobytes() == out["v1.0-qat"][0].numpy().tobytes()
    # the fallback pixel: v1.0 draws from the other orbit's frames alone, v1.0-QAT also from the day-180 frame
    v1_doys = set(out["v1.0"][1, :, -1].int().tolist())
    assert v1_doys <= set(px.s1_doy.tolist()) and EMPTY_ORBIT_DOY not in v1_doys
    assert EMPTY_ORBIT_DOY in set(out["v1.0-qat"][1, :, -1].int().tolist())


def test_v1_fallback_without_any_sar_frame_fails_as_the_reference() -> None:
    from tessera.errors import NoSarFramesError
    from tessera.models import v1, v1_qat
    from tessera.sampling import EMPTY_ORBIT_DOY, random_inputs

    px, seeds = _orbit_case(0, 0), pixel_seeds(torch.tensor([3, 4]), torch.tensor([9, 9]), 2022, 0)
    spec = v1.input_spec()
    with pytest.raises(NoSarFramesError, match="nodata_policy: strict") as err:
        random_inputs(px, seeds, spec, Norms.from_spec(spec, torch.device("cpu")), fallback=True)
    assert isinstance(err.value, ValueError)
    qat = v1_qat.input_spec()
    _, s1 = random_inputs(px, seeds, qat, Norms.from_spec(qat, torch.device("cpu")), fallback=True)
    assert set(s1[:, :, -1].int().tolist()[0]) == {EMPTY_ORBIT_DOY}
