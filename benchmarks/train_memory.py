"""Measure the peak memory of training steps and compare it with the estimate.

Each setting runs in a fresh process: build a Trainer on a random volume just larger than
the crop, then run a few steps; the step's memory is the growth of the peak resident set
(``ru_maxrss``) over the resident set before the first step. Prints a Markdown table
(measured, estimated by :func:`napari_cetpick.memory.estimate_train_memory_bytes`, ratio).

    python benchmarks/train_memory.py            # the calibration set (CPU, a few minutes)
    python benchmarks/train_memory.py --device cuda
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

SETTINGS = [  # arch, batch, crop_z, crop_xy
    ("unet_small", 2, 6, 64),
    ("unet_small", 2, 6, 128),
    ("unet_small", 2, 6, 256),
    ("unet_small", 2, 16, 128),
    ("unet_small", 4, 10, 64),
    ("unet_4", 2, 6, 128),
    ("unet_5", 2, 6, 128),
]

_CHILD = r"""
import gc, json, resource, sys
import numpy as np
import psutil
arch, batch, cz, cxy, steps, device = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
import torch
from napari_cetpick.config import TrainConfig
from napari_cetpick.train import Trainer
rng = np.random.default_rng(0)
vol = rng.normal(size=(cz + 2, cxy + 16, cxy + 16)).astype(np.float32)
lab = np.array([[cz / 2 + 1, cxy / 2 + 8, cxy / 2 + 8]])
cfg = TrainConfig(bbox=12, bin=1, arch=arch, batch_size=batch, crop_z=cz, crop_xy=cxy, max_steps=steps, tau=0.05)
tr = Trainer([vol], [lab], cfg, device=device, check_memory=False)
gc.collect()
cuda = tr.device.type == "cuda"
if cuda:
    torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
rss0 = psutil.Process().memory_info().rss
max0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
for _ in tr.steps(calibrate=False):
    pass
max1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
out = {"step_bytes": max1 - rss0, "init_peak_above": max(0, max0 - rss0)}
if cuda:
    out["step_bytes"] = torch.cuda.max_memory_allocated() - base
print(json.dumps(out))
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    from napari_cetpick.config import TrainConfig
    from napari_cetpick.memory import estimate_train_memory_bytes

    print("| arch | batch | crop z | crop xy | measured MB | estimated MB | estimate / measured |")
    print("|---|---|---|---|---|---|---|")
    for arch, batch, cz, cxy in SETTINGS:
        proc = subprocess.run([sys.executable, "-c", _CHILD, arch, str(batch), str(cz), str(cxy), str(args.steps),
                               args.device], capture_output=True, text=True)
        if proc.returncode:
            print(proc.stderr, file=sys.stderr)
            continue
        m = json.loads(proc.stdout.strip().splitlines()[-1])["step_bytes"]
        est = estimate_train_memory_bytes(TrainConfig(arch=arch, batch_size=batch, crop_z=cz, crop_xy=cxy))
        print(f"| {arch} | {batch} | {cz} | {cxy} | {m / 2**20:.0f} | {est / 2**20:.0f} | {est / m:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
