"""The Snakemake target ``train``: it trains on every tile of every year and is not part of ``all``."""

from __future__ import annotations

from pathlib import Path

from tests.test_workflow import job_counts, run_config, snakemake


def test_train_target_needs_every_tile_and_is_not_in_all(tmp_path: Path) -> None:
    config = str(run_config(tmp_path, years=[2022, 2023], keep_tiles=True))
    train = job_counts(snakemake("-n", "train", "--configfile", config, cwd=tmp_path).stdout)
    everything = job_counts(snakemake("-n", "--configfile", config, cwd=tmp_path).stdout)
    assert train["train"] == 1
    assert train["tile"] == everything["tile"] > 2  # both years' tiles
    assert "infer" not in train and "train" not in everything
