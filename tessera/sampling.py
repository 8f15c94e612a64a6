"""Per-pixel input sequences for every model family, built vectorised on the inference device.

Three samplers, chosen by `tessera.models.spec.InputSpec.sampling`:

* ``random`` (v1.0, v1.0-QAT, demo): ``s2_steps`` / ``s1_steps`` observations per modality, drawn
  without replacement when the pixel has enough valid ones and with replacement otherwise, then sorted
  in time order (S1: the ascending block, then the descending block, as the reference concatenates
  them; reference-spec 3.2). Unlike the reference the draw is seeded: a counter-based 32-bit hash of
  the pixel's global grid position, the year and the repeat index, combined with a key per
  observation that does not depend on the tile (S2: its DOY; S1: orbit and DOY). "Without
  replacement" takes the observations with the smallest keys; "with replacement" draws slot ``j`` as
  ``floor(u_j * n_valid)`` over the pixel's valid observations in time order. A pixel therefore gets
  the same sequence whatever the tiling, the chunk's date set, the batch, the run or the device.
  With ``fallback`` (``model.nodata_policy: reference``) a pixel without a valid observation in a
  modality draws over all T of that modality instead, as the reference does. An orbit with no frame
  at all then contributes one all-zero frame on day 180 where the family's dataset does so
  (`InputSpec.empty_orbit_frame`: v1.0-QAT and demo); v1.0's draws from the other orbit's frames
  alone, and fails without any S1 frame, as the reference's v1.0 dataset does. Such a pixel's
  inputs depend on the dates of its chunk (the reference's: of its whole ROI), which no seed can
  avoid; pixels with valid observations draw exactly as without ``fallback``.
* ``bins-v1.1``: all valid observations resampled to a length bin with the reference's
  ``build_resample_indices`` (reference-spec 4.2).
* ``bins-v2``: the same with the v2 students' ``_pad_pattern`` (reference-spec 5.1).

The hash uses int64 tensor arithmetic whose intermediates stay below 2**49, so it never overflows
and gives identical bits on every device.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from tessera.errors import NoSarFramesError
from tessera.models.spec import InputSpec

__all__ = [
    "EMPTY_ORBIT_DOY",
    "Norms",
    "PixelSeries",
    "bin_inputs",
    "combine",
    "hash_keys",
    "mix32",
    "pad_pattern_ranks",
    "pixel_seeds",
    "random_inputs",
    "random_steps",
    "resample_ranks",
    "sequence_lengths",
    "valid_order",
    "with_empty_orbit_frames",
]

_M32 = 0xFFFFFFFF
_KEY_BITS = 11  # observation keys (orbit * 512 + DOY) fit in 11 bits
_NOT_VALID = 1 << 50  # above every hashed key (< 2**43)
_S2_SALT, _S1_SALT, _SLOT_SALT = 0x5232, 0x5131, 0x51A7
_PIXEL_SALT = 0x7E55E7A


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """``(x * c) mod 2**32`` for ``0 <= x < 2**32`` without an int64 product above 2**49."""
    lo, hi = c & 0xFFFF, c >> 16
    return (x * lo + (((x * hi) & 0xFFFF) << 16)) & _M32


def mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer finaliser (Wellons' "lowbias32") on int64 tensors holding values in ``[0, 2**32)``."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def combine(h: torch.Tensor, v: torch.Tensor | int) -> torch.Tensor:
    """Hash ``v`` into the running hash ``h`` (both broadcast; ``v`` is reduced mod 2**32 first)."""
    v_t = torch.as_tensor(v, dtype=torch.int64, device=h.device) & _M32
    return mix32(h ^ mix32(v_t ^ 0x9E3779B9))


def hash_keys(salt: int, first: np.ndarray, *rest: np.ndarray | int) -> np.ndarray:
    """A 32-bit hash (int64 values in ``[0, 2**32)``) of each row of int64 keys, salted: ``combine`` of
    ``first`` and then each of ``rest`` (an array of the same length, or one int for every row) into
    ``mix32(salt)``. For per-pixel draws of the evaluation (sample, split) on NumPy arrays."""
    h = mix32(torch.full((len(first),), salt, dtype=torch.int64))
    for value in (first, *rest):
        h = combine(h, torch.from_numpy(value) if isinstance(value, np.ndarray) else value)
    out: np.ndarray = h.numpy()
    return out


def pixel_seeds(cols: torch.Tensor, rows: torch.Tensor, year: int, repeat: int) -> torch.Tensor:
    """Seed per pixel from its global grid column/row (int64, may be negative), the year and the repeat."""
    h = mix32(torch.full_like(cols, _PIXEL_SALT))
    for v in (cols, rows, year, repeat):
        h = combine(h, v)
    return h


def valid_order(valid: torch.Tensor) -> torch.Tensor:
    """``(N, T)`` time indices with each pixel's valid ones first, both parts in time order (a stable partition)."""
    n, t = valid.shape
    v = valid.to(torch.int64)
    n_valid = v.sum(1, keepdim=True)
    pos = torch.where(valid, v.cumsum(1) - 1, n_valid + (1 - v).cumsum(1) - 1)
    order = torch.empty((n, t), dtype=torch.int64, device=valid.device)
    order.scatter_(1, pos, torch.arange(t, device=valid.device).expand(n, t))
    return order


def random_steps(valid: torch.Tensor, obs_keys: torch.Tensor, seeds: torch.Tensor, steps: int) -> torch.Tensor:
    """Seeded draw of ``steps`` time indices per pixel among its valid observations, sorted.

    Args:
        valid: ``(N, T)`` bool; every pixel must have at least one valid observation.
        obs_keys: ``(T,)`` int64 key per observation in ``[0, 2**11)``, independent of the tile (DOY, orbit),
            or ``(N, T)`` keys per pixel when the pixels come from tiles with different date sets (training).
        seeds: ``(N,)`` per-pixel seeds of this modality.
        steps: Sequence length.

    Returns:
        ``(N, steps)`` int64 indices into T: without replacement when a pixel has ``>= steps`` valid
        observations (the ``steps`` smallest hash keys), with replacement otherwise.
    """
    t = valid.shape[1]
    n_valid = valid.sum(1, keepdim=True)
    slots = torch.arange(steps, device=valid.device)
    u = combine(combine(seeds, _SLOT_SALT).unsqueeze(1), slots.unsqueeze(0))
    rank = (u * n_valid) >> 32  # floor(u / 2**32 * n_valid) < n_valid
    idx = torch.gather(valid_order(valid), 1, rank)
    if t >= steps:
        # the DOY in the low bits makes keys unique, so ties never depend on the tile's layout
        per_pixel = obs_keys if obs_keys.dim() == 2 else obs_keys.unsqueeze(0)
        keys = (combine(seeds.unsqueeze(1), per_pixel) << _KEY_BITS) | per_pixel
        keys = torch.where(valid, keys, _NOT_VALID)
        smallest = torch.topk(keys, steps, dim=1, largest=False).indices
        idx = torch.where(n_valid >= steps, smallest, idx)
    return torch.sort(idx, dim=1).values


def resample_ranks(n: torch.Tensor, target: int) -> torch.Tensor:
    """v1.1 ``build_resample_indices(n, target)`` for each ``n >= 1``: ``(N, target)`` ranks into the valid list."""
    j = torch.arange(target, device=n.device).unsqueeze(0)
    m = n.unsqueeze(1)
    # n > target: middle element of each np.array_split chunk
    q, r = m // target, m % target
    down = j * q + torch.minimum(j, r) + (q + (j < r).to(torch.int64)) // 2
    # n < target: arange(n), then duplicates at rint(linspace(0, n-1, extra+2)[1:-1]); float64 as NumPy does
    extra = (target - m).clamp(min=0)
    step = (m - 1).double() / (extra + 1).double()
    dup = torch.round((j - m + 1).double() * step).to(torch.int64)
    up = torch.where(j < m, j, torch.minimum(torch.maximum(dup, torch.zeros_like(dup)), m - 1))
    return torch.where(m > target, down, torch.where(m < target, up, j.expand_as(down)))


def pad_pattern_ranks(n: torch.Tensor, target: int) -> torch.Tensor:
    """v2 ``_pad_pattern(n, target)`` for each ``n >= 1``: ``(N, target)`` ranks into the valid list."""
    j = torch.arange(target, device=n.device).unsqueeze(0)
    m = n.unsqueeze(1)
    # n >= target: linspace(0, n-1, target) truncated to int64, last element exactly n-1
    step = (m - 1).double() / max(target - 1, 1)
    down = (j.double() * step).to(torch.int64)
    down = torch.where(j == target - 1, m - 1, down)
    remain = (target - m).clamp(min=1)
    k = j - m  # index into the fill
    q, r = m // remain, m % remain
    middles = k * q + torch.minimum(k, r) + (q + (k < r).to(torch.int64)) // 2
    fill = torch.where(remain <= m, middles, k.clamp(min=0) % m)
    up = torch.where(j < m, j, fill)
    return torch.where(m >= target, down, up)


def sequence_lengths(n: np.ndarray, spec: InputSpec) -> np.ndarray:
    """Sequence length fed per pixel for the bin samplers (host side, to group pixels).

    ``n`` valid observations go to the smallest bin ``>= n`` (capped at the largest); ``n == 0`` goes to
    ``spec.zero_bin``, and bin 0 (v2) means a length-1 all-zero sequence.
    """
    bins = np.asarray(sorted(spec.bins), dtype=np.int64)
    pos = np.minimum(np.searchsorted(bins, n, side="left"), len(bins) - 1)
    return np.where(n > 0, bins[pos], max(spec.zero_bin, 1)).astype(np.int64)


@dataclass(frozen=True)
class Norms:
    """An `InputSpec`'s standardisation tables as float32 tensors on the device."""

    s2_mean: torch.Tensor
    """(10,)"""
    s2_den: torch.Tensor
    """(10,) ``std + 1e-9`` in float32"""
    s1_mean: torch.Tensor
    """(2, 2): [ascending, descending] x [VV, VH]"""
    s1_den: torch.Tensor
    """(2, 2)"""

    @classmethod
    def from_spec(cls, spec: InputSpec, device: torch.device) -> Norms:
        """Tables of ``spec`` on ``device``."""

        def f32(values: object) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.float32, device=device)

        return cls(
            s2_mean=f32(spec.s2_mean),
            s2_den=f32(spec.s2_std) + 1e-9,
            s1_mean=f32([spec.s1a_mean, spec.s1d_mean]),
            s1_den=f32([spec.s1a_std, spec.s1d_std]) + 1e-9,
        )


@dataclass(frozen=True)
class PixelSeries:
    """Raw time series of N pixels on the device (S1: ascending frames, then descending frames)."""

    s2: torch.Tensor
    """(N, T2, 10) int16 holding the uint16 DN bit pattern."""
    s2_valid: torch.Tensor
    """(N, T2) bool."""
    s2_doy: torch.Tensor
    """(T2,) int64."""
    s1: torch.Tensor
    """(N, T1, 2) int16 [VV, VH]."""
    s1_valid: torch.Tensor
    """(N, T1) bool: any band != 0."""
    s1_doy: torch.Tensor
    """(T1,) int64."""
    s1_desc: torch.Tensor
    """(T1,) int64: 0 for ascending frames, 1 for descending."""

    def select(self, rows: torch.Tensor) -> PixelSeries:
        """The series of a subset of the pixels."""
        return PixelSeries(
            self.s2.index_select(0, rows),
            self.s2_valid.index_select(0, rows),
            self.s2_doy,
            self.s1.index_select(0, rows),
            self.s1_valid.index_select(0, rows),
            self.s1_doy,
            self.s1_desc,
        )


def _gather_steps(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    return torch.gather(x, 1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def _s2_features(px: PixelSeries, idx: torch.Tensor, norms: Norms) -> torch.Tensor:
    raw = (_gather_steps(px.s2, idx).to(torch.int32) & 0xFFFF).float()
    doy = px.s2_doy[idx].float().unsqueeze(-1)
    return torch.cat(((raw - norms.s2_mean) / norms.s2_den, doy), dim=-1)


def _s1_features(px: PixelSeries, idx: torch.Tensor, norms: Norms) -> torch.Tensor:
    raw = _gather_steps(px.s1, idx).float()
    orbit = px.s1_desc[idx]  # each frame standardised with its own orbit's table, as the reference does
    doy = px.s1_doy[idx].float().unsqueeze(-1)
    return torch.cat(((raw - norms.s1_mean[orbit]) / norms.s1_den[orbit], doy), dim=-1)


#: Day of year of the all-zero frame that stands in for an orbit without frames (reference-spec 4.1).
EMPTY_ORBIT_DOY = 180


def with_empty_orbit_frames(px: PixelSeries) -> PixelSeries:
    """``px`` with one all-zero, invalid frame (day `EMPTY_ORBIT_DOY`) for each orbit that has no frame.

    The ascending stand-in goes first and the descending one last, keeping "ascending block, then
    descending block"; the frames of a pixel's valid observations keep their order.
    """
    n_asc = int((px.s1_desc == 0).sum())
    n_desc = int(px.s1_desc.shape[0]) - n_asc
    if n_asc and n_desc:
        return px
    n, dev = px.s1.shape[0], px.s1.device
    s1, valid, doy, desc = [px.s1], [px.s1_valid], [px.s1_doy], [px.s1_desc]
    for orbit, missing in ((0, not n_asc), (1, not n_desc)):
        if missing:
            at = 0 if orbit == 0 else len(s1)  # ascending stand-in first, descending last
            s1.insert(at, px.s1.new_zeros((n, 1, px.s1.shape[2])))
            valid.insert(at, px.s1_valid.new_zeros((n, 1)))
            doy.insert(at, torch.full((1,), EMPTY_ORBIT_DOY, dtype=torch.int64, device=dev))
            desc.insert(at, torch.full((1,), orbit, dtype=torch.int64, device=dev))
    return PixelSeries(
        px.s2, px.s2_valid, px.s2_doy, torch.cat(s1, 1), torch.cat(valid, 1), torch.cat(doy), torch.cat(desc)
    )


def _or_all(valid: torch.Tensor) -> torch.Tensor:
    """Each pixel's valid observations, or all T of them if it has none (the reference's fallback)."""
    return valid | ~valid.any(1, keepdim=True)


def random_inputs(
    px: PixelSeries, seeds: torch.Tensor, spec: InputSpec, norms: Norms, *, fallback: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(s2 (N, s2_steps, 11), s1 (N, s1_steps, 3))`` float32 model inputs of the ``random`` sampler.

    Without ``fallback`` every pixel needs >= 1 valid S2 and >= 1 valid S1 observation (the caller
    marks others nodata). With it, a pixel without a valid observation in a modality draws over all
    T of that modality (where ``spec.empty_orbit_frame``, `with_empty_orbit_frames` supplies S1
    frames where an orbit has none); S2 needs T >= 1, which every pixel the reference embeds has.

    Raises:
        NoSarFramesError: ``fallback`` without any S1 frame for a family without the empty-orbit frame (v1.0).
    """
    s2_valid = _or_all(px.s2_valid) if fallback else px.s2_valid
    if fallback and spec.empty_orbit_frame:
        px = with_empty_orbit_frames(px)
    elif fallback and px.s1.shape[1] == 0 and px.s1.shape[0] > 0:
        raise NoSarFramesError(
            "v1.0 under model.nodata_policy: reference cannot embed a tile without any Sentinel-1 frame "
            "(the reference's v1.0 dataset fails on such a tile too); set model.nodata_policy: strict to "
            "write nodata there, or check the s1 source and the year's Sentinel-1 coverage"
        )
    s1_valid = _or_all(px.s1_valid) if fallback else px.s1_valid
    s2_idx = random_steps(s2_valid, px.s2_doy, combine(seeds, _S2_SALT), spec.s2_steps)
    s1_keys = px.s1_desc * 512 + px.s1_doy
    s1_idx = random_steps(s1_valid, s1_keys, combine(seeds, _S1_SALT), spec.s1_steps)
    return _s2_features(px, s2_idx, norms), _s1_features(px, s1_idx, norms)


_Features = Callable[[PixelSeries, torch.Tensor, Norms], torch.Tensor]


def _bin_modality(
    x_valid: torch.Tensor,
    length: int,
    channels: int,
    spec: InputSpec,
    features: _Features,
    px: PixelSeries,
    norms: Norms,
) -> torch.Tensor:
    n = x_valid.sum(1)
    rule = resample_ranks if spec.sampling == "bins-v1.1" else pad_pattern_ranks
    t = x_valid.shape[1]
    if t == 0:
        return torch.zeros((x_valid.shape[0], length, channels), device=x_valid.device)
    ranks = rule(n.clamp(min=1), length)
    idx = torch.gather(valid_order(x_valid), 1, ranks.clamp(max=t - 1))
    feat = features(px, idx, norms)
    # a modality without any valid observation is fed all zeros (bands and DOY), as the reference does
    return torch.where(n.gt(0).view(-1, 1, 1), feat, 0.0)


def bin_inputs(
    px: PixelSeries, s2_len: int, s1_len: int, spec: InputSpec, norms: Norms
) -> tuple[torch.Tensor, torch.Tensor]:
    """Model inputs of the bin samplers for pixels that share the sequence lengths ``s2_len`` / ``s1_len``.

    Lengths come from `sequence_lengths`; a modality with no valid observation gets zeros.
    """
    s2 = _bin_modality(px.s2_valid, s2_len, 11, spec, _s2_features, px, norms)
    s1 = _bin_modality(px.s1_valid, s1_len, 3, spec, _s1_features, px, norms)
    return s2, s1
