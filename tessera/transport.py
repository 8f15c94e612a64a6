"""The one place with network retries, timeouts and GDAL network settings.

Three layers, each bounded:

* STAC API requests: a `requests` session (through pystac-client's ``StacApiIO``) whose adapter
  retries 429/500/502/503/504 with exponential backoff and honours ``Retry-After``.
* Raster requests: GDAL's own per-request retries (429/5xx, connection resets, timeouts) with a
  short doubling delay, and timeouts (`gdal_options`).
* Per-asset reads: `call_with_retries` repeats one asset's read (a few requests) when GDAL still
  surfaces a failure it does not retry itself (a truncated body) or ran out of request retries, and
  turns a permanent 404 into `MissingAssetError` (the scene is skipped and recorded) and anything
  else persistent into `TransportError`. Retrying an asset rather than a whole scene matters: a
  scene is ~30 requests, so at a 20 % fault rate almost no whole-scene try succeeds, while an asset
  (header plus a block or two) mostly does.

Every delay is bounded (`RetryPolicy`), so a provider that is down fails the step in a minute or two
instead of stalling it.

URLs in messages are passed through `redact` so that signatures (SAS tokens) never reach a log.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TypeVar

import rasterio
import rasterio.errors
from urllib3.util.retry import Retry

from tessera.errors import ConfigError, DataSourceError, TransportError

__all__ = [
    "MissingAssetError",
    "RetryPolicy",
    "RetryStats",
    "RedactingFilter",
    "call_with_retries",
    "gdal_env",
    "install_redaction",
    "redact",
    "stac_api_io",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

_URL_QUERY = re.compile(r"((?:https?|file|s3|gs|az|/vsicurl/https?)://[^\s?'\"]*)\?[^\s'\"),]*")
_MISSING = re.compile(r"\b404\b|not found|No such file or directory|does not exist", re.IGNORECASE)
_TRANSIENT = re.compile(
    r"\b(429|500|502|503|504)\b|timed? ?out|timeout|connection (reset|refused|was reset|closed)|"
    r"reset by peer|transferred a partial file|truncated|unexpected end|incomplete|curl error|"
    r"could not resolve|ssl",
    re.IGNORECASE,
)


class MissingAssetError(DataSourceError):
    """An asset does not exist (HTTP 404 or missing file) even after retries: skip that scene."""


@dataclass(frozen=True)
class RetryPolicy:
    """Bounds of the per-asset retry loop, GDAL's per-request retries and the HTTP adapter."""

    attempts: int = 6
    """Total tries of one asset read (1 = no retry)."""
    request_retries: int = 3
    """Retries of one HTTP range request inside GDAL (429/5xx, resets, timeouts) before a try fails."""
    backoff_s: float = field(default_factory=lambda: _env_seconds("TESSERA_HTTP_RETRY_DELAY", 1.0))
    """First sleep (env ``TESSERA_HTTP_RETRY_DELAY``); doubled after every failed try or request."""
    max_backoff_s: float = 30.0
    """Cap of one sleep."""
    connect_timeout_s: float = field(default_factory=lambda: _env_seconds("TESSERA_HTTP_CONNECT_TIMEOUT", 10.0))
    """Seconds to wait for a connection (env ``TESSERA_HTTP_CONNECT_TIMEOUT``)."""
    read_timeout_s: float = field(default_factory=lambda: _env_seconds("TESSERA_HTTP_READ_TIMEOUT", 60.0))
    """Seconds to wait for a response (env ``TESSERA_HTTP_READ_TIMEOUT``): a slower one is retried."""


def _env_seconds(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number of seconds; set it to e.g. 30 or unset it") from None
    if value <= 0:
        raise ConfigError(f"{name}={raw!r} must be positive; set it to e.g. 30 or unset it")
    return value


@dataclass
class RetryStats:
    """Retries counted during one read step (written to qa.json); safe to share between threads."""

    retries: int = 0
    """Failed asset reads that were tried again."""
    failures: list[str] = field(default_factory=list)
    """Redacted messages of the failed tries."""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def record(self, failure: str, retried: bool) -> None:
        """Count one failed try (``retried``: another try follows)."""
        with self._lock:
            self.failures.append(failure)
            self.retries += int(retried)


def redact(text: str) -> str:
    """``text`` with the query string of every URL replaced by ``?<redacted>``."""
    return _URL_QUERY.sub(r"\1?<redacted>", text)


class RedactingFilter(logging.Filter):
    """Logging filter that redacts URL query strings from a record's final message."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record in place; never drops it."""
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


#: Loggers of the libraries that print asset URLs (odc-stac logs failed URIs, rasterio logs GDAL errors).
_URL_LOGGERS = (
    "odc.loader._rio",
    "odc.loader",
    "odc.stac",
    "rasterio._env",
    "rasterio._err",
    "rasterio._io",
    "rasterio",
    "pystac_client",
    "urllib3.connectionpool",
    "tessera",
)


def install_redaction() -> None:
    """Attach `RedactingFilter` to the loggers that may print signed URLs and to the root handlers (idempotent).

    Logger filters do not see records of child loggers, so the root logger's handlers get one too.
    """
    targets: list[logging.Filterer] = [logging.getLogger(name) for name in _URL_LOGGERS]
    targets += logging.getLogger().handlers
    for target in targets:
        if not any(isinstance(f, RedactingFilter) for f in target.filters):
            target.addFilter(RedactingFilter())


def stac_api_io(policy: RetryPolicy | None = None) -> object:
    """A pystac-client ``StacApiIO`` whose HTTP adapter retries transient statuses with backoff.

    ``Retry-After`` is honoured; POST is retried too because a STAC search is idempotent.
    """
    from pystac_client.stac_api_io import StacApiIO

    policy = policy or RetryPolicy()
    retry = Retry(
        total=policy.attempts + 2,
        connect=policy.attempts,
        read=policy.attempts,
        status=policy.attempts + 2,
        backoff_factor=policy.backoff_s,
        backoff_max=policy.max_backoff_s,
        status_forcelist=(429, 500, 502, 503, 504),
        allowed_methods=frozenset({"GET", "POST"}),
        respect_retry_after_header=True,
        raise_on_status=True,
    )
    return StacApiIO(max_retries=retry, timeout=(policy.connect_timeout_s, policy.read_timeout_s))


def gdal_options(policy: RetryPolicy | None = None) -> dict[str, str | int | bool]:
    """GDAL config options for raster reads over HTTP (and locally: the cache bound matters for memory)."""
    policy = policy or RetryPolicy()
    return {
        "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
        # per-request retries inside GDAL: 429/500/502-504, "connection reset", "timed out"
        "GDAL_HTTP_MAX_RETRY": str(policy.request_retries),
        "GDAL_HTTP_RETRY_DELAY": str(policy.backoff_s),
        # never reuse what /vsicurl/ learnt about a file in an earlier open: after a failed request
        # it may hold a wrong size or a failed range, and the asset retry would fail the same way
        "CPL_VSIL_CURL_NON_CACHED": "/vsicurl/",
        "GDAL_HTTP_CONNECTTIMEOUT": str(int(policy.connect_timeout_s)),
        "GDAL_HTTP_TIMEOUT": str(int(policy.read_timeout_s)),
        "GDAL_HTTP_MULTIRANGE": "YES",
        "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
        "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff,.TIF,.TIFF",
        "VSI_CACHE": "FALSE",
        # A bounded block cache keeps peak memory independent of the number of scenes read.
        "GDAL_CACHEMAX": 64,
    }


@contextmanager
def gdal_env(extra: Mapping[str, str] | None = None, policy: RetryPolicy | None = None) -> Iterator[None]:
    """A ``rasterio.Env`` with `gdal_options` plus ``extra`` (credentials: kept in memory only)."""
    with rasterio.Env(**{**gdal_options(policy), **(extra or {})}):
        yield


def _classify(exc: BaseException) -> str:
    """``"missing"``, ``"transient"`` or ``"fatal"`` for an exception raised by a scene read."""
    text = str(exc)
    if isinstance(exc, (TimeoutError, ConnectionError)):
        return "transient"
    if isinstance(exc, (rasterio.errors.RasterioError, OSError)):
        if _MISSING.search(text):
            return "missing"
        if _TRANSIENT.search(text):
            return "transient"
        # GDAL often reports a truncated or reset transfer only as "Read failed. See previous
        # exception" or as an undecodable TIFF: indistinguishable from a corrupt file on one try,
        # so retry it; a file that is really corrupt fails every try and ends as TransportError.
        return "unknown"
    return "fatal"


def call_with_retries(
    fn: Callable[[], T],
    what: str,
    stats: RetryStats,
    policy: RetryPolicy | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run ``fn`` (one asset read) with bounded retries and exponential backoff.

    Raises:
        MissingAssetError: the asset was still missing (404) after every try.
        TransportError: a network error persisted, or GDAL failed in a way retries cannot fix.
    """
    policy = policy or RetryPolicy()
    delay = policy.backoff_s
    for attempt in range(1, policy.attempts + 1):
        try:
            return fn()
        except (rasterio.errors.RasterioError, OSError, TimeoutError, ConnectionError) as exc:
            kind = _classify(exc)
            message = redact(f"{type(exc).__name__}: {exc}")
            retried = kind != "fatal" and attempt < policy.attempts
            stats.record(f"{what}: {message}", retried)
            if kind == "fatal":
                raise TransportError(
                    f"reading {what} failed: {message}; check the asset URL and that it is a readable GeoTIFF"
                ) from None
            if attempt == policy.attempts:
                if kind == "missing":
                    raise MissingAssetError(f"{what}: asset missing after {attempt} tries ({message})") from None
                hint = (
                    "check the asset URL and that it is a readable GeoTIFF"
                    if kind == "unknown"
                    else "the provider may be down, re-run later"
                )
                raise TransportError(f"reading {what} failed {attempt} times: {message}; {hint}") from None
            log.warning("%s: try %d/%d failed (%s); retrying in %.1f s", what, attempt, policy.attempts, message, delay)
            sleep(delay)
            delay = min(delay * 2, policy.max_backoff_s)
    raise AssertionError("unreachable")  # pragma: no cover
