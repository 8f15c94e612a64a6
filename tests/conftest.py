"""Shared fixtures: the seeded demo world and the real loopback servers that serve it."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tessera.errors import ServerError
from tessera.testing import servers as _servers
from tessera.testing.servers import DemoServers, FaultConfig
from tessera.testing.world import generate_demo_data
from tests.e2e import FALLBACK_PATCH

SKIP_ENV = "TESSERA_SKIP_SERVER_TESTS"


@pytest.fixture(scope="session")
def demo_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo world for 2022 and 2023 with a fallback patch in the e2e ROI, generated once per session."""
    out = tmp_path_factory.mktemp("demo-data")
    generate_demo_data(out, [2022, 2023], seed=0, fallback_patch=FALLBACK_PATCH)
    return out


@pytest.fixture(scope="session")
def demo_servers_session(demo_data_dir: Path) -> Iterator[DemoServers]:
    """pgstac STAC API + range server over the demo data (fails, not skips, without PostgreSQL)."""
    if os.environ.get(SKIP_ENV) == "1":
        pytest.skip(f"{SKIP_ENV}=1: server tests skipped on request")
    try:
        ctx = _servers.demo_servers(demo_data_dir)
        servers = ctx.__enter__()
    except ServerError as exc:
        pytest.fail(f"demo servers could not start: {exc} (set {SKIP_ENV}=1 to skip server tests)")
    try:
        yield servers
    finally:
        ctx.__exit__(None, None, None)


@pytest.fixture
def demo_servers(demo_servers_session: DemoServers) -> Iterator[DemoServers]:
    """The session's demo servers with faults off and request counters zeroed."""
    demo_servers_session.range_server.set_faults(FaultConfig())
    demo_servers_session.range_server.reset_counters()
    yield demo_servers_session


@pytest.fixture
def faulty_demo_servers(demo_servers_session: DemoServers) -> Iterator[Callable[..., DemoServers]]:
    """Factory: ``faulty_demo_servers(rate=0.3, kinds=("429",), ...)`` turns on seeded COG faults.

    The arguments are those of `FaultConfig`; faults are switched off again after the test.
    """
    rs = demo_servers_session.range_server

    def make(**kwargs: object) -> DemoServers:
        rs.set_faults(FaultConfig(**kwargs))  # type: ignore[arg-type]
        rs.reset_counters()
        return demo_servers_session

    yield make
    rs.set_faults(FaultConfig())
    rs.reset_counters()


@pytest.fixture(scope="session")
def base_run(demo_servers_session: DemoServers, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete local 2022 run of the e2e ROI (1 km chunks, 50 px tiles, tiles kept); its work directory.

    The products do not depend on chunking or tiling (tests/test_e2e.py proves it), so other runs
    compare their products with this one's bytes.
    """
    from tests.e2e import run_snakemake, write_config

    wd = tmp_path_factory.mktemp("base")
    run_snakemake(write_config(wd, demo_servers_session, keep_tiles=True))
    return wd


@pytest.fixture(scope="session")
def strict_run(base_run: Path, demo_servers_session: DemoServers, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`base_run` copied and rerun with ``model.nodata_policy: strict`` (inference and what follows it only).

    The fallback patch of the demo world (`tests.e2e.FALLBACK_PATCH`) is nodata in its products.
    """
    from tests.e2e import copy_run, run_snakemake, write_config

    run = copy_run(base_run, tmp_path_factory.mktemp("strict") / "run")
    run_snakemake(write_config(run, demo_servers_session, keep_tiles=True, model={"nodata_policy": "strict"}))
    return run
