"""The layout of a geotessera store and the check that an export may replace what its directory holds.

`tessera.export.geotessera` writes a store; this module names its files and decides, before anything
is written, whether the target directory is empty, a previous export of ours of the same tiles (which
the export replaces, whatever years it held: that is how a year is added), or something else, which
stops the export with `tessera.errors.ExportConflictError`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

from tessera.errors import ExportConflictError
from tessera.io import TMP_PREFIX

__all__ = [
    "EMBEDDINGS_DIR",
    "GENERATOR",
    "LANDMASKS_DIR",
    "LANDMASKS_REGISTRY",
    "METADATA_FILE",
    "REGISTRY",
    "check_target",
    "years_text",
]

log = logging.getLogger(__name__)

EMBEDDINGS_DIR = "global_0.1_degree_representation"
LANDMASKS_DIR = "global_0.1_degree_tiff_all"
REGISTRY = "registry.parquet"
LANDMASKS_REGISTRY = "landmasks.parquet"
METADATA_FILE = "tessera_metadata.json"
GENERATOR = "tessera-pipeline"
"""The ``generator`` of ``tessera_metadata.json``: what marks a store as an export of ours."""


def years_text(years: Iterable[int]) -> str:
    """``2022, 2023``: years ascending, for messages."""
    return ", ".join(map(str, sorted(years)))


def _registry_entries(path: Path) -> list[tuple[int, str]] | None:
    """``(year, tile name)`` rows of an existing registry, or None if it cannot be read."""
    import pandas as pd

    try:
        df = pd.read_parquet(path, columns=["year", "lon", "lat"])
    except (OSError, ValueError, KeyError):
        return None
    return sorted((int(y), f"grid_{lon:.2f}_{lat:.2f}") for y, lon, lat in zip(df.year, df.lon, df.lat, strict=True))


def _export_files(years: Iterable[int], names: Sequence[str]) -> set[str]:
    """Paths (relative, POSIX) of every file an export of ``names`` in ``years`` writes."""
    files = {REGISTRY, LANDMASKS_REGISTRY, METADATA_FILE, f"{LANDMASKS_DIR}/SHA256SUM"}
    files |= {f"{LANDMASKS_DIR}/{n}.tiff" for n in names}
    for year in years:
        for n in names:
            tile = f"{EMBEDDINGS_DIR}/{year}/{n}"
            files |= {f"{tile}/{n}.npy", f"{tile}/{n}_scales.npy", f"{tile}/SHA256"}
    return files


def _our_export(out: Path) -> tuple[list[int], list[str]] | None:
    """``(years, tiles)``, sorted, of the export of ours that ``tessera_metadata.json`` describes; None if none."""
    try:
        meta = json.loads((out / METADATA_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or meta.get("generator") != GENERATOR:
        return None
    years, tiles = meta.get("years", [meta.get("year")]), meta.get("tiles", [])  # one-year exports listed `year`
    if not isinstance(years, list) or not isinstance(tiles, list):
        return None
    if not all(isinstance(y, int) for y in years) or not all(isinstance(t, str) for t in tiles):
        return None
    return sorted(years), sorted(tiles)


_SNAKEMAKE_STAMP = ".snakemake_timestamp"
"""What Snakemake writes into a ``directory()`` output (the ``geotessera`` target's) when its job is done."""


def check_target(out: Path, years: Sequence[int], names: Sequence[str]) -> None:
    """Refuse to replace a directory that holds anything but a previous export of ours of the same tiles.

    A previous export of the same tiles (its ``tessera_metadata.json`` names this pipeline as the
    generator and its registry lists those tiles in the years that file lists) is replaced, whatever
    years it held: exporting 2022 and 2023 into an export of 2022 is how a year is added to a store (a
    year it held and this export lacks is dropped, with a warning). The export replaces ``out`` as a
    whole, so such an export with a file no export of its years writes (``.tmp-*`` leftovers of
    `tessera.io.atomic_path` and the stamp Snakemake leaves in the ``geotessera`` target's directory
    aside) is refused, as is any other registry (a geotessera download, an export of other tiles) or file.
    """
    if out.exists() and not out.is_dir():
        raise ExportConflictError(f"{out} is a file, not a directory; export to another directory (--out)")
    if not out.exists() or not any(out.iterdir()):
        return
    ours = _our_export(out)
    registry = out / REGISTRY
    entries = _registry_entries(registry) if registry.exists() else None
    other_tiles = ours is not None and ours[1] != sorted(names)
    if ours is not None and not other_tiles:
        held = ours[0]
        if not registry.exists() or entries == sorted((y, n) for y in held for n in names):
            _check_known_files(out, _export_files(held, names))
            if dropped := sorted(set(held) - set(years)):
                log.warning(
                    "%s holds %s too, which this export of %s drops", out, years_text(dropped), years_text(years)
                )
            return
    if entries:
        what = (
            "a tessera-pipeline export of other tiles"
            if other_tiles
            else "a registry that is not a tessera-pipeline export"
        )
        count = len({n for _, n in entries})
        held_text = f"{what} ({count} tile(s) of {years_text({y for y, _ in entries})}, e.g. {entries[0][1]})"
    elif entries is None and registry.exists():
        held_text = f"a registry ({REGISTRY}) that cannot be read"
    else:
        held_text = "files that are not a tessera-pipeline geotessera export"
    raise ExportConflictError(
        f"{out} already holds {held_text}, not the {len(names)} tile(s) of {years_text(years)} this export writes; "
        "export to another directory (--out) or delete that one first"
    )


def _check_known_files(out: Path, known: set[str]) -> None:
    """Refuse a previous export of ours that holds a file no export writes: it would be replaced with it."""
    foreign = sorted(
        rel
        for f in out.rglob("*")
        if (f.is_symlink() or not f.is_dir()) and not f.name.startswith(TMP_PREFIX) and f.name != _SNAKEMAKE_STAMP
        if (rel := f.relative_to(out).as_posix()) not in known
    )
    if foreign:
        raise ExportConflictError(
            f"{out} holds a previous export of these tiles and {len(foreign)} file(s) that no export writes "
            f"(e.g. {foreign[0]}); the export replaces the whole directory: move them out of it, or export to "
            "another directory (--out)"
        )
