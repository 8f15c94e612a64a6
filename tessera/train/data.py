"""Training pixels streamed from reference-layout tile directories with bounded memory.

Discovery. `find_tiles` looks for tile directories (a ``bands.npy`` beside the S1 arrays and a
``roi.tiff``) under ``<root>/<year>/`` for each requested root (one per region or run) and year, so the
workflow's ``results_dir`` works as a root whatever sub-layout its tiles use. A ``bands.npy`` without
the S1 arrays is a chunk's S2 read output (``<year>/stack/<chunk>/s2/``), not a tile, and is passed
over, as are the temporary directories of an export that runs or was killed (``.tmp-*``). The tiles
come in an order of their own, independent of the order of the roots: by year, name (the path below
``<root>/<year>/``), grid position and, for two tiles alike in all of these, their content.

Scan. `scan` opens every tile memory-mapped once and cuts it into *pieces* of whole rows (about
``piece_pixels`` pixels each), counting the pixels of each piece that are inside the ROI and have at
least ``min_valid_timesteps`` valid S2 and valid S1 observations (the reference's training filter,
reference-spec 3.2). Only the counts are kept: O(number of pieces) memory.

Stream. An epoch visits every eligible pixel once. Its pieces are put in a seeded random order and
grouped into buffers of ``buffer_pixels // piece_pixels`` pieces; a buffer (pieces of many tiles,
regions and years) is read from disk, shuffled with its own seeded generator, and cut into batches,
the remainder carried into the next buffer. The batch of step ``s`` is therefore a pure function of
(seed, data, ``s``), so a resumed run gets exactly the batches the killed one would have had, after
reading only the buffer it resumes in.

Memory bound. A buffer is ``k = max(1, buffer_pixels // piece_pixels)`` pieces of at most ``P =
max(piece_pixels, W)`` pixels each (``W``: the widest tile; a piece is at least one row). At most two
buffers' worth of pixel records are alive at once (the pieces and their concatenation, then the
concatenation and its shuffled copy), plus the remainder carried into the next buffer (held twice while
it is copied in front of it) and the batch the caller holds: at most ``2 x (k x P + P) + 3 x batch_size``
records (the extra piece covers the piece being read and the shuffle's index) of ``23 * T2 + 7 * T1 +
32`` bytes (S2: 10 int16 bands, a validity byte and an int16 day per date; S1: 2 int16 bands, an int16
day and an orbit byte per date; four int64 columns), with ``T2``/``T1`` the largest S2 / S1 (ascending
+ descending) time dimension over the tiles. With tiles no wider than a piece and ``buffer_pixels`` a
multiple of ``piece_pixels``, ``k x P`` is ``buffer_pixels``. Example: the defaults (32768-pixel buffer,
1024-pixel pieces, batch 256, 500 px tiles) with T2 = 150 and T1 = 120 hold at most 68,352 records x
4,322 B = 295 MB. Tile files are memory-mapped: the page cache they use is the kernel's to reclaim.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from tessera.errors import NoTilesError, TileError, TrainingError
from tessera.grid import Grid
from tessera.io import TMP_PREFIX, sha256_file
from tessera.layout import ROI_FILE, TILE_FILES
from tessera.tileio import TileArrays, read_tile, tile_grid, tile_roi

__all__ = ["PixelRecords", "PixelStream", "TileSource", "TrainingData", "find_tiles", "scan"]

logger = logging.getLogger(__name__)

_ORDER_TAG, _SHUFFLE_TAG = 0x0D, 0x5F  # separate seeded generators for piece order and buffer shuffles


@dataclass(frozen=True)
class TileSource:
    """One tile directory and the year of its data."""

    path: Path
    """The tile directory."""
    year: int
    """Year of its observations (part of every pixel's draw seeds)."""
    name: str
    """Stable name for provenance: the path relative to the root it was found under (tiles of two roots
    exported alike share it; the provenance's sha256 of their files tells them apart)."""


#: The tile files that only a tile directory holds: a chunk's S2 read output has the other ones too.
_TILE_ONLY = tuple(f.name for f in TILE_FILES if f.name.startswith("sar_"))
_TILE_FIX = "re-export the tiles (`snakemake tiles` with keep_tiles: true) or delete the directory"


def find_tiles(roots: Sequence[str | Path], years: Sequence[int]) -> list[TileSource]:
    """Every tile directory under ``<root>/<year>/`` for each root and year, in an order of the tiles alone.

    The order (year, then name, grid position and content; see the module docstring) is the same
    whatever the order of ``roots``, so that the same tiles give the same training run.

    Raises:
        NoTilesError: A requested year has no tile under any root (or no root or year was given).
        TileError: Two tile directories of a year cover the same pixels (a stale export, or a root
            given twice), a tile directory has no ``roi.tiff``, or a tile's ``roi.tiff`` is not
            georeferenced.
    """
    if not roots or not years:
        raise NoTilesError("no tile roots or no years given; pass --data <results dir> and --years <year ...>")
    found: list[tuple[TileSource, Grid]] = []
    for year in sorted(set(years)):
        of_year = []
        for root in roots:
            base = Path(root) / str(year)
            of_year += [TileSource(d, year, str(Path(str(year)) / d.relative_to(base))) for d in _tile_dirs(base)]
        if not of_year:
            where = ", ".join(str(Path(r) / str(year)) for r in roots)
            raise NoTilesError(
                f"no tiles for year {year}: no tile directory (bands.npy + roi.tiff) under {where}; "
                "re-run the workflow for that year with keep_tiles: true, or remove the year from --years"
            )
        found += _ordered([(src, tile_grid(src.path)) for src in of_year])
    _refuse_overlaps(found)
    return [src for src, _ in found]


def _tile_dirs(base: Path) -> list[Path]:
    """The tile directories below ``base``, sorted by path.

    Raises:
        TileError: A directory holds a tile's arrays but no ``roi.tiff``.
    """
    dirs, broken = [], []
    for d in sorted({p.parent for p in base.rglob("bands.npy")}):
        if any(part.startswith(TMP_PREFIX) for part in d.relative_to(base).parts):
            continue  # an export being written (or one a killed export left): not tiles yet
        if (d / ROI_FILE).is_file():
            dirs.append(d)
        elif any((d / name).exists() for name in _TILE_ONLY):
            broken.append(d)
        else:
            logger.debug("%s holds a bands.npy without S1 arrays (a chunk's S2 stack): not a tile", d)
    if broken:
        more = f" (and {len(broken) - 3} more)" if len(broken) > 3 else ""
        which = "tile directory" if len(broken) == 1 else "tile directories"
        raise TileError(
            f"{which} {', '.join(map(str, broken[:3]))}{more} holds the arrays of a tile but no {ROI_FILE} "
            f"(an interrupted export, or a deleted file), so its pixels cannot be placed or trained on; {_TILE_FIX}"
        )
    return dirs


def _ordered(tiles: Sequence[tuple[TileSource, Grid]]) -> list[tuple[TileSource, Grid]]:
    """``tiles`` (one year's) by name, then grid position, then content: in an order of the tiles alone.

    Names are relative to a root, so tiles of two regions exported with the same layout share names;
    their grid positions tell them apart, and the content (hashed only for tiles alike in both) where
    even those agree. Tiles of one root have distinct names: they keep the order of their paths.
    """

    def place(tile: tuple[TileSource, Grid]) -> tuple[tuple[str, ...], str, float, int, int]:
        src, g = tile
        return Path(src.name).parts, g.crs, g.resolution, g.row, g.col

    out: list[tuple[TileSource, Grid]] = []
    for _, alike in itertools.groupby(sorted(tiles, key=place), key=place):
        group = list(alike)
        out += sorted(group, key=lambda t: _content_digest(t[0].path)) if len(group) > 1 else group
    return out


def _content_digest(tile_dir: Path) -> str:
    """sha256 of the sha256 of each of a tile's files (those `scan` records in the provenance)."""
    names = (*(f.name for f in TILE_FILES), ROI_FILE)
    joined = "".join(f"{name}:{sha256_file(tile_dir / name)}\n" for name in names if (tile_dir / name).is_file())
    return hashlib.sha256(joined.encode()).hexdigest()


def _refuse_overlaps(tiles: Sequence[tuple[TileSource, Grid]]) -> None:
    """A `TileError` if two tile directories of one year have a pixel inside both ROIs (it would count twice).

    Tiles of one run never share an ROI pixel (an edge tile padded to the tile size reaches into its
    neighbour only with pixels outside its ROI); two that do are a stale export left by an earlier
    chunking or tiling of the same results directory, or one region passed twice.
    """
    groups: dict[tuple[int, str, float], list[tuple[Grid, TileSource]]] = {}
    for src, g in tiles:
        groups.setdefault((src.year, g.crs, g.resolution), []).append((g, src))
    for (year, crs, _), group in groups.items():
        group.sort(key=lambda t: (t[0].col, t[0].row))
        for i, (ga, a) in enumerate(group):
            for gb, b in group[i + 1 :]:
                if gb.col >= ga.col + ga.width:
                    break  # sorted by left edge: no later tile reaches back into this one
                if _share_roi_pixels(a.path, ga, b.path, gb):
                    raise TileError(
                        f"tile directories {a.path} and {b.path} cover the same pixels of {year} ({crs}), which "
                        "would be counted twice; one is likely a stale export of an earlier chunk size or tile "
                        "size of the same results directory (delete it), or one region was passed twice in --data"
                    )


def _share_roi_pixels(path_a: Path, ga: Grid, path_b: Path, gb: Grid) -> bool:
    """Whether two tiles' bounding boxes overlap on a pixel inside both ROIs (masks read only then)."""
    c0, c1 = max(ga.col, gb.col), min(ga.col + ga.width, gb.col + gb.width)
    r0, r1 = max(ga.row, gb.row), min(ga.row + ga.height, gb.row + gb.height)
    if c0 >= c1 or r0 >= r1:
        return False
    ma, mb = tile_roi(path_a)[0], tile_roi(path_b)[0]
    wa = ma[r0 - ga.row : r1 - ga.row, c0 - ga.col : c1 - ga.col]
    wb = mb[r0 - gb.row : r1 - gb.row, c0 - gb.col : c1 - gb.col]
    return bool((wa & wb).any())


@dataclass(frozen=True)
class PixelRecords:
    """Raw time series of N pixels, padded with invalid steps to common lengths T2 / T1."""

    s2: np.ndarray
    """(N, T2, 10) int16 holding the uint16 DN bit pattern."""
    s2_valid: np.ndarray
    """(N, T2) bool."""
    s2_doy: np.ndarray
    """(N, T2) int16 day of year (0 on padding)."""
    s1: np.ndarray
    """(N, T1, 2) int16 [VV, VH]: ascending frames, then descending frames, then padding."""
    s1_doy: np.ndarray
    """(N, T1) int16."""
    s1_desc: np.ndarray
    """(N, T1) bool: descending frame."""
    col: np.ndarray
    """(N,) int64 global grid column."""
    row: np.ndarray
    """(N,) int64 global grid row."""
    year: np.ndarray
    """(N,) int64."""
    epsg: np.ndarray
    """(N,) int64 EPSG code of the grid (pixels of different UTM zones share grid indices)."""

    def __len__(self) -> int:
        return int(self.col.shape[0])

    def take(self, index: np.ndarray | slice) -> PixelRecords:
        """The records at ``index`` (a copy for an index array, a view for a slice)."""
        return PixelRecords(*(getattr(self, f.name)[index] for f in fields(self)))

    def copy(self) -> PixelRecords:
        """The records in arrays of their own (a view keeps the whole array it views alive)."""
        return PixelRecords(*(getattr(self, f.name).copy() for f in fields(self)))

    def after(self, head: PixelRecords | None, index: np.ndarray) -> PixelRecords:
        """``head``'s records (if any), then the records at ``index``, in one new array per field."""
        n = 0 if head is None else len(head)
        parts = []
        for f in fields(self):
            source = getattr(self, f.name)
            out = np.empty((n + len(index), *source.shape[1:]), source.dtype)
            if head is not None:
                out[:n] = getattr(head, f.name)
            np.take(source, index, axis=0, out=out[n:], mode="clip")  # "raise" would buffer a copy
            parts.append(out)
        return PixelRecords(*parts)

    @classmethod
    def concat(cls, parts: Sequence[PixelRecords]) -> PixelRecords:
        """All ``parts`` one after the other."""
        return cls(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls)))


@dataclass(frozen=True)
class _Tile:
    source: TileSource
    col: int
    row: int
    epsg: int
    width: int


@dataclass(frozen=True)
class TrainingData:
    """The scanned tiles: pieces and their eligible-pixel counts."""

    tiles: tuple[_Tile, ...]
    pieces: np.ndarray
    """(P, 4) int64: tile index, first row, end row, eligible pixels."""
    t2: int
    """Longest S2 time dimension."""
    t1: int
    """Longest S1 (ascending + descending) time dimension."""
    min_valid: int
    """The eligibility threshold the counts were made with."""
    provenance: tuple[dict[str, object], ...]
    """Per tile: name, year, shape, time dimensions, eligible pixels, sha256 of each of its files."""

    @property
    def pixels(self) -> int:
        """Eligible pixels in all tiles."""
        return int(self.pieces[:, 3].sum())


def _eligible(tile: TileArrays, rows: slice, min_valid: int) -> np.ndarray:
    """(r, W) bool: inside the ROI with at least ``min_valid`` (and >= 1) valid S2 and S1 observations."""
    need = max(1, min_valid)
    n2 = np.count_nonzero(tile.masks[:, rows], axis=0)
    n1 = np.zeros_like(n2)
    for sar in (tile.sar_ascending, tile.sar_descending):
        n1 += np.count_nonzero(np.any(sar[:, rows] != 0, axis=-1), axis=0)
    eligible: np.ndarray = (tile.roi[rows] > 0) & (n2 >= need) & (n1 >= need)
    return eligible


def scan(sources: Sequence[TileSource], min_valid: int, piece_pixels: int) -> TrainingData:
    """Open every tile once and count its eligible pixels per piece (see the module docstring).

    Raises:
        TileError: A tile directory is malformed.
        TrainingError: No tile has an eligible pixel.
    """
    tiles, pieces, provenance = [], [], []
    t2 = t1 = 0
    for k, src in enumerate(sources):
        arrays, grid = read_tile(src.path)
        h, w = arrays.shape
        step = max(1, piece_pixels // w)
        counts = [(r0, min(h, r0 + step)) for r0 in range(0, h, step)]
        eligible = 0
        for r0, r1 in counts:
            n = int(_eligible(arrays, slice(r0, r1), min_valid).sum())
            if n:
                pieces.append((k, r0, r1, n))
                eligible += n
        tiles.append(_Tile(src, grid.col, grid.row, int(grid.crs.split(":")[1]), w))
        t2 = max(t2, arrays.bands.shape[0])
        t1 = max(t1, arrays.sar_ascending.shape[0] + arrays.sar_descending.shape[0])
        # every file, the reflectances included: tiles remade with other settings (an S2 offset fix,
        # say) keep their dates and masks, and must not pass for the data a checkpoint was trained on
        names = (*(f.name for f in TILE_FILES), ROI_FILE)
        provenance.append(
            {
                "tile": src.name,
                "year": src.year,
                "shape": [h, w],
                "t_s2": int(arrays.bands.shape[0]),
                "t_s1": int(arrays.sar_ascending.shape[0] + arrays.sar_descending.shape[0]),
                "eligible_pixels": eligible,
                "sha256": {name: sha256_file(src.path / name) for name in names},
            }
        )
    if not pieces:
        raise TrainingError(
            f"none of the {len(sources)} tiles has a pixel inside its ROI with at least {min_valid} valid S2 and "
            "S1 observations; lower min_valid_timesteps or add tiles with more cloud-free dates"
        )
    return TrainingData(tuple(tiles), np.asarray(pieces, np.int64), t2, t1, min_valid, tuple(provenance))


def _pad_time(a: np.ndarray, length: int) -> np.ndarray:
    """Pad axis 1 (time) with zeros to ``length``."""
    if a.shape[1] == length:
        return a
    pad = [(0, 0)] * a.ndim
    pad[1] = (0, length - a.shape[1])
    return np.pad(a, pad)


def load_piece(data: TrainingData, piece: np.ndarray) -> PixelRecords:
    """The eligible pixels of one piece, in row-major order, padded to the data's T2 / T1."""
    k, r0, r1 = (int(v) for v in piece[:3])
    meta = data.tiles[k]
    arrays, _ = read_tile(meta.source.path)
    rows = slice(r0, r1)
    sel = np.flatnonzero(_eligible(arrays, rows, data.min_valid).ravel())
    n_px = (r1 - r0) * meta.width

    def pixels_first(a: np.ndarray) -> np.ndarray:
        # (T, r, W, ...) -> (n, T, ...): only the selected pixels are copied out of the memory map
        flat = a[:, rows].reshape(a.shape[0], n_px, *a.shape[3:])
        return np.ascontiguousarray(np.moveaxis(flat[:, sel], 0, 1))

    n = len(sel)
    s1_parts = (arrays.sar_ascending, arrays.sar_descending)
    s1 = np.concatenate([pixels_first(s) for s in s1_parts], axis=1)
    s1_doy = np.concatenate((arrays.sar_ascending_doy, arrays.sar_descending_doy)).astype(np.int16)
    s1_desc = np.repeat(np.arange(2, dtype=bool), [s.shape[0] for s in s1_parts])
    ys, xs = np.divmod(sel, meta.width)
    return PixelRecords(
        s2=_pad_time(pixels_first(arrays.bands).view(np.int16), data.t2),
        s2_valid=_pad_time(pixels_first(arrays.masks) != 0, data.t2),
        s2_doy=_pad_time(np.broadcast_to(arrays.doys.astype(np.int16), (n, arrays.doys.shape[0])), data.t2),
        s1=_pad_time(s1, data.t1),
        s1_doy=_pad_time(np.broadcast_to(s1_doy, (n, s1_doy.shape[0])), data.t1),
        s1_desc=_pad_time(np.broadcast_to(s1_desc, (n, s1_desc.shape[0])), data.t1),
        col=meta.col + xs.astype(np.int64),
        row=meta.row + r0 + ys.astype(np.int64),
        year=np.full(n, meta.source.year, np.int64),
        epsg=np.full(n, meta.epsg, np.int64),
    )


class PixelStream:
    """Seeded, resumable batches of eligible pixels (see the module docstring).

    Args:
        data: The scanned tiles.
        batch_size: Pixels per batch; each epoch drops its last incomplete batch.
        buffer_pixels: Shuffle buffer size in pixels.
        piece_pixels: The piece size the data were scanned with.
        seed: Seeds the piece order and the buffer shuffles of every epoch.
    """

    def __init__(self, data: TrainingData, batch_size: int, buffer_pixels: int, piece_pixels: int, seed: int) -> None:
        self.data, self.batch_size, self.seed = data, batch_size, seed
        self.pieces_per_buffer = max(1, buffer_pixels // piece_pixels)
        self.steps_per_epoch = data.pixels // batch_size
        if self.steps_per_epoch == 0:
            raise TrainingError(
                f"only {data.pixels} eligible pixels, fewer than batch_size {batch_size}; lower batch_size "
                "or min_valid_timesteps, or add tiles"
            )

    def _buffers(self, epoch: int) -> list[np.ndarray]:
        order = np.random.default_rng([self.seed, epoch, _ORDER_TAG]).permutation(len(self.data.pieces))
        k = self.pieces_per_buffer
        return [self.data.pieces[order[i : i + k]] for i in range(0, len(order), k)]

    def _pool(self, epoch: int, index: int, pieces: np.ndarray, skip: int, carry: PixelRecords | None) -> PixelRecords:
        """``carry``, then buffer ``index`` (``pieces``) of the epoch shuffled, less its first ``skip`` pixels.

        At most two buffers' records are alive: the pieces and their concatenation, then the
        concatenation and its shuffled copy (one gather, with ``carry`` written in front).
        """
        fresh = PixelRecords.concat([load_piece(self.data, p) for p in pieces])
        shuffle = np.random.default_rng([self.seed, epoch, index, _SHUFFLE_TAG]).permutation(len(fresh))
        return fresh.after(carry, shuffle[skip:])

    def batches(self, start_step: int = 0) -> Iterator[tuple[int, int, PixelRecords]]:
        """``(step, epoch, batch)`` from ``start_step`` on, for ever (the caller stops).

        Each batch is a copy, so a batch the caller still holds does not keep its buffer alive.
        """
        step = start_step
        while True:
            epoch, first = divmod(step, self.steps_per_epoch)
            buffers = self._buffers(epoch)
            ends = np.cumsum([int(b[:, 3].sum()) for b in buffers])
            skip = first * self.batch_size
            index = int(np.searchsorted(ends, skip, side="right"))
            skip -= int(ends[index - 1]) if index else 0
            carry: PixelRecords | None = None
            end_of_epoch = (epoch + 1) * self.steps_per_epoch
            while step < end_of_epoch:
                pool = self._pool(epoch, index, buffers[index], skip, carry)
                skip, index, start = 0, index + 1, 0
                while len(pool) - start >= self.batch_size and step < end_of_epoch:
                    yield step, epoch, pool.take(slice(start, start + self.batch_size)).copy()
                    start += self.batch_size
                    step += 1
                carry = pool.take(slice(start, None)).copy()
                del pool  # before the next buffer is read
