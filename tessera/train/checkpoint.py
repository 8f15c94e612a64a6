"""Training checkpoints: the encoder both worlds read, and the full state a killed run resumes from.

``encoder.pt`` (`save_encoder`) has the reference's layout for the architecture's family
(`tessera.models.arch.Architecture.encoder_payload`: ``model_state_dict`` with the reference's key
names for v1.x, ``args`` + ``model`` for v2) plus ``arch``, ``config`` (`TrainConfig.to_dict`),
``provenance`` (tiles, years, eligible pixels, sha256 of each of their files, package versions, the
device and the CPU thread count) and ``step``. It loads with `tessera.models.load`; the reference's
loaders read the keys they know.

``checkpoint.pt`` (`save_full`) adds what a resume needs: ``model_state_dict`` holding the encoder and
the projector (``projector.*``, as the reference's full checkpoints do), the optimiser state, the step,
the loss history and the RNG states. Neither file holds a time stamp or an absolute path, so the same
seed, data, device and thread count give the same bytes; run times go to the ``train.json`` sidecar.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tessera.errors import ResumeMismatchError, TrainingError
from tessera.io import atomic_path
from tessera.models import load_payload
from tessera.models.arch import Architecture
from tessera.train.config import RUN_ONLY, TrainConfig

__all__ = ["FULL_NAME", "ENCODER_NAME", "ResumeState", "read_resume", "save_encoder", "save_full"]

ENCODER_NAME = "encoder.pt"
FULL_NAME = "checkpoint.pt"
_PROJECTOR = "projector."


def _canonical(obj: Any) -> Any:
    """A copy whose strings are interned, so equal payloads pickle to equal bytes.

    Pickle refers back to an object it has already written by identity: a key string shared by two
    dicts is written once in a fresh run but twice after a resume (the loaded strings are distinct
    objects), and the bytes would differ although the values are equal.
    """
    if isinstance(obj, str):
        return sys.intern(obj)
    if isinstance(obj, Mapping):
        return {_canonical(k): _canonical(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_canonical(v) for v in obj)
    return obj


def _cpu(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Weights as CPU tensors, so a checkpoint written on a GPU loads anywhere without a map_location."""
    return {k: v.detach().cpu() for k, v in state.items()}


def _save(path: Path, payload: dict[str, Any]) -> None:
    # through a file object: torch.save names the zip's top folder after a path it is given, and the
    # temporary name is random, so saving to the path would change the bytes from run to run
    with atomic_path(path) as tmp, tmp.open("wb") as fh:
        torch.save(_canonical(payload), fh)


def save_encoder(path: Path, arch: Architecture, encoder: torch.nn.Module, meta: Mapping[str, Any], step: int) -> None:
    """Write the encoder alone (projector dropped), shaped like the reference's checkpoints."""
    payload = arch.encoder_payload(_cpu(encoder.state_dict()))
    payload.update({**meta, "step": step})
    _save(path, payload)


def save_full(
    path: Path,
    arch: Architecture,
    encoder: torch.nn.Module,
    projector: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    meta: Mapping[str, Any],
    step: int,
    history: list[list[float]],
) -> None:
    """Write everything a resume needs (see the module docstring)."""
    state = _cpu(encoder.state_dict())
    state.update({_PROJECTOR + k: v for k, v in _cpu(projector.state_dict()).items()})
    rng: dict[str, Any] = {"torch": torch.get_rng_state()}
    # only a run on the GPU has CUDA generators to resume; a CPU run on a GPU machine must neither start
    # CUDA to read them nor write other bytes than the same run on a machine without one
    if any(p.is_cuda for p in encoder.parameters()):
        rng["cuda"] = torch.cuda.get_rng_state_all()
    payload = {
        "model_state_dict": state,
        "arch": arch.to_dict(),
        "optimizer_state_dict": optimizer.state_dict(),
        "step": step,
        "history": history,
        "rng": rng,
        **meta,
    }
    _save(path, payload)


@dataclass
class ResumeState:
    """What `read_resume` found in a full checkpoint."""

    step: int
    """Steps already done."""
    encoder: dict[str, torch.Tensor]
    """Encoder state dict."""
    projector: dict[str, torch.Tensor]
    """Projector state dict (keys without the ``projector.`` prefix)."""
    optimizer: dict[str, Any]
    """Optimiser state dict."""
    history: list[list[float]]
    """Loss records so far."""
    rng: dict[str, Any]
    """RNG states."""
    device: str | None = None
    """Device type the steps so far ran on (``cpu``, ``cuda``; None if the checkpoint does not say)."""
    threads: int | None = None
    """CPU threads the steps so far ran with (None on a GPU, or if the checkpoint does not say)."""


def read_resume(path: Path, arch: Architecture, cfg: TrainConfig, tiles: list[dict[str, Any]]) -> ResumeState:
    """Read a full checkpoint and check that it continues this very run.

    Raises:
        CheckpointError: The file is missing or unreadable.
        TrainingError: It is not a full training checkpoint.
        ResumeMismatchError: It is of another architecture, or was made with settings that change
            what is learned (seed, batch size, schedule, data filter...) or on other tiles (``tiles``:
            this run's `tessera.train.data.TrainingData.provenance`).
    """
    payload = load_payload(path)
    if not isinstance(payload, Mapping) or "optimizer_state_dict" not in payload or "arch" not in payload:
        raise TrainingError(
            f"{path} is not a full training checkpoint (no optimizer state or arch); pass the {FULL_NAME} that "
            f"tessera train writes, not {ENCODER_NAME} or a reference checkpoint"
        )
    saved = Architecture.from_dict(payload["arch"])
    if saved != arch:
        raise ResumeMismatchError(
            f"resume checkpoint {path} is of architecture {saved.name} ({saved.family}, d_model {saved.d_model}, "
            f"{saved.num_layers} layers), not {arch.name}; pass --arch {saved.name} to resume it, or use another "
            "output directory for a new run"
        )
    before = {k: v for k, v in dict(payload.get("config", {})).items() if k not in RUN_ONLY}
    now = cfg.result_settings()
    changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
    if changed:
        diffs = ", ".join(f"{k}: {before.get(k)!r} -> {now.get(k)!r}" for k in changed)
        raise ResumeMismatchError(
            f"resume checkpoint {path} was made with other settings ({diffs}); use the same settings to resume, "
            "or another output directory for a new run"
        )
    provenance = dict(payload.get("provenance", {}))
    saved_tiles = list(provenance.get("tiles", []))
    if saved_tiles != tiles:
        if sorted(map(_sort_key, saved_tiles)) == sorted(map(_sort_key, tiles)):
            raise ResumeMismatchError(
                f"resume checkpoint {path} was trained on the same tiles in another order (an earlier "
                "version ordered them by the order of the --data roots), so a resume would not continue its run; "
                "start afresh with --restart-if-changed or --no-resume, or use another output directory"
            )
        raise ResumeMismatchError(
            f"resume checkpoint {path} was trained on other tiles (a tile was added, removed or rewritten); "
            "use the same tiles to resume, or another output directory for a new run"
        )
    state = payload["model_state_dict"]
    threads = provenance.get("threads")
    return ResumeState(
        step=int(payload["step"]),
        encoder={k: v for k, v in state.items() if not k.startswith(_PROJECTOR)},
        projector={k[len(_PROJECTOR) :]: v for k, v in state.items() if k.startswith(_PROJECTOR)},
        optimizer=dict(payload["optimizer_state_dict"]),
        history=[list(map(float, h)) for h in payload.get("history", [])],
        rng=dict(payload.get("rng", {})),
        device=str(provenance["device"]) if provenance.get("device") is not None else None,
        threads=int(threads) if threads is not None else None,
    )


def _sort_key(tile: Any) -> str:
    """A tile's provenance record as text, to compare two lists of them as sets."""
    return json.dumps(tile, sort_keys=True, default=str)
