"""Provider defaults, config overrides, signing at read time, Earthdata token lookup, URL redaction."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import pytest

from tessera.config import SourceConfig
from tessera.errors import ConfigError, DataSourceError, TransportError
from tessera.sources import earthdata_token, resolve_source, unsigned_href
from tessera.testing.signing import FAKE_SAS_QUERY
from tessera.transport import MissingAssetError, RetryPolicy, RetryStats, call_with_retries, install_redaction, redact

FAKE_SIGNER = "python:tessera.testing.signing:fake_sas"


def test_planetary_computer_defaults() -> None:
    s2 = resolve_source(SourceConfig.from_dict({"source": "planetary-computer"}), "s2")
    assert s2.url == "https://planetarycomputer.microsoft.com/api/stac/v1" and s2.collection == "sentinel-2-l2a"
    assert s2.asset("B8A") == "B8A" and s2.asset("SCL") == "SCL" and not s2.harmonised
    assert s2.sign == "planetary-computer" and s2.href_patcher() is not None
    s1 = resolve_source(SourceConfig.from_dict({"source": "planetary-computer"}), "s1")
    assert (s1.collection, s1.asset("vv"), s1.resampling) == ("sentinel-1-rtc", "vv", "nearest")


def test_earth_search_and_opera_defaults() -> None:
    es = resolve_source(SourceConfig.from_dict({"source": "earth-search"}), "s2")
    assert es.url == "https://earth-search.aws.element84.com/v1" and es.harmonised and es.href_patcher() is None
    assert [es.asset(b) for b in ("B02", "B8A", "B11", "SCL")] == ["blue", "nir08", "swir16", "scl"]
    op = resolve_source(SourceConfig.from_dict({"source": "opera"}), "s1")
    assert op.resampling == "bilinear" and op.auth == "earthdata" and not op.orbit_query


def test_overrides_and_errors() -> None:
    src = resolve_source(
        SourceConfig.from_dict(
            {"source": "stac", "url": "http://x/", "collection": "c", "assets": {"B02": "b2"}, "sign": FAKE_SIGNER}
        ),
        "s2",
    )
    assert (src.url, src.collection, src.asset("B02")) == ("http://x", "c", "b2")
    # band by band: the bands not given keep the provider's asset keys (a read needs every band)
    assert src.asset("B03") == "B03" and src.asset("SCL") == "SCL"
    with pytest.raises(ConfigError, match="B01"):
        src.asset("B01")  # not a band the pipeline reads
    patch = src.href_patcher()
    assert patch is not None and patch("http://h/a.tif") == f"http://h/a.tif?{FAKE_SAS_QUERY}"
    assert patch("http://h/a.tif?x=1") == f"http://h/a.tif?x=1&{FAKE_SAS_QUERY}"
    with pytest.raises(ConfigError, match="unknown"):
        resolve_source(SourceConfig.from_dict({"source": "nope"}), "s2")
    with pytest.raises(ConfigError, match="url"):
        resolve_source(SourceConfig.from_dict({"source": "stac"}), "s1")
    with pytest.raises(ConfigError, match="does not serve"):
        resolve_source(SourceConfig.from_dict({"source": "opera"}), "s2")


@pytest.mark.parametrize(
    ("sign", "match"),
    [
        ("python:tessera.no_such_module:sign", "module 'tessera.no_such_module' cannot be imported"),
        ("python:tessera.testing.signing:no_such_function", "has no function 'no_such_function'"),
        ("python:tessera.testing.signing:FAKE_SAS_QUERY", "has no function 'FAKE_SAS_QUERY'"),  # not callable
        ("python:tessera.testing.signing", "does not name one module and one function"),
        ("sas", "is unknown"),
    ],
)
def test_a_signer_that_cannot_be_used_is_a_config_error(sign: str, match: str) -> None:
    src = resolve_source(SourceConfig.from_dict({"source": "stac", "url": "http://x", "collection": "c"}), "s2")
    with pytest.raises(ConfigError, match=match):
        replace(src, sign=sign).href_patcher()


def test_a_signer_is_checked_at_parse_before_any_job(tmp_path: Path) -> None:
    from tessera.config import validate_config
    from tessera.parsetime import setup
    from tessera.testing.demo import DEMO_ROI

    with pytest.raises(ConfigError, match=r"s2/sign: 'test-sas' does not match"):
        validate_config({"roi": "x", "years": [2022], "s2": {"source": "stac", "sign": "test-sas"}})
    cfg = {
        "roi": str(DEMO_ROI),
        "years": [2022],
        "results_dir": str(tmp_path / "r"),
        "s2": {"source": "planetary-computer", "sign": "python:tessera.testing.signing:nope"},
    }
    with pytest.raises(ConfigError, match=r"s2\.sign .* has no function 'nope'"):
        setup(cfg)
    assert not (tmp_path / "r").exists()


def test_unsigned_href_drops_only_signature_queries() -> None:
    plain = "https://h.example/a/B04.tif"
    assert unsigned_href(f"{plain}?{FAKE_SAS_QUERY}") == plain  # Azure SAS
    s3 = "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIA%2F&X-Amz-Signature=abc"
    assert unsigned_href(f"{plain}?{s3}") == plain  # S3 pre-signed
    assert unsigned_href(f"{plain}?Expires=1&Signature=x&Key-Pair-Id=k") == plain  # CloudFront
    assert unsigned_href(f"{plain}?access_token=t") == plain
    assert unsigned_href(plain) == plain
    assert unsigned_href(f"{plain}?version=2") == f"{plain}?version=2"  # a plain parameter stays
    assert unsigned_href(f"{plain}?designation=x") == f"{plain}?designation=x"  # 'sig' only as a whole key


def test_unknown_band_names_in_assets_are_refused_at_parse() -> None:
    from tessera.config import validate_config

    with pytest.raises(ConfigError, match=r"s2/assets: 'B99' is not one of"):
        validate_config({"roi": "x", "years": [2022], "s2": {"source": "planetary-computer", "assets": {"B99": "a"}}})
    with pytest.raises(ConfigError, match=r"s1/assets: 'B02' is not one of \['vv', 'vh'\]"):
        validate_config({"roi": "x", "years": [2022], "s1": {"source": "opera", "assets": {"B02": "a"}}})


def test_earthdata_token(tmp_path: Path) -> None:
    assert earthdata_token({"EARTHDATA_TOKEN": "tok"}, tmp_path / "none") == "tok"
    rc = tmp_path / "netrc"
    rc.write_text("machine urs.earthdata.nasa.gov login me password nettok\n")
    rc.chmod(0o600)
    assert earthdata_token({}, rc) == "nettok"
    with pytest.raises(DataSourceError, match="EARTHDATA_TOKEN"):
        earthdata_token({}, tmp_path / "none")


def test_redaction_in_logs(caplog: pytest.LogCaptureFixture) -> None:
    url = f"https://acct.blob.core.windows.net/c/B04.tif?{FAKE_SAS_QUERY}"
    assert redact(f"HTTP 404 for '{url}'") == "HTTP 404 for 'https://acct.blob.core.windows.net/c/B04.tif?<redacted>'"
    install_redaction()
    with caplog.at_level(logging.ERROR, logger="odc.loader._rio"):
        logging.getLogger("odc.loader._rio").error("Failed to load %s", url)
    assert "FAKE-SAS" not in caplog.text and "B04.tif?<redacted>" in caplog.text


def test_call_with_retries_classifies() -> None:
    import rasterio.errors

    sleeps: list[float] = []
    policy = RetryPolicy(attempts=3, backoff_s=0.5, max_backoff_s=0.75)
    calls = iter([rasterio.errors.RasterioIOError("CURL error: Connection reset by peer"), 42])

    def flaky() -> int:
        v = next(calls)
        if isinstance(v, Exception):
            raise v
        return v

    stats = RetryStats()
    assert call_with_retries(flaky, "x", stats, policy, sleep=sleeps.append) == 42
    assert stats.retries == 1 and sleeps == [0.5]

    def timeout() -> None:
        raise rasterio.errors.RasterioIOError(f"http://h/a.tif?{FAKE_SAS_QUERY}: Operation timed out")

    with pytest.raises(TransportError) as info:
        call_with_retries(timeout, "y", stats, policy, sleep=sleeps.append)
    assert sleeps[1:] == [0.5, 0.75] and "FAKE-SAS" not in str(info.value)

    def gone() -> None:
        raise rasterio.errors.RasterioIOError("HTTP response code: 404")

    with pytest.raises(MissingAssetError):
        call_with_retries(gone, "z", RetryStats(), policy, sleep=sleeps.append)
