"""The profile check, with and without, on the same weights (docs/benchmark.md, "The profile check").

Detection's profile check (napari_cetpick.detect.profile_check) rescores the best candidates
by how far their radial profile lies from the labelled particles' profiles. This script
measures it on kept models, so that "before" and "after" are the same weights: for each
model file (named ``{class}_snr{snr}_share{share}.ckpt`` as threshold_transfer.py keeps them,
or ``{class}_snr{snr}_default.ckpt`` as multiclass.py does, share 0.3), the profile model is
fitted on tomogram 1's labels as training fits it (the same sparse labels, seed 7; optionally
moved by a random click error), tomogram 2 is detected once per density (default views,
profile weight 0) and its candidates are rescored at each ``--weights`` value; the threshold is
chosen on each as detection chooses it. One JSON line per (model, density, weight).

With ``--rejections N`` the profile model is fitted a second time with negatives, as a
correction round fits it: the first N false picks of the model's detection in tomogram 1
(best first, as the panel's review shows them; false: further than half a radius from every
particle of the class), and each detection is rescored with both (``rejections`` in the
line). ``--absent`` adds tomogram 2 simulated without the class (every pick false).

    python benchmarks/profile_check.py benchmarks/models_transfer_v2/*.ckpt --densities 0.5 1 2
    python benchmarks/profile_check.py benchmarks/models_multiclass/shell_snr0.05_default.ckpt --click-error 2
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from run_benchmark import DEFAULT_CACHE, emit, machine, metrics, simulated_pair, sparse_labels  # noqa: E402
from threshold_transfer import density_variant  # noqa: E402


def parse_name(path: Path) -> tuple[str, float, float]:
    """``(class, snr, share)`` from a kept model's file name."""
    m = re.match(r"(?P<cls>[a-z]+)_snr(?P<snr>[0-9.]+)_(share(?P<share>[0-9.]+)|default)", path.stem)
    if not m:
        raise SystemExit(f"{path.name}: not a kept model name ({{class}}_snr{{snr}}_share{{share}} or _default)")
    return m["cls"], float(m["snr"]), float(m["share"]) if m["share"] else 0.3


def add_tomogram2_options(p) -> None:
    """The options of the scripts that detect in tomogram 2's variants (this one, mined_look_alikes.py)."""
    p.add_argument("--densities", type=float, nargs="+", default=(1.0,))
    p.add_argument("--absent", action="store_true", help="also detect in tomogram 2 simulated without the class")
    p.add_argument("--shape", type=int, nargs=3, default=(160, 512, 512))
    p.add_argument("--voxel-size", type=float, default=10.0)
    p.add_argument("--cache", default=str(DEFAULT_CACHE))
    p.add_argument("--out", default=None)


def tomogram2_scores(args, ckpt, cls: str, snr: float):
    """Per variant of tomogram 2 (each of ``--densities``, and without the class with
    ``--absent``): ``(density, absent class or None, tomogram, its particles of cls, the
    model's detection there with the profile check off)``."""
    from napari_cetpick.config import DetectConfig
    from napari_cetpick.detect import detect
    from napari_cetpick.io import open_tomogram
    from napari_cetpick.utils import run_generator

    for f, gone in [(f, None) for f in args.densities] + ([(1.0, cls)] if args.absent else []):
        mrc2, npz2 = density_variant(Path(args.cache), args.shape, snr, args.voxel_size, f, absent=gone)
        t2 = open_tomogram(mrc2)
        res = run_generator(detect(ckpt, t2.data, DetectConfig(profile_weight=0.0), voxel_size_a=t2.voxel_size_a))
        yield f, gone, t2, np.load(npz2)[f"truth_{cls}"], res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+", type=Path)
    p.add_argument("--weights", type=float, nargs="+", default=(0.0, 0.03, 0.1, 0.3))
    p.add_argument("--click-error", type=float, default=0.0,
                   help="standard deviation (tomogram voxels, per axis) of a random error added to each label")
    p.add_argument("--rejections", type=int, default=0, metavar="N",
                   help="also fit the profile model with the first N false picks in tomogram 1 as negatives")
    add_tomogram2_options(p)
    args = p.parse_args(argv)

    from dataclasses import replace

    from napari_cetpick.checkpoint import Checkpoint
    from napari_cetpick.config import DetectConfig
    from napari_cetpick.descriptors import ProfileModel
    from napari_cetpick.detect import choose_threshold, detect, profile_check
    from napari_cetpick.io import open_tomogram
    from napari_cetpick.peaks import select
    from napari_cetpick.utils import run_generator

    cache = Path(args.cache)
    for path in args.models:
        cls, snr, share = parse_name(path)
        (mrc1, npz1), _ = simulated_pair(cache, args.shape, snr, args.voxel_size)
        t1, d1 = open_tomogram(mrc1), np.load(npz1)
        labels = sparse_labels(d1[f"truth_{cls}"], t1.shape_zyx, share, seed=7)
        if args.click_error > 0:
            labels = labels + np.random.default_rng(11).normal(0.0, args.click_error, labels.shape)
        ckpt = Checkpoint.load(path)
        t0 = time.perf_counter()
        model = ProfileModel.fit([t1.data], [labels], ckpt.diameter_vox)
        fit_s = time.perf_counter() - t0
        radius_vox = float(d1[f"diam_{cls}"]) / args.voxel_size / 2
        models = [(0, fit_s, replace(ckpt, info={**ckpt.info, "profile_model": model.to_info()}))]
        if args.rejections > 0:
            from scipy.spatial import cKDTree

            first = run_generator(detect(ckpt, t1.data, DetectConfig(), voxel_size_a=t1.voxel_size_a))
            far, _ = cKDTree(d1[f"truth_{cls}"]).query(first.zyx)
            rejected = first.zyx[far > radius_vox / 2][: args.rejections]
            if len(rejected):
                t0 = time.perf_counter()
                told = ProfileModel.fit([t1.data], [labels], ckpt.diameter_vox, negatives=[rejected])
                models.append((len(rejected), time.perf_counter() - t0,
                               replace(ckpt, info={**ckpt.info, "profile_model": told.to_info()})))
        for f, gone, t2, truth2, res in tomogram2_scores(args, ckpt, cls, snr):
            # as detection does: the threshold from the network's scores, then the check
            thr, how = choose_threshold(ckpt, res.cand_zyx, res.cand_scores, res.min_distance_vox, DetectConfig())
            for n_rej, fit_s, checked in models:
                for w in args.weights:
                    t0 = time.perf_counter()
                    zyx, scores, _, _ = profile_check(checked, t2.data, res.cand_zyx, res.cand_scores, None, w,
                                                      t2.voxel_size_a, res.expected_particles)
                    check_s = time.perf_counter() - t0
                    keep = select(zyx, scores, 0.0, res.min_distance_vox)
                    picks = int((scores[keep] >= thr).sum())
                    rec = {"model": path.name, "class": cls, "snr": snr, "share": share, "density": f,
                           "absent": bool(gone), "click_error": args.click_error, "weight": w, "rejections": n_rej,
                           "n_labels": int(len(labels)), "n_true": int(len(truth2)), "threshold": round(float(thr), 4),
                           "how": how, "picks": picks}
                    if len(truth2):
                        m = metrics(zyx[keep], scores[keep], truth2, radius_vox, thr)["half_radius"]
                        rec.update(best_f1=m["best_f1"], f1_at_threshold=m["f1"], gap=round(m["best_f1"] - m["f1"], 4),
                                   ap=m["ap"])
                    rec.update(fit_s=round(fit_s, 2), check_s=round(check_s, 2), machine=machine())
                    emit(json.dumps(rec), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
