"""Training throughput: `tessera.train.train` against a plain PyTorch loop over the same tiles.

Each loop runs in a fresh child process of its own, per architecture (the demo model and the v1.0
size), on seeded synthetic reference-layout tiles written to a temporary directory (no network, no
server), so that neither loop's peak memory includes the other's. The plain loop runs for
``--seconds`` (and at least 3 timed steps), then ours runs as many steps (at least 4):

* ours: `tessera.train.train` (tiles memory-mapped and streamed through the shuffle buffer, views drawn
  vectorised on the device, bf16 autocast on a GPU, checkpoints as configured);
* baseline: what one writes without the package, the reference's way (reference-spec 3.2): all tiles
  loaded into RAM, the eligible pixels listed, then per step ``np.random.choice`` of a batch and, per
  pixel and view, ``np.random.choice`` of 40 S2 and 40 S1 steps in a Python loop, the same model,
  projector, loss, optimiser and precision.

Prints training pixels per second (each pixel seen as two views; the first step of each loop is not
timed), the peak memory of each loop's process: on the CPU its peak resident set size (it includes
the interpreter and PyTorch, ~0.3 GB), on a GPU the peak of ``torch.cuda.max_memory_allocated``;
and the ratio of the two speeds. ``--device auto`` (the default) is the pipeline's own choice
(`tessera.staging.resolve_device`): CUDA when PyTorch sees it, else the CPU.
Example: ``python benchmarks/train_throughput.py --seconds 20`` (CPU; ``--threads 1`` on a busy machine),
``--device cuda --seconds 15`` on a GPU (about 1.5 minutes in all).
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tessera.layout import tile_name
from tessera.models.arch import architecture
from tessera.staging import resolve_device
from tessera.tileio import read_tile
from tessera.train import ProjectionHead, TrainConfig, barlow_twins_loss, find_tiles, train
from tests.tilegen import cut, make_world, write_tile_dir

_PROJECTOR = (2048, 3)  # width, BatchNorm blocks: the reference's 2048 width, a shallower head to keep it quick
_BATCH = {("cpu", "demo"): 128, ("cpu", "v1.0"): 8, ("cuda", "demo"): 2048, ("cuda", "v1.0"): 256}


def write_tiles(root: Path, side: int, size: int, dates: int) -> None:
    """Seeded tiles of one synthetic world under ``root/2022/tiles/bench/``."""
    world = make_world(0, side, side, t_s2=dates, t_asc=dates // 2, t_desc=dates // 2, valid_fraction=0.75)
    for x0 in range(0, side, size):
        for y0 in range(0, side, size):
            tile, grid = cut(world, x0, y0, size)
            write_tile_dir(root / "2022" / "tiles" / "bench" / tile_name(x0, y0, x0 + size, y0 + size), tile, grid)


def _peak_gib(device: torch.device) -> float:
    """This process's peak: GPU memory allocated by PyTorch, or resident set size on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def run_ours(root: Path, arch: str, batch: int, steps: int, device: torch.device, out: Path, threads: int) -> float:
    """Pixels/s of `tessera.train.train` over ``steps`` steps (the first one untimed)."""
    cfg = TrainConfig(
        arch=arch, steps=steps, batch_size=batch, device=device.type, threads=threads,
        projector_dim=_PROJECTOR[0], projector_layers=_PROJECTOR[1], checkpoint_every=10**6, log_every=5,
    )  # fmt: skip
    return train(cfg, find_tiles([root], [2022]), out, resume=False).pixels_per_second


def _load_all(root: Path) -> list[dict[str, np.ndarray]]:
    """Every tile's arrays in RAM as float32, and its eligible pixels (20+ valid S2 and S1 steps)."""
    tiles = []
    for src in find_tiles([root], [2022]):
        t, _ = read_tile(src.path, mmap=False)
        sar = np.concatenate((t.sar_ascending, t.sar_descending)).astype(np.float32)
        n2, n1 = t.masks.sum(0), np.any(sar != 0, -1).sum(0)
        tiles.append({
            "bands": t.bands.astype(np.float32), "masks": t.masks, "doys": t.doys.astype(np.float32), "sar": sar,
            "sar_doy": np.concatenate((t.sar_ascending_doy, t.sar_descending_doy)).astype(np.float32),
            "pixels": np.argwhere((t.roi > 0) & (n2 >= 20) & (n1 >= 20)),
        })  # fmt: skip
    return tiles


def _sample(tile: dict[str, np.ndarray], i: int, j: int, st: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The reference's ``sample_s2_batch`` / ``sample_s1_batch`` for one pixel (40 + 40 steps)."""
    valid = np.nonzero(tile["masks"][:, i, j])[0]
    idx = np.sort(np.random.choice(valid, 40, replace=len(valid) < 40))
    s2 = np.hstack(((tile["bands"][idx, i, j] - st["s2_mean"]) / (st["s2_std"] + 1e-9), tile["doys"][idx, None]))
    valid = np.nonzero(np.any(tile["sar"][:, i, j] != 0, -1))[0]
    idx = np.sort(np.random.choice(valid, 40, replace=len(valid) < 40))
    s1 = np.hstack(((tile["sar"][idx, i, j] - st["s1a_mean"]) / (st["s1a_std"] + 1e-9), tile["sar_doy"][idx, None]))
    return s2.astype(np.float32), s1.astype(np.float32)


def run_baseline(root: Path, arch_name: str, batch: int, seconds: float, device: torch.device) -> tuple[float, int]:
    """Pixels/s of the plain loop (see the module docstring) over ``seconds`` and at least 3 timed steps,
    and the number of steps it took."""
    np.random.seed(0)
    tiles = _load_all(root)
    arch = architecture(arch_name)
    spec = arch.input_spec()
    stats = {k: np.asarray(getattr(spec, k), np.float32) for k in ("s2_mean", "s2_std", "s1a_mean", "s1a_std")}
    encoder = arch.build(seed=0).to(device).train()
    projector = ProjectionHead(arch.output_dim(), *_PROJECTOR).to(device).train()
    opt = torch.optim.AdamW([*encoder.parameters(), *projector.parameters()], lr=1e-3, weight_decay=1e-4)
    bf16 = device.type == "cuda"
    steps, start = 0, None
    while start is None or time.monotonic() - start < seconds or steps < 3:
        views = []
        for _ in range(2):
            picks = [(t, *t["pixels"][np.random.randint(len(t["pixels"]))]) for t in
                     (tiles[np.random.randint(len(tiles))] for _ in range(batch))]  # fmt: skip
            pairs = [_sample(t, i, j, stats) for t, i, j in picks]
            views.append([torch.from_numpy(np.stack(x)).to(device) for x in zip(*pairs, strict=True)])
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            z1, z2 = (projector(encoder(*v)) for v in views)
        loss = barlow_twins_loss(z1, z2, 5e-3).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if start is None:
            start = time.monotonic()  # the first step (allocations, kernel selection) is not timed
        else:
            steps += 1
    return steps * batch / (time.monotonic() - start), steps + 1


def _child(loop: str, args: dict[str, Any], queue: Any) -> None:
    device = torch.device(args["device"])
    torch.set_num_threads(args["threads"])
    root, arch, batch = Path(args["root"]), args["arch"], args["batch"]
    if loop == "plain":
        rate, steps = run_baseline(root, arch, batch, args["seconds"], device)
    else:
        steps = args["steps"]
        rate = run_ours(root, arch, batch, steps, device, root / f"out-{arch}", args["threads"])
    queue.put({"rate": rate, "steps": steps, "peak_gib": _peak_gib(device)})


def in_child(loop: str, **args: Any) -> dict[str, Any]:
    """Run ``loop`` (``plain`` or ``ours``) in a fresh interpreter: its speed, steps and peak memory."""
    ctx = mp.get_context("spawn")  # no memory (and no CUDA context) inherited from this process
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(loop, args, queue))
    proc.start()
    proc.join()  # the result is a few bytes: it fits the pipe, so the child can exit before it is read
    if proc.exitcode != 0:
        raise RuntimeError(
            f"the {loop} loop for {args['arch']} failed (exit code {proc.exitcode}); see its traceback above"
        )
    result: dict[str, Any] = queue.get(timeout=10)
    return result


def main() -> None:
    """Write the tiles, run both loops per architecture (each in its own process), print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--seconds", type=float, default=20.0, help="timed seconds per loop and architecture")
    parser.add_argument("--archs", nargs="+", default=["demo", "v1.0"], help="architectures to time")
    parser.add_argument("--batch-size", type=int, default=None, help="pixels per step (default per device/arch)")
    parser.add_argument("--side", type=int, default=128, help="synthetic world side in pixels (4 tiles)")
    parser.add_argument("--dates", type=int, default=60, help="S2 dates (S1: half per orbit)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads of both loops (default: all)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    device = resolve_device(args.device)
    threads = args.threads or torch.get_num_threads()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_tiles(root, args.side, args.side // 2, args.dates)
        for arch in args.archs:
            batch = args.batch_size or _BATCH.get((device.type, arch), 64)
            common = {"root": str(root), "arch": arch, "batch": batch, "device": str(device), "threads": threads}
            # the plain loop first: ours then runs as many steps as it did (at least 4), so both do similar work
            base = in_child("plain", seconds=args.seconds, **common)
            ours = in_child("ours", steps=max(4, base["steps"]), **common)
            rows.append((arch, batch, ours["steps"], ours["rate"], ours["peak_gib"], base["rate"], base["peak_gib"]))
    memory = "peak GPU GiB" if device.type == "cuda" else "peak RSS GiB"
    print(f"device {device} ({threads} threads), plain loop >= {args.seconds:g} s, projector {_PROJECTOR}")
    head = f"{'arch':<6} {'batch':>5} {'steps':>5} {'ours px/s':>10} {memory:>13} {'plain px/s':>11} {memory:>13}"
    print(head + f" {'ours/plain':>10}")
    for arch, batch, steps, ours_rate, om, base_rate, bm in rows:
        print(
            f"{arch:<6} {batch:>5} {steps:>5} {ours_rate:>10.1f} {om:>13.2f} {base_rate:>11.1f} {bm:>13.2f}"
            f" {ours_rate / base_rate:>9.2f}x"
        )


if __name__ == "__main__":
    main()
