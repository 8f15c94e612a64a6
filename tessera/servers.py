"""Real servers on 127.0.0.1 for the demo and the tests: a pgstac STAC API and a range-serving COG host.

`PgStacServer` runs the same software as the Planetary Computer's STAC API (PostgreSQL 15 with
pgstac, served by stac-fastapi-pgstac under uvicorn). `RangeServer` serves a directory with HTTP
Range requests, as blob storage does, and can inject seeded faults (429, 5xx, resets, slow and
truncated responses) so retries are exercised against a real socket. `demo_servers` starts both
over the output of `tessera demo-data`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tessera.errors import ServerError

__all__ = [
    "FAULT_KINDS",
    "DemoServers",
    "FaultConfig",
    "PgStacServer",
    "RangeServer",
    "add_cli",
    "demo_servers",
    "free_port",
    "rewrite_hrefs",
]

log = logging.getLogger(__name__)

PG_BIN = Path("/usr/lib/postgresql/15/bin")
INSTALL_HINT = (
    "install PostgreSQL 15 with PostGIS: run `bash scripts/install-system-deps.sh` "
    "(or `apt-get install -y postgresql-15 postgresql-15-postgis-3`)"
)
FAULT_KINDS = ("429", "500", "503", "reset", "slow", "truncated")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


def rewrite_hrefs(item: dict[str, Any], base_url: str) -> dict[str, Any]:
    """``item`` with every relative asset href made absolute under ``base_url``."""
    out = dict(item)
    out["assets"] = {
        k: {**a, "href": a["href"] if "://" in a["href"] else f"{base_url.rstrip('/')}/{a['href']}"}
        for k, a in item.get("assets", {}).items()
    }
    return out


def _tail(path: Path, n: int = 2000) -> str:
    return path.read_text(errors="replace")[-n:] if path.exists() else "(no log)"


class PgStacServer:
    """PostgreSQL 15 + pgstac in a temporary cluster, served by stac-fastapi-pgstac, on 127.0.0.1."""

    def __init__(self) -> None:
        """Nothing runs until `start`."""
        self.url = ""
        self.pg_port = 0
        self.api_port = 0
        self.tmp: Path | None = None
        self._api: subprocess.Popen[bytes] | None = None
        self._as_postgres: list[str] = []

    @property
    def pids(self) -> list[int]:
        """PIDs of the uvicorn process and the postmaster (while running)."""
        pids = [self._api.pid] if self._api is not None else []
        pidfile = self.tmp / "data" / "postmaster.pid" if self.tmp else None
        if pidfile is not None and pidfile.exists():
            pids.append(int(pidfile.read_text().split()[0]))
        return pids

    def env(self) -> dict[str, str]:
        """Environment with the PG* connection variables of this cluster."""
        pg = {"PGHOST": "127.0.0.1", "PGPORT": str(self.pg_port), "PGUSER": "postgres"}
        return {**os.environ, **pg, "PGDATABASE": "postgres", "PGPASSWORD": "unused"}

    def dsn(self) -> str:
        """libpq connection string of the cluster."""
        return f"postgresql://postgres:unused@127.0.0.1:{self.pg_port}/postgres"

    def _run(self, cmd: list[str], what: str) -> None:
        proc = subprocess.run([*self._as_postgres, *cmd], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise ServerError(f"{what} failed (exit {proc.returncode}): {proc.stderr.strip()[-1500:]}")

    def start(self) -> PgStacServer:
        """initdb, start PostgreSQL, migrate pgstac and start the STAC API (about 4 s)."""
        if not (PG_BIN / "initdb").exists():
            raise ServerError(f"PostgreSQL 15 is not installed ({PG_BIN}/initdb is missing); {INSTALL_HINT}")
        self.tmp = Path(tempfile.mkdtemp(prefix="tessera-pgstac-"))
        if os.geteuid() == 0:
            # PostgreSQL refuses to run as root: the cluster belongs to the postgres user.
            try:
                shutil.chown(self.tmp, "postgres", "postgres")
            except LookupError:
                raise ServerError(f"there is no postgres user to run PostgreSQL as; {INSTALL_HINT}") from None
            self._as_postgres = ["runuser", "-u", "postgres", "--"]
        data, self.pg_port = self.tmp / "data", free_port()
        initdb = [str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"]
        self._run([*initdb, "--no-sync"], "initdb")
        opts = f"-p {self.pg_port} -k {self.tmp} -c listen_addresses=127.0.0.1 -c fsync=off"
        pg_ctl = [str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(self.tmp / "postgres.log"), "-o", opts]
        self._run([*pg_ctl, "-w", "-t", "60", "start"], f"starting PostgreSQL (log {self.tmp}/postgres.log)")
        from pypgstac.db import PgstacDB
        from pypgstac.migrate import Migrate

        with PgstacDB(dsn=self.dsn()) as db:
            version = Migrate(db).run_migration()
        log.info("pgstac: PostgreSQL on port %d, pgstac %s", self.pg_port, version)
        self._start_api()
        return self

    def _start_api(self) -> None:
        assert self.tmp is not None
        self.api_port = free_port()
        self.url = f"http://127.0.0.1:{self.api_port}"
        app = "stac_fastapi.pgstac.app:create_app"
        cmd = [sys.executable, "-m", "uvicorn", app, "--factory", "--host", "127.0.0.1", "--port", str(self.api_port)]
        api_log = self.tmp / "api.log"
        with open(api_log, "wb") as fh:
            # cwd: the settings read a .env file from the working directory; keep the user's out of it.
            self._api = subprocess.Popen(
                [*cmd, "--log-level", "warning"], env=self.env(), cwd=self.tmp, stdout=fh, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self._api.poll() is not None:
                raise ServerError(f"the STAC API exited with {self._api.returncode}: {_tail(api_log)}")
            with contextlib.suppress(OSError), urllib.request.urlopen(f"{self.url}/collections", timeout=2) as resp:
                if resp.status == 200:
                    log.info("pgstac: STAC API at %s", self.url)
                    return
            time.sleep(0.2)
        raise ServerError(f"the STAC API did not answer on {self.url} within 60 s: {_tail(api_log)}")

    def load(self, collections: list[dict[str, Any]], items: list[dict[str, Any]]) -> None:
        """Upsert ``collections`` and ``items`` (pgstac's loader, as `pypgstac load --method upsert`)."""
        from pypgstac.db import PgstacDB
        from pypgstac.load import Loader, Methods

        with PgstacDB(dsn=self.dsn()) as db:
            loader = Loader(db=db)
            loader.load_collections(iter(collections), insert_mode=Methods.upsert)
            loader.load_items(iter(items), insert_mode=Methods.upsert)
        log.info("pgstac: loaded %d collections and %d items", len(collections), len(items))

    def stop(self) -> None:
        """Stop the API (SIGTERM, then SIGKILL) and PostgreSQL (fast shutdown); remove the cluster."""
        if self._api is not None:
            self._api.terminate()
            try:
                self._api.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._api.kill()
                self._api.wait()
            self._api = None
        if self.tmp is not None:
            data = self.tmp / "data"
            if (data / "postmaster.pid").exists():
                self._run([str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"], "stopping PostgreSQL")
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None

    def __enter__(self) -> PgStacServer:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class DemoServers:
    """The running demo servers."""

    stac_url: str
    """STAC API root (pgstac)."""
    cog_url: str
    """Base URL of the COG host; asset hrefs start with it."""
    range_server: RangeServer
    """The COG host (fault configuration and request counters)."""
    pgstac: PgStacServer
    """The STAC API server (PIDs, PG connection)."""


def _ndjson(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise ServerError(f"{path} is missing; generate the demo data first (`tessera demo-data --out {path.parent}`)")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@contextlib.contextmanager
def demo_servers(data_dir: Path, faults: FaultConfig | None = None) -> Iterator[DemoServers]:
    """Serve ``data_dir`` (from `tessera demo-data`): COGs over HTTP Range, items from pgstac.

    Yields:
        The running servers; both are stopped when the block exits.

    Raises:
        ServerError: PostgreSQL is not installed, a server did not start, or the demo data is missing.
    """
    data_dir = Path(data_dir)
    collections, items = _ndjson(data_dir / "collections.ndjson"), _ndjson(data_dir / "items.ndjson")
    with RangeServer(data_dir, faults=faults) as cogs, PgStacServer() as pg:
        pg.load(collections, [rewrite_hrefs(it, cogs.url) for it in items])
        yield DemoServers(pg.url, cogs.url, cogs, pg)


REPO_ROOT = Path(__file__).resolve().parent.parent


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _cmd_serve(args: argparse.Namespace) -> None:
    """Serve demo data from a real STAC API and a range-serving COG host until interrupted."""
    faults = FaultConfig(rate=args.faults, seed=args.seed) if args.faults else None
    # SIGTERM must unwind through the context managers so PostgreSQL is stopped, not orphaned.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    with demo_servers(Path(args.data), faults) as servers:
        print(f"STAC API: {servers.stac_url}\nCOGs:     {servers.cog_url}", flush=True)
        threading.Event().wait()


def write_demo_config(path: Path, stac_url: str, years: list[int], results_dir: Path) -> dict[str, Any]:
    """Write the demo run config: ``config/demo.yaml`` pointed at the live STAC API, absolute paths.

    Returns:
        The config written.
    """
    import yaml

    from tessera.io import atomic_path

    cfg: dict[str, Any] = yaml.safe_load((REPO_ROOT / "config" / "demo.yaml").read_text())
    cfg["roi"] = str((REPO_ROOT / cfg["roi"]).resolve())
    cfg["years"] = list(years)
    cfg["results_dir"] = str(results_dir.resolve())
    for kind in ("s2", "s1"):
        cfg[kind] = {**cfg[kind], "url": stac_url}
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return cfg


def run_demo(workdir: Path, cores: int, years: list[int], extra: list[str], seed: int = 0) -> int:
    """Generate (once) and serve the demo world, then run the workflow on it with Snakemake.

    Returns:
        Snakemake's exit status.

    Raises:
        ServerError: the servers could not be started (e.g. PostgreSQL is not installed).
    """
    from tessera.demo import generate_demo_data, is_generated

    workdir = workdir.resolve()
    data_dir = workdir / "data"
    if not is_generated(data_dir, years, seed):
        generate_demo_data(data_dir, years, seed)
    with demo_servers(data_dir) as servers:
        config = workdir / "config.yaml"
        write_demo_config(config, servers.stac_url, years, workdir / "results")
        cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO_ROOT / "Snakefile")]
        cmd += ["--profile", str(REPO_ROOT / "profiles" / "local"), "--configfile", str(config)]
        cmd += ["--cores", str(cores), *extra]
        # Jobs call the `tessera` script of this interpreter's environment.
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        log.info("demo: %s", " ".join(cmd))
        return subprocess.run(cmd, cwd=workdir, env=env, check=False).returncode


def _cmd_demo(args: argparse.Namespace) -> int:
    """Run the offline demo end to end (demo data, local servers, Snakemake)."""
    extra = [a for a in args.snakemake_args if a != "--"]
    return run_demo(Path(args.workdir), args.cores, list(args.years), extra, args.seed)


def add_cli(subparsers: Any) -> None:
    """Register ``tessera serve`` and ``tessera demo``."""
    p = subparsers.add_parser("serve", help=(_cmd_serve.__doc__ or "").strip())
    p.add_argument("--data", required=True, help="directory written by `tessera demo-data`")
    p.add_argument("--faults", type=float, default=0.0, help="fraction of COG requests given an injected fault")
    p.add_argument("--seed", type=int, default=0, help="seed of the fault draws")
    p.set_defaults(func=_cmd_serve)
    d = subparsers.add_parser("demo", help=(_cmd_demo.__doc__ or "").strip())
    d.add_argument("--workdir", default="demo-run", help="directory of the demo data, config and results")
    d.add_argument("--cores", type=int, default=2, help="cores Snakemake may use")
    d.add_argument("--years", type=int, nargs="+", default=[2022], help="years to embed (default 2022)")
    d.add_argument("--seed", type=int, default=0, help="seed of the demo world")
    d.add_argument("snakemake_args", nargs=argparse.REMAINDER, help="after --: extra Snakemake arguments")
    d.set_defaults(func=_cmd_demo)
