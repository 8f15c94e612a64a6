"""A range-serving HTTP file host on 127.0.0.1 with seeded fault injection, for the demo and the tests.

`RangeServer` serves a directory with HTTP Range requests, as blob storage does, and can inject
seeded faults (429 with Retry-After, 500, 503, connection resets, responses slower than the client's
read timeout, truncated bodies) so retries are exercised against a real socket.
"""

from __future__ import annotations

import logging
import random
import socket
import struct
import sys
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tessera.errors import ServerError

__all__ = ["FAULT_KINDS", "FaultConfig", "RangeServer"]

log = logging.getLogger(__name__)

FAULT_KINDS = ("429", "500", "503", "reset", "slow", "truncated")


@dataclass(frozen=True)
class FaultConfig:
    """Seeded fault injection of a `RangeServer` (off unless ``rate`` > 0)."""

    rate: float = 0.0
    """Fraction of requests that get a fault."""
    kinds: tuple[str, ...] = FAULT_KINDS
    """Faults drawn uniformly from: ``429`` (with Retry-After), ``500``, ``503``, ``reset``
    (connection reset), ``slow`` (response delayed by ``slow_s``), ``truncated`` (half the body)."""
    seed: int = 0
    """Seed of the fault draws (one draw per request, in arrival order)."""
    slow_s: float = 3.0
    """Delay of a ``slow`` response; set it above the client's read timeout."""
    retry_after_s: int = 1
    """Retry-After seconds sent with 429."""

    def __post_init__(self) -> None:
        unknown = set(self.kinds) - set(FAULT_KINDS)
        if unknown or not 0 <= self.rate <= 1 or not self.kinds:
            raise ServerError(
                f"bad FaultConfig (rate {self.rate}, kinds {self.kinds}); use 0<=rate<=1 and {FAULT_KINDS}"
            )


@dataclass
class _Counters:
    requests: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    paths: Counter[str] = field(default_factory=Counter)
    queries: Counter[str] = field(default_factory=Counter)
    """Query strings seen (in memory only): tests check that signed URLs were really used."""


class _RangeHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _RangeHTTPServer

    def setup(self) -> None:
        super().setup()
        # headers and body go out in separate writes: without TCP_NODELAY, Nagle's algorithm and the
        # client's delayed ACK stall every response by ~40 ms
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("range server: " + format, *args)

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def _serve(self, body: bool) -> None:
        fault = self.server.owner._draw(self.path)
        if fault in ("429", "500", "503"):
            extra = {"Retry-After": str(self.server.owner.faults.retry_after_s)} if fault == "429" else {}
            return self._status(int(fault), f"injected fault {fault}\n".encode(), extra)
        if fault == "reset":
            # SO_LINGER 0 makes close() send a TCP RST: the client sees "connection reset by peer".
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            self.connection.close()
            return None
        if fault == "slow":
            time.sleep(self.server.owner.faults.slow_s)
        path = self.server.owner.resolve(self.path)
        if path is None:
            return self._status(404, b"not found\n")
        size = path.stat().st_size
        start, end, code = 0, size - 1, 200
        rng = self.headers.get("Range")
        if rng:
            parsed = _parse_range(rng, size)
            if parsed is None:
                return self._status(416, b"range not satisfiable\n", {"Content-Range": f"bytes */{size}"})
            if parsed != (0, size - 1, False):
                start, end, code = parsed[0], parsed[1], 206
        length = end - start + 1
        self.send_response(code)
        self.send_header("Content-Type", "image/tiff" if path.suffix in (".tif", ".tiff") else "application/json")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(length))
        if code == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if not body:
            return None
        with open(path, "rb") as fh:
            fh.seek(start)
            data = fh.read(length)
        if fault == "truncated":
            self.wfile.write(data[: length // 2])
            self.wfile.flush()
            self.close_connection = True
            return None
        self.wfile.write(data)
        return None

    def _status(self, code: int, text: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(text)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(text)


def _parse_range(header: str, size: int) -> tuple[int, int, bool] | None:
    """``(start, end, partial)`` of a single ``bytes=`` range; several ranges are served whole (allowed)."""
    unit, _, spec = header.partition("=")
    if unit.strip() != "bytes" or "," in spec:
        return (0, size - 1, False)
    first, _, last = spec.strip().partition("-")
    try:
        if not first:
            start, end = max(0, size - int(last)), size - 1
        else:
            start, end = int(first), min(size - 1, int(last)) if last else size - 1
    except ValueError:
        return (0, size - 1, False)
    if start >= size or start > end:
        return None
    return (start, end, True)


class _RangeHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, addr: tuple[str, int], owner: RangeServer) -> None:
        self.owner = owner
        super().__init__(addr, _RangeHandler)

    def handle_error(self, request: object, client_address: tuple[str, int]) -> None:
        """Log a client that went away (normal: timeouts, closed keep-alive connections) at debug level."""
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            log.debug("range server: client %s went away (%s)", client_address, exc)
            return
        super().handle_error(request, client_address)  # type: ignore[arg-type]


class RangeServer:
    """Serve ``root`` over HTTP with Range support on 127.0.0.1, optionally injecting faults."""

    def __init__(self, root: Path, port: int = 0, faults: FaultConfig | None = None) -> None:
        """Bind to ``port`` (0: any free port); call `start` (or use as a context manager)."""
        self.root = Path(root).resolve()
        self._httpd = _RangeHTTPServer(("127.0.0.1", port), self)
        self.port = int(self._httpd.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.counters = _Counters()
        self.set_faults(faults or FaultConfig())

    def set_faults(self, faults: FaultConfig) -> None:
        """Replace the fault configuration and reseed the fault draws."""
        with self._lock:
            self.faults = faults
            self._rng = random.Random(faults.seed)

    def reset_counters(self) -> None:
        """Zero the request and fault counters."""
        with self._lock:
            self.counters = _Counters()

    def _draw(self, path: str) -> str | None:
        with self._lock:
            self.counters.requests += 1
            base, _, query = path.partition("?")
            self.counters.paths[base] += 1
            if query:
                self.counters.queries[query] += 1
            if self.faults.rate <= 0 or self._rng.random() >= self.faults.rate:
                return None
            kind = self.faults.kinds[self._rng.randrange(len(self.faults.kinds))]
            self.counters.faults[kind] += 1
            return kind

    def resolve(self, url_path: str) -> Path | None:
        """The file under ``root`` that ``url_path`` names, or None (missing, or outside ``root``)."""
        rel = urllib.request.url2pathname(url_path.split("?")[0].split("#")[0]).lstrip("/")
        path = (self.root / rel).resolve()
        if not path.is_relative_to(self.root) or not path.is_file():
            return None
        return path

    def start(self) -> RangeServer:
        """Serve in a daemon thread."""
        self._thread = threading.Thread(target=self._httpd.serve_forever, name=f"range-{self.port}", daemon=True)
        self._thread.start()
        log.info("range server: serving %s at %s", self.root, self.url)
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=10)
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> RangeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
