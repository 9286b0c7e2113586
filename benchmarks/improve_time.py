"""The panel's Improve, timed: a correction round on tomogram 1, then detection there again.

The review is the benchmark's scripted one (``run_benchmark.panel_review``, the panel's order,
across the whole tomogram), on a round-1 model kept by ``run_benchmark.py --models DIR``. Each
run is its own process, alternating the correction round's kept network pass (``keep``: what
napari's Improve does, :class:`napari_cetpick.detect.NetworkPass`) with a detection that runs
the network again (``run``); one JSON line per run (docs/benchmark.md, "Round 10").

    python benchmarks/improve_time.py --model benchmarks/models/shell_snr0.05_ours_default_r1.ckpt \\
        --snr 0.05 --class shell --runs 2 --out benchmarks/results/round10_improve.jsonl
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

from run_benchmark import (DEFAULT_CACHE, emit, machine, panel_review, peak_rss_mb, run_detect,  # noqa: E402
                           simulated_pair, sparse_labels)


def one_run(args) -> dict:
    from napari_cetpick.checkpoint import Checkpoint
    from napari_cetpick.config import DetectConfig
    from napari_cetpick.detect import detect
    from napari_cetpick.io import open_tomogram
    from napari_cetpick.train import continue_training
    from napari_cetpick.utils import run_generator

    (mrc1, npz1), _ = simulated_pair(Path(args.cache), tuple(args.shape), args.snr, args.voxel_size)
    t1, d1 = open_tomogram(mrc1), np.load(npz1)
    truth1 = d1[f"truth_{args.class_name}"]
    radius_vox = float(d1[f"diam_{args.class_name}"]) / args.voxel_size / 2
    labels = sparse_labels(truth1, t1.shape_zyx, args.label_fraction, seed=7)
    ckpt = Checkpoint.load(args.model)
    res1, _ = run_detect(ckpt, t1)
    accepted, rejected, _ = panel_review(res1, t1, truth1, labels, radius_vox, "lookalike")
    vol = t1.data
    t0 = time.perf_counter()
    new = run_generator(continue_training(ckpt, [vol], [np.concatenate([labels, accepted])], negatives=[rejected],
                                          voxel_size_a=t1.voxel_size_a,
                                          keep_pass_for=vol if args.variant == "keep" else None))
    correction_s = time.perf_counter() - t0
    n_kept = len(new.passes)
    res = run_generator(detect(new, vol, DetectConfig(), voxel_size_a=t1.voxel_size_a))
    improve_s = time.perf_counter() - t0
    return {"what": "improve", "variant": args.variant, "model": str(args.model), "class": args.class_name,
            "snr": args.snr, "passes_kept": n_kept, "n_accepted": int(len(accepted)), "n_rejected": int(len(rejected)),
            "correction_s": round(correction_s, 2), "detect_after_s": round(improve_s - correction_s, 2),
            "improve_s": round(improve_s, 2), "picks": int(len(res.zyx)), "threshold": round(float(res.threshold), 5),
            "peak_rss_mb": round(peak_rss_mb(), 1), "machine": machine()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a round-1 model of tomogram 1 (run_benchmark.py --models)")
    p.add_argument("--class", dest="class_name", default="shell")
    p.add_argument("--snr", type=float, default=0.05)
    p.add_argument("--shape", type=int, nargs=3, default=(160, 512, 512), metavar=("Z", "Y", "X"))
    p.add_argument("--voxel-size", type=float, default=10.0)
    p.add_argument("--label-fraction", type=float, default=0.3)
    p.add_argument("--cache", default=str(DEFAULT_CACHE))
    p.add_argument("--runs", type=int, default=2, help="runs of each variant, alternating")
    p.add_argument("--out", default=None, help="also append the JSON lines to this file")
    p.add_argument("--variant", choices=("keep", "run"), help=argparse.SUPPRESS)  # internal: one run
    args = p.parse_args(argv)
    if args.variant:
        print("RESULT " + json.dumps(one_run(args)), flush=True)
        return 0
    passed = [a for a in (argv if argv is not None else sys.argv[1:])]
    for _ in range(args.runs):
        for variant in ("run", "keep"):
            proc = subprocess.run([sys.executable, __file__, *passed, "--variant", variant], capture_output=True, text=True)
            lines = [l[7:] for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
            if proc.returncode or not lines:
                print(json.dumps({"variant": variant, "error": proc.stderr.strip().splitlines()[-1:] or ["?"]}), flush=True)
                return 1
            emit(lines[0], args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
