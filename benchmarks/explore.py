"""Exploration benchmark: how well label-free clusters match the true classes.

On the benchmark's simulated tomograms (run_benchmark.py's cache: 160 × 512 × 512 at 10 Å,
ribosome 25 nm, proteasome-like 15 nm barrel, 12 nm hollow shell, 7 nm globular, gold),
``cetpick explore``'s engine runs on tomogram 1 without any label. Each candidate takes the
class of the nearest true particle within that particle's radius ("background" when none;
gold beads count as a class). Reported per noise level and embedding:

- purity: the share of clustered candidates that belong to their cluster's majority class;
- ARI: the adjusted Rand index of cluster against class over the clustered candidates;
- per class, its best cluster (the cluster where the class makes the largest share, among
  clusters of 10 or more): that share and how many of the class's particles fall into it;
- with ``--train CLASS``: a model trained from that best cluster's members (the default
  settings, the share not told) against one trained from 20 clicks, both detecting tomogram 2;
- time and peak RSS of the exploration.

``--background A`` adds a smooth change of density of ±A standard deviations across tomogram 1
(``threshold_transfer.smooth_background``: a slope, a broad bright patch, a bowl along z), as
real tomograms change slowly across their width (docs/benchmark.md, "Round 23").

    python benchmarks/explore.py --snr 0.1 0.05 --embedding profiles encoder --out explore.jsonl
    python benchmarks/explore.py --snr 0.1 --train ribosome shell
    python benchmarks/explore.py --snr 0.1 0.05 --background 1
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_benchmark import DEFAULT_CACHE, all_candidates, emit, machine, simulated_pair  # noqa: E402

SHAPE = (160, 512, 512)
VOXEL_A = 10.0


def truth_classes(npz) -> tuple[np.ndarray, np.ndarray, dict]:
    """All true particles (zyx), their class names, and each class's radius (voxels)."""
    pts, names, radius = [], [], {}
    for key in npz.files:
        if key.startswith("truth_"):
            c = key[len("truth_"):]
            pts.append(npz[key])
            names += [c] * len(npz[key])
            radius[c] = 0.5 * float(npz[f"diam_{c}"]) / VOXEL_A
    if "gold" in npz.files and len(npz["gold"]):
        pts.append(npz["gold"])
        names += ["gold"] * len(npz["gold"])
        radius["gold"] = 5.0
    return np.vstack(pts), np.array(names), radius


def candidate_classes(zyx, truth, names, radius) -> np.ndarray:
    from scipy.spatial import cKDTree

    if len(zyx) == 0:
        return np.zeros(0, dtype=names.dtype)
    d, i = cKDTree(truth).query(zyx)
    r = np.array([radius[names[j]] for j in i])
    return np.where(d <= r, names[i], "background")


def scores(cluster, cls, names) -> dict:
    from sklearn.metrics import adjusted_rand_score

    inc = cluster >= 0
    out = {"n_candidates": int(len(cluster)), "n_clustered": int(inc.sum()),
           "n_clusters": int(cluster.max()) + 1 if inc.any() else 0,
           "candidates_per_class": {c: int((cls == c).sum()) for c in np.unique(cls)}}
    if not inc.any():
        return {**out, "purity": 0.0, "ari": 0.0, "best_cluster": {}}
    majority = sum(int(np.unique(cls[cluster == c], return_counts=True)[1].max()) for c in np.unique(cluster[inc]))
    out["purity"] = round(majority / int(inc.sum()), 4)
    out["ari"] = round(float(adjusted_rand_score(cls[inc], cluster[inc])), 4)
    best = {}
    for c in np.unique(names):
        n_true = int((names == c).sum())
        cand = []
        for k in np.unique(cluster[inc]):
            m = cluster == k
            if m.sum() >= 10:
                cand.append((float((cls[m] == c).mean()), int(k), int(m.sum()), int((cls[m] == c).sum())))
        if cand:
            share, k, size, hit = max(cand)
            best[c] = {"cluster": k, "share": round(share, 4), "members": size,
                       "recall": round(hit / max(n_true, 1), 4), "n_true": n_true}
    out["best_cluster"] = best
    return out


def run_one(snr: float, embedding: str, args) -> dict:
    from napari_cetpick.explore import ExploreConfig, explore
    from napari_cetpick.io import open_tomogram
    from napari_cetpick.utils import run_generator

    (mrc1, npz1), _ = simulated_pair(Path(args.cache), SHAPE, snr, VOXEL_A)
    npz = np.load(npz1)
    truth, names, radius = truth_classes(npz)
    tomo = open_tomogram(mrc1)
    volume = tomo.data
    if args.background:  # a smooth change of density across the tomogram (threshold_transfer.py)
        from threshold_transfer import smooth_background

        volume = np.asarray(volume, np.float32)
        volume = volume + np.float32(args.background * volume.std()) * smooth_background(volume.shape)
    cfg = ExploreConfig(diameter_range_a=tuple(args.diameter_range), embedding=embedding, seed=args.seed,
                        max_candidates=args.max_candidates)
    t0 = time.perf_counter()
    res = run_generator(explore(volume, VOXEL_A, cfg))
    rec = {"case": f"explore@snr{snr:g}", "embedding": embedding, "snr": snr, "tag": args.tag,
           "background": args.background,
           "diameter_range_a": list(cfg.diameter_range_a), "explore_s": round(time.perf_counter() - t0, 1)}
    cls = candidate_classes(res.zyx, truth, names, radius)
    rec.update(scores(res.cluster, cls, names))
    rec["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)
    rec["machine"] = machine()
    if args.train:
        rec["trained"] = {c: train_from_cluster(res, cls, c, snr, args) for c in args.train}
    return rec


def train_from_cluster(res, cls, class_name: str, snr: float, args) -> dict:
    """Best F1 / F1 at the threshold on tomogram 2: trained from the best cluster vs 20 clicks."""
    from napari_cetpick.config import DetectConfig, TrainConfig
    from napari_cetpick.detect import detect
    from napari_cetpick.evaluate import evaluate
    from napari_cetpick.io import open_tomogram
    from napari_cetpick.train import Trainer
    from napari_cetpick.utils import run_generator

    (mrc1, npz1), (mrc2, npz2) = simulated_pair(Path(args.cache), SHAPE, snr, VOXEL_A)
    t1, t2 = open_tomogram(mrc1), open_tomogram(mrc2)
    n1, n2 = np.load(npz1), np.load(npz2)
    diam_a = float(n1[f"diam_{class_name}"])
    best_k, best_share = -1, -1.0
    for k in res.cluster_ids:
        m = res.cluster == k
        if m.sum() >= 10 and (cls[m] == class_name).mean() > best_share:
            best_k, best_share = k, float((cls[m] == class_name).mean())
    rng = np.random.default_rng(args.seed)
    truth1 = n1[f"truth_{class_name}"]
    clicks = truth1[np.sort(rng.choice(len(truth1), size=min(20, len(truth1)), replace=False))]
    out = {"cluster": best_k, "cluster_share": round(best_share, 4)}
    if best_k < 0:
        return {**out, "skipped": "no cluster of 10 or more holds the class"}
    for name, labels in (("cluster", res.members(best_k)), ("clicks20", clicks)):
        cfg = TrainConfig(diameter_a=diam_a, seed=args.seed)
        t0 = time.perf_counter()
        ck = run_generator(Trainer([t1.data], [labels], cfg, voxel_size_a=VOXEL_A).steps())
        train_s = time.perf_counter() - t0
        det = run_generator(detect(ck, t2.data, DetectConfig(), voxel_size_a=VOXEL_A))
        zyx, sc = all_candidates(det)
        radius = 0.25 * diam_a / VOXEL_A  # half the radius: the benchmark's matching rule
        ev = evaluate(zyx, sc, n2[f"truth_{class_name}"], radius, threshold=det.threshold)
        out[name] = {"n_labels": int(len(labels)), "train_s": round(train_s, 1),
                     "best_f1": round(float(ev.best_f1), 4), "f1": round(float(ev.f1), 4)}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--snr", type=float, nargs="+", default=(0.1, 0.05))
    p.add_argument("--embedding", nargs="+", default=("profiles",), choices=("profiles", "encoder"))
    p.add_argument("--diameter-range", type=float, nargs=2, default=(60.0, 300.0), metavar=("MIN_A", "MAX_A"))
    p.add_argument("--max-candidates", type=int, default=4000)
    p.add_argument("--train", nargs="*", default=(), help="classes to train from their best cluster")
    p.add_argument("--background", type=float, default=0.0, metavar="A",
                   help="add a smooth change of density of A standard deviations across tomogram 1 "
                        "(threshold_transfer.smooth_background)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tag", default="")
    p.add_argument("--cache", default=str(DEFAULT_CACHE))
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    for snr in args.snr:
        for emb in args.embedding:
            emit(json.dumps(run_one(snr, emb, args)), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
