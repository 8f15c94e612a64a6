"""Config validation: defaults, schema messages and the named errors users see."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import yaml

from tessera.config import FIRST_YEAR, last_year, load_config, schema, validate_config
from tessera.errors import ConfigError


def _walk(node: object, path: str = "") -> list[str]:
    """Paths of schema properties that lack a description."""
    missing = []
    if isinstance(node, dict):
        for name, sub in node.get("properties", {}).items():
            if "description" not in sub:
                missing.append(f"{path}/{name}")
            missing += _walk(sub, f"{path}/{name}")
        for name, sub in node.get("$defs", {}).items():
            missing += _walk(sub, f"{path}/$defs/{name}")
    return missing


def test_every_schema_key_is_described() -> None:
    assert _walk(schema()) == []


def test_defaults_are_filled() -> None:
    cfg = validate_config({"roi": "x.geojson", "years": [2022]})
    assert cfg["resolution"] == 10
    assert cfg["chunk_size_m"] == 20000
    assert cfg["tile_size"] == 500
    assert cfg["s2"] == {"source": "planetary-computer"}
    assert cfg["model"]["output"] == "int8"
    assert cfg["model"]["checkpoint"] is None


def test_unknown_key_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"chunk_sise_m"):
        validate_config({"roi": "x", "years": [2022], "chunk_sise_m": 5})


def test_wrong_type_names_the_path() -> None:
    with pytest.raises(ConfigError, match=r"model/output"):
        validate_config({"roi": "x", "years": [2022], "model": {"output": "int4"}})


def test_a_number_written_as_text_gets_the_plain_number_hint() -> None:
    with pytest.raises(
        ConfigError, match=r"tile_size: '500' is not of type 'integer' \(write it as a plain number, e\.g\. 500 "
    ):
        validate_config({"roi": "x", "years": [2022], "tile_size": "500"})


def test_unknown_source() -> None:
    with pytest.raises(ConfigError, match=r"s2/source: 'sentinel-hub' is not one of"):
        validate_config({"roi": "x", "years": [2022], "s2": {"source": "sentinel-hub"}})


@pytest.mark.parametrize("year", [FIRST_YEAR - 1, last_year() + 1])
def test_year_outside_mission(year: int) -> None:
    with pytest.raises(ConfigError, match=r"outside the mission years"):
        validate_config({"roi": "x", "years": [year]})


def test_last_year_follows_the_calendar() -> None:
    assert last_year(dt.date(2026, 11, 23)) == 2025
    validate_config({"roi": "x", "years": [2025]}, today=dt.date(2026, 1, 1))
    with pytest.raises(ConfigError):
        validate_config({"roi": "x", "years": [2026]}, today=dt.date(2026, 12, 31))


def test_stac_source_needs_url_and_collection() -> None:
    with pytest.raises(ConfigError, match=r"s1.url"):
        validate_config({"roi": "x", "years": [2022], "s1": {"source": "stac"}})


def test_source_for_the_wrong_mission() -> None:
    with pytest.raises(ConfigError, match=r"only Sentinel-1"):
        validate_config({"roi": "x", "years": [2022], "s2": {"source": "opera"}})
    with pytest.raises(ConfigError, match=r"only Sentinel-2"):
        validate_config({"roi": "x", "years": [2022], "s1": {"source": "earth-search"}})


def test_load_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("roi: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(listy)


def test_shipped_configs_validate() -> None:
    root = Path(__file__).resolve().parents[1]
    for name in ("config/config.yaml", "tessera/testing/data/demo.yaml"):
        raw = yaml.safe_load((root / name).read_text())
        raw["years"] = [min(max(y, FIRST_YEAR), last_year()) for y in raw["years"]]
        validate_config(raw)


def test_config_readme_is_up_to_date() -> None:
    from tessera.config import schema_markdown

    readme = Path(__file__).resolve().parents[1] / "config" / "README.md"
    assert readme.read_text() == schema_markdown(), "regenerate with: tessera config-docs > config/README.md"


def test_new_keys_default_to_the_earlier_behaviour_or_the_reference() -> None:
    cfg = validate_config({"roi": "x", "years": [2022]})
    assert cfg["period"] is None and cfg["model"]["nodata_policy"] == "reference"
    assert "offset_rule" not in cfg["s2"]  # unset: processing-baseline (a source key, like harmonised)


@pytest.mark.parametrize("period", ["10/01", "1-10", "13-01", "04-31", "oct", "02-29", ""])
def test_period_that_is_not_a_month_day(period: str) -> None:
    from tessera.errors import PeriodError

    with pytest.raises(PeriodError, match="period"):
        validate_config({"roi": "x", "years": [2022], "period": period})


def test_period_window_must_have_ended() -> None:
    today = dt.date(2025, 6, 1)
    ok = validate_config({"roi": "x", "years": [2023], "period": "06-01"}, today=today)
    assert ok["period"] == "06-01"  # 2023-06-01 .. 2024-05-31
    with pytest.raises(ConfigError, match=r"2024-10-01/2025-09-30 .* last year whose window has ended is 2023"):
        validate_config({"roi": "x", "years": [2024], "period": "10-01"}, today=today)


@pytest.mark.parametrize(
    ("kind", "key", "value"),
    [("s2", "offset_rule", "acquisition-date"), ("s2", "harmonised", False), ("s1", "resampling", "bilinear")],
)
def test_kind_specific_source_keys_are_refused_on_the_other_kind(kind: str, key: str, value: object) -> None:
    """A key that only one kind's read uses is refused on the other, where it would change nothing but
    the read's params (and so re-download that whole stage)."""
    source = {"source": "planetary-computer", key: value}
    assert validate_config({"roi": "x", "years": [2022], kind: source})[kind][key] == value
    other = "s1" if kind == "s2" else "s2"
    with pytest.raises(ConfigError, match=rf"{other}: .*'{key}' was unexpected.*Sentinel-2 keys"):
        validate_config({"roi": "x", "years": [2022], other: source})


def test_stage_settings_carry_the_new_keys_only_where_they_change_the_output() -> None:
    from tessera.config import parse_config
    from tessera.stages import settings

    base = {"roi": "x", "years": [2022]}
    plain = parse_config(base)
    for stage in ("search-s2", "search-s1", "read_s2", "read_s1"):
        assert "period" not in settings(plain, stage)  # the calendar year: settings as before, nothing reruns
    assert "offset_rule" not in settings(plain, "read_s2")["s2"]
    assert settings(plain, "infer")["model"]["nodata_policy"] == "reference"
    cfg = parse_config(
        {**base, "period": "10-01", "s2": {"source": "planetary-computer", "offset_rule": "acquisition-date"}},
        today=dt.date(2025, 1, 1),
    )
    for stage in ("search-s2", "search-s1", "read_s2", "read_s1"):
        assert settings(cfg, stage)["period"] == "10-01", stage
    for stage in ("plan", "infer", "stitch", "qa", "tiles", "export_geotessera"):
        assert "period" not in settings(cfg, stage), stage
    assert settings(cfg, "read_s2")["s2"]["offset_rule"] == "acquisition-date"
    assert "offset_rule" not in settings(cfg, "search-s2")["s2"]
    assert (
        settings(parse_config({**base, "model": {"nodata_policy": "strict"}}), "infer")["model"]["nodata_policy"]
        == "strict"
    )


def test_a_source_setting_written_out_at_its_default_changes_no_stage_settings() -> None:
    """Writing down what the provider does anyway reruns nothing; a real change still does."""
    from tessera.config import parse_config
    from tessera.stages import settings

    base = {"roi": "x", "years": [2022]}
    plain = parse_config(base)
    pc = "https://planetarycomputer.microsoft.com/api/stac/v1/"  # the provider's own URL, with a slash
    explicit = parse_config(
        {
            **base,
            "s2": {
                "source": "planetary-computer",
                "harmonised": False,
                "offset_rule": "processing-baseline",
                "url": pc,
            },
            "s1": {"source": "planetary-computer", "resampling": "nearest", "sign": "planetary-computer"},
        }
    )
    for stage in ("search-s2", "search-s1", "read_s2", "read_s1", "infer"):
        assert settings(explicit, stage) == settings(plain, stage), stage
    changed = parse_config({**base, "s2": {"source": "planetary-computer", "harmonised": True}})
    assert settings(changed, "read_s2")["s2"] == {"source": "planetary-computer", "harmonised": True}
    assert settings(changed, "search-s2") == settings(plain, "search-s2")  # the search does not read it
    stac = {"source": "stac", "url": "http://127.0.0.1:1/stac", "collection": "sentinel-2-l2a", "harmonised": False}
    # a generic source's url and collection are required, so always part of its settings
    assert settings(parse_config({**base, "s2": stac}), "read_s2")["s2"] == {
        k: stac[k] for k in ("source", "url", "collection")
    }


def test_a_run_without_a_config_file_reads_the_example_or_says_what_to_pass(tmp_path: Path) -> None:
    from tessera.parsetime import default_config

    example = default_config(Path(__file__).resolve().parents[1])
    assert example["years"] and example["roi"]
    with pytest.raises(ConfigError, match=r"no config given, and .*config\.yaml does not exist: pass --configfile"):
        default_config(tmp_path)
