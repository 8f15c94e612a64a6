"""The results layout: every path the workflow reads or writes, defined once.

The rules (`rules/*.smk`) build their inputs and outputs with these methods, passing Snakemake
wildcard placeholders (``"{year}"``) where the value is per job; the package uses the same methods
to find files inside the directories a job is given (`stack_path`, `search_path`, below a year's
``stack`` and ``search`` directories). Nothing else spells out a results path.

::

    <root>/plan/<key>/chunks.json              the chunk plan (grid, chunks), `tessera.plan`
    <root>/plan/<key>/mask.tif                 the ROI mask on the ROI grid
    <root>/plan/<key>/tiles-<P>.json           every chunk's tiles at tile size P
    <root>/<year>/search/<chunk>/<product>.json                 unsigned ItemCollection
    <root>/<year>/stack/<chunk>/s2/{bands,masks,doys}.npy       chunk stacks (reference layout)
    <root>/<year>/stack/<chunk>/s1-<orbit>/sar_<orbit>{,_doy}.npy
    <root>/<year>/stack/<chunk>/<product>/{valid_count.npy,qa.json}
    <root>/<year>/embeddings/<chunk>/<part>/<tile>{.npy,_scales.npy,.json}
    <root>/<year>/tiles/<chunk>/<tile>/        reference-layout tile directories (an export)
    <root>/<year>/geotessera/                  the year's products in geotessera's layout (an export)
    <root>/<year>/products/tessera_<year>{.tif,_scales.tif,_counts.tif,.json,_collection.json,
                                          _quicklook.png,_qa.md,_qa_counts.png}
    <root>/train/{encoder.pt,checkpoint.pt,train.json}  the `train` target
    <root>/logs/<rule>/...
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tessera.layout import PRODUCTS

__all__ = [
    "PLAN_CHUNKS",
    "PLAN_MASK",
    "QA_FILE",
    "VALID_COUNT_FILE",
    "Results",
    "part_chunk",
    "part_name",
    "plan_tiles_name",
    "search_path",
    "stack_names",
    "stack_path",
]

#: Chunk plan file name inside a plan directory.
PLAN_CHUNKS = "chunks.json"
#: ROI mask GeoTIFF inside a plan directory.
PLAN_MASK = "mask.tif"


def plan_tiles_name(tile_size: int | str) -> str:
    """File name, inside a plan directory, of every chunk's tiles at ``tile_size``."""
    return f"tiles-{tile_size}.json"


#: Per-pixel count of valid observations of one read step (uint16, chunk shape).
VALID_COUNT_FILE = "valid_count.npy"
#: What one read step did.
QA_FILE = "qa.json"


def stack_names(product: str) -> tuple[str, ...]:
    """The stacked arrays of one product of a chunk, in the reference's names (``s1-{orbit}`` works too)."""
    if product == "s2":
        return ("bands.npy", "masks.npy", "doys.npy")
    if product.startswith("s1-"):
        orbit = product.removeprefix("s1-")
        return (f"sar_{orbit}.npy", f"sar_{orbit}_doy.npy")
    raise ValueError(f"unknown product {product!r}")


def stack_path(stack_root: str | Path, chunk: str, product: str | None = None, name: str | None = None) -> Path:
    """Below a year's stack directory (`Results.stack_root`): a chunk's stacks, one read step's output
    directory (``product``), or one file of it (``name``)."""
    parts = [p for p in (product, name) if p is not None]
    return Path(stack_root, chunk, *parts)


def search_path(search_root: str | Path, chunk: str, product: str) -> Path:
    """Below a year's search directory (`Results.search_dir`): one search result."""
    return Path(search_root, chunk, f"{product}.json")


def part_name(index: int, tiles_per_job: int | None) -> str:
    """Name of the ``index``-th inference job of a chunk: ``all`` (one job per chunk) or ``n<N>-<k>``."""
    return "all" if tiles_per_job is None else f"n{tiles_per_job}-{index:03d}"


def part_chunk(part_dir: str | Path) -> str:
    """The chunk id of an inference job's output directory (`Results.embeddings`: ``.../<chunk>/<part>``)."""
    return Path(part_dir).parent.name


@dataclass(frozen=True)
class Results:
    """Paths under ``root`` (the config's ``results_dir``). Arguments may be wildcard placeholders."""

    root: str
    """The results directory, as given in the config."""

    def _p(self, *parts: str) -> str:
        return str(Path(self.root, *parts))

    # --- plan --------------------------------------------------------------------------------

    def plan_dir(self, key: str) -> str:
        """Content-addressed plan directory (`tessera.plan.plan_key`)."""
        return self._p("plan", key)

    def plan_chunks(self, key: str) -> str:
        """The chunk plan JSON."""
        return self._p("plan", key, PLAN_CHUNKS)

    def plan_mask(self, key: str) -> str:
        """The ROI mask GeoTIFF on the ROI grid."""
        return self._p("plan", key, PLAN_MASK)

    def plan_tiles(self, key: str, tile_size: int | str) -> str:
        """Every chunk's tiles at ``tile_size``."""
        return self._p("plan", key, plan_tiles_name(tile_size))

    # --- per year ----------------------------------------------------------------------------

    def search(self, year: int | str, chunk: str, product: str) -> str:
        """A search result (unsigned ItemCollection)."""
        return str(search_path(self.search_dir(year), chunk, product))

    def search_dir(self, year: int | str) -> str:
        """Every search result of a year."""
        return self._p(str(year), "search")

    def stack_dir(self, year: int | str, chunk: str, product: str) -> str:
        """One read step's output directory."""
        return str(stack_path(self.stack_root(year), chunk, product))

    def chunk_stack_dir(self, year: int | str, chunk: str) -> str:
        """A chunk's stacks (every read step's output directory of the chunk)."""
        return str(stack_path(self.stack_root(year), chunk))

    def stack_file(self, year: int | str, chunk: str, product: str, name: str) -> str:
        """One file of a read step's output."""
        return str(stack_path(self.stack_root(year), chunk, product, name))

    def stack_arrays(self, year: int | str, chunk: str, product: str) -> list[str]:
        """The stacked arrays of one read step (`stack_names`)."""
        return [self.stack_file(year, chunk, product, n) for n in stack_names(product)]

    def chunk_stacks(self, year: int | str, chunk: str) -> list[str]:
        """Every stacked array of a chunk (all three products)."""
        return [f for product in PRODUCTS for f in self.stack_arrays(year, chunk, product)]

    def stack_root(self, year: int | str) -> str:
        """Every read step's output of a year."""
        return self._p(str(year), "stack")

    def embeddings(self, year: int | str, chunk: str, part: str) -> str:
        """One inference job's output directory (per-tile embedding files)."""
        return self._p(str(year), "embeddings", chunk, part)

    def tiles(self, year: int | str, chunk: str) -> str:
        """A chunk's reference-layout tile directories (export)."""
        return self._p(str(year), "tiles", chunk)

    def geotessera(self, year: int | str) -> str:
        """A year's geotessera export directory (`tessera.export.geotessera`)."""
        return self._p(str(year), "geotessera")

    def product(self, year: int | str, suffix: str = ".tif") -> str:
        """A product file: ``tessera_<year><suffix>``."""
        return self._p(str(year), "products", f"tessera_{year}{suffix}")

    def train_dir(self) -> str:
        """The ``train`` target's output directory."""
        return self._p("train")

    def train(self, name: str) -> str:
        """A file of the ``train`` target's output directory (``encoder.pt``, ``checkpoint.pt``, ``train.json``)."""
        return self._p("train", name)

    def log(self, rule: str, *parts: str) -> str:
        """A job's log file."""
        *dirs, last = parts or ("",)
        return self._p("logs", rule, *dirs, f"{last}.log")
