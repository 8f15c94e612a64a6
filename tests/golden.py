"""Recorded embeddings of seeded tiles: what `tests/test_golden.py` checks today's code against.

Every case embeds a tile cut from a seeded `tests.tilegen` world at a fixed global position and
year, with the seeded random demo model (a real TESSERA v1.0-layout transformer) or the fixed
stand-in model of `tests.test_infer` fed through another family's input preparation (v1.1 and v2
time bins, their normalisation tables). The input preparation (band order, normalisation, the
reference's sampler seeded by pixel position and year, the nodata policies, repeats) is what a
refactor most easily changes without any other test noticing.

A release that changes embeddings on purpose bumps the ``infer`` stage version (`tessera.stages`),
says so in ``CHANGELOG.md`` and rewrites the record::

    .venv/bin/python -m tests.golden
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from tessera import models
from tessera.infer import infer_arrays
from tessera.models import v1_1, v2
from tessera.models.spec import LoadedModel
from tests.tilegen import cut, make_world

__all__ = ["CASES", "RECORD", "embed"]

RECORD = Path(__file__).parent / "data" / "golden" / "embeddings.npz"
"""The recorded embeddings, one float32 (H, W, D) array per case name (NaN where not embedded)."""

YEAR = 2023
ORIGIN = (51_230, 61_870)
"""Global grid column and row of the tile's top-left pixel."""


def _demo() -> LoadedModel:
    return models.load(None)


def _standin_v1_1() -> LoadedModel:
    from tests.test_infer import standin

    return standin(v1_1.input_spec("planetary-computer"), "v1.1")


def _standin_v2() -> LoadedModel:
    from tests.test_infer import standin

    return standin(v2.input_spec(128), "v2-small")


CASES: dict[str, tuple[Callable[[], LoadedModel], dict[str, object]]] = {
    "demo_reference": (_demo, {"nodata_policy": "reference"}),
    "demo_strict_repeats2": (_demo, {"nodata_policy": "strict", "repeats": 2}),
    "v1_1_bins_reference": (_standin_v1_1, {"nodata_policy": "reference"}),
    "v2_bins_strict": (_standin_v2, {"nodata_policy": "strict"}),
}
"""Case name -> (the model, `tessera.infer.infer_arrays` settings)."""


def embed(name: str) -> np.ndarray:
    """Today's embeddings of case ``name``."""
    make_model, settings = CASES[name]
    tile, _ = cut(make_world(41, 8, 8), 0, 0, 8)
    return infer_arrays(make_model(), tile, origin=ORIGIN, year=YEAR, **settings).embeddings  # type: ignore[arg-type]


def main() -> None:
    """Rewrite `RECORD` from today's code."""
    arrays = {name: embed(name) for name in CASES}
    RECORD.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(RECORD, **arrays)
    print(f"wrote {RECORD} ({RECORD.stat().st_size} bytes): {', '.join(arrays)}")


if __name__ == "__main__":
    main()
