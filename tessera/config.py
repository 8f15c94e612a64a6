"""Load and validate the run configuration against ``tessera/schemas/config.schema.yaml``.

The Snakefile and every CLI subcommand validate against the same schema, which is also the
one place defaults live.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

import jsonschema
import yaml

from tessera.errors import ConfigError

__all__ = [
    "FIRST_YEAR",
    "Config",
    "ModelConfig",
    "SourceConfig",
    "last_year",
    "load_config",
    "parse_config",
    "read_config",
    "schema",
    "schema_violations",
    "validate_config",
    "validate_settings",
]

#: Sentinel-2 L2A and Sentinel-1 RTC both cover whole years from 2017 on.
FIRST_YEAR = 2017


def last_year(today: dt.date | None = None) -> int:
    """The last complete calendar year."""
    return (today or dt.date.today()).year - 1


def schema() -> dict[str, Any]:
    """The configuration JSON Schema."""
    text = resources.files("tessera").joinpath("schemas/config.schema.yaml").read_text()
    loaded: dict[str, Any] = yaml.safe_load(text)
    return loaded


def _with_defaults(validator_class: Any) -> Any:
    """A validator that also fills in ``default`` values of object properties."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator: Any, properties: Any, instance: Any, sch: Any) -> Iterator[Any]:
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, sch)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


_Validator = _with_defaults(jsonschema.Draft202012Validator)


def _where(err: jsonschema.ValidationError) -> str:
    return "/".join(str(p) for p in err.absolute_path) or "(top level)"


def _numeric_text(err: jsonschema.ValidationError) -> int | float | None:
    """The number a string written where a number belongs stands for (quoted, or YAML's ``1e-3``), or None."""
    if err.validator != "type" or not isinstance(err.instance, str):
        return None
    try:
        number = float(err.instance)
    except ValueError:
        return None
    return int(number) if "integer" in err.validator_value and number.is_integer() else number


def _hint(err: jsonschema.ValidationError) -> str:
    """How to fix one schema violation, by the JSON Schema keyword that failed."""
    number = _numeric_text(err)
    if number is not None:
        return f"write it as a plain number, e.g. {number!r} (YAML reads 1e-3 without a dot as text)"
    hints = {
        "additionalProperties": "remove that key or correct its spelling",
        "unevaluatedProperties": (
            "remove that key or correct its spelling "
            "(s2.harmonised and s2.offset_rule are Sentinel-2 keys, s1.resampling a Sentinel-1 key)"
        ),
        "required": "add the missing key",
        "type": f"set it to a value of type {err.validator_value}",
        "enum": "use one of the listed values",
        "minItems": "add at least one entry",
        "uniqueItems": "remove the duplicate entries",
        "minimum": f"set it to at least {err.validator_value}",
        "maximum": f"set it to at most {err.validator_value}",
        "exclusiveMinimum": f"set it to more than {err.validator_value}",
        "pattern": "write it in one of the forms its description in config/README.md gives",
    }
    return hints.get(str(err.validator), f"set it so that {err.validator} {err.validator_value!r} holds")


def schema_violations(validator: Any, doc: Any) -> str | None:
    """Every violation of ``doc`` as one line (path, the schema's message, how to fix it), or None if valid.

    One line, because the CLI prints a named error as a single stderr line.
    """
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    return "; ".join(f"{_where(err)}: {err.message} ({_hint(err)})" for err in errors) or None


def validate_config(config: Mapping[str, Any], *, today: dt.date | None = None) -> dict[str, Any]:
    """Validate ``config``, returning a copy with every default filled in.

    Raises:
        ConfigError: a key is unknown, missing or of the wrong type or range (the schema's message,
            with the key's path), a year lies outside the mission years, or a source is incomplete.
    """
    cfg = copy.deepcopy(dict(config))
    violations = schema_violations(_Validator(schema()), cfg)
    if violations:
        raise ConfigError(f"invalid configuration: {violations}; see config/README.md for every key")
    # a second pass fills defaults that the first pass added nested objects for
    _Validator(schema()).validate(cfg)
    hi = last_year(today)
    bad = [y for y in cfg["years"] if not FIRST_YEAR <= y <= hi]
    if bad:
        raise ConfigError(
            f"years {bad} outside the mission years {FIRST_YEAR}..{hi}: Sentinel-1/2 full-year archives "
            f"exist from {FIRST_YEAR} to last year; fix `years` in the config"
        )
    _check_period(cfg, hi, today)
    chunk_px = cfg["chunk_size_m"] / cfg["resolution"]
    # a tile_size set larger than a chunk is a mistake; the default (500) at a coarse resolution is not
    if "tile_size" in config and cfg["tile_size"] > chunk_px:
        raise ConfigError(
            f"tile_size = {cfg['tile_size']} px is larger than a chunk ({cfg['chunk_size_m']:g} m = {chunk_px:g} px at "
            f"{cfg['resolution']:g} m): tiles are cut from chunks, so set tile_size to at most {int(chunk_px)} "
            "or raise chunk_size_m"
        )
    for key in ("s2", "s1"):
        src = cfg[key]
        if src["source"] == "stac" and not ("url" in src and "collection" in src):
            raise ConfigError(f"{key}.source is 'stac': set {key}.url (STAC API root) and {key}.collection too")
    if cfg["s2"]["source"] == "opera":
        raise ConfigError("s2.source 'opera' serves only Sentinel-1: use planetary-computer, earth-search or stac")
    if cfg["s1"]["source"] == "earth-search":
        raise ConfigError("s1.source 'earth-search' serves only Sentinel-2: use planetary-computer, opera or stac")
    return cfg


def _check_period(cfg: Mapping[str, Any], last: int, today: dt.date | None) -> None:
    """``period`` is a month-day, and with it every year's window has ended (`PeriodError`, `ConfigError`)."""
    from tessera.period import window

    period = cfg.get("period")
    if period is None:
        return
    today = today or dt.date.today()
    windows = [window(y, period) for y in cfg["years"]]  # PeriodError if period is not a month-day
    open_ = [w.label for w in windows if w.end >= today]
    if open_:
        ended = last
        while window(ended, period).end >= today:
            ended -= 1
        raise ConfigError(
            f"the window(s) {', '.join(open_)} of period {period!r} have not ended yet (today is {today}): "
            f"with this period the last year whose window has ended is {ended}; fix `years` or `period`"
        )


def validate_settings(doc: Mapping[str, Any]) -> dict[str, Any]:
    """Validate a partial config document (a stage's settings, `tessera.stages`): no key is required.

    Raises:
        ConfigError: a key is unknown or of the wrong type or range.
    """
    sch = {k: v for k, v in schema().items() if k != "required"}
    out = copy.deepcopy(dict(doc))
    violations = schema_violations(_Validator(sch), out)
    if violations:
        raise ConfigError(f"invalid stage settings: {violations}")
    return out


def load_config(path: str | Path, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Read a YAML config file, apply ``overrides`` (top-level keys) and validate it."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"config file {p} does not exist")
    try:
        raw = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
        raise ConfigError(
            f"config file {p} is not valid YAML{where} ({problem}); "
            "fix the syntax there (brackets, quotes, indentation)"
        ) from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {p} must hold a mapping of keys, not {type(raw).__name__}")
    raw.update(overrides or {})
    return validate_config(raw)


def schema_markdown() -> str:
    """A Markdown table of every config key, its type, default and description (config/README.md)."""
    sch = schema()
    rows = ["| key | type | default | description |", "|---|---|---|---|"]

    def walk(props: dict[str, Any], prefix: str) -> None:
        for name, sub in props.items():
            if "$ref" in sub:
                ref = sch["$defs"][sub["$ref"].rsplit("/", 1)[-1]]
                own = {k: v for k, v in sub.items() if k != "$ref"}
                # the section's own keys extend those of the definition
                sub = {**ref, **own, "properties": {**ref.get("properties", {}), **own.get("properties", {})}}
            key = f"{prefix}{name}"
            typ = sub.get("type", "object")
            typ = " or ".join(map(str, typ)) if isinstance(typ, list) else str(typ)
            if "enum" in sub:
                typ = " \\| ".join(f"`{v}`" for v in sub["enum"])
            default = f"`{json.dumps(sub['default'])}`" if "default" in sub else ""
            desc = " ".join(str(sub.get("description", "")).split())
            rows.append(f"| `{key}` | {typ} | {default} | {desc} |")
            if "properties" in sub:
                walk(sub["properties"], f"{key}.")

    walk(sch["properties"], "")
    return (
        "# Configuration keys\n\n"
        "Generated from `tessera/schemas/config.schema.yaml` by `tessera config-docs`; the workflow and every\n"
        "`tessera` subcommand validate the config against that schema before any job runs.\n"
        "Machine settings (cores, memory, GPUs, partitions) belong in `profiles/`, not here.\n\n"
        + "\n".join(rows)
        + "\n"
    )


# --- the typed configuration -------------------------------------------------------------------
# Built from a validated document: every default comes from the schema, none is repeated here.


@dataclass(frozen=True)
class SourceConfig:
    """One data source (``s2`` or ``s1``) as configured; provider defaults fill what is None."""

    source: str
    """Provider: ``planetary-computer``, ``earth-search``, ``opera`` or ``stac``."""
    url: str | None = None
    """STAC API root overriding the provider's."""
    collection: str | None = None
    """Collection id overriding the provider's."""
    assets: Mapping[str, str] | None = None
    """Band name -> asset key overrides."""
    harmonised: bool | None = None
    """S2: whether the source already removed the baseline offset (None: the provider's default)."""
    offset_rule: str | None = None
    """S2: how the baseline offset is decided (None: ``processing-baseline``; `tessera.s2.OFFSET_RULES`)."""
    sign: str | None = None
    """How asset URLs are signed at read time (None: the provider's default)."""
    resampling: str | None = None
    """S1: resampling onto the grid (None: the provider's default)."""

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SourceConfig:
        """From the (validated) ``s2`` / ``s1`` section."""
        assets = d.get("assets")
        return cls(
            source=str(d["source"]),
            url=d.get("url"),
            collection=d.get("collection"),
            assets=MappingProxyType(dict(assets)) if assets is not None else None,
            harmonised=d.get("harmonised"),
            offset_rule=d.get("offset_rule"),
            sign=d.get("sign"),
            resampling=d.get("resampling"),
        )

    def to_dict(self) -> dict[str, Any]:
        """The section as written in a config file (unset keys left out)."""
        keys = ("source", "url", "collection", "harmonised", "offset_rule", "sign", "resampling")
        out = {k: getattr(self, k) for k in keys}
        if self.assets is not None:
            out["assets"] = dict(self.assets)
        return {k: v for k, v in out.items() if v is not None}


@dataclass(frozen=True)
class ModelConfig:
    """The ``model`` section."""

    checkpoint: str | None
    """Checkpoint path, or None for the seeded random demo model."""
    family: str
    """Model family or ``auto``."""
    output: str
    """``int8`` or ``float32``."""
    dimensions: int
    """Embedding dimensions kept."""
    precision: str
    """``bf16`` or ``fp32`` (GPU only)."""
    device: str
    """``auto``, ``cpu`` or ``cuda``."""
    batch_size: int | None
    """GPU pixels per forward pass (None: from free memory)."""
    repeats: int
    """Sampled sequences averaged per pixel (v1.0 family)."""
    nodata_policy: str
    """``reference`` or ``strict``: which pixels are embedded (`tessera.nodata`)."""

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelConfig:
        """From the (validated, defaults filled) ``model`` section."""
        return cls(**{f.name: d[f.name] for f in fields(cls)})

    def to_dict(self) -> dict[str, Any]:
        """The section as a plain dict."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class Config:
    """A validated run configuration (`parse_config`); see the schema for every key's meaning."""

    roi: str
    years: tuple[int, ...]
    period: str | None
    results_dir: str
    resolution: float
    chunk_size_m: float
    tile_size: int
    infer_tiles_per_job: int | None
    max_roi_area_km2: float
    keep_tiles: bool
    s2: SourceConfig
    s1: SourceConfig
    model: ModelConfig

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Config:
        """From a document that `validate_config` returned."""
        return cls(
            roi=str(d["roi"]),
            years=tuple(int(y) for y in d["years"]),
            period=d["period"],
            results_dir=str(d["results_dir"]),
            resolution=float(d["resolution"]),
            chunk_size_m=float(d["chunk_size_m"]),
            tile_size=int(d["tile_size"]),
            infer_tiles_per_job=d["infer_tiles_per_job"],
            max_roi_area_km2=float(d["max_roi_area_km2"]),
            keep_tiles=bool(d["keep_tiles"]),
            s2=SourceConfig.from_dict(d["s2"]),
            s1=SourceConfig.from_dict(d["s1"]),
            model=ModelConfig.from_dict(d["model"]),
        )

    def source(self, kind: str) -> SourceConfig:
        """The ``s2`` or ``s1`` section."""
        if kind not in ("s2", "s1"):
            raise ValueError(f"kind must be 's2' or 's1', not {kind!r}")
        return self.s2 if kind == "s2" else self.s1


def parse_config(config: Mapping[str, Any], *, today: dt.date | None = None) -> Config:
    """Validate ``config`` (`validate_config`) and return it as a typed `Config`."""
    return Config.from_dict(validate_config(config, today=today))


def read_config(path: str | Path) -> Config:
    """Read, validate and type a YAML config file (`load_config`)."""
    return Config.from_dict(load_config(path))
