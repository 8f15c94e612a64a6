"""What each workflow stage's output depends on: its settings and its code version.

Each rule passes `settings_json` of its stage to its ``tessera`` subcommand as a Snakemake ``param``
and declares `STAGE_VERSIONS` of the stage as another, so Snakemake's own ``params`` rerun trigger
reruns exactly the jobs whose output a change alters, and their descendants (whose inputs then
change). Settings that do not change an output travel outside the params: ``model.batch_size``,
``model.device`` and thread counts. The infer rule passes the first two as params computed from
``resources`` (which Snakemake does not record as provenance), so changing them reruns nothing.

A release that changes what a stage writes for the same inputs (a fix in the S2 mosaic, a new
sampler) bumps that stage's number in `STAGE_VERSIONS` and says so in ``CHANGELOG.md``: finished
runs then redo that stage and everything after it, and nothing before it. ``plan``'s number is
part of the plan's content address (`tessera.plan.PLAN_VERSION`), so bumping it moves the plan to
a new directory and reruns every job. Keep a run as it is with ``snakemake --rerun-triggers mtime
input``. ``tests/test_e2e.py`` checks what a bump of several stages reruns.
"""

from __future__ import annotations

import json
from typing import Any

from tessera.config import Config, SourceConfig
from tessera.errors import ConfigError
from tessera.sources import resolve_source

__all__ = ["STAGE_VERSIONS", "settings", "settings_json"]

STAGE_VERSIONS: dict[str, int] = {
    "plan": 1,
    "search": 1,
    "read_s2": 1,
    "read_s1": 1,
    "tiles": 1,
    "infer": 2,
    "stitch": 2,
    "qa": 2,
    "export_geotessera": 1,
}
"""Code version of each stage's output. Bump in a release that changes the stage's output."""

_SEARCH_KEYS = ("source", "url", "collection")


def _source(src: SourceConfig, kind: str, keys: tuple[str, ...] | None = None) -> dict[str, Any]:
    """The source's settings as configured, less those that only restate what the provider does anyway.

    A key set to its default (``harmonised: false`` for planetary-computer, ``offset_rule:
    processing-baseline``, the provider's own URL) resolves to the same `DataSource` as leaving it out,
    so writing it down changes no output and must rerun nothing.
    """
    d = src.to_dict()
    resolved = resolve_source(src, kind)
    kept = {"source": d["source"]}
    for key, value in d.items():
        if key == "source":
            continue
        try:
            same = resolve_source(SourceConfig.from_dict({k: v for k, v in d.items() if k != key}), kind) == resolved
        except ConfigError:  # required for this provider (a generic stac source's url and collection)
            same = False
        if not same:
            kept[key] = value
    return {k: v for k, v in kept.items() if keys is None or k in keys}


def settings(cfg: Config, stage: str) -> dict[str, Any]:
    """The settings that change ``stage``'s output, as a partial config document.

    Stages: ``plan``, ``search-s2``, ``search-s1``, ``read_s2``, ``read_s1``, ``infer``, ``stitch``, ``qa``,
    ``tiles``, ``export_geotessera``.
    """
    if stage == "plan":
        keys = ("roi", "resolution", "chunk_size_m", "max_roi_area_km2")
        return {k: getattr(cfg, k) for k in keys}
    # the window: its dates are searched and read, and day-of-year counts from its first day; the
    # calendar year (period unset) adds nothing, so runs made before `period` existed rerun nothing
    window = {} if cfg.period is None else {"period": cfg.period}
    if stage in ("search-s2", "search-s1"):
        kind = stage.removeprefix("search-")
        return {kind: _source(cfg.source(kind), kind, _SEARCH_KEYS), **window}
    if stage in ("read_s2", "read_s1"):
        kind = stage.removeprefix("read_")
        return {kind: _source(cfg.source(kind), kind), **window}
    if stage == "infer":
        model = {k: v for k, v in cfg.model.to_dict().items() if k not in ("batch_size", "device")}
        # the v1.1 normalisation table is chosen by the S2 provider
        return {"model": model, "s2": {"source": cfg.s2.source}, "tile_size": cfg.tile_size}
    if stage in ("stitch", "qa", "tiles", "export_geotessera"):
        return {}
    raise ValueError(f"unknown stage {stage!r}")


def settings_json(cfg: Config, stage: str) -> str:
    """`settings` as compact, key-sorted JSON: the same settings give the same string."""
    return json.dumps(settings(cfg, stage), sort_keys=True, separators=(",", ":"))
