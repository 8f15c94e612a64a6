"""Two views of a pixel: two independent seeded draws of its valid S2 and S1 observations.

The draw is the reference's v1.0 sampler (reference-spec 3.2: ``sample_size`` steps, without
replacement when the pixel has enough valid observations, sorted in time order) as
`tessera.sampling.random_steps` implements it, seeded from

``seed(pixel, view) = combine(combine(combine(combine(pixel_seeds(col, row, year, 0), epsg), run seed), epoch), view)``.

`tessera.sampling.combine` is, for a fixed running hash, a bijection of the 32-bit value hashed in
(an xor followed by the invertible ``mix32``), and so is every later step of the draw in the seed.
Hence the two views of a pixel get different seeds, and from there a different random number for
every slot and every observation key: they never share random numbers, by construction rather than
by chance. (The drawn observations can still coincide: a pixel with exactly ``sample_size`` valid
observations of a modality gets all of them, in time order, in both views.) The epoch is hashed in
too, so a pixel seen again in a later epoch gets fresh views.
"""

from __future__ import annotations

import torch

from tessera.sampling import Norms, combine, pixel_seeds, random_steps
from tessera.train.data import PixelRecords

__all__ = ["ViewBatch", "make_views", "to_tensors", "view_seeds"]

_TRAIN_SALT = 0x7A11
_S2_SALT, _S1_SALT = 0x5232, 0x5131  # the modality salts of tessera.sampling.random_inputs

ViewBatch = tuple[torch.Tensor, torch.Tensor]
"""``(s2 (N, s2_steps, 11), s1 (N, s1_steps, 3))`` float32 model inputs of one view."""


def view_seeds(px: dict[str, torch.Tensor], seed: int, epoch: int, view: int) -> torch.Tensor:
    """``(N,)`` draw seeds of one view of each pixel (see the module docstring)."""
    h = pixel_seeds(px["col"], px["row"], 0, 0)
    for value in (px["year"], px["epsg"], _TRAIN_SALT, seed, epoch):
        h = combine(h, value)
    return combine(h, view)


def to_tensors(records: PixelRecords, device: torch.device) -> dict[str, torch.Tensor]:
    """The records as tensors on ``device`` (int64 where the hash needs it)."""
    return {
        "s2": torch.from_numpy(records.s2).to(device),
        "s2_valid": torch.from_numpy(records.s2_valid).to(device),
        "s2_doy": torch.from_numpy(records.s2_doy).to(device, torch.int64),
        "s1": torch.from_numpy(records.s1).to(device),
        "s1_valid": torch.from_numpy(records.s1 != 0).any(-1).to(device),
        "s1_doy": torch.from_numpy(records.s1_doy).to(device, torch.int64),
        "s1_desc": torch.from_numpy(records.s1_desc).to(device, torch.int64),
        "col": torch.from_numpy(records.col).to(device),
        "row": torch.from_numpy(records.row).to(device),
        "year": torch.from_numpy(records.year).to(device),
        "epsg": torch.from_numpy(records.epsg).to(device),
    }


def _gather(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    if x.dim() == 2:
        return torch.gather(x, 1, idx)
    return torch.gather(x, 1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def draw(px: dict[str, torch.Tensor], seeds: torch.Tensor, steps: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Time indices ``(N, s2_steps)`` and ``(N, s1_steps)`` of one view (S1 keys: orbit * 512 + DOY)."""
    s2_idx = random_steps(px["s2_valid"], px["s2_doy"], combine(seeds, _S2_SALT), steps[0])
    s1_keys = px["s1_desc"] * 512 + px["s1_doy"]
    s1_idx = random_steps(px["s1_valid"], s1_keys, combine(seeds, _S1_SALT), steps[1])
    return s2_idx, s1_idx


def features(px: dict[str, torch.Tensor], s2_idx: torch.Tensor, s1_idx: torch.Tensor, norms: Norms) -> ViewBatch:
    """Standardised bands + raw DOY at the drawn steps (S1 standardised with its own orbit's table)."""
    raw2 = (_gather(px["s2"], s2_idx).to(torch.int32) & 0xFFFF).float()
    s2 = torch.cat(((raw2 - norms.s2_mean) / norms.s2_den, _gather(px["s2_doy"], s2_idx).float().unsqueeze(-1)), -1)
    orbit = _gather(px["s1_desc"], s1_idx)
    raw1 = _gather(px["s1"], s1_idx).float()
    s1_doy = _gather(px["s1_doy"], s1_idx).float().unsqueeze(-1)
    s1 = torch.cat(((raw1 - norms.s1_mean[orbit]) / norms.s1_den[orbit], s1_doy), -1)
    return s2, s1


def make_views(
    px: dict[str, torch.Tensor], seed: int, epoch: int, steps: tuple[int, int], norms: Norms
) -> tuple[ViewBatch, ViewBatch]:
    """The two views of every pixel of a batch."""
    views = []
    for view in (0, 1):
        s2_idx, s1_idx = draw(px, view_seeds(px, seed, epoch, view), steps)
        views.append(features(px, s2_idx, s1_idx, norms))
    return views[0], views[1]
