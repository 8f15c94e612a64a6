"""The training loop: Barlow Twins on two seeded views per pixel, resumable, reproducible on the CPU.

Reproducibility. Everything random comes from the config seed: the initial weights
(`tessera.models.arch.Architecture.build`), the projector, the data order
(`tessera.train.data.PixelStream`) and the views (`tessera.train.views`); the global torch RNG is
seeded too and restored afterwards. On the CPU the run uses deterministic algorithms and a fixed
thread count, so the same seed, data, thread count and machine give the same checkpoint bytes, and a
run resumed from its last ``checkpoint.pt`` (after a SIGKILL, say) with the same thread count ends with
the same bytes as one that was never interrupted. The thread count does not change what is learned, so
a resume may change it (``threads`` is `tessera.train.config.RUN_ONLY`), but the sums are split
differently and the bytes differ: such a resume logs a warning. On a GPU the forward runs under bf16
autocast (``precision: bf16``) and is not bit-reproducible.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import math
import os
import resource
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import tessera
from tessera.errors import ResumeMismatchError, TrainingError
from tessera.io import sha256_file, write_json_atomic
from tessera.models.arch import Architecture, architecture
from tessera.sampling import Norms
from tessera.staging import cpu_threads, resolve_device
from tessera.train.checkpoint import ENCODER_NAME, FULL_NAME, read_resume, save_encoder, save_full
from tessera.train.config import TrainConfig
from tessera.train.data import PixelStream, TileSource, TrainingData, scan
from tessera.train.loss import ProjectionHead, barlow_twins_loss
from tessera.train.views import make_views, to_tensors

__all__ = ["SIDECAR_NAME", "TrainResult", "learning_rate", "train"]

logger = logging.getLogger(__name__)

SIDECAR_NAME = "train.json"


def learning_rate(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, a plateau at the peak, then a cosine decay to 0 over the remaining steps.

    The reference names ``warmup_ratio`` and ``plateau_ratio`` (both 0.2) but not the decay's shape.
    """
    warmup = int(cfg.warmup_ratio * cfg.steps)
    plateau_end = warmup + int(cfg.plateau_ratio * cfg.steps)
    if step < warmup:
        return cfg.learning_rate * (step + 1) / warmup
    if step < plateau_end:
        return cfg.learning_rate
    progress = (step - plateau_end) / max(1, cfg.steps - plateau_end)
    return cfg.learning_rate * 0.5 * (1 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class TrainResult:
    """What a training run produced."""

    encoder: Path
    """The encoder checkpoint (`tessera.models.load` reads it)."""
    checkpoint: Path
    """The full, resumable checkpoint."""
    steps: int
    """Steps done (fewer than configured if ``max_seconds`` stopped the run)."""
    complete: bool
    """Whether all configured steps were done."""
    final_loss: float
    """Loss of the last step."""
    pixels_per_second: float
    """Training pixels (each with its two views) per second after this process's first step (which pays
    for allocations and warm-up), data reading and checkpoints included."""


def _threads(cfg: TrainConfig) -> int:
    return cfg.threads if cfg.threads is not None else cpu_threads()


def _output_dir(out: Path) -> None:
    """Create the output directory (with its parents) and check that files can be written there.

    Raises:
        TrainingError: ``out`` is a file, lies below one, or cannot be created or written to.
    """
    fix = "pass --out-dir a directory that can be written to (it is created if missing)"
    if out.exists() and not out.is_dir():
        raise TrainingError(f"the output directory {out} is a file, not a directory; {fix}, or move the file away")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:  # a parent that is a file, no permission, a read-only file system
        raise TrainingError(f"cannot write to the output directory {out} ({exc}); {fix}") from exc


@contextlib.contextmanager
def _reproducible(device: torch.device, threads: int, seed: int) -> Iterator[None]:
    """Seeded global RNG, deterministic kernels and a fixed thread count (CPU); all restored afterwards."""
    previous = (torch.are_deterministic_algorithms_enabled(), torch.get_num_threads())
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        if device.type == "cpu":
            torch.use_deterministic_algorithms(True)
            torch.set_num_threads(threads)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(previous[0])
            torch.set_num_threads(previous[1])


class _Model(torch.nn.Module):
    """Encoder + projector: ``forward`` gives the projector output of a batch of one view."""

    def __init__(self, encoder: torch.nn.Module, projector: torch.nn.Module) -> None:
        super().__init__()
        self.encoder, self.projector = encoder, projector

    def forward(self, s2: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        """``(B, hidden)`` projections."""
        return self.projector(self.encoder(s2, s1))  # type: ignore[no-any-return]


def _build(arch: Architecture, cfg: TrainConfig, device: torch.device) -> tuple[_Model, torch.optim.Optimizer]:
    encoder = arch.build(seed=cfg.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed + 1)
        projector = ProjectionHead(arch.output_dim(), cfg.projector_dim, cfg.projector_layers)
    model = _Model(encoder, projector).to(device).train()
    # matrices decay; biases and norm gains do not (the usual AdamW split)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    return model, torch.optim.AdamW(groups, lr=cfg.learning_rate)


def _meta(cfg: TrainConfig, data: TrainingData, device: torch.device, threads: int) -> dict[str, Any]:
    return {
        "config": cfg.to_dict(),
        "provenance": {
            "tiles": [dict(p) for p in data.provenance],
            "eligible_pixels": data.pixels,
            "pipeline_version": tessera.__version__,
            "torch_version": str(torch.__version__),
            "device": device.type,
            "threads": threads if device.type == "cpu" else None,
        },
    }


def _resume(
    path: Path,
    arch: Architecture,
    cfg: TrainConfig,
    data: TrainingData,
    model: _Model,
    opt: torch.optim.Optimizer,
    threads: int,
) -> tuple[int, list[list[float]]]:
    state = read_resume(path, arch, cfg, [dict(p) for p in data.provenance])
    device = next(model.parameters()).device
    done_with = (state.device, state.threads)
    if device.type == "cpu" and state.step < cfg.steps and state.device is not None and done_with != ("cpu", threads):
        before = f"with {state.threads} CPU threads" if state.device == "cpu" else f"on {state.device}"
        logger.warning(
            "resuming %s with %d CPU threads, but its first %d of %d steps ran %s: the run goes on, but its "
            "checkpoints will not be byte-identical to those of an uninterrupted run (CPU results depend on the "
            "thread count); resume with the same thread count (--threads) where identical bytes matter",
            path, threads, state.step, cfg.steps, before,
        )  # fmt: skip
    model.encoder.load_state_dict(state.encoder)
    model.projector.load_state_dict(state.projector)
    opt.load_state_dict(state.optimizer)
    torch.set_rng_state(state.rng["torch"])
    if "cuda" in state.rng and next(model.parameters()).is_cuda:
        torch.cuda.set_rng_state_all(state.rng["cuda"])
    logger.info("resuming from %s at step %d of %d", path, state.step, cfg.steps)
    return state.step, state.history


def _step(
    model: _Model, opt: torch.optim.Optimizer, views: tuple[Any, Any], cfg: TrainConfig, bf16: bool, lr: float
) -> list[float]:
    for group in opt.param_groups:
        group["lr"] = lr
    device_type = views[0][0].device.type
    with torch.autocast(device_type, dtype=torch.bfloat16, enabled=bf16):
        z1 = model(*views[0])
        z2 = model(*views[1])
    terms = barlow_twins_loss(z1, z2, cfg.barlow_lambda)
    opt.zero_grad(set_to_none=True)
    terms.loss.backward()
    opt.step()
    return [float(terms.loss.detach()), float(terms.invariance.detach()), float(terms.redundancy.detach()), lr]


def train(
    cfg: TrainConfig,
    sources: Sequence[TileSource],
    out_dir: str | Path,
    *,
    resume: bool | Path = True,
    restart_if_changed: bool = False,
) -> TrainResult:
    """Train ``cfg.arch`` with Barlow Twins on the tiles and write ``encoder.pt``, ``checkpoint.pt``, ``train.json``.

    Args:
        cfg: Training settings.
        sources: Tile directories (`tessera.train.data.find_tiles`).
        out_dir: Output directory.
        resume: True: continue from ``out_dir/checkpoint.pt`` if there is one; a path: continue from that
            full checkpoint; False: start afresh (an existing checkpoint is overwritten).
        restart_if_changed: With ``resume=True``: if ``out_dir/checkpoint.pt`` belongs to another run
            (another architecture, other learned settings or other tiles), rename it to
            ``checkpoint.pt.stale-<UTC time>`` (its ``encoder.pt`` and ``train.json`` likewise) and start
            afresh instead of raising. For callers that always train into the same directory (the
            workflow's ``train`` rule, the demo).

    Raises:
        ArchitectureError: ``cfg.arch`` is not a known architecture.
        TrainingError: No usable pixel, the resume checkpoint is not a full training checkpoint, or
            ``out_dir`` is a file or cannot be created or written to.
        ResumeMismatchError: The resume checkpoint is of another run (architecture, settings, tiles) and
            ``restart_if_changed`` does not apply.
        TileError: A tile directory is malformed.
        ConfigError: ``cfg.device`` is cuda and PyTorch sees no CUDA device.
    """
    arch = architecture(cfg.arch)
    device, out = resolve_device(cfg.device, "device (config/train.yaml or --device)"), Path(out_dir)
    threads = _threads(cfg)
    _output_dir(out)  # before the tiles are scanned, not at the first checkpoint
    started, clock = dt.datetime.now(dt.UTC), time.monotonic()
    data = scan(sources, cfg.min_valid_timesteps, cfg.piece_pixels)
    stream = PixelStream(data, cfg.batch_size, cfg.buffer_pixels, cfg.piece_pixels, cfg.seed)
    meta = _meta(cfg, data, device, threads)
    logger.info(
        "training %s on %d eligible pixels of %d tiles (%.2f epochs of %d steps, batch %d) on %s",
        arch.name, data.pixels, len(sources), cfg.steps / stream.steps_per_epoch, cfg.steps, cfg.batch_size, device,
    )  # fmt: skip
    with _reproducible(device, threads, cfg.seed):
        model, opt = _build(arch, cfg, device)
        start, history = 0, list[list[float]]()
        resume_from = out / FULL_NAME if resume is True else (Path(resume) if resume else None)
        if resume_from is not None and (resume is not True or resume_from.is_file()):
            try:
                start, history = _resume(resume_from, arch, cfg, data, model, opt, threads)
            except ResumeMismatchError as err:
                if not (restart_if_changed and resume is True):
                    raise
                # nothing was loaded yet (read_resume checks before anything is set): a fresh start as-is.
                # The other run's encoder and sidecar go aside with it, so that no file here describes
                # another run while this one trains.
                stamp = f"stale-{started:%Y%m%dT%H%M%SZ}"
                for name in (FULL_NAME, ENCODER_NAME, SIDECAR_NAME):
                    if (out / name).is_file():
                        os.replace(out / name, out / f"{name}.{stamp}")
                logger.warning(
                    "%s belongs to another run, so it was moved to %s (with its %s and %s); training afresh (%s)",
                    resume_from, out / f"{FULL_NAME}.{stamp}", ENCODER_NAME, SIDECAR_NAME, err,
                )  # fmt: skip
        step, last, rate = _loop(model, opt, stream, cfg, device, start, history, (out, arch, meta), clock)
        save_encoder(out / ENCODER_NAME, arch, model.encoder, meta, step)
    seconds = time.monotonic() - clock
    result = TrainResult(out / ENCODER_NAME, out / FULL_NAME, step, step >= cfg.steps, last, rate)
    _write_sidecar(out / SIDECAR_NAME, result, started, seconds, start, device, threads, history)
    return result


def _loop(
    model: _Model,
    opt: torch.optim.Optimizer,
    stream: PixelStream,
    cfg: TrainConfig,
    device: torch.device,
    start: int,
    history: list[list[float]],
    where: tuple[Path, Architecture, dict[str, Any]],
    clock: float,
) -> tuple[int, float, float]:
    """Run steps ``start..cfg.steps`` (or until ``max_seconds``): the steps done, the last loss, pixels/s."""
    out, arch, meta = where
    norms = Norms.from_spec(arch.input_spec(cfg.source), device)
    bf16 = device.type == "cuda" and cfg.precision == "bf16"
    sizes = (cfg.sample_size_s2, cfg.sample_size_s1)
    done, loss, tick = start, math.nan, time.monotonic()
    first = stepped = tick
    for step, epoch, batch in stream.batches(start):
        if step >= cfg.steps:
            break
        views = make_views(to_tensors(batch, device), cfg.seed, epoch, sizes, norms)
        record = _step(model, opt, views, cfg, bf16, learning_rate(step, cfg))
        stepped = time.monotonic()  # before any checkpoint of this step, so a last save is not timed
        loss = record[0]
        if not math.isfinite(loss):
            raise TrainingError(f"the loss became {loss} at step {step + 1}; lower learning_rate and start again")
        done = step + 1
        if done == start + 1:
            first = stepped
        if done % cfg.log_every == 0 or done == cfg.steps:
            history.append([float(done), *record])
            rate = cfg.log_every * cfg.batch_size / max(time.monotonic() - tick, 1e-9)
            logger.info(
                "step %d/%d epoch %d loss %.4f lr %.2e (%.0f px/s)", done, cfg.steps, epoch, loss, record[3], rate
            )
            tick = time.monotonic()
        out_of_time = cfg.max_seconds is not None and time.monotonic() - clock > cfg.max_seconds
        if done % cfg.checkpoint_every == 0 or done == cfg.steps or out_of_time:
            save_full(out / FULL_NAME, arch, model.encoder, model.projector, opt, meta, done, history)
        if out_of_time and done < cfg.steps:
            logger.warning(
                "max_seconds %s reached after %d of %d steps: stopping early", cfg.max_seconds, done, cfg.steps
            )
            break
    timed = done - start - 1
    return done, loss, timed * cfg.batch_size / max(stepped - first, 1e-9) if timed > 0 else math.nan


def _write_sidecar(
    path: Path,
    result: TrainResult,
    started: dt.datetime,
    seconds: float,
    start: int,
    device: torch.device,
    threads: int,
    history: list[list[float]],
) -> None:
    """Run facts that must stay out of the checkpoints (times, speed, memory)."""
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    write_json_atomic(
        path,
        {
            "started": started.isoformat(timespec="seconds"),
            "seconds": round(seconds, 3),
            "resumed_at_step": start,
            "steps_done": result.steps,
            "complete": result.complete,
            # NaN (no step run by this process) is not JSON
            "final_loss": result.final_loss if math.isfinite(result.final_loss) else None,
            "pixels_per_second": round(result.pixels_per_second, 1)
            if math.isfinite(result.pixels_per_second)
            else None,
            "peak_rss_mib": round(peak_mib, 1),
            "device": device.type,
            "threads": threads,
            "history_columns": ["step", "loss", "invariance", "redundancy", "learning_rate"],
            "history": history,
            "encoder": result.encoder.name,
            "encoder_sha256": sha256_file(result.encoder),
        },
    )
