"""tessera.train: the Barlow Twins loss, the two views, the pixel stream, checkpoints and reproducibility."""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
import shutil
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
import yaml

from tessera import models
from tessera.cli import main
from tessera.errors import (
    ArchitectureError,
    ConfigError,
    NoTilesError,
    ResumeMismatchError,
    TileError,
    TrainingError,
)
from tessera.models import v2
from tessera.models.arch import ARCHITECTURES, architecture
from tessera.sampling import _SLOT_SALT, combine, mix32
from tessera.train import TrainConfig, barlow_twins_loss, find_tiles, learning_rate, load_train_config, train
from tessera.train.config import train_schema
from tessera.train.data import PixelStream, scan
from tessera.train.views import draw, to_tensors, view_seeds
from tests.traindata import WORLD_ORIGIN, tiny_config, write_results

# --- loss ------------------------------------------------------------------------------------------


def test_loss_is_zero_for_identical_decorrelated_views() -> None:
    # four pixels, two dimensions: columns of mean 0, variance 1 and correlation 0, so C = I
    z = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])
    terms = barlow_twins_loss(z, z.clone(), lambd=5e-3)
    assert float(terms.loss) == pytest.approx(0.0, abs=1e-9)
    assert float(terms.redundancy) == pytest.approx(0.0, abs=1e-12)


def test_off_diagonal_term_is_weighted_by_lambda() -> None:
    # identical views whose two dimensions are perfectly correlated: C = [[1, 1], [1, 1]]
    z = torch.tensor([[1.0, 1.0], [-1.0, -1.0], [1.0, 1.0], [-1.0, -1.0]])
    eps_shrink = 1 / (1 + 1e-5)  # each dimension is divided by sqrt(var + eps)
    for lambd in (0.0, 5e-3, 0.5):
        terms = barlow_twins_loss(z, z, lambd)
        assert float(terms.invariance) == pytest.approx(0.0, abs=1e-9)
        assert float(terms.redundancy) == pytest.approx(2 * eps_shrink**2, rel=1e-6)
        expected = float(terms.invariance) + lambd * float(terms.redundancy)
        assert float(terms.loss) == pytest.approx(expected, rel=1e-6)


def test_anti_correlated_views_pay_the_invariance_term() -> None:
    z = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])
    terms = barlow_twins_loss(z, -z, 5e-3)
    assert float(terms.invariance) == pytest.approx(2 * 2**2, rel=1e-4)  # C = -I: (1 - (-1))^2 per dimension


def test_loss_is_computed_in_float32_from_bf16_inputs() -> None:
    z = torch.randn(64, 8, generator=torch.Generator().manual_seed(0))
    assert barlow_twins_loss(z.bfloat16(), z.bfloat16(), 5e-3).loss.dtype == torch.float32


# --- views -----------------------------------------------------------------------------------------


def test_combine_is_injective_in_the_hashed_value() -> None:
    # why views never share draws: for a fixed running hash h, v -> combine(h, v) is a bijection of
    # 32-bit values (h ^ mix32(v ^ c) and mix32 are invertible); checked here on a large sample
    values = torch.arange(1 << 18, dtype=torch.int64)
    for h in (0, 1, 0xDEADBEEF):
        assert torch.unique(combine(torch.tensor(h), values)).numel() == values.numel()
    assert torch.unique(mix32(values * 4099)).numel() == values.numel()


def _pixels(n: int = 2000, t2: int = 60, t1: int = 50) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    doy2 = torch.sort(torch.randperm(365, generator=g)[:t2] + 1).values
    doy1 = torch.sort(torch.randperm(365, generator=g)[:t1] + 1).values
    return {
        "s2_valid": torch.rand(n, t2, generator=g) < 0.9,
        "s2_doy": doy2.expand(n, t2),
        "s1_valid": torch.rand(n, t1, generator=g) < 0.9,
        "s1_doy": doy1.expand(n, t1),
        "s1_desc": (torch.arange(t1) >= t1 // 2).long().expand(n, t1),
        "col": torch.randint(-(10**6), 10**6, (n,), generator=g),
        "row": torch.randint(-(10**6), 10**6, (n,), generator=g),
        "year": torch.full((n,), 2022),
        "epsg": torch.full((n,), 32631),
    }


def test_two_views_never_share_draws() -> None:
    px = _pixels()
    seeds = [view_seeds(px, seed=0, epoch=3, view=v) for v in (0, 1)]
    assert bool((seeds[0] != seeds[1]).all())
    # every per-slot uniform of the with-replacement draw differs between the views
    slots = torch.arange(40)
    u = [combine(combine(s, _SLOT_SALT).unsqueeze(1), slots.unsqueeze(0)) for s in seeds]
    assert bool((u[0] != u[1]).all())
    s2 = [draw(px, s, (40, 40))[0] for s in seeds]
    # pixels with >= 40 valid of 60 draw 40 distinct steps; the two views pick different sets
    assert float((s2[0] != s2[1]).any(dim=1).float().mean()) > 0.99
    # the epoch and the run seed change the draws too
    assert bool((view_seeds(px, 0, 4, 0) != seeds[0]).all()) and bool((view_seeds(px, 1, 3, 0) != seeds[0]).all())


def test_views_are_sorted_valid_steps_of_the_pixel() -> None:
    px = _pixels(200)
    s2_idx, s1_idx = draw(px, view_seeds(px, 0, 0, 0), (40, 40))
    for idx, valid in ((s2_idx, px["s2_valid"]), (s1_idx, px["s1_valid"])):
        assert bool(torch.gather(valid, 1, idx).all())
        assert bool((idx[:, 1:] >= idx[:, :-1]).all())


# --- data ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_results(tmp_path_factory.mktemp("results"))


def test_find_tiles_refuses_tiles_that_cover_the_same_pixels(results: Path, tmp_path: Path) -> None:
    """A stale export of an earlier chunking beside the current one would count its pixels twice."""
    stale = shutil.copytree(results, tmp_path / "results")
    tiles = sorted((stale / "2022" / "tiles" / "chunk").iterdir())
    assert len(find_tiles([stale], [2022])) == len(tiles) == 4  # side by side, not overlapping: fine
    with pytest.raises(TileError, match="passed twice in --data"):
        find_tiles([results, stale], [2022])  # the same region twice
    copy = shutil.copytree(tiles[0], stale / "2022" / "tiles" / "old-chunk" / tiles[0].name)
    # overlapping only with pixels outside its ROI, as an edge tile padded to the tile size does: fine
    with rasterio.open(copy / "roi.tiff", "r+") as roi:
        roi.write(np.zeros((roi.height, roi.width), roi.dtypes[0]), 1)
    assert len(find_tiles([stale], [2022])) == 5
    shutil.copy2(tiles[0] / "roi.tiff", copy / "roi.tiff")
    with pytest.raises(TileError, match=r"cover the same pixels of 2022 \(EPSG:\d+\).*stale export") as err:
        find_tiles([stale], [2022])
    assert "old-chunk" in str(err.value) and isinstance(err.value, ValueError)


def test_find_tiles_and_missing_year(results: Path) -> None:
    tiles = find_tiles([results], [2022])
    assert len(tiles) == 4 and all(t.year == 2022 for t in tiles)
    assert tiles[0].name == "2022/tiles/chunk/0_0_24_24"
    with pytest.raises(NoTilesError, match="no tiles for year 2021") as err:
        find_tiles([results], [2021, 2022])
    assert isinstance(err.value, FileNotFoundError)


def test_the_order_of_the_data_roots_changes_nothing(
    results: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two regions exported alike (the same tile names) give one run, whatever the order of --data."""
    east = write_results(tmp_path / "east", seed=4, origin=(WORLD_ORIGIN[0] + 480, WORLD_ORIGIN[1]))
    ordered = find_tiles([results, east], [2022])
    assert ordered == find_tiles([east, results], [2022]) and len(ordered) == 8
    # same names, told apart by grid position in the order and by their files' sha256 in the provenance
    assert ordered[0].name == ordered[1].name == "2022/tiles/chunk/0_0_24_24"
    provenance = scan(ordered[:2], 5, 48).provenance
    assert provenance[0]["tile"] == provenance[1]["tile"] and provenance[0]["sha256"] != provenance[1]["sha256"]
    # same names and grid positions (a copy with other reflectances whose ROI is empty, so no pixel is
    # counted twice): ordered by content
    twin = shutil.copytree(results, tmp_path / "twin")
    for tile in find_tiles([twin], [2022]):
        np.save(tile.path / "bands.npy", np.load(tile.path / "bands.npy") + np.uint16(1))
        with rasterio.open(tile.path / "roi.tiff", "r+") as roi:
            roi.write(np.zeros((roi.height, roi.width), roi.dtypes[0]), 1)
    assert find_tiles([results, twin], [2022]) == find_tiles([twin, results], [2022])
    # a run started with one order resumes with the other, and ends with the bytes of an uninterrupted run
    settings = tmp_path / "train.yaml"
    settings.write_text(yaml.safe_dump(tiny_config().to_dict()))
    argv = ["train", "--years", "2022", "--train-config", str(settings), "--out-dir", str(tmp_path / "out")]
    assert main([*argv, "--data", str(results), str(east), "--max-seconds", "1e-9"]) == 0
    assert main([*argv, "--data", str(east), str(results)]) == 0
    assert "ResumeMismatchError" not in capsys.readouterr().err
    assert json.loads((tmp_path / "out" / "train.json").read_text())["resumed_at_step"] == 1
    straight = train(tiny_config(), ordered, tmp_path / "straight")
    assert (tmp_path / "out" / "checkpoint.pt").read_bytes() == straight.checkpoint.read_bytes()
    # a checkpoint of the same tiles in another order (as an earlier version ordered them) is named as such
    train(tiny_config(max_seconds=0.0), ordered[::-1], tmp_path / "reversed")
    with pytest.raises(ResumeMismatchError, match="same tiles in another order"):
        train(tiny_config(), ordered, tmp_path / "reversed")


def test_a_tile_directory_without_its_roi_is_an_error(results: Path, tmp_path: Path) -> None:
    data = shutil.copytree(results, tmp_path / "results")
    tile = find_tiles([data], [2022])[0].path
    # not tiles: a chunk's S2 read output, and an export being written (atomic_dir's temporary directory)
    stack = data / "2022" / "stack" / "chunk" / "s2"
    stack.mkdir(parents=True)
    for name in ("bands.npy", "masks.npy", "doys.npy"):
        shutil.copy2(tile / name, stack / name)
    partial = shutil.copytree(tile, data / "2022" / "tiles" / ".tmp-chunk.new.host.1.0123abcd" / tile.name)
    (partial / "roi.tiff").unlink()
    assert len(find_tiles([data], [2022])) == 4
    # a tile directory that lost its roi.tiff is not passed over silently
    (tile / "roi.tiff").unlink()
    with pytest.raises(TileError, match=r"holds the arrays of a tile but no roi.tiff.*snakemake tiles") as err:
        find_tiles([data], [2022])
    assert str(tile) in str(err.value)


def test_scan_counts_only_pixels_with_enough_observations(results: Path) -> None:
    sources = find_tiles([results], [2022])
    loose, strict = scan(sources, 1, 48), scan(sources, 20, 48)
    assert 0 < strict.pixels < loose.pixels < 48 * 48
    with pytest.raises(TrainingError, match="lower min_valid_timesteps"):
        scan(sources, 10_000, 48)


def test_stream_visits_each_pixel_once_per_epoch_and_resumes_anywhere(results: Path) -> None:
    data = scan(find_tiles([results], [2022]), 5, 48)
    stream = PixelStream(data, batch_size=32, buffer_pixels=256, piece_pixels=48, seed=7)
    spe = stream.steps_per_epoch
    full = [(s, e, b) for (s, e, b), _ in zip(stream.batches(0), range(2 * spe + 3), strict=False)]
    first_epoch = np.concatenate([np.stack((b.col, b.row), 1) for _, e, b in full if e == 0])
    assert len(np.unique(first_epoch, axis=0)) == spe * 32  # no pixel twice within an epoch
    assert [e for _, e, _ in full][spe - 1 : spe + 1] == [0, 1]
    orders = [np.stack((b.col, b.row), 1) for _, _, b in full]
    assert not np.array_equal(orders[0], orders[spe])  # epochs are shuffled differently
    for start in (1, 5, spe - 1, spe, spe + 2):
        step, _, batch = next(stream.batches(start))
        assert step == start
        np.testing.assert_array_equal(batch.s2, full[start][2].s2)
        np.testing.assert_array_equal(batch.col, full[start][2].col)


@pytest.mark.parametrize(
    ("side", "buffer_pixels", "piece_pixels", "batch_size"),
    [(64, 1024, 128, 64), (32, 128, 16, 100)],  # the last: pieces of one row of a 32 px tile
)
def test_stream_memory_stays_below_the_stated_bound(
    tmp_path: Path, side: int, buffer_pixels: int, piece_pixels: int, batch_size: int
) -> None:
    # long time series, so that the pixel records (not tile metadata) dominate what is allocated
    sources = find_tiles([write_results(tmp_path, side=side, size=32, dates=(100, 50, 50))], [2022])
    data = scan(sources, 5, piece_pixels)
    stream = PixelStream(data, batch_size, buffer_pixels, piece_pixels, seed=1)
    # the bound of tessera.train.data's docstring, as written there
    widest = max(piece_pixels, max(t.width for t in data.tiles))
    records = 2 * (max(1, buffer_pixels // piece_pixels) * widest + widest) + 3 * batch_size
    bound = records * (23 * data.t2 + 7 * data.t1 + 32)
    epochs, seen = 3, 0
    tracemalloc.start()
    try:
        for step, _, batch in stream.batches():  # holding each batch until the next, as the trainer does
            if step == epochs * stream.steps_per_epoch:
                break
            seen += len(batch)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert seen == epochs * stream.steps_per_epoch * batch_size
    assert peak < bound, f"peak {peak} B is {peak / bound:.2f} x the stated bound"


def test_learning_rate_warms_up_holds_then_decays() -> None:
    cfg = TrainConfig(steps=100, learning_rate=1.0, warmup_ratio=0.2, plateau_ratio=0.2)
    rates = [learning_rate(s, cfg) for s in range(100)]
    assert rates[0] == pytest.approx(0.05) and rates[19] == pytest.approx(1.0)
    assert all(r == 1.0 for r in rates[20:40])
    assert all(a >= b for a, b in itertools.pairwise(rates[40:])) and rates[-1] < 0.01


# --- training, checkpoints -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(results: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("trained")
    result = train(tiny_config(), find_tiles([results], [2022]), out, resume=False)
    assert result.complete and result.steps == 12 and math.isfinite(result.final_loss)
    return out


def test_same_seed_same_bytes_and_resume_gives_the_same_bytes(results: Path, trained: Path, tmp_path: Path) -> None:
    sources = find_tiles([results], [2022])
    digest = {n: hashlib.sha256((trained / n).read_bytes()).hexdigest() for n in ("encoder.pt", "checkpoint.pt")}
    # stopped after one step (a resumable checkpoint), then resumed
    stopped = train(tiny_config(max_seconds=0.0), sources, tmp_path, resume=False)
    assert stopped.steps == 1 and not stopped.complete
    train(tiny_config(), sources, tmp_path)
    assert {n: hashlib.sha256((tmp_path / n).read_bytes()).hexdigest() for n in digest} == digest
    other = train(tiny_config(seed=1), sources, tmp_path / "seed1", resume=False)
    assert hashlib.sha256(other.encoder.read_bytes()).hexdigest() != digest["encoder.pt"]


def test_a_cpu_run_on_a_gpu_machine_writes_the_bytes_of_a_cpu_only_machine(
    results: Path, trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CUDA visible but training on the CPU: no CUDA generator state is read or saved."""

    def no_cuda_state() -> list[torch.Tensor]:
        raise AssertionError("a CPU run read the CUDA generators")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", no_cuda_state)
    train(tiny_config(device="cpu"), find_tiles([results], [2022]), tmp_path, resume=False)
    for name in ("encoder.pt", "checkpoint.pt"):
        assert (tmp_path / name).read_bytes() == (trained / name).read_bytes()


def test_a_checkpoint_of_another_run_stops_plain_train_and_is_set_aside_with_restart_if_changed(
    results: Path, trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    out = shutil.copytree(trained, tmp_path / "train")
    old = {name: (out / name).read_bytes() for name in ("checkpoint.pt", "encoder.pt", "train.json")}
    changed = tiny_config(learning_rate=2e-3)
    settings = tmp_path / "train.yaml"
    settings.write_text(yaml.safe_dump(changed.to_dict()))
    argv = ["train", "--data", str(results), "--years", "2022", "--train-config", str(settings), "--out-dir", str(out)]
    assert main(argv) == 2
    assert "ResumeMismatchError: resume checkpoint" in capsys.readouterr().err
    assert (out / "checkpoint.pt").read_bytes() == old["checkpoint.pt"] and not list(out.glob("*.stale-*"))
    with caplog.at_level(logging.WARNING, logger="tessera.train.loop"):
        assert main([*argv, "--restart-if-changed"]) == 0
    (stale,) = out.glob("checkpoint.pt.stale-*")
    assert f"moved to {stale}" in caplog.text
    stamp = stale.name.removeprefix("checkpoint.pt")
    for name, data in old.items():  # the other run's encoder and sidecar went aside with its checkpoint
        assert (out / f"{name}{stamp}").read_bytes() == data
    # a fresh start: the bytes of the same run in an empty directory
    fresh = train(changed, find_tiles([results], [2022]), tmp_path / "fresh")
    assert (out / "checkpoint.pt").read_bytes() == fresh.checkpoint.read_bytes()
    # a checkpoint of this very run is still resumed (here: already complete), nothing more set aside
    assert main([*argv, "--restart-if-changed"]) == 0
    assert len(list(out.glob("checkpoint.pt.stale-*"))) == 1
    assert (out / "checkpoint.pt").read_bytes() == fresh.checkpoint.read_bytes()
    # an explicit --resume of another run's checkpoint is not set aside: --restart-if-changed excludes it
    with pytest.raises(SystemExit):
        main([*argv, "--restart-if-changed", "--resume", str(stale)])
    with pytest.raises(ResumeMismatchError, match="other settings"):
        train(changed, find_tiles([results], [2022]), tmp_path / "x", resume=stale, restart_if_changed=True)
    assert stale.is_file()


def test_tiles_remade_with_other_reflectances_are_other_tiles(results: Path, trained: Path, tmp_path: Path) -> None:
    # an S2 fix remakes the tiles with the same dates and masks: the checkpoint must not resume on them
    data = shutil.copytree(results, tmp_path / "results")
    tile = find_tiles([data], [2022])[0].path
    bands = np.load(tile / "bands.npy")
    np.save(tile / "bands.npy", bands + np.uint16(1))
    out = shutil.copytree(trained, tmp_path / "train")
    with pytest.raises(ResumeMismatchError, match="trained on other tiles"):
        train(tiny_config(), find_tiles([data], [2022]), out)
    # the same bytes again are the same tiles: the completed run is recognised
    np.save(tile / "bands.npy", bands)
    assert train(tiny_config(), find_tiles([data], [2022]), out).complete


def test_an_out_dir_that_is_a_file_fails_before_the_tiles_are_scanned(
    results: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_scan(*args: object) -> None:
        raise AssertionError("the tiles were scanned")

    monkeypatch.setattr("tessera.train.loop.scan", no_scan)
    file = tmp_path / "file"
    file.write_text("not a directory")
    argv = ["train", "--data", str(results), "--years", "2022", "--steps", "4", "--threads", "1", "--out-dir"]
    assert main([*argv, str(file)]) == 2
    assert f"TrainingError: the output directory {file} is a file, not a directory; pass --out-dir" in (
        capsys.readouterr().err
    )
    assert main([*argv, str(file / "train")]) == 2  # below a file
    assert f"TrainingError: cannot write to the output directory {file / 'train'}" in capsys.readouterr().err
    assert file.read_text() == "not a directory"


def test_a_resume_with_another_thread_count_warns_that_the_bytes_will_differ(
    results: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sources = find_tiles([results], [2022])
    train(tiny_config(max_seconds=0.0), sources, tmp_path, resume=False)
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["provenance"]["threads"] == 1
    with caplog.at_level(logging.WARNING, logger="tessera.train.loop"):
        train(tiny_config(max_seconds=0.0), sources, tmp_path)  # the same thread count: no such warning
        assert "byte-identical" not in caplog.text
        result = train(tiny_config(threads=2), sources, tmp_path)
    assert result.complete  # a warning, not a refusal
    assert "with 2 CPU threads, but its first 2 of 12 steps ran with 1 CPU threads" in caplog.text
    assert "will not be byte-identical to those of an uninterrupted run" in caplog.text


def test_a_run_stopped_by_max_seconds_fails_where_a_finished_model_is_required(
    results: Path, trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # the train rule passes --require-complete: a stopped run must not leave encoder.pt looking done
    settings = tmp_path / "train.yaml"
    settings.write_text(yaml.safe_dump(tiny_config().to_dict()))
    out = tmp_path / "train"
    argv = ["train", "--data", str(results), "--years", "2022", "--train-config", str(settings), "--out-dir", str(out)]
    assert main([*argv, "--max-seconds", "1e-9", "--require-complete"]) == 2
    err = capsys.readouterr().err
    assert "TrainingStoppedError: training stopped after max_seconds at step 1 of 12" in err
    assert "run again to continue" in err
    # without the flag a stopped run is a success (the demo bounds its training time this way)
    assert main([*argv, "--max-seconds", "1e-9"]) == 0
    # run again: it resumes and finishes with the bytes of an uninterrupted run
    assert main([*argv, "--require-complete"]) == 0
    assert (out / "checkpoint.pt").read_bytes() == (trained / "checkpoint.pt").read_bytes()


def test_encoder_round_trips_through_models_load(trained: Path, results: Path) -> None:
    payload = torch.load(trained / "encoder.pt", weights_only=True)
    assert set(payload) == {"model_state_dict", "arch", "config", "provenance", "step"}
    assert not any(k.startswith("projector.") for k in payload["model_state_dict"])
    assert payload["provenance"]["tiles"][0]["tile"] == "2022/tiles/chunk/0_0_24_24"
    loaded = models.load(trained / "encoder.pt")
    assert loaded.family == "v1.0" and loaded.architecture == ARCHITECTURES["demo"].to_dict()
    assert not loaded.random_weights
    # the weights are the trained ones: the module reproduces the state dict exactly
    for key, value in loaded.module.state_dict().items():
        assert torch.equal(value, payload["model_state_dict"][key]), key
    # the full checkpoint loads too: its projector.* keys are training-only and dropped
    full = models.load(trained / "checkpoint.pt")
    s2, s1 = torch.randn(3, 8, 11), torch.randn(3, 8, 3)
    assert torch.equal(full.module(s2, s1), loaded.module(s2, s1))


def test_v2_architectures_save_the_student_layout(tmp_path: Path) -> None:
    arch = architecture("v2-nano")
    model = arch.build(seed=0)
    path = tmp_path / "nano.pt"
    torch.save(arch.encoder_payload(model.state_dict()), path)
    payload = torch.load(path, weights_only=True)
    assert v2.StudentArgs.from_checkpoint(payload["args"]) == arch.student_args()
    loaded = models.load(path)
    assert loaded.family == "v2-nano"
    s2, s1 = torch.randn(2, 8, 11), torch.randn(2, 8, 3)
    assert torch.allclose(loaded.module(s2, s1), model.eval()(s2, s1))


def test_bad_settings_and_architectures(results: Path, trained: Path, tmp_path: Path) -> None:
    with pytest.raises(ArchitectureError, match="unknown architecture 'v3'"):
        architecture("v3")
    with pytest.raises(TrainingError, match="unknown training setting"):
        TrainConfig.from_mapping({"step": 3})
    with pytest.raises(TrainingError, match="batch_size"):
        tiny_config(batch_size=1)
    sources = find_tiles([results], [2022])
    with pytest.raises(TrainingError, match="fewer than batch_size"):
        train(tiny_config(batch_size=100_000), sources, tmp_path / "big", resume=False)
    with pytest.raises(TrainingError, match=r"other settings .*learning_rate"):
        train(tiny_config(learning_rate=0.5), sources, tmp_path, resume=trained / "checkpoint.pt")
    with pytest.raises(TrainingError, match="not a full training checkpoint"):
        train(tiny_config(), sources, tmp_path, resume=trained / "encoder.pt")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match=r"device \(config/train.yaml or --device\) is cuda but no CUDA"):
            train(tiny_config(device="cuda"), sources, tmp_path / "gpu", resume=False)
        assert not (tmp_path / "gpu").exists()


def test_config_file_documents_the_defaults() -> None:
    root = Path(__file__).resolve().parents[1]
    assert load_train_config(root / "config" / "train.yaml") == TrainConfig()
    # the buffer's bound covers the pixel records alone: it must not read as the process's memory
    comments = " ".join(line.lstrip("# ") for line in (root / "config" / "train.yaml").read_text().splitlines())
    assert "The pixel data held stay below" in comments and "activations" in comments and "come on top" in comments
    demo = load_train_config(root / "tessera" / "testing" / "data" / "demo_train.yaml")
    assert demo.arch == "demo" and demo.threads == 1 and demo.max_seconds is not None and demo.max_seconds <= 120


def test_the_schema_describes_every_setting_with_its_default() -> None:
    props = train_schema()["properties"]
    defaults = TrainConfig().to_dict()
    assert list(props) == list(defaults)
    assert {k: v["default"] for k, v in props.items()} == defaults
    assert all(v.get("description") for v in props.values())
    assert props["arch"]["enum"] == list(ARCHITECTURES)


def test_a_bad_settings_file_names_each_bad_key(tmp_path: Path) -> None:
    settings = tmp_path / "train.yaml"
    settings.write_text("steps: '10'\nlearning_rate: 1e-3\nprecision: fp16\nwarmup_ratio: 2\n")
    with pytest.raises(TrainingError) as err:
        load_train_config(settings)
    message = str(err.value)
    assert "steps: '10' is not of type 'integer' (write it as a plain number, e.g. 10 (" in message
    assert "learning_rate: '1e-3' is not of type 'number' (write it as a plain number, e.g. 0.001" in message
    assert "precision: 'fp16' is not one of ['bf16', 'fp32'] (use one of the listed values)" in message
    assert "warmup_ratio: 2 is greater than the maximum of 1 (set it to at most 1)" in message
    assert isinstance(err.value, ValueError) and "\n" not in message


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_bf16_training_on_a_gpu_gives_a_checkpoint_the_cpu_loads(results: Path, tmp_path: Path) -> None:
    sources = find_tiles([results], [2022])
    result = train(tiny_config(device="cuda", precision="bf16", steps=6), sources, tmp_path, resume=False)
    assert result.complete and math.isfinite(result.final_loss)
    loaded = models.load(result.encoder, "cpu")
    assert all(t.device.type == "cpu" for t in loaded.module.state_dict().values())
    # the GPU draws the same views as the CPU: the first batch's seeds and indices are device-independent
    data = scan(sources, 5, 48)
    _, epoch, batch = next(PixelStream(data, 32, 256, 48, seed=0).batches(0))
    on = {d: {k: v.to(d) for k, v in to_tensors(batch, torch.device("cpu")).items()} for d in ("cpu", "cuda")}
    idx = {d: draw(on[d], view_seeds(on[d], 0, epoch, 1), (8, 8)) for d in on}
    assert all(torch.equal(a.cpu(), b.cpu()) for a, b in zip(idx["cpu"], idx["cuda"], strict=True))
