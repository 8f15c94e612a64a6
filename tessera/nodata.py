"""Which pixels are embedded, and how the others are encoded: the reference's rules per model family.

The reference decides per family (reference-spec 3.2, 4.1, 4.2, 5.1):

* v1.0, v1.0-QAT (``random`` sampler; also our ``demo`` family): a pixel is embedded iff any of its
  Sentinel-2 band values is non-zero over the year (``min_valid_timesteps = 0``: the S1 and mask
  conditions are void). A pixel without a valid S2 observation draws its 40 S2 steps from all T
  dates; one without a valid S1 observation draws its S1 steps from all T S1 frames (zeros).
* v1.1 (``bins-v1.1``): every pixel is embedded; a modality without an observation is fed bin 8 of zeros.
* v2 students (``bins-v2``): a pixel is embedded iff it has a valid observation in either modality;
  a modality without one is fed a length-1 zero sequence.

Outside the ROI the reference's inputs are all zero, so no family embeds there except v1.1, whose
outputs must be masked with the ROI downstream; here outside the ROI is always nodata.

``model.nodata_policy: reference`` follows these rules; ``strict`` embeds only pixels with a valid
observation in every modality the family needs (``random``: S2 and S1; bins: S2 or S1).

The ``random`` fallback draws over all T dates of a modality, and here T is the dates of the pixel's
chunk, where the reference's is the dates of its whole ROI (every reference tile carries the global
T). A fallback pixel's embedding therefore depends on the chunk's date set: it can change with
``chunk_size_m`` where neighbouring chunks see different dates (at a swath edge), and it equals the
reference's only when both date sets are the same (one chunk; or, as in the demo world, chunks that
all see every scene). That is inherent to the reference's rule, not a seam of ours: pixels with a
valid observation in both modalities never use the fallback and stay bit-identical whatever the
chunking. For v1.0-QAT (and demo) an orbit without any frame contributes one all-zero frame on day
180 to the S1 fallback, as the reference's v1.0-QAT dataset does
(`tessera.sampling.with_empty_orbit_frames`); v1.0's dataset has no such frame, so its fallback
draws from the other orbit alone and a tile without any S1 frame fails, as in the reference
(reference-spec 3.2, 4.1).

Every pixel gets one `PixelClass` under a policy, so QA can count them and two policies can be
compared pixel by pixel. Nodata is encoded as the reference writes filtered pixels: an all-zero
float32 vector, or int8 code 0 with scale 0 (reference-spec 0 and 4.1), for every family (where
the reference leaves a family's nodata undefined, v1.1 outside the ROI and the v2 students'
uninitialised rows, the QAT and v2-teacher convention of zeros is used). A real pixel never has
scale 0 (both quantisation rules floor it above 0), so ``scale == 0`` identifies nodata.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Literal

import numpy as np

__all__ = [
    "EMBEDDED_CLASSES",
    "NODATA_POLICIES",
    "NodataPolicy",
    "PixelClass",
    "class_counts",
    "classify",
    "embedded",
    "encode_nodata_float32",
    "encode_nodata_int8",
    "is_embedded",
    "observations",
]

NodataPolicy = Literal["reference", "strict"]
NODATA_POLICIES: tuple[str, ...] = ("reference", "strict")
_SAMPLERS = ("random", "bins-v1.1", "bins-v2")


class PixelClass(IntEnum):
    """What happens to one pixel under a nodata policy (stored as uint8)."""

    OUTSIDE_ROI = 0
    """Not in the ROI: nodata."""
    EMBEDDED = 1
    """Embedded from valid S2 and valid S1 observations."""
    EMBEDDED_NO_VALID_S2 = 2
    """Embedded although no S2 observation is valid (always cloudy): S2 fallback (all dates, or zeros)."""
    EMBEDDED_NO_VALID_S1 = 3
    """Embedded although no S1 observation is valid (e.g. SAR-dark water): S1 fallback."""
    EMBEDDED_NO_VALID_OBSERVATION = 4
    """Embedded with neither a valid S2 nor a valid S1 observation: both fallbacks."""
    NODATA = 5
    """In the ROI but not embedded: it lacks what the policy requires."""


def observations(
    bands: np.ndarray, masks: np.ndarray, sar_ascending: np.ndarray, sar_descending: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-pixel evidence of tile arrays in the reference layout (`tessera.layout`).

    Returns:
        ``(n_s2, n_s1, s2_any)``: valid S2 observations (mask != 0), valid S1 frames (ascending plus
        descending, any band != 0), and whether any S2 band value is non-zero on any date.
    """
    n_s2 = np.count_nonzero(masks, axis=0)
    n_s1 = sum(np.count_nonzero(np.any(sar != 0, axis=-1), axis=0) for sar in (sar_ascending, sar_descending))
    s2_any = np.any(bands != 0, axis=(0, -1)) if bands.shape[0] else np.zeros(masks.shape[1:], bool)
    return n_s2, np.asarray(n_s1), s2_any


def embedded(
    sampling: str,
    policy: str,
    roi: np.ndarray,
    n_s2: np.ndarray,
    n_s1: np.ndarray,
    s2_any: np.ndarray,
) -> np.ndarray:
    """Bool mask of the pixels a family embeds under ``policy``.

    Args:
        sampling: The family's sampler (`tessera.models.spec.InputSpec.sampling`): ``random``,
            ``bins-v1.1`` or ``bins-v2``.
        policy: ``reference`` or ``strict``.
        roi: ROI mask (non-zero = inside).
        n_s2: Valid S2 observations per pixel (mask = 1).
        n_s1: Valid S1 observations per pixel (ascending + descending frames with any band != 0).
        s2_any: Whether any S2 band value of the pixel is non-zero on any date (valid or not).

    Raises:
        ValueError: Unknown ``sampling`` or ``policy``.
    """
    if sampling not in _SAMPLERS:
        raise ValueError(f"unknown sampler {sampling!r}; expected one of {list(_SAMPLERS)}")
    if policy not in NODATA_POLICIES:
        raise ValueError(f"unknown nodata policy {policy!r}; expected one of {list(NODATA_POLICIES)}")
    inside: np.ndarray = np.asarray(roi) != 0
    v2: np.ndarray = np.asarray(n_s2) > 0
    v1: np.ndarray = np.asarray(n_s1) > 0
    needs: np.ndarray
    if policy == "strict":
        # today's behaviour, kept byte for byte
        needs = (v2 & v1) if sampling == "random" else (v2 | v1)
    elif sampling == "random":
        needs = np.asarray(s2_any, dtype=bool)
    elif sampling == "bins-v1.1":
        needs = np.ones_like(inside)
    else:
        needs = v2 | v1
    result: np.ndarray = inside & needs
    return result


def classify(
    sampling: str,
    policy: str,
    roi: np.ndarray,
    n_s2: np.ndarray,
    n_s1: np.ndarray,
    s2_any: np.ndarray,
) -> np.ndarray:
    """uint8 `PixelClass` of every pixel under ``policy`` (arguments as for `embedded`)."""
    emb = embedded(sampling, policy, roi, n_s2, n_s1, s2_any)
    v2, v1 = np.asarray(n_s2) > 0, np.asarray(n_s1) > 0
    classes = np.full(emb.shape, PixelClass.NODATA, np.uint8)
    classes[np.asarray(roi) == 0] = PixelClass.OUTSIDE_ROI
    classes[emb & v2 & v1] = PixelClass.EMBEDDED
    classes[emb & ~v2 & v1] = PixelClass.EMBEDDED_NO_VALID_S2
    classes[emb & v2 & ~v1] = PixelClass.EMBEDDED_NO_VALID_S1
    classes[emb & ~v2 & ~v1] = PixelClass.EMBEDDED_NO_VALID_OBSERVATION
    return classes


#: The classes of embedded pixels.
EMBEDDED_CLASSES = (
    PixelClass.EMBEDDED,
    PixelClass.EMBEDDED_NO_VALID_S2,
    PixelClass.EMBEDDED_NO_VALID_S1,
    PixelClass.EMBEDDED_NO_VALID_OBSERVATION,
)


def is_embedded(classes: np.ndarray) -> np.ndarray:
    """Bool mask of the pixels whose `PixelClass` is one of `EMBEDDED_CLASSES`."""
    result: np.ndarray = np.isin(classes, np.array(EMBEDDED_CLASSES, dtype=np.uint8))
    return result


def class_counts(classes: np.ndarray) -> dict[str, int]:
    """Pixels per `PixelClass` name (every class listed, zeros included), for QA reports."""
    counts = np.bincount(np.asarray(classes, dtype=np.int64).ravel(), minlength=len(PixelClass))
    return {c.name.lower(): int(counts[c]) for c in PixelClass}


def encode_nodata_float32(embeddings: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """float32 ``(..., D)`` embeddings with the vectors of non-``valid`` pixels set to zero."""
    out = np.array(embeddings, dtype=np.float32, copy=True)
    out[~np.asarray(valid, dtype=bool)] = 0.0
    return out


def encode_nodata_int8(codes: np.ndarray, scales: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int8 codes ``(..., D)`` and float32 scales ``(...)`` with code 0 and scale 0 where not ``valid``."""
    keep = np.asarray(valid, dtype=bool)
    q = np.where(keep[..., None], codes, 0).astype(np.int8)
    s = np.where(keep, scales, 0.0).astype(np.float32)
    return q, s
