"""The loopback servers: real pgstac searches, HTTP Range reads, seeded faults, clean shutdown."""

from __future__ import annotations

import os
import socket
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pystac_client
import pytest
import rasterio
import requests
import yaml

from tessera.config import validate_config
from tessera.testing.demo import write_demo_config
from tessera.testing.servers import DemoServers, demo_servers, free_port

pytestmark = [pytest.mark.server, pytest.mark.slow]
ROI_BBOX = [0.089, 52.189, 0.117, 52.206]


def test_search_bbox_datetime_and_orbit_query(demo_servers: DemoServers) -> None:
    client = pystac_client.Client.open(demo_servers.stac_url)
    search = client.search(
        collections=["sentinel-1-rtc"],
        bbox=ROI_BBOX,
        datetime="2022-03-01/2022-04-30",
        query={"sat:orbit_state": {"eq": "descending"}},
    )
    items = list(search.items())
    assert len(items) == 5  # every 12 days from 2022-01-08: 03-09, 03-21, 04-02, 04-14, 04-26
    assert {it.properties["sat:orbit_state"] for it in items} == {"descending"}
    assert all("2022-03-01" <= it.properties["datetime"][:10] <= "2022-04-30" for it in items)
    assert all(it.assets["vv"].href.startswith(demo_servers.cog_url + "/s1/") for it in items)
    # a bbox away from the demo world finds nothing
    assert not list(client.search(collections=["sentinel-1-rtc"], bbox=[10.0, 40.0, 10.1, 40.1]).items())


def test_paging_follows_next_links(demo_servers: DemoServers) -> None:
    client = pystac_client.Client.open(demo_servers.stac_url)
    search = client.search(collections=["sentinel-2-l2a"], bbox=ROI_BBOX, datetime="2022-01-01/2022-01-31", limit=1)
    pages = list(search.pages())
    assert len(pages) == 6  # three dates x two granules, one per page
    assert all(len(p.items) == 1 for p in pages)
    assert len({p.items[0].id for p in pages}) == 6
    first = requests.get(f"{demo_servers.stac_url}/search", params={"collections": "sentinel-2-l2a", "limit": 1}).json()
    assert any(link["rel"] == "next" for link in first["links"])


def test_odc_stac_reads_an_item_over_http(demo_servers: DemoServers, demo_data_dir: Path) -> None:
    import odc.stac

    client = pystac_client.Client.open(demo_servers.stac_url)
    item = next(client.search(collections=["sentinel-2-l2a"], bbox=ROI_BBOX, datetime="2022-06-13").items())
    ds = odc.stac.load([item], bands=["B04", "SCL"], crs="EPSG:32631", resolution=10, dtype="uint16", nodata=0)
    assert demo_servers.range_server.counters.requests > 0
    with rasterio.open(demo_data_dir / item.assets["B04"].href.removeprefix(demo_servers.cog_url + "/")) as src:
        expected, left, top = src.read(1), src.transform.c, src.transform.f
    b04 = ds["B04"].isel(time=0)
    cols = np.round((b04.x.values - left) / 10 - 0.5).astype(int)
    rows = np.round((top - b04.y.values) / 10 - 0.5).astype(int)
    inside_c, inside_r = (cols >= 0) & (cols < expected.shape[1]), (rows >= 0) & (rows < expected.shape[0])
    got = b04.values[np.ix_(inside_r, inside_c)]
    assert got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)
    assert set(np.unique(ds["SCL"].values)) <= {0, 3, 4, 5, 6, 8, 9}


def test_range_requests(demo_servers: DemoServers, demo_data_dir: Path) -> None:
    rel = next((demo_data_dir / "s1").rglob("vv.tif")).relative_to(demo_data_dir).as_posix()
    url, data = f"{demo_servers.cog_url}/{rel}", (demo_data_dir / rel).read_bytes()
    r = requests.get(url, headers={"Range": "bytes=100-1123"})
    assert r.status_code == 206 and r.content == data[100:1124]
    assert r.headers["Content-Range"] == f"bytes 100-1123/{len(data)}" and r.headers["Accept-Ranges"] == "bytes"
    assert requests.get(url, headers={"Range": "bytes=-10"}).content == data[-10:]
    assert requests.get(url, headers={"Range": f"bytes={len(data) - 5}-"}).content == data[-5:]
    assert requests.get(url, headers={"Range": f"bytes={len(data)}-"}).status_code == 416
    full = requests.get(url)
    assert full.status_code == 200 and full.content == data
    head = requests.head(url)
    assert head.status_code == 200 and int(head.headers["Content-Length"]) == len(data) and not head.content
    assert requests.get(f"{demo_servers.cog_url}/../../etc/passwd").status_code == 404
    assert requests.get(f"{demo_servers.cog_url}/s1/missing.tif").status_code == 404


def test_fault_injection_rate_and_kinds(faulty_demo_servers: Callable[..., DemoServers], demo_data_dir: Path) -> None:
    servers = faulty_demo_servers(rate=0.3, seed=7, slow_s=0.6)
    rel = next((demo_data_dir / "s2").rglob("B02.tif")).relative_to(demo_data_dir).as_posix()
    url, data = f"{servers.cog_url}/{rel}", (demo_data_dir / rel).read_bytes()
    seen: Counter[str] = Counter()
    n = 200
    for _ in range(n):
        try:
            r = requests.get(url, headers={"Range": "bytes=0-4095"}, timeout=(2, 0.25))
        except requests.exceptions.ReadTimeout:
            seen["slow"] += 1
            continue
        except requests.exceptions.ChunkedEncodingError:
            seen["truncated"] += 1
            continue
        except requests.exceptions.ConnectionError:
            seen["reset"] += 1
            continue
        if r.status_code == 206:
            assert r.content == data[:4096]
            seen["ok"] += 1
        else:
            seen[str(r.status_code)] += 1
            if r.status_code == 429:
                assert r.headers["Retry-After"] == "1"
    counters = servers.range_server.counters
    assert counters.requests == n
    assert 0.2 < sum(counters.faults.values()) / n < 0.4
    assert set(counters.faults) == {"429", "500", "503", "reset", "slow", "truncated"}
    assert {k: v for k, v in seen.items() if k != "ok"} == dict(counters.faults)


def _gone(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat")
    return not stat.exists() or stat.read_text().split(")")[-1].split()[0] == "Z"


def test_demo_config_and_clean_shutdown(demo_data_dir: Path, tmp_path: Path) -> None:
    with demo_servers(demo_data_dir) as servers:
        pids, pg_tmp, port = servers.pgstac.pids, servers.pgstac.tmp, servers.range_server.port
        assert len(pids) == 2 and pg_tmp is not None and pg_tmp.exists()
        cfg = write_demo_config(tmp_path / "config.yaml", servers.stac_url, [2022], tmp_path / "results")
        assert yaml.safe_load((tmp_path / "config.yaml").read_text()) == cfg
        validate_config(cfg)
        client = pystac_client.Client.open(cfg["s2"]["url"])
        assert len(list(client.search(collections=[cfg["s2"]["collection"]], datetime="2022-01-04").items())) == 2
    deadline = time.monotonic() + 10
    while not all(_gone(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert all(_gone(p) for p in pids)
    assert not pg_tmp.exists()
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0
    assert os.path.exists(demo_data_dir / "items.ndjson")

    # a rerun of the demo serves on the same ports (same URLs in its config and searches: nothing reruns)
    with demo_servers(demo_data_dir, ports=(servers.pgstac.api_port, port)) as again:
        assert (again.stac_url, again.cog_url) == (servers.stac_url, servers.cog_url)
        assert requests.get(f"{again.stac_url}/collections").status_code == 200


def test_free_port_prefers_the_given_port_when_it_is_free() -> None:
    port = free_port()
    assert free_port(port) == port
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        other = free_port(port)
    assert other != port and other > 0
