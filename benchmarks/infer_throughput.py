"""Inference throughput: the reference's per-pixel path against `tessera.infer`, on one synthetic tile.

Both run in this process on the same v1.0-sized model (random weights saved to a temporary
checkpoint and loaded through `tessera.models.load`) and the same pixels:

* baseline: the reference's path (reference-spec 3.2, 3.4): per-pixel NumPy sampling with
  ``np.random.choice``, fp32 forward, batches of 1024;
* ours: `tessera.infer.infer_arrays` (seeded vectorised sampling on the device, bf16 autocast on a GPU).

Prints pixels per second of each, their ratio, and the cosine similarity of our embeddings to an fp32
run of ours (min over pixels and mean). Example: ``python benchmarks/infer_throughput.py --pixels 256``
on a CPU; ``--device cuda`` with all 250,000 pixels on a GPU.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tessera import models
from tessera.infer import infer_arrays
from tessera.models import v1
from tessera.models.spec import LoadedModel
from tessera.staging import resolve_device
from tessera.tileio import TileArrays
from tests.tilegen import cut, make_world


def _baseline_sequences(tile: TileArrays, pixels: np.ndarray, model: LoadedModel) -> tuple[np.ndarray, np.ndarray]:
    """The reference's ``sample_s2_batch`` / ``sample_s1_batch`` for each pixel, in a Python loop."""
    spec = model.spec
    bands = tile.bands.astype(np.float32)
    masks = tile.masks.astype(np.int32)
    sar = np.concatenate((tile.sar_ascending, tile.sar_descending)).astype(np.float32)
    sar_doy = np.concatenate((tile.sar_ascending_doy, tile.sar_descending_doy)).astype(np.float32)
    s2_mean, s2_std = np.array(spec.s2_mean, np.float32), np.array(spec.s2_std, np.float32)
    s1_mean, s1_std = np.array(spec.s1a_mean, np.float32), np.array(spec.s1a_std, np.float32)
    doys = tile.doys.astype(np.float32)
    s2_out = np.empty((len(pixels), spec.s2_steps, 11), np.float32)
    s1_out = np.empty((len(pixels), spec.s1_steps, 3), np.float32)
    w = tile.shape[1]
    for k, p in enumerate(pixels):
        i, j = divmod(int(p), w)
        valid = np.nonzero(masks[:, i, j])[0]
        idx = np.sort(np.random.choice(valid, spec.s2_steps, replace=len(valid) < spec.s2_steps))
        s2_out[k] = np.hstack(((bands[idx, i, j] - s2_mean) / (s2_std + 1e-9), doys[idx, None]))
        valid = np.nonzero(np.any(sar[:, i, j] != 0, axis=-1))[0]
        idx = np.sort(np.random.choice(valid, spec.s1_steps, replace=len(valid) < spec.s1_steps))
        s1_out[k] = np.hstack(((sar[idx, i, j] - s1_mean) / (s1_std + 1e-9), sar_doy[idx, None]))
    return s2_out, s1_out


def baseline(model: LoadedModel, tile: TileArrays, pixels: np.ndarray, device: torch.device) -> float:
    """Run the reference-style path; returns pixels per second."""
    np.random.seed(0)
    start = time.perf_counter()
    with torch.no_grad():
        for b0 in range(0, len(pixels), 1024):
            s2, s1 = _baseline_sequences(tile, pixels[b0 : b0 + 1024], model)
            model.module(torch.from_numpy(s2).to(device), torch.from_numpy(s1).to(device)).cpu()
    return len(pixels) / (time.perf_counter() - start)


def main() -> None:
    """Parse arguments, build the tile and model, run both paths and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pixels", type=int, default=None, help="limit the pixels embedded (default: all 250,000)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--size", type=int, default=500, help="tile size in pixels")
    parser.add_argument("--dates", type=int, default=60, help="S2 dates (S1: half per orbit)")
    parser.add_argument("--batch-size", type=int, default=None, help="ours: GPU batch (default from free memory)")
    parser.add_argument("--skip-baseline", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    device = resolve_device(args.device)

    world = make_world(
        1, args.size, args.size, t_s2=args.dates, t_asc=args.dates // 2, t_desc=args.dates // 2, empty_fraction=0.0
    )
    tile, grid = cut(world, 0, 0, args.size)
    roi = np.ones(tile.shape, np.uint8)
    n = args.pixels or roi.size
    roi.ravel()[n:] = 0
    tile = replace(tile, roi=roi)

    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        path = Path(tmp) / "v1_random.pt"
        torch.save({"model_state_dict": v1.build().state_dict()}, path)
        model = models.load(path, device, "auto")
    print(f"model {model.family}, {sum(p.numel() for p in model.module.parameters()):,} parameters, device {device}")

    counts = (tile.masks.sum(0) > 0) & (
        (tile.sar_ascending != 0).any(-1).sum(0) + (tile.sar_descending != 0).any(-1).sum(0) > 0
    )
    pixels = np.flatnonzero((roi > 0) & counts)
    base = None if args.skip_baseline else baseline(model, tile, pixels, device)

    kw = {"origin": (grid.col, grid.row), "year": 2024, "device": device, "batch_size": args.batch_size}
    if device.type == "cuda":  # warm-up: cuDNN/cuBLAS autotuning and the batch-size probe
        infer_arrays(model, replace(tile, roi=np.pad(np.ones((8, 8), np.uint8), ((0, args.size - 8),) * 2)), **kw)
        torch.cuda.synchronize()
    start = time.perf_counter()
    ours = infer_arrays(model, tile, precision="bf16", **kw)
    ours_pps = len(pixels) / (time.perf_counter() - start)
    ref = ours if device.type == "cpu" else infer_arrays(model, tile, precision="fp32", **kw)

    a = ours.embeddings[ours.valid].astype(np.float64)
    b = ref.embeddings[ref.valid].astype(np.float64)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    print(f"pixels: {len(pixels)}  device: {device}  precision: {ours.precision}")
    if base is not None:
        print(f"baseline (reference path, fp32, batch 1024): {base:,.1f} px/s")
    print(f"ours: {ours_pps:,.1f} px/s" + (f"  ratio ours/baseline: {ours_pps / base:.2f}x" if base else ""))
    print(f"cosine to fp32 run of ours: min {cos.min():.6f}  mean {cos.mean():.6f}")


if __name__ == "__main__":
    main()
