"""Inference jobs: many tiles from the chunk stacks, the same bytes however they are packed, and restarts."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

import tessera.inferjob
from tessera import models
from tessera.config import ModelConfig
from tessera.embedfiles import tile_files
from tessera.errors import TileError
from tessera.grid import load_roi
from tessera.infer import infer_arrays
from tessera.inferjob import InferJob, run_infer_job
from tessera.plan import StoredPlan, parts, plan_tiles_file, write_plan
from tessera.results import part_name
from tests.tilegen import World, make_world, write_chunk_stacks, write_roi_raster

YEAR = 2023
CHUNK_M = 120.0  # 12 px chunks over a 20 x 20 world: 4 chunks, three of them clipped
MODEL = ModelConfig(None, "auto", "float32", 128, "bf16", "cpu", None, 1, "reference")


@pytest.fixture(scope="module")
def world() -> World:
    # the world's corner on the chunk lattice's 120 m grid, so chunks cut it 12 + 8 pixels each way
    return make_world(41, 20, 20, origin=(3600, -60000))


def _setup(tmp: Path, world: World, tile_size: int) -> tuple[StoredPlan, Path]:
    tmp.mkdir(parents=True, exist_ok=True)
    roi = load_roi(write_roi_raster(tmp / "roi.tif", world))
    write_plan(roi, "k", CHUNK_M, tmp / "plan")
    plan_tiles_file(StoredPlan(tmp / "plan"), tile_size, tmp / "plan" / f"tiles-{tile_size}.json")
    plan = StoredPlan(tmp / "plan", tile_size)
    for chunk in plan.chunks:
        write_chunk_stacks(tmp / "stack" / chunk.id, world, chunk.grid)
    return plan, tmp / "stack"


def _job(plan: StoredPlan, stacks: Path, out: Path, chunk: str, part: str, model: ModelConfig = MODEL) -> InferJob:
    return InferJob(model, "planetary-computer", YEAR, plan, chunk, part, stacks / chunk, out, settings="{}")


def _mosaic(plan: StoredPlan, out_root: Path) -> np.ndarray:
    """Every tile's float32 embeddings placed on the world grid (NaN at nodata and where nothing was written)."""
    g = plan.grid
    full = np.full((g.height, g.width, 128), np.nan, np.float32)
    for chunk in plan.chunks:
        for t in plan.tiles(chunk.id):
            found = list(out_root.glob(f"{chunk.id}/*/{t.name}.npy"))
            assert len(found) == 1, (chunk.id, t.name, found)
            col, row = chunk.grid.window(t.x0, t.y0, 1, 1).offset_in(g)
            emb = np.load(found[0])
            emb[~emb.any(axis=-1)] = np.nan  # the files' nodata is the reference's all-zero vector
            full[row : row + t.y1 - t.y0, col : col + t.x1 - t.x0] = emb
    return full


def _run_all(plan: StoredPlan, stacks: Path, out_root: Path, per_job: int | None) -> None:
    for chunk in plan.chunks:
        for k in range(len(parts(plan.tiles(chunk.id), per_job))):
            part = part_name(k, per_job)
            run_infer_job(_job(plan, stacks, out_root / chunk.id / part, chunk.id, part))


@pytest.mark.slow
def test_jobs_give_the_bytes_of_one_whole_world_pass(world: World, tmp_path: Path) -> None:
    whole = infer_arrays(models.load(None), world.arrays, origin=(world.grid.col, world.grid.row), year=YEAR)
    results = []
    for tile_size, per_job in ((5, None), (7, 2)):
        plan, stacks = _setup(tmp_path / f"t{tile_size}", world, tile_size)
        assert len(plan.chunks) == 4
        _run_all(plan, stacks, tmp_path / f"t{tile_size}" / "emb", per_job)
        results.append(_mosaic(plan, tmp_path / f"t{tile_size}" / "emb"))
    for mosaic in results:
        assert mosaic.tobytes() == whole.embeddings.tobytes()
    side = json.loads(next((tmp_path / "t7" / "emb").rglob("*.json")).read_text())
    assert side["model_family"] == "demo" and side["device"] == "cpu" and side["year"] == YEAR


@pytest.mark.slow
def test_a_failed_tile_is_recomputed_alone(world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plan, stacks = _setup(tmp_path, world, 6)
    chunk = plan.chunks[0].id  # 12 x 12 px: four 6 px tiles
    tiles = plan.tiles(chunk)
    assert len(tiles) == 4
    out = tmp_path / "emb" / chunk / "all"
    real = tessera.inferjob.infer_arrays
    calls: list[int] = []

    def flaky(*args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("node lost")
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(tessera.inferjob, "infer_arrays", flaky)
    with pytest.raises(RuntimeError, match="node lost"):
        run_infer_job(_job(plan, stacks, out, chunk, "all"))
    assert not out.exists()  # the part appears whole or not at all
    (work,) = out.parent.glob(".partial-all-*")
    assert sorted(p.name for p in work.glob("*.json")) == sorted(f"{t.name}.json" for t in tiles[:2])
    calls.clear()
    # resubmitted where another batch size is picked (a GPU with other free memory): the work is kept
    resubmitted = dataclasses.replace(MODEL, batch_size=37)
    assert run_infer_job(_job(plan, stacks, out, chunk, "all", resubmitted)) == 2  # only the two unfinished tiles
    assert len(calls) == 2 and not list(out.parent.glob(".partial-*"))
    monkeypatch.setattr(tessera.inferjob, "infer_arrays", real)
    again = tmp_path / "again" / chunk / "all"
    run_infer_job(_job(plan, stacks, again, chunk, "all"))
    for t in tiles:
        assert np.load(tile_files(out, t.name, False).data).tobytes() == np.load(again / f"{t.name}.npy").tobytes()


def test_work_of_other_settings_is_not_reused(world: World, tmp_path: Path) -> None:
    plan, stacks = _setup(tmp_path, world, 6)
    chunk = plan.chunks[0].id
    out = tmp_path / "emb" / chunk / "all"
    stale = out.parent / ".partial-all-0123456789abcdef"
    stale.mkdir(parents=True)
    (stale / "0_0_6_6.json").write_text("{}")
    assert run_infer_job(_job(plan, stacks, out, chunk, "all")) == 4
    assert not stale.exists()


def test_int8_job_and_missing_stack(world: World, tmp_path: Path) -> None:
    plan, stacks = _setup(tmp_path, world, 6)
    chunk = plan.chunks[0].id
    int8 = ModelConfig(None, "auto", "int8", 128, "bf16", "cpu", None, 1, "reference")
    out = tmp_path / "emb" / chunk / "n2-001"
    assert run_infer_job(_job(plan, stacks, out, chunk, "n2-001", int8)) == 2
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(f"{t.name}{s}" for t in plan.tiles(chunk)[2:] for s in (".json", ".npy", "_scales.npy"))
    (stacks / chunk / "s2" / "masks.npy").unlink()
    with pytest.raises(TileError, match="read step"):
        run_infer_job(_job(plan, stacks, tmp_path / "x", chunk, "all"))
