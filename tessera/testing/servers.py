"""Real servers on 127.0.0.1 for the demo and the tests: a pgstac STAC API and a range-serving COG host.

`PgStacServer` runs the same software as the Planetary Computer's STAC API (PostgreSQL 15 with
pgstac, served by stac-fastapi-pgstac under uvicorn). `RangeServer` (`tessera.testing.rangeserver`) serves
the COGs with HTTP Range requests and seeded faults. `demo_servers` starts both over the output of
`tessera demo-data`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tessera.errors import ServerError
from tessera.testing.rangeserver import FAULT_KINDS, FaultConfig, RangeServer

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


def free_port(preferred: int | None = None) -> int:
    """A TCP port on 127.0.0.1 that is free right now: ``preferred`` if it is, else any."""
    for port in ([preferred] if preferred else []) + [0]:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            # as the servers bind: a port whose last connections are in TIME_WAIT is free, a listened one is not
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                log.info("port %d is taken; the server takes another", port)
                continue
            return int(s.getsockname()[1])
    raise ServerError("no free TCP port on 127.0.0.1")  # binding to port 0 failed: no network at all


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

    def __init__(self, api_port: int | None = None) -> None:
        """Nothing runs until `start`; the API listens on ``api_port`` if it is free (else on any port)."""
        self.url = ""
        self.pg_port = 0
        self.api_port = 0
        self._want_api_port = api_port
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
        self.api_port = free_port(self._want_api_port)
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
def demo_servers(
    data_dir: Path, faults: FaultConfig | None = None, ports: tuple[int | None, int | None] = (None, None)
) -> Iterator[DemoServers]:
    """Serve ``data_dir`` (from `tessera demo-data`): COGs over HTTP Range, items from pgstac.

    ``ports`` (STAC API, COG host): the ports to listen on where free (a rerun of the demo serves on its
    earlier ports, so the URLs in its config and searches stay the same and nothing reruns).

    Yields:
        The running servers; both are stopped when the block exits.

    Raises:
        ServerError: PostgreSQL is not installed, a server did not start, or the demo data is missing.
    """
    data_dir = Path(data_dir)
    collections, items = _ndjson(data_dir / "collections.ndjson"), _ndjson(data_dir / "items.ndjson")
    stac_port, cog_port = ports
    with RangeServer(data_dir, free_port(cog_port), faults) as cogs, PgStacServer(stac_port) as pg:
        pg.load(collections, [rewrite_hrefs(it, cogs.url) for it in items])
        yield DemoServers(pg.url, cogs.url, cogs, pg)


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


def add_cli(subparsers: Any) -> None:
    """Register ``tessera serve``."""
    p = subparsers.add_parser("serve", help=(_cmd_serve.__doc__ or "").strip())
    p.add_argument("--data", required=True, help="directory written by `tessera demo-data`")
    p.add_argument("--faults", type=float, default=0.0, help="fraction of COG requests given an injected fault")
    p.add_argument("--seed", type=int, default=0, help="seed of the fault draws")
    p.set_defaults(func=_cmd_serve)
