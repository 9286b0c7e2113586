"""napari-cetpick benchmark: accuracy, speed and memory on simulated tomograms.

Protocol (docs/algorithm.md, section C): simulate a pair of tomograms per noise level with
the project's simulator; label ~30 % of one class's particles inside one xy quarter of
tomogram 1; train; detect on tomogram 2; match within half the particle radius (the CZII
rule) and within the radius. Every case runs in its own process so that its peak RSS is
its own. Prints one JSON line per case; ``--out`` also appends them to a file.

Methods: ``ours`` (default settings), ``cetpick`` (the published settings via the preset)
and ``dog`` (difference-of-Gaussians peak picker, no learning).

    python benchmarks/run_benchmark.py                       # everything (about an hour on 2 cores)
    python benchmarks/run_benchmark.py --classes ribosome --snr 0.3 --methods ours dog
    python benchmarks/run_benchmark.py --memory               # 1024x1024x500 detection: time and peak RSS
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_CACHE = HERE / "cache"


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {n} cores, {gpu}, torch {torch.__version__}"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def simulated_pair(cache: Path, shape, snr: float, voxel_size_a: float):
    """Two simulated tomograms (seeds 101, 202) cached as MRC + truth npz."""
    from napari_cetpick.io import write_tomogram
    from napari_cetpick.synthetic import simulate_tomogram

    out = []
    for seed in (101, 202):
        # no dots in the stem: Path.with_suffix would cut at the SNR's decimal point
        stem = f"sim_{'x'.join(map(str, shape))}_snr{snr:g}_seed{seed}".replace(".", "p")
        mrc, npz = cache / f"{stem}.mrc", cache / f"{stem}.npz"
        if not (mrc.is_file() and npz.is_file()):
            cache.mkdir(parents=True, exist_ok=True)
            sim = simulate_tomogram(shape=tuple(shape), voxel_size_a=voxel_size_a, snr=snr, seed=seed)
            write_tomogram(mrc, sim.volume, voxel_size_a=voxel_size_a)
            np.savez(npz, **{f"truth_{k}": v for k, v in sim.particles.items()},
                     **{f"diam_{k}": np.array(v) for k, v in sim.diameters_a.items()})
        out.append((mrc, npz))
    return out


def sparse_labels(truth: np.ndarray, shape, fraction: float, seed: int) -> np.ndarray:
    """~fraction of the particles inside the first xy quarter, as a user clicks them."""
    inside = (truth[:, 1] < shape[1] / 2) & (truth[:, 2] < shape[2] / 2)
    idx = np.flatnonzero(inside)
    rng = np.random.default_rng(seed)
    n = max(1, int(round(fraction * len(idx))))
    return truth[np.sort(rng.choice(idx, size=min(n, len(idx)), replace=False))]


def metrics(zyx, scores, truth, radius_vox, threshold):
    from napari_cetpick.evaluate import evaluate

    out = {}
    for tag, r in (("half_radius", radius_vox / 2), ("radius", radius_vox)):
        ev = evaluate(zyx, scores, truth, r, threshold=threshold)
        out[tag] = {"precision": round(ev.precision, 4), "recall": round(ev.recall, 4), "f1": round(ev.f1, 4),
                    "best_f1": round(ev.best_f1, 4), "ap": round(ev.ap, 4),
                    "best_threshold": None if ev.best_threshold != ev.best_threshold else round(float(ev.best_threshold), 4)}
    return out


def run_case(args) -> dict:
    """One (snr, class, method) case, in this process."""
    from napari_cetpick.io import open_tomogram

    (mrc1, npz1), (mrc2, npz2) = simulated_pair(Path(args.cache), args.shape, args.snr_one, args.voxel_size)
    t1, t2 = open_tomogram(mrc1), open_tomogram(mrc2)
    d1, d2 = np.load(npz1), np.load(npz2)
    cls = args.class_one
    diameter_a = float(d1[f"diam_{cls}"])
    diameter_vox = diameter_a / args.voxel_size
    truth2 = d2[f"truth_{cls}"]
    labels = sparse_labels(d1[f"truth_{cls}"], t1.shape_zyx, args.label_fraction, seed=7)
    rec = {"case": f"{cls}@snr{args.snr_one:g}", "method": args.method, "class": cls, "snr": args.snr_one,
           "shape_zyx": list(args.shape), "voxel_size_a": args.voxel_size, "diameter_a": diameter_a,
           "n_labels": int(len(labels)), "n_true_test": int(len(truth2))}
    if args.method == "dog":
        from napari_cetpick.baselines import dog_picker

        t0 = time.perf_counter()
        zyx, scores = dog_picker(t2.data, diameter_vox, threshold=0.0)
        rec["train_s"] = 0.0
        rec["detect_s"] = round(time.perf_counter() - t0, 2)
        # no learning: the threshold is the picker's default (a 4-sigma response)
        threshold = 0.5
    else:
        from napari_cetpick.config import DetectConfig, preset
        from napari_cetpick.detect import detect
        from napari_cetpick.train import Trainer
        from napari_cetpick.utils import run_generator

        cfg = preset("default" if args.method == "ours" else "cetpick", diameter_a=diameter_a, seed=args.seed,
                     max_steps=args.steps)
        t0 = time.perf_counter()
        trainer = Trainer([t1.data], [labels], cfg, voxel_size_a=t1.voxel_size_a)
        for _ in trainer.steps():
            pass
        ckpt = trainer.checkpoint()
        rec["train_s"] = round(time.perf_counter() - t0, 2)
        rec["steps"] = trainer.step
        rec["tau"] = round(trainer.tau, 4)
        rec["bin"] = trainer.bin_xy
        t0 = time.perf_counter()
        res = run_generator(detect(ckpt, t2.data, DetectConfig(), voxel_size_a=t2.voxel_size_a))
        rec["detect_s"] = round(time.perf_counter() - t0, 2)
        zyx, scores, threshold = res.zyx, res.scores, res.threshold
        # evaluate every candidate for best F1 / AP, at the default suppression distance
        keep = res.reselect(threshold=0.0)
        zyx, scores = keep
        res.reselect(threshold=threshold)
    rec["threshold"] = round(float(threshold), 4)
    rec["n_picks_at_threshold"] = int((np.asarray(scores) >= threshold).sum())
    rec.update(metrics(zyx, scores, truth2, diameter_vox / 2, threshold))
    rec["peak_rss_mb"] = round(peak_rss_mb(), 1)
    rec["machine"] = machine()
    return rec


def run_memory(args) -> dict:
    """Detection on a large noise tomogram: time and peak RSS (accuracy is meaningless here)."""
    from napari_cetpick.checkpoint import Checkpoint
    from napari_cetpick.config import DetectConfig, TrainConfig
    from napari_cetpick.detect import detect
    from napari_cetpick.io import open_tomogram
    from napari_cetpick.model import build_network
    from napari_cetpick.synthetic import write_large_noise_tomogram
    from napari_cetpick.utils import run_generator

    shape = tuple(args.memory_shape)
    path = Path(args.cache) / f"noise_{'x'.join(map(str, shape))}.mrc"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_large_noise_tomogram(path, shape=shape, voxel_size_a=10.0, seed=0)
    base = peak_rss_mb()
    tomo = open_tomogram(path)
    diameter = args.memory_diameter
    from napari_cetpick.data import auto_bin

    ckpt = Checkpoint(build_network("unet_small").state_dict(), TrainConfig(bbox=diameter), diameter, 10.0,
                      auto_bin(diameter), 0.5)
    t0 = time.perf_counter()
    res = run_generator(detect(ckpt, tomo.data, DetectConfig()))
    return {"case": f"memory {shape}", "method": "ours", "diameter_vox": diameter, "bin": ckpt.bin_xy,
            "detect_s": round(time.perf_counter() - t0, 2), "heatmap_shape": list(res.heatmap.shape),
            "file_gb": round(path.stat().st_size / 1e9, 2), "peak_rss_mb": round(peak_rss_mb(), 1),
            "rss_before_mb": round(base, 1), "machine": machine()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", type=int, nargs=3, default=(160, 512, 512), metavar=("Z", "Y", "X"))
    p.add_argument("--voxel-size", type=float, default=10.0)
    p.add_argument("--snr", type=float, nargs="+", default=(0.3, 0.1), help="noise levels (projection SNR)")
    p.add_argument("--classes", nargs="+", default=("ribosome", "proteasome", "shell"))
    p.add_argument("--methods", nargs="+", default=("ours", "cetpick", "dog"), choices=("ours", "cetpick", "dog"))
    p.add_argument("--label-fraction", type=float, default=0.3)
    p.add_argument("--steps", type=int, default=None, help="training steps (default: the preset's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", default=str(DEFAULT_CACHE), help="folder for simulated tomograms")
    p.add_argument("--out", default=None, help="also append the JSON lines to this file")
    p.add_argument("--memory", action="store_true", help="run the large-tomogram memory/time case instead")
    p.add_argument("--memory-shape", type=int, nargs=3, default=(500, 1024, 1024))
    p.add_argument("--memory-diameter", type=float, default=15.0, help="particle diameter (voxels) of the model")
    # internal: run one case in this process
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--snr-one", type=float, help=argparse.SUPPRESS)
    p.add_argument("--class-one", help=argparse.SUPPRESS)
    p.add_argument("--method", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.one:
        rec = run_memory(args) if args.memory else run_case(args)
        print("RESULT " + json.dumps(rec), flush=True)
        return 0

    jobs = [["--memory"]] if args.memory else [
        ["--snr-one", str(s), "--class-one", c, "--method", m]
        for s in args.snr for c in args.classes for m in args.methods]
    common = ["--shape", *map(str, args.shape), "--voxel-size", str(args.voxel_size), "--cache", args.cache,
              "--label-fraction", str(args.label_fraction), "--seed", str(args.seed),
              "--memory-shape", *map(str, args.memory_shape), "--memory-diameter", str(args.memory_diameter)]
    if args.steps:
        common += ["--steps", str(args.steps)]
    for job in jobs:
        proc = subprocess.run([sys.executable, __file__, "--one", *common, *job], capture_output=True, text=True)
        lines = [l[7:] for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
        if proc.returncode or not lines:
            print(json.dumps({"job": job, "error": proc.stderr.strip().splitlines()[-1:] or ["?"]}), flush=True)
            continue
        print(lines[0], flush=True)
        if args.out:
            with open(args.out, "a") as fh:
                fh.write(lines[0] + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
