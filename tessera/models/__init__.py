"""TESSERA model families and checkpoint loading.

``load(checkpoint, device, family)`` returns a `tessera.models.spec.LoadedModel`: an ``eval()``
module on ``device`` whose ``forward(s2, s1)`` takes the reference's tensors (s2 ``(B, T, 11)`` =
10 standardised bands + raw DOY, s1 ``(B, T, 3)`` = [VV, VH] standardised + raw DOY) and returns
``(B, output_dim)``, plus the `InputSpec` telling `tessera.infer` how to build those tensors.

Families (reference-spec sections 3-5):

* ``v1.0``: ``{"model_state_dict" | "model_state": state}``, keys with ``nn.GRU`` pooling
  (``attn_pool.temporal_context.weight_ih_l0``), d_model 512, 8 layers; output 128.
* ``v1.0-qat``: same wrapper, hand-written GRU pooling (``gru_cell`` keys), d_model 512, 4 layers; output 128.
* ``v1.1``: same wrapper, d_model 768 and an MLP reducer (``dim_reducer.4``); output 192, 128 saved.
  Its normalisation table depends on ``source`` (planetary-computer/stac -> mpc, earth-search/opera -> aws).
* ``v2-nano`` ... ``v2-large``: ``{"args": {...}, "model": state}``; output ``dimensions``
  (Matryoshka prefix of the 128-d, LayerNorm-ed embedding).
* ``demo``: ``checkpoint=None``; a tiny v1.0-style model with seeded random weights.

Checkpoints written by `tessera.train` have the same layouts plus an ``arch`` entry
(`tessera.models.arch`), so they may have any size: a trained demo-sized model loads as ``v1.0``.

Loading is stricter than the reference: after the documented clean-up (``_orig_mod.`` removed,
training-only ``projector.*`` / ``segmented_matryoshka_projector.*`` keys dropped) every key and
shape must match, for v1.1 too (the reference loads v1.1 with ``strict=False``). Any problem
raises `tessera.errors.CheckpointError`. Files are read with ``torch.load(weights_only=True)``: a
checkpoint is never allowed to run code.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tessera.errors import CheckpointError, ConfigError
from tessera.io import sha256_file
from tessera.models import demo, v1, v1_1, v1_qat, v2
from tessera.models.arch import Architecture, default_for_family
from tessera.models.spec import InputSpec, LoadedModel

__all__ = ["FAMILIES", "InputSpec", "LoadedModel", "check", "detect_family", "load", "load_payload"]

logger = logging.getLogger(__name__)

FAMILIES = ("auto", "v1.0", "v1.0-qat", "v1.1", "v2", "v2-nano", "v2-small", "v2-medium", "v2-large", "demo")
"""Values accepted by ``load(family=...)``."""

_STATE_KEYS = ("model_state", "model_state_dict")
_SHOWN_KEYS = 12

# Non-tensor objects real training scripts leave in checkpoints (argparse args, NumPy metrics);
# allowing them keeps weights_only=True, which still refuses anything that would run code.
# NumPy 2 moved numpy.core to numpy._core; files pickled under NumPy 1 name the old module.
try:
    _multiarray = importlib.import_module("numpy._core.multiarray")
except ImportError:  # NumPy 1.26 (the pyproject lower bound)
    _multiarray = importlib.import_module("numpy.core.multiarray")
_SAFE_GLOBALS: list[Any] = [
    argparse.Namespace,
    np.dtype,
    np.ndarray,
    *{type(np.dtype(code)) for code in "?bBhHiIlLqQefdgFD"},
    *(
        (getattr(_multiarray, name), f"{module}.multiarray.{name}")
        for name in ("scalar", "_reconstruct")
        for module in ("numpy.core", "numpy._core")
    ),
]


def load_payload(path: Path, *, mmap: bool = False) -> Any:
    """Read a checkpoint file on the CPU without executing any code from it.

    Args:
        path: The checkpoint file.
        mmap: Map the tensors' storage instead of reading it (cheap when only keys and shapes are
            needed); falls back to a full read for files in PyTorch's legacy format.

    Raises:
        CheckpointError: If the file is missing, unreadable, or needs arbitrary code to unpickle.
    """
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a directory; set model.checkpoint to the checkpoint file in it")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; check model.checkpoint in the config")
    try:
        with torch.serialization.safe_globals(_SAFE_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap and zipfile.is_zipfile(path))
    except pickle.UnpicklingError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        refused = [line for line in lines if "Unsupported global" in line]
        if not refused:
            # arbitrary bytes are read as a legacy pickle and fail on an unknown opcode, not on a global
            detail = next((line for line in lines if line.startswith("Unsupported")), "not a pickle")
            raise CheckpointError(
                f"checkpoint {path} is corrupt or not a PyTorch file ({detail}); download it again"
            ) from exc
        raise CheckpointError(
            f"checkpoint {path} holds objects that are not plain tensors/containers and would need code to load "
            f"({refused[0]}); re-save only its state dict (and args) with torch.save"
        ) from exc
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as exc:
        raise CheckpointError(
            f"checkpoint {path} is corrupt or not a PyTorch file ({type(exc).__name__}: {exc}); download it again"
        ) from exc


def _extract_state(payload: Any, path: Path) -> dict[str, torch.Tensor]:
    """The v1.x state dict under ``model_state`` / ``model_state_dict`` (or the payload), ``_orig_mod.`` removed."""
    if isinstance(payload, Mapping):
        raw = next((payload[key] for key in _STATE_KEYS if key in payload), payload)
        if isinstance(raw, Mapping) and raw and all(isinstance(v, torch.Tensor) for v in raw.values()):
            # torch.compile wraps modules as "_orig_mod"; the QAT loader removes it anywhere in a key
            return {str(k).replace("_orig_mod.", ""): v for k, v in raw.items()}
    top = sorted(payload)[:_SHOWN_KEYS] if isinstance(payload, Mapping) else type(payload).__name__
    raise CheckpointError(
        f"checkpoint {path} holds no model state dict (top-level: {top}); expected 'model_state_dict' or "
        "'model_state' (TESSERA v1.x) or 'args' + 'model' (v2 students)"
    )


def detect_family(payload: Any, path: Path) -> str:
    """Tell the family of a checkpoint payload from its layout, keys and shapes.

    Returns:
        ``v1.0``, ``v1.0-qat``, ``v1.1`` or ``v2``.

    Raises:
        CheckpointError: If it matches none.
    """
    if isinstance(payload, Mapping) and "args" in payload and "model" in payload:
        return v2.FAMILY
    state = _extract_state(payload, path)
    if "s2_backbone.attn_pool.temporal_context.weight_ih_l0" in state:
        return v1.FAMILY
    if "s2_backbone.attn_pool.temporal_context.gru_cell.W_ir.weight" in state:
        width = state["s2_backbone.embedding.0.weight"].shape[0] if "s2_backbone.embedding.0.weight" in state else 0
        if width == v1_1.D_MODEL or "dim_reducer.4.weight" in state:
            return v1_1.FAMILY
        return v1_qat.FAMILY
    raise CheckpointError(
        f"cannot tell the model family of {path}: it has neither nn.GRU pooling keys (v1.0) nor gru_cell keys "
        "(v1.0-QAT, v1.1); pass model.family explicitly if it is a TESSERA checkpoint"
    )


def _check_keys(model: torch.nn.Module, state: Mapping[str, torch.Tensor], family: str, path: Path) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in sorted(set(expected) & set(state))
        if state[k].shape != expected[k].shape
    ]
    if not (missing or unexpected or shapes):
        return

    def show(label: str, items: list[str]) -> str:
        more = f" ... (+{len(items) - _SHOWN_KEYS} more)" if len(items) > _SHOWN_KEYS else ""
        return f"; {label} ({len(items)}): {', '.join(items[:_SHOWN_KEYS])}{more}" if items else ""

    raise CheckpointError(
        f"checkpoint {path} does not match the {family} architecture"
        + show("missing keys", missing)
        + show("unexpected keys", unexpected)
        + show("shape mismatches", shapes)
        + "; use the checkpoint of that family, or model.family: auto to detect it"
    )


def _load_state(model: torch.nn.Module, state: Mapping[str, torch.Tensor], family: str, path: Path) -> None:
    _check_keys(model, state, family, path)
    # assign=True adopts the loaded tensors instead of copying into freshly initialised ones;
    # float32 first, as a copy into the float32 parameters would do
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()}, assign=True)


def _payload_arch(payload: Any, family: str) -> Architecture:
    """The sizes a `tessera.train` checkpoint records under ``arch``, else the family's released sizes."""
    saved = payload.get("arch") if isinstance(payload, Mapping) else None
    if isinstance(saved, Mapping):
        arch = Architecture.from_dict(saved)
        # a wrong explicit family is left to the key check, which names the mismatch
        if arch.family == family:
            return arch
    return default_for_family(family)


def _build_v1x(
    family: str, payload: Any, path: Path, source: str, dimensions: int
) -> tuple[torch.nn.Module, InputSpec, Architecture]:
    if dimensions != 128:
        raise ConfigError(f"model.dimensions {dimensions} needs a v2 checkpoint; {family} always gives 128 dimensions")
    modules = {v1.FAMILY: v1, v1_qat.FAMILY: v1_qat, v1_1.FAMILY: v1_1}
    family_module = modules[family]
    state = {k: v for k, v in _extract_state(payload, path).items() if not k.startswith(family_module.IGNORED_PREFIXES)}
    arch = _payload_arch(payload, family)
    with torch.device("meta"):
        model = arch.build()
    _load_state(model, state, family, path)
    spec = v1_1.input_spec(source) if family == v1_1.FAMILY else family_module.input_spec()
    return model, spec, arch


def _build_v2(
    family: str, payload: Any, path: Path, dimensions: int
) -> tuple[torch.nn.Module, InputSpec, str, Architecture]:
    if not (isinstance(payload, Mapping) and "args" in payload and isinstance(payload.get("model"), Mapping)):
        raise CheckpointError(f"checkpoint {path} is not a v2 student: expected a dict with 'args' and 'model'")
    args = v2.StudentArgs.from_checkpoint(payload["args"])
    if dimensions not in args.matryoshka_dims:
        raise ConfigError(
            f"model.dimensions {dimensions} is not a Matryoshka prefix of {path}; use one of {args.matryoshka_dims}"
        )
    with torch.device("meta"):
        model = v2.build(args, keep_dims=dimensions)
    state = {str(k).replace("_orig_mod.", ""): v for k, v in payload["model"].items()}
    size = v2.size_name(sum(p.numel() for p in model.parameters()))
    name = f"v2-{size}" if size else "v2"
    _load_state(model, state, name, path)
    if family not in ("auto", "v2", name):
        raise CheckpointError(f"checkpoint {path} is a {name} student, not {family}; set model.family to {name}")
    return model, v2.input_spec(dimensions), name, default_for_family(v2.FAMILY, args)


def _demo(device: torch.device) -> LoadedModel:
    logger.warning(
        "NO CHECKPOINT: using the demo model with seeded RANDOM weights; its embeddings are MEANINGLESS "
        "(set model.checkpoint to a TESSERA checkpoint for real embeddings)"
    )
    module = demo.build().to(device).eval()
    arch = default_for_family(demo.FAMILY).to_dict()
    return LoadedModel(
        module, demo.FAMILY, demo.input_spec(), checkpoint_sha256=None, random_weights=True, architecture=arch
    )


def _build(
    checkpoint: str | Path, family: str, source: str, dimensions: int, *, mmap: bool
) -> tuple[torch.nn.Module, InputSpec, str, Path, Architecture]:
    """The module (weights loaded), its input spec, family name, the checkpoint's path and architecture."""
    path = Path(checkpoint)
    payload = load_payload(path, mmap=mmap)
    # an explicit family is trusted: a wrong one then fails on the key check, which names the mismatch
    detected = detect_family(payload, path) if family == "auto" else ("v2" if family.startswith("v2") else family)
    if detected != v2.FAMILY and isinstance(payload, Mapping) and "args" in payload and "model" in payload:
        raise CheckpointError(
            f"checkpoint {path} is a v2 student checkpoint ('args' + 'model'), not {family}; "
            "set model.family to auto (or to its v2 size) or use a checkpoint of that family"
        )
    if detected == v2.FAMILY:
        module, spec, name, arch = _build_v2(family, payload, path, dimensions)
    else:
        module, spec, arch = _build_v1x(detected, payload, path, source, dimensions)
        name = detected
    return module, spec, name, path, arch


def _check_demo(checkpoint: str | Path | None, dimensions: int) -> None:
    if checkpoint is not None:
        raise ConfigError("model.family demo has seeded random weights and takes no checkpoint; remove one")
    if dimensions != 128:
        raise ConfigError(f"model.dimensions {dimensions} needs a v2 checkpoint; the demo model gives 128")


def check(
    checkpoint: str | Path | None, family: str = "auto", *, source: str = "planetary-computer", dimensions: int = 128
) -> str:
    """Check a checkpoint against the settings without reading its weights; returns the family name.

    Cheap (the file is memory-mapped and only keys and shapes are compared), so the workflow runs
    it when it parses, and a wrong checkpoint fails a dry run rather than the first inference job.

    Raises:
        CheckpointError: Missing, corrupt or unrecognised file, or one that does not fit the family.
        ConfigError: Unknown family, or ``dimensions`` the model cannot give.
    """
    if family not in FAMILIES:
        raise ConfigError(f"unknown model family {family!r}; use one of {', '.join(FAMILIES)}")
    if checkpoint is None or family == "demo":
        _check_demo(checkpoint, dimensions)
        return demo.FAMILY
    return _build(checkpoint, family, source, dimensions, mmap=True)[2]


def load(
    checkpoint: str | Path | None,
    device: str | torch.device = "cpu",
    family: str = "auto",
    *,
    source: str = "planetary-computer",
    dimensions: int = 128,
) -> LoadedModel:
    """Load a TESSERA checkpoint (or the seeded demo model) ready for inference.

    Args:
        checkpoint: Path of the checkpoint file; None gives the demo model with random weights.
        device: Where the module lives (``cpu``, ``cuda``, ``cuda:1`` ...).
        family: One of `FAMILIES`; ``auto`` detects it from the checkpoint.
        source: Data source of the tiles; picks the v1.1 normalisation table.
        dimensions: Output dimensions (v2 Matryoshka prefix: 16, 32, 64 or 128; v1.x needs 128).

    Returns:
        The module in ``eval()`` mode on ``device``, its family, `InputSpec` and checkpoint sha256.

    Raises:
        CheckpointError: Missing, corrupt or unrecognised file, or one that does not fit the family.
        ConfigError: Unknown family, or ``dimensions`` the model cannot give.
    """
    if family not in FAMILIES:
        raise ConfigError(f"unknown model family {family!r}; use one of {', '.join(FAMILIES)}")
    target = torch.device(device)
    if checkpoint is None or family == "demo":
        _check_demo(checkpoint, dimensions)
        return _demo(target)
    module, spec, name, path, arch = _build(checkpoint, family, source, dimensions, mmap=False)
    module = module.to(target).eval()
    sha = sha256_file(path)
    logger.info("loaded %s model from %s (sha256 %s) on %s", name, path, sha[:12], target)
    return LoadedModel(module, name, spec, checkpoint_sha256=sha, architecture=arch.to_dict())
