"""Improve after a review in the next tomogram: on that tomogram's decisions alone, or on every
tomogram's clicks (what the panel's Improve does since round 34).

A round-1 model trained on tomogram 1 (``threshold_transfer.py --models DIR`` keeps them; its
labels are re-made the same way: ``--share`` of the class in tomogram 1's labelled quarter,
seed 7) is applied to tomogram 2, where the scripted user reviews as the panel orders review
(``run_benchmark.panel_review``, ``--budget`` looks per stage). Then a correction round
(``continue_training``, its defaults) from the same model on:

- ``selected``: tomogram 2's accepted and rejected picks only (the panel's Improve before);
- ``every``: tomogram 1's labels and tomogram 2's decisions (the panel's Improve now);
- ``first`` (a control, ``--variants``): tomogram 1's labels alone, no review.

Each new model (and, as ``round 1``, the model it continues) detects in tomogram 2 and in a
third tomogram (``--third``, another density of tomogram 2's simulation); accuracy as
``run_benchmark.py`` scores it, the round's time and the detections'. One JSON line per class,
share and variant.

    python benchmarks/improve_next.py --models DIR --snr 0.1 --classes proteasome shell ribosome \\
        --share 0.2 --out benchmarks/results/round34_improve_next.jsonl
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from run_benchmark import (DEFAULT_CACHE, emit, machine, panel_review, peak_rss_mb, run_detect,  # noqa: E402
                           score_detection, simulated_pair, sparse_labels)


def scored(ckpt, tomo, data, cls: str, voxel_size_a: float) -> dict:
    """One detection in ``tomo`` scored against its truth (``data``: its npz)."""
    from run_benchmark import all_candidates

    res, seconds = run_detect(ckpt, tomo)
    zyx, scores = all_candidates(res)
    truths = {k[6:]: data[k] for k in data.files if k.startswith("truth_")}
    diam = {k: float(data[f"diam_{k}"]) / voxel_size_a for k in truths if f"diam_{k}" in data.files}
    out = {"detect_s": round(seconds, 1), "how": res.threshold_source}
    score_detection(out, zyx, scores, res.threshold, data[f"truth_{cls}"], diam[cls] / 2, truths, diam)
    return out


def run(args, cls: str) -> list[dict]:
    from napari_cetpick.checkpoint import Checkpoint
    from napari_cetpick.io import open_tomogram
    from napari_cetpick.train import continue_training
    from napari_cetpick.utils import run_generator

    (m1, n1), (m2, n2) = simulated_pair(Path(args.cache), (160, 512, 512), args.snr, 10.0)
    t1, d1, t2, d2 = open_tomogram(m1), np.load(n1), open_tomogram(m2), np.load(n2)
    m3 = Path(str(m2).replace(".mrc", f"_density{args.third:g}".replace(".", "p") + ".mrc"))
    t3, d3 = open_tomogram(m3), np.load(m3.with_suffix(".npz"))
    vs = t1.voxel_size_a
    labels1 = sparse_labels(d1[f"truth_{cls}"], t1.shape_zyx, args.share, seed=7)
    ckpt = Checkpoint.load(Path(args.models) / f"{cls}_snr{args.snr:g}_share{args.share:g}.ckpt")
    radius = float(d2[f"diam_{cls}"]) / vs / 2
    res2, _ = run_detect(ckpt, t2)
    accepted, rejected, _ = panel_review(res2, t2, d2[f"truth_{cls}"], np.zeros((0, 3)), radius, "lookalike",
                                         budget=args.budget)
    none = np.zeros((0, 3))
    variants = {"selected": ([t2.data], [accepted], [rejected]),
                "every": ([t1.data, t2.data], [labels1, accepted], [none, rejected]),
                "first": ([t1.data], [labels1], [none])}
    variants = {k: v for k, v in variants.items() if k in args.variants}
    out = []
    for name, (vols, labs, negs) in [("round 1", (None, None, None)), *variants.items()]:
        t0 = time.perf_counter()
        new = ckpt if vols is None else run_generator(continue_training(ckpt, vols, labs, negatives=negs,
                                                                        voxel_size_a=vs))
        rec = {"case": f"{cls}@snr{args.snr:g}", "class": cls, "snr": args.snr, "share": args.share,
               "variant": name, "labels_1": len(labels1), "accepted_2": len(accepted), "rejected_2": len(rejected),
               "model_threshold_before": round(float(ckpt.default_threshold), 4),
               "model_threshold": round(float(new.default_threshold), 4),
               "improve_s": round(time.perf_counter() - t0, 1),
               "tomogram_2": scored(new, t2, d2, cls, vs), "tomogram_3": scored(new, t3, d3, cls, vs),
               "peak_rss_mb": round(peak_rss_mb(), 1), "machine": machine()}
        emit(json.dumps(rec), args.out)
        out.append(rec)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", required=True, help="round-1 models, NAME_snrS_shareF.ckpt (threshold_transfer.py)")
    p.add_argument("--snr", type=float, default=0.1)
    p.add_argument("--classes", nargs="+", default=["proteasome", "shell", "ribosome"])
    p.add_argument("--share", type=float, default=0.2)
    p.add_argument("--third", type=float, default=0.5, help="density of the third tomogram (0.5 or 2)")
    p.add_argument("--budget", type=int, default=10, help="looks per stage of the scripted review")
    p.add_argument("--variants", nargs="+", default=["selected", "every"], choices=["selected", "every", "first"],
                   help="first: a round on tomogram 1's labels alone (no review; a control)")
    p.add_argument("--cache", default=str(DEFAULT_CACHE))
    p.add_argument("--out")
    args = p.parse_args(argv)
    for cls in args.classes:
        run(args, cls)
    return 0


if __name__ == "__main__":
    sys.exit(main())
