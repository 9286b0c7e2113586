"""Several classes in one model against one model per class (docs/benchmark.md, "Several classes").

Protocol: the benchmark's simulated pair (run_benchmark.py, 160 x 512 x 512 at 10 Å), the same
sparse labels as the single-class benchmark (30 % of each class's particles in the first xy
quarter of tomogram 1, share told, seed 7), the same training seed and schedule. For each SNR:
one model per class (ribosome, proteasome, shell), then one model of the three classes; each
detects on tomogram 2 with its defaults. Per class: best F1 over every threshold and AP (on
that class's own candidates), F1 at the default threshold (for the joint model after overlaps
between classes are resolved), the CZII F-beta (β = 4, match within half the radius) at the
default threshold and its aggregate over the classes, where the picks land, train and detect
seconds and peak RSS. Each configuration runs in its own process, so peak RSS is its own.

    python benchmarks/multiclass.py --snr 0.1 0.05 --out benchmarks/multiclass.jsonl
    python benchmarks/multiclass.py --snr 0.1 --set cross_class_negatives=false --tag no-cross
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from run_benchmark import (DEFAULT_CACHE, confusion, emit, machine, metrics, parse_sets,  # noqa: E402
                           peak_rss_mb, simulated_pair, sparse_labels)

CLASSES = ("ribosome", "proteasome", "shell")


def class_record(res, truth2, truths2, diam_vox, radius_vox) -> dict:
    """One class's figures on tomogram 2 from its :class:`DetectResult` (picks as resolved)."""
    from napari_cetpick.evaluate import CZII_BETA, evaluate, fbeta

    thr = res.threshold
    picks = res.zyx.copy()
    at = evaluate(picks, res.scores, truth2, radius_vox / 2, threshold=thr)
    zyx, scores = res.reselect(threshold=0.0)  # every candidate: best F1 and AP of the channel itself
    m = metrics(zyx, scores, truth2, radius_vox, thr)["half_radius"]
    return {"threshold": round(float(thr), 4), "how": res.threshold_source, "picks": int(len(picks)),
            "n_true": int(len(truth2)), "f1_at_threshold": round(at.f1, 4), "precision": round(at.precision, 4),
            "recall": round(at.recall, 4), "fbeta4": round(fbeta(at.precision, at.recall, CZII_BETA), 4),
            "best_f1": m["best_f1"], "ap": m["ap"], "picks_on": confusion(picks, truths2, diam_vox)}


def run_one(args) -> dict:
    """One configuration (a single class, or all classes in one model) in this process."""
    from napari_cetpick.config import ClassSpec, DetectConfig, preset
    from napari_cetpick.detect import detect_classes
    from napari_cetpick.evaluate import aggregate_fbeta
    from napari_cetpick.io import open_tomogram
    from napari_cetpick.train import Trainer
    from napari_cetpick.utils import run_generator

    (mrc1, npz1), (mrc2, npz2) = simulated_pair(Path(args.cache), args.shape, args.snr_one, args.voxel_size)
    t1, t2 = open_tomogram(mrc1), open_tomogram(mrc2)
    d1, d2 = np.load(npz1), np.load(npz2)
    present = [c for c in ("ribosome", "proteasome", "shell", "globular") if f"truth_{c}" in d1.files]
    diam_a = {c: float(d1[f"diam_{c}"]) for c in present}
    diam_vox = {c: v / args.voxel_size for c, v in diam_a.items()}
    truths2 = {c: d2[f"truth_{c}"] for c in present}
    classes = args.classes if args.config == "joint" else [args.config]
    labels = {c: sparse_labels(d1[f"truth_{c}"], t1.shape_zyx, args.label_fraction, seed=7) for c in classes}
    sets = parse_sets(args.set)
    sets.setdefault("label_fraction", args.label_fraction)
    specs = [ClassSpec(c, diameter_a=diam_a[c]) for c in classes]
    cfg = preset("default", seed=args.seed, max_steps=args.steps, classes=specs, **sets)
    t0 = time.perf_counter()
    trainer = Trainer([t1.data], [labels], cfg, voxel_size_a=t1.voxel_size_a)
    for _ in trainer.steps(calibrate=False):  # calibrated once, below, as `cetpick train` does
        pass
    ckpt = trainer.checkpoint()
    train_s = time.perf_counter() - t0
    if args.models:
        Path(args.models).mkdir(parents=True, exist_ok=True)
        ckpt.save(Path(args.models) / f"{args.config}_snr{args.snr_one:g}_{args.tag or 'default'}.ckpt")
    t0 = time.perf_counter()
    found = run_generator(detect_classes(ckpt, t2.data, DetectConfig(), voxel_size_a=t2.voxel_size_a))
    detect_s = time.perf_counter() - t0
    per = {c: class_record(found[c], truths2[c], truths2, diam_vox, diam_vox[c] / 2) for c in classes}
    return {"config": args.config, "tag": args.tag or "", "snr": args.snr_one, "classes": classes,
            "n_labels": {c: int(len(v)) for c, v in labels.items()}, "per_class": per,
            "fbeta4_aggregate": round(aggregate_fbeta({c: per[c]["fbeta4"] for c in classes}), 4),
            "train_s": round(train_s, 1), "detect_s": round(detect_s, 1), "steps": int(trainer.total_steps),
            "peak_rss_mb": round(peak_rss_mb(), 1), "set": sets, "machine": machine()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", type=int, nargs=3, default=(160, 512, 512), metavar=("Z", "Y", "X"))
    p.add_argument("--voxel-size", type=float, default=10.0)
    p.add_argument("--snr", type=float, nargs="+", default=(0.1, 0.05))
    p.add_argument("--classes", nargs="+", default=list(CLASSES))
    p.add_argument("--configs", nargs="+", default=None,
                   help="which runs: class names (one model each) and/or 'joint' (default: all)")
    p.add_argument("--label-fraction", type=float, default=0.3)
    p.add_argument("--steps", type=int, default=None, help="training steps (default: the preset's)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="TrainConfig overrides")
    p.add_argument("--tag", default="")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--models", default="", metavar="DIR", help="keep the trained models here")
    p.add_argument("--cache", default=str(DEFAULT_CACHE))
    p.add_argument("--out", default=None, help="also append the JSON lines to this file")
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--snr-one", type=float, help=argparse.SUPPRESS)
    p.add_argument("--config", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(args)))
        return 0
    configs = args.configs or [*args.classes, "joint"]
    for snr in args.snr:
        simulated_pair(Path(args.cache), args.shape, snr, args.voxel_size)  # simulate once, before the runs
        for config in configs:
            cmd = [sys.executable, __file__, "--one", "--snr-one", str(snr), "--config", config,
                   "--shape", *map(str, args.shape), "--voxel-size", str(args.voxel_size),
                   "--classes", *args.classes, "--label-fraction", str(args.label_fraction),
                   "--seed", str(args.seed), "--cache", args.cache, "--tag", args.tag, "--models", args.models]
            if args.steps:
                cmd += ["--steps", str(args.steps)]
            for s in args.set or []:
                cmd += ["--set", s]
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode:
                emit(json.dumps({"config": config, "snr": snr, "error": out.stderr.strip()[-2000:]}), args.out)
                continue
            emit(out.stdout.strip().splitlines()[-1], args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
