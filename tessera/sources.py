"""Data providers as values: one `DataSource` per configured source, passed down to search and read.

A provider's defaults (STAC API, collection, asset keys, harmonisation, signing, resampling) are
stated once here; the config keys ``url``, ``collection``, ``assets``, ``harmonised``, ``offset_rule``, ``sign`` and
``resampling`` of the config's ``s2`` / ``s1`` sections (`tessera.config.SourceConfig`) override
them. Signing and credentials are applied at read time only (`DataSource.href_patcher`,
`DataSource.gdal_options`): stored items stay unsigned.
"""

from __future__ import annotations

import importlib
import netrc
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from tessera.config import SourceConfig
from tessera.errors import ConfigError, DataSourceError

__all__ = [
    "DataSource",
    "PROVIDERS",
    "SIGNATURE_KEYS",
    "earthdata_token",
    "resolve_source",
    "unsigned_href",
]

SIGNATURE_KEYS = frozenset(
    {
        "sig",
        "signature",
        "x-amz-signature",
        "x-amz-credential",
        "x-amz-security-token",
        "x-goog-signature",
        "x-goog-credential",
        "token",
        "access_token",
        "key-pair-id",
        "policy",
    }
)
"""Query keys (lower case) that make a URL a signed one: Azure SAS, S3 and GCS pre-signed URLs,
CloudFront signed URLs, bearer tokens in the query."""

_QUERY_KEYS = re.compile(r"(?:^|&)([^=&]+)")

_PC_S2_ASSETS = {b: b for b in ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12", "SCL")}
_ES_S2_ASSETS = {
    "B02": "blue",
    "B03": "green",
    "B04": "red",
    "B05": "rededge1",
    "B06": "rededge2",
    "B07": "rededge3",
    "B08": "nir",
    "B8A": "nir08",
    "B11": "swir16",
    "B12": "swir22",
    "SCL": "scl",
}

#: Provider defaults per product kind ("s2" or "s1"). OPERA RTC-S1 is searched through NASA's
#: CMR-STAC for ASF; its bursts are 30 m, so they are upsampled bilinearly as the reference does.
PROVIDERS: Mapping[str, Mapping[str, Mapping[str, Any]]] = {
    "planetary-computer": {
        "s2": {
            "url": "https://planetarycomputer.microsoft.com/api/stac/v1",
            "collection": "sentinel-2-l2a",
            "assets": _PC_S2_ASSETS,
            "harmonised": False,
            "sign": "planetary-computer",
        },
        "s1": {
            "url": "https://planetarycomputer.microsoft.com/api/stac/v1",
            "collection": "sentinel-1-rtc",
            "assets": {"vv": "vv", "vh": "vh"},
            "sign": "planetary-computer",
            "resampling": "nearest",
        },
    },
    "earth-search": {
        "s2": {
            "url": "https://earth-search.aws.element84.com/v1",
            "collection": "sentinel-2-l2a",
            "assets": _ES_S2_ASSETS,
            "harmonised": True,
            "sign": "none",
        },
    },
    "opera": {
        "s1": {
            "url": "https://cmr.earthdata.nasa.gov/stac/ASF",
            "collection": "OPERA_L2_RTC-S1_V1_1",
            "assets": {"vv": "0_VV", "vh": "0_VH"},
            "sign": "none",
            "resampling": "bilinear",
            "auth": "earthdata",
            # CMR-STAC has no query extension: the orbit is filtered on the client only.
            "orbit_query": False,
        },
    },
    "stac": {
        "s2": {"assets": _PC_S2_ASSETS, "harmonised": False, "sign": "none"},
        "s1": {"assets": {"vv": "vv", "vh": "vh"}, "sign": "none", "resampling": "nearest"},
    },
}


@dataclass(frozen=True)
class DataSource:
    """Everything the search and read steps need to know about one provider of one product."""

    provider: str
    """Provider name as configured (``planetary-computer``, ``earth-search``, ``opera``, ``stac``)."""
    kind: str
    """``"s2"`` or ``"s1"``."""
    url: str
    """STAC API root URL."""
    collection: str
    """Collection id searched."""
    assets: Mapping[str, str]
    """Our band name (B02..B12, B8A, SCL; vv, vh) -> the collection's asset key."""
    harmonised: bool
    """S2: True if the provider already removed the +1000 offset of processing baseline 04.00+."""
    sign: str
    """``none``, ``planetary-computer`` or ``python:<module>:<function>``: how hrefs are signed at read time."""
    resampling: str
    """Resampling of spectral/backscatter bands onto the output grid (S1 only; S2 is always bilinear)."""
    auth: str = "none"
    """``none`` or ``earthdata`` (bearer token header for GDAL at read time)."""
    orbit_query: bool = True
    """S1: whether the API understands ``query={"sat:orbit_state": ...}``."""
    offset_rule: str = "processing-baseline"
    """S2: how the +1000 offset is decided per item (`tessera.s2.offset_applies`)."""

    def asset(self, band: str) -> str:
        """The collection's asset key of our band name ``band``."""
        try:
            return self.assets[band]
        except KeyError:
            raise ConfigError(
                f"{self.kind}.assets has no entry for band {band!r}; map it to the collection's asset key"
            ) from None

    def href_patcher(self) -> Callable[[str], str] | None:
        """The function that signs an asset href at read time (odc-stac ``patch_url``), or None."""
        if self.sign == "none":
            return None
        if self.sign == "planetary-computer":
            import planetary_computer

            sign_url: Callable[[str], str] = planetary_computer.sign_url
            return sign_url
        if self.sign.startswith("python:"):
            return _signer(self.sign, self.kind)
        raise ConfigError(
            f"{self.kind}.sign {self.sign!r} is unknown; use none, planetary-computer or python:<module>:<function>"
        )

    def gdal_options(self) -> dict[str, str]:
        """GDAL config options that carry this source's credentials (in-process only, never on disk)."""
        if self.auth != "earthdata":
            return {}
        token = earthdata_token()
        # GDAL_HTTP_HEADERS (GDAL >= 3.6) keeps the token in process memory; the reference wrote it to a file.
        return {"GDAL_HTTP_HEADERS": f"Authorization: Bearer {token}"}

    def identity(self) -> dict[str, str]:
        """Where the scenes come from: provider, API root and collection (what a search depends on)."""
        return {"provider": self.provider, "url": self.url, "collection": self.collection}

    def describe(self) -> dict[str, Any]:
        """JSON-serialisable provenance of a read (no credentials): `identity` and how bands are read."""
        return {
            **self.identity(),
            "assets": dict(self.assets),
            "harmonised": self.harmonised,
            "sign": self.sign,
            "resampling": self.resampling,
            **({"offset_rule": self.offset_rule} if self.kind == "s2" else {}),
        }


def _signer(spec: str, kind: str) -> Callable[[str], str]:
    """The function ``python:<module>:<function>`` names (it takes an href and returns it signed)."""
    parts = spec.split(":")
    fix = (
        f"{kind}.sign {spec!r} must name a function href -> signed href as python:<module>:<function>, "
        "importable in the environment the read jobs run in"
    )
    if len(parts) != 3 or not parts[1] or not parts[2]:
        raise ConfigError(f"{fix}; it does not name one module and one function")
    module_name, name = parts[1], parts[2]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"{fix}; module {module_name!r} cannot be imported: {exc}") from None
    func = getattr(module, name, None)
    if not callable(func):
        raise ConfigError(f"{fix}; module {module_name!r} has no function {name!r}")
    signer: Callable[[str], str] = func
    return signer


def unsigned_href(href: str) -> str:
    """``href`` without its query string if the query carries a signature or token (`SIGNATURE_KEYS`).

    A STAC API may answer with pre-signed asset hrefs; they expire and are credentials, so they are
    never stored (the read step signs at read time, `DataSource.href_patcher`). A query without any
    such key (a plain parameter) is kept.
    """
    base, sep, query = href.partition("?")
    if not sep:
        return href
    keys = {k.lower() for k in _QUERY_KEYS.findall(query.split("#", 1)[0])}
    return base if keys & SIGNATURE_KEYS else href


def resolve_source(src_cfg: SourceConfig, kind: str) -> DataSource:
    """The `DataSource` of a configured source (``kind`` is ``"s2"`` or ``"s1"``), provider defaults filled in.

    Raises:
        ConfigError: the provider is unknown or does not serve ``kind``, or ``url``/``collection`` is
            missing for a generic ``stac`` source.
    """
    if kind not in ("s2", "s1"):
        raise ValueError(f"kind must be 's2' or 's1', not {kind!r}")
    src = src_cfg.to_dict()
    provider = src_cfg.source
    if provider not in PROVIDERS:
        raise ConfigError(f"{kind}.source {provider!r} is unknown; use one of {sorted(PROVIDERS)}")
    if kind not in PROVIDERS[provider]:
        raise ConfigError(f"{kind}.source {provider!r} does not serve {kind.upper()}; pick another provider")
    merged = {**PROVIDERS[provider][kind], **{k: v for k, v in src.items() if k != "source"}}
    # band by band: `assets: {B08: nir}` renames one band's asset and keeps the provider's others
    merged["assets"] = {**PROVIDERS[provider][kind]["assets"], **src.get("assets", {})}
    for key in ("url", "collection"):
        if not merged.get(key):
            raise ConfigError(f"{kind}.source is {provider!r}: set {kind}.{key} in the config")
    return DataSource(
        provider=provider,
        kind=kind,
        url=str(merged["url"]).rstrip("/"),
        collection=str(merged["collection"]),
        assets=MappingProxyType(dict(merged["assets"])),
        harmonised=bool(merged.get("harmonised", True)),
        sign=str(merged.get("sign", "none")),
        resampling=str(merged.get("resampling", "nearest" if kind == "s1" else "bilinear")),
        auth=str(merged.get("auth", "none")),
        orbit_query=bool(merged.get("orbit_query", True)),
        offset_rule=str(merged.get("offset_rule", "processing-baseline")),
    )


def earthdata_token(env: Mapping[str, str] | None = None, netrc_path: Path | None = None) -> str:
    """The NASA Earthdata bearer token: ``EARTHDATA_TOKEN``, else the password of the
    ``urs.earthdata.nasa.gov`` entry of ``~/.netrc``.

    Raises:
        DataSourceError: neither is set.
    """
    env = os.environ if env is None else env
    token = env.get("EARTHDATA_TOKEN", "").strip()
    if token:
        return token
    path = netrc_path or Path.home() / ".netrc"
    if path.exists():
        try:
            entry = netrc.netrc(str(path)).authenticators("urs.earthdata.nasa.gov")
        except netrc.NetrcParseError as exc:
            raise DataSourceError(f"{path} cannot be parsed ({exc.msg}); fix it or set EARTHDATA_TOKEN") from None
        if entry and entry[2]:
            return entry[2]
    raise DataSourceError(
        "the opera source needs a NASA Earthdata token: set EARTHDATA_TOKEN, or add a "
        "'machine urs.earthdata.nasa.gov' entry whose password is the token to ~/.netrc"
    )
