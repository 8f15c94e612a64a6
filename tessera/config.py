"""Load and validate the run configuration against ``tessera/schemas/config.schema.yaml``.

The Snakefile and every CLI subcommand validate against the same schema, which is also the
one place defaults live.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
from collections.abc import Iterator, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from tessera.errors import ConfigError

__all__ = ["FIRST_YEAR", "last_year", "load_config", "schema", "validate_config"]

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


def _hint(err: jsonschema.ValidationError) -> str:
    """How to fix one schema violation, by the JSON Schema keyword that failed."""
    hints = {
        "additionalProperties": "remove that key or correct its spelling",
        "required": "add the missing key",
        "type": f"set it to a value of type {err.validator_value}",
        "enum": "use one of the listed values",
        "minItems": "add at least one entry",
        "uniqueItems": "remove the duplicate entries",
        "minimum": f"set it to at least {err.validator_value}",
        "exclusiveMinimum": f"set it to more than {err.validator_value}",
    }
    return hints.get(str(err.validator), f"set it so that {err.validator} {err.validator_value!r} holds")


def validate_config(config: Mapping[str, Any], *, today: dt.date | None = None) -> dict[str, Any]:
    """Validate ``config``, returning a copy with every default filled in.

    Raises:
        ConfigError: a key is unknown, missing or of the wrong type or range (the schema's message,
            with the key's path), a year lies outside the mission years, or a source is incomplete.
    """
    cfg = copy.deepcopy(dict(config))
    errors = sorted(_Validator(schema()).iter_errors(cfg), key=lambda e: list(e.absolute_path))
    if errors:
        # one line: the CLI prints a named error as a single stderr line
        parts = [f"{_where(err)}: {err.message} ({_hint(err)})" for err in errors]
        raise ConfigError("invalid configuration: " + "; ".join(parts) + "; see config/README.md for every key")
    # a second pass fills defaults that the first pass added nested objects for
    _Validator(schema()).validate(cfg)
    hi = last_year(today)
    bad = [y for y in cfg["years"] if not FIRST_YEAR <= y <= hi]
    if bad:
        raise ConfigError(
            f"years {bad} outside the mission years {FIRST_YEAR}..{hi}: Sentinel-1/2 full-year archives "
            f"exist from {FIRST_YEAR} to last year; fix `years` in the config"
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
                ref = sub["$ref"].rsplit("/", 1)[-1]
                sub = {**sch["$defs"][ref], **{k: v for k, v in sub.items() if k != "$ref"}}
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
