"""Training settings: one frozen dataclass, read from YAML (``config/train.yaml``) and CLI overrides.

Defaults follow the reference's ``configs/ssl_config.py`` (reference-spec section 6) where it says
something: Barlow Twins λ 5e-3, warm-up ratio 0.2 and plateau ratio 0.2, projector 2048 wide,
``min_valid_timesteps`` 20, 40 + 40 sampled steps. The reference does not say which optimiser or decay
it used; we use AdamW and a cosine decay (`tessera.train.loop.learning_rate`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from tessera.errors import TrainingError

__all__ = ["RUN_ONLY", "TrainConfig", "load_train_config", "train_schema", "validate_train_settings"]

_SCHEMA = "schemas/train.schema.yaml"


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of a training run (see ``config/train.yaml`` for what each one is for)."""

    arch: str = "demo"
    """Architecture name (`tessera.models.arch.ARCHITECTURES`)."""
    seed: int = 0
    """Seeds the initial weights, the data order and every view draw."""
    steps: int = 1000
    """Optimiser steps; the learning-rate schedule spans them."""
    batch_size: int = 256
    """Pixels per step (each seen as two views)."""
    learning_rate: float = 1e-3
    """Peak AdamW learning rate."""
    weight_decay: float = 1e-4
    """AdamW weight decay of matrices (biases and norms get none)."""
    warmup_ratio: float = 0.2
    """Fraction of the steps with a linear warm-up from 0 to the peak."""
    plateau_ratio: float = 0.2
    """Fraction of the steps held at the peak before the cosine decay to 0."""
    barlow_lambda: float = 5e-3
    """Weight of the off-diagonal (redundancy) term of the Barlow Twins loss."""
    projector_dim: int = 2048
    """Width of the projector's hidden and output layers."""
    projector_layers: int = 5
    """Linear-BatchNorm-ReLU blocks of the projector before its last Linear."""
    min_valid_timesteps: int = 20
    """Pixels with fewer valid S2 or S1 observations are not trained on."""
    sample_size_s2: int = 40
    """S2 steps drawn per view."""
    sample_size_s1: int = 40
    """S1 steps drawn per view."""
    buffer_pixels: int = 32768
    """Shuffle buffer: pixels held in memory at once (see `tessera.train.data`)."""
    piece_pixels: int = 1024
    """Pixels per piece (whole tile rows) read from disk; a buffer mixes pieces of many tiles."""
    source: str = "planetary-computer"
    """Data source of the tiles; picks the v1.1 normalisation table."""
    precision: str = "bf16"
    """``bf16`` autocast on a GPU (the CPU always runs fp32) or ``fp32``."""
    device: str = "auto"
    """``auto``, ``cpu`` or ``cuda``."""
    threads: int | None = None
    """CPU threads (None: ``TESSERA_THREADS`` or the CPUs available). Same bytes on a CPU need the same seed,
    data, device and thread count; a resume may change it, with a warning that its bytes then differ."""
    checkpoint_every: int = 200
    """Steps between resumable checkpoints."""
    log_every: int = 10
    """Steps between loss records and log lines."""
    max_seconds: float | None = None
    """Stop early (with a resumable checkpoint) after this wall time; None: run all steps."""

    def __post_init__(self) -> None:
        positive: tuple[str, ...] = (
            "steps",
            "batch_size",
            "projector_dim",
            "sample_size_s2",
            "sample_size_s1",
            "buffer_pixels",
            "piece_pixels",
            "checkpoint_every",
            "log_every",
        )
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise TrainingError(f"training setting {name} = {getattr(self, name)} must be at least 1; fix it")
        if self.batch_size < 2:
            raise TrainingError("training setting batch_size must be at least 2 (the loss standardises over it)")
        for name in ("projector_layers", "min_valid_timesteps"):
            if int(getattr(self, name)) < 0:
                raise TrainingError(f"training setting {name} = {getattr(self, name)} must not be negative; fix it")
        if self.learning_rate <= 0 or self.barlow_lambda < 0 or self.weight_decay < 0:
            raise TrainingError("learning_rate must be > 0, barlow_lambda and weight_decay >= 0; fix them")
        if min(self.warmup_ratio, self.plateau_ratio) < 0 or self.warmup_ratio + self.plateau_ratio > 1:
            raise TrainingError("warmup_ratio and plateau_ratio must be >= 0 and sum to at most 1; fix them")
        if self.precision not in ("bf16", "fp32") or self.device not in ("auto", "cpu", "cuda"):
            raise TrainingError("precision must be bf16 or fp32 and device auto, cpu or cuda; fix them")
        if self.threads is not None and self.threads < 1:
            raise TrainingError(f"threads = {self.threads} must be at least 1, or null for all available CPUs")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> TrainConfig:
        """Settings from a mapping; unknown keys are an error (a typo must not fall back to a default).

        Raises:
            TrainingError: An unknown key or a value of the wrong type or range.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise TrainingError(
                f"unknown training setting(s) {', '.join(unknown)}; remove them or use one of "
                f"{', '.join(sorted(known))}"
            )
        validate_train_settings(values)
        return cls(**dict(values))

    def with_overrides(self, **values: Any) -> TrainConfig:
        """A copy with the non-None ``values`` replaced (CLI flags over the file)."""
        given = {k: v for k, v in values.items() if v is not None}
        return replace(self, **given) if given else self

    def to_dict(self) -> dict[str, Any]:
        """Plain values, as recorded in checkpoints."""
        return asdict(self)

    def result_settings(self) -> dict[str, Any]:
        """The settings a resumed run must share with the run it resumes (all but `RUN_ONLY`)."""
        return {k: v for k, v in self.to_dict().items() if k not in RUN_ONLY}


def train_schema() -> dict[str, Any]:
    """The training settings' JSON Schema (``tessera/schemas/train.schema.yaml``)."""
    loaded: dict[str, Any] = yaml.safe_load(resources.files("tessera").joinpath(_SCHEMA).read_text())
    return loaded


def validate_train_settings(values: Mapping[str, Any]) -> None:
    """Check training settings against `train_schema`, reporting every violation at once.

    Raises:
        TrainingError: A key is unknown, or a value has the wrong type or range.
    """
    import jsonschema

    from tessera.config import schema_violations

    violations = schema_violations(jsonschema.Draft202012Validator(train_schema()), dict(values))
    if violations:
        raise TrainingError(f"invalid training settings: {violations}; see config/train.yaml")


#: Settings that do not change what is learned, so a resume may change them.
RUN_ONLY = frozenset({"device", "threads", "checkpoint_every", "log_every", "max_seconds"})


def load_train_config(path: str | Path | None) -> TrainConfig:
    """Read training settings from a YAML file (None: all defaults).

    Raises:
        TrainingError: The file is missing, not YAML, or holds a bad setting.
    """
    if path is None:
        return TrainConfig()
    file = Path(path)
    if not file.is_file():
        raise TrainingError(
            f"training config {file} does not exist; pass an existing YAML file (see config/train.yaml)"
        )
    try:
        values = yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError as exc:
        raise TrainingError(f"training config {file} is not valid YAML ({exc}); fix its syntax") from exc
    if not isinstance(values, Mapping):
        raise TrainingError(f"training config {file} must be a mapping of setting: value; fix it")
    return TrainConfig.from_mapping(values)
