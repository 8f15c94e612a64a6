"""The Snakemake target ``train``: it trains on every tile of every year and is not part of ``all``."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e import job_counts
from tests.test_workflow import run_config, snakemake


@pytest.mark.slow
def test_train_target_needs_every_tile_and_is_not_in_all(tmp_path: Path) -> None:
    config = str(run_config(tmp_path, years=[2022, 2023], keep_tiles=True))
    dry = snakemake("-n", "-p", "train", "--configfile", config, cwd=tmp_path).stdout
    train = job_counts(dry)
    everything = job_counts(snakemake("-n", "--configfile", config, cwd=tmp_path).stdout)
    assert train["train"] == 1
    assert train["export_tiles"] == everything["export_tiles"] > 2  # both years' tile directories
    assert "infer" not in train and "train" not in everything
    # the output directory is fixed, so a checkpoint of changed tiles or settings is set aside, not an error
    assert "tessera train --data" in dry and "--restart-if-changed" in dry


@pytest.mark.slow
def test_a_bad_training_settings_file_fails_the_parse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = tmp_path / "train.yaml"
    settings.write_text("lerning_rate: 0.1\n")
    monkeypatch.setenv("TESSERA_TRAIN_CONFIG", str(settings))
    res = snakemake("-n", "train", "--configfile", str(run_config(tmp_path, keep_tiles=True)), cwd=tmp_path)
    assert res.returncode != 0 and "TrainingError: unknown training setting(s) lerning_rate" in res.stdout + res.stderr
