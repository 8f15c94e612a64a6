"""STAC search: parameters, orbit filter (server and client side), paging, retries, unsigned output.

The API here is a minimal STAC item-search server on 127.0.0.1 (real HTTP, real pystac-client);
semantics tests against pgstac belong with `tessera.testing.servers`.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pystac
import pytest

from tessera.config import SourceConfig
from tessera.errors import DataSourceError
from tessera.grid import Chunk, Grid
from tessera.search import run_search, search_parameters, select_items
from tessera.sources import resolve_source
from tessera.transport import RetryPolicy

GRID = Grid("EPSG:32630", 10.0, 50000, -580000, 100, 100)  # ~ 3 W, 52.3 N
CHUNK = Chunk("c", GRID)


def feature(i: int, orbit: str) -> dict[str, Any]:
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": f"S1_{i:02d}",
        "geometry": {"type": "Point", "coordinates": [-4.5, 52.3]},
        "bbox": [-4.5, 52.3, -4.5, 52.3],
        "properties": {"datetime": f"2023-0{1 + i % 9}-1{i % 10}T06:00:00Z", "sat:orbit_state": orbit},
        "links": [],
        "assets": {"vv": {"href": f"https://example.invalid/{i}/vv.tif"}},
    }


class Api:
    """State of the fake API: its features, the bodies it received, and failures to inject."""

    def __init__(self) -> None:
        self.features = [feature(i, "ascending" if i % 3 else "descending") for i in range(7)]
        self.bodies: list[dict[str, Any]] = []
        self.fail_next = 0
        self.ignore_query = False


@pytest.fixture
def api() -> Iterator[tuple[str, Api]]:
    state = Api()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, code: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            root = f"http://127.0.0.1:{self.server.server_address[1]}"
            self._send(
                200,
                {
                    "type": "Catalog",
                    "id": "fake",
                    "description": "fake",
                    "stac_version": "1.0.0",
                    "conformsTo": [
                        "https://api.stacspec.org/v1.0.0/core",
                        "https://api.stacspec.org/v1.0.0/item-search",
                        "https://api.stacspec.org/v1.0.0/item-search#query",
                    ],
                    "links": [
                        {"rel": "self", "href": root},
                        {"rel": "root", "href": root},
                        {"rel": "search", "href": f"{root}/search", "method": "POST", "type": "application/geo+json"},
                    ],
                },
            )

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if state.fail_next:
                state.fail_next -= 1
                self._send(503, {"error": "busy"}, {"Retry-After": "0"})
                return
            state.bodies.append(body)
            feats = state.features
            q = body.get("query", {}).get("sat:orbit_state", {}).get("eq")
            if q and not state.ignore_query:
                feats = [f for f in feats if f["properties"]["sat:orbit_state"] == q]
            start, limit = int(body.get("token", 0)), int(body.get("limit", 10))
            page = feats[start : start + limit]
            links = []
            if start + limit < len(feats):
                root = f"http://127.0.0.1:{self.server.server_address[1]}"
                links.append(
                    {
                        "rel": "next",
                        "href": f"{root}/search",
                        "method": "POST",
                        "body": {**body, "token": start + limit},
                        "merge": False,
                    }
                )
            self._send(200, {"type": "FeatureCollection", "features": page, "links": links})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", state
    server.shutdown()
    server.server_close()


def cfg_for(url: str) -> dict[str, SourceConfig]:
    sign = "python:tessera.testing.signing:fake_sas"
    src = {"source": "stac", "url": url, "collection": "sentinel-1-rtc", "sign": sign}
    return {"s1": SourceConfig.from_dict(src), "s2": SourceConfig.from_dict({**src, "collection": "sentinel-2-l2a"})}


def test_search_parameters() -> None:
    src = resolve_source(cfg_for("http://x")["s1"], "s1")
    p = search_parameters(src, CHUNK, 2024, "descending")
    assert p["datetime"] == "2024-01-01T00:00:00Z/2024-12-31T23:59:59.999999Z"
    assert p["query"] == {"sat:orbit_state": {"eq": "descending"}} and p["collections"] == ["sentinel-1-rtc"]
    west, south, east, north = p["bbox"]
    assert -3.1 < west < east < -2.9 and 52.2 < south < north < 52.4
    assert "query" not in search_parameters(resolve_source(cfg_for("http://x")["s2"], "s2"), CHUNK, 2024, None)
    assert "query" not in search_parameters(
        resolve_source(SourceConfig.from_dict({"source": "opera"}), "s1"), CHUNK, 2024, "ascending"
    )


def test_select_items_rechecks_orbit_and_sorts() -> None:
    items = [pystac.Item.from_dict(feature(i, o)) for i, o in [(3, "ascending"), (1, "descending"), (2, "ascending")]]
    assert [i.id for i in select_items(items, "ascending")] == ["S1_02", "S1_03"]


def test_run_search_orbit_paging_unsigned(
    api: tuple[str, Api], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, state = api
    monkeypatch.setattr("tessera.search.PAGE_SIZE", 2)
    out = tmp_path / "s1-ascending.json"
    state.fail_next = 1  # one 503 with Retry-After: the transport retries it
    n = run_search(cfg_for(url)["s1"], CHUNK, 2023, "s1-ascending", out)
    ids = [f["id"] for f in json.loads(out.read_text())["features"]]
    expected = sorted(
        (f for f in state.features if f["properties"]["sat:orbit_state"] == "ascending"),
        key=lambda f: (f["properties"]["datetime"], f["id"]),
    )
    assert n == 4 and ids == [f["id"] for f in expected]
    assert len(state.bodies) == 2 and state.bodies[0]["query"] == {"sat:orbit_state": {"eq": "ascending"}}
    assert "FAKE-SAS" not in out.read_text() and "sig=" not in out.read_text()
    # the search records only what it depends on; how bands are read is the read step's provenance
    source = json.loads(out.read_text())["tessera:search"]["source"]
    assert source == {"provider": "stac", "url": url, "collection": "sentinel-1-rtc"}


def test_hrefs_the_api_signed_are_stored_without_their_signature(
    api: tuple[str, Api], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url, state = api
    from tessera.testing.signing import FAKE_SAS_QUERY, fake_sas

    for f in state.features:
        f["assets"]["vv"]["href"] = fake_sas(f["assets"]["vv"]["href"])
        f["links"] = [{"rel": "license", "href": fake_sas("https://example.invalid/licence")}]
    state.features[0]["assets"]["vh"] = {"href": "https://example.invalid/0/vh.tif?version=2"}  # not a signature
    out = tmp_path / "a.json"
    with caplog.at_level(logging.WARNING, logger="tessera.search"):
        n = run_search(cfg_for(url)["s1"], CHUNK, 2023, "s1-descending", out)
    text = out.read_text()
    assert n == 3 and FAKE_SAS_QUERY not in text and "sig=" not in text
    assets = {f["id"]: f["assets"] for f in json.loads(text)["features"]}
    assert assets["S1_00"] == {
        "vv": {"href": "https://example.invalid/0/vv.tif"},
        "vh": {"href": "https://example.invalid/0/vh.tif?version=2"},
    }
    assert "6 href(s) from" in caplog.text and "came signed" in caplog.text and "FAKE-SAS" not in caplog.text


def test_client_side_orbit_check_when_server_ignores_query(api: tuple[str, Api], tmp_path: Path) -> None:
    url, state = api
    state.ignore_query = True
    state.features[0]["properties"]["sat:orbit_state"] = "DESCENDING"  # case differs: still descending
    n = run_search(cfg_for(url)["s1"], CHUNK, 2023, "s1-descending", tmp_path / "d.json")
    ids = [f["id"] for f in json.loads((tmp_path / "d.json").read_text())["features"]]
    assert n == 3 and sorted(ids) == ["S1_00", "S1_03", "S1_06"]
    assert run_search(cfg_for(url)["s2"], CHUNK, 2023, "s2", tmp_path / "s2.json") == 7  # no orbit filter for S2


def test_empty_result_writes_empty_collection(api: tuple[str, Api], tmp_path: Path) -> None:
    url, state = api
    state.features = []
    assert run_search(cfg_for(url)["s1"], CHUNK, 2023, "s1-descending", tmp_path / "d.json") == 0
    assert json.loads((tmp_path / "d.json").read_text())["features"] == []


def test_unreachable_api_raises(tmp_path: Path) -> None:
    with pytest.raises(DataSourceError, match="STAC search"):
        run_search(
            cfg_for("http://127.0.0.1:9")["s2"],
            CHUNK,
            2023,
            "s2",
            tmp_path / "x.json",
            RetryPolicy(attempts=1, backoff_s=0.01),
        )


def test_period_sets_the_search_window_and_the_client_filter() -> None:
    src = resolve_source(cfg_for("http://x")["s2"], "s2")
    p = search_parameters(src, CHUNK, 2023, None, period="10-01")
    assert p["datetime"] == "2023-10-01T00:00:00Z/2024-09-30T23:59:59.999999Z"
    items = [pystac.Item.from_dict(feature(i, "ascending")) for i in range(1, 10)]  # 2023-02 .. 2023-09, 2023-01
    from tessera.period import window

    kept = select_items(items, None, window(2023, "06-01"))
    assert [i.id for i in kept] == ["S1_05", "S1_06", "S1_07", "S1_08"]  # June to September 2023
