"""Threshold rules compared on the same network scores (docs/benchmark.md, "Round 5").

For each model kept by ``threshold_transfer.py`` (``--models``), detects the held-out
tomograms once with the profile check off (the network's scores, from which detection reads
every threshold), applies the profile check to the same candidates (the scores F1 is read
on), keeps both under ``--out``, then reports F1 at the model's own default threshold and at
the threshold detection chooses (this tomogram's split where its scores show one, else the
model's default), beside the best F1.

    python benchmarks/threshold_rules.py benchmarks/models_transfer/*.ckpt
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from run_benchmark import DEFAULT_CACHE  # noqa: E402
from threshold_transfer import density_variant  # noqa: E402


def kept_scores(ck: Path, out: Path, densities, shape=(160, 512, 512), voxel_size_a=10.0, absent=False):
    from napari_cetpick.checkpoint import Checkpoint
    from napari_cetpick.config import DetectConfig
    from napari_cetpick.detect import detect, profile_check
    from napari_cetpick.io import open_tomogram
    from napari_cetpick.utils import run_generator

    cls, snr = ck.stem.split("_")[0], float(ck.stem.split("_")[1][3:])
    ckpt = Checkpoint.load(ck)
    variants = [(f, None) for f in densities] + ([(1.0, cls)] if absent else [])
    for f, gone in variants:
        dst = out / (f"{ck.stem}_density{f:g}" + (f"_no{gone}" if gone else "") + ".npz")
        if dst.is_file():
            yield dst
            continue
        mrc, npz = density_variant(DEFAULT_CACHE, shape, snr, voxel_size_a, f, absent=gone)
        t2, d2 = open_tomogram(mrc), np.load(npz)
        res = run_generator(detect(ckpt, t2.data, DetectConfig(profile_weight=0.0), voxel_size_a=t2.voxel_size_a))
        fz, fs, _, _ = profile_check(ckpt, t2.data, res.cand_zyx, res.cand_scores, None,
                                     DetectConfig().profile_weight, t2.voxel_size_a, res.expected_particles)
        np.savez(dst, fzyx=fz, fscores=fs, zyx=res.cand_zyx, scores=res.cand_scores, truth=d2[f"truth_{cls}"],
                 min_d=res.min_distance_vox, radius=float(d2[f"diam_{cls}"]) / voxel_size_a / 2,
                 model_threshold=ckpt.default_threshold)
        yield dst


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+", type=Path)
    p.add_argument("--densities", type=float, nargs="+", default=(0.5, 1.0, 2.0))
    p.add_argument("--absent", action="store_true",
                   help="also detect in tomogram 2 simulated without the model's class (every pick is false)")
    p.add_argument("--out", type=Path, default=HERE / "models_transfer" / "scores")
    args = p.parse_args(argv)

    from napari_cetpick.config import DetectConfig
    from napari_cetpick.detect import choose_threshold
    from napari_cetpick.evaluate import evaluate
    from napari_cetpick.peaks import select

    args.out.mkdir(parents=True, exist_ok=True)
    print("| case | true | model's default: picks / F1 | chosen: picks / F1 at thr. (how) | best F1 |")
    for ck in args.models:
        for path in kept_scores(ck, args.out, args.densities, absent=args.absent):
            d = np.load(path)
            fin = select(d["fzyx"], d["fscores"], 0.0, float(d["min_d"]))
            fz, fs, truth, r = d["fzyx"][fin], d["fscores"][fin], d["truth"], float(d["radius"])
            model = SimpleNamespace(default_threshold=float(d["model_threshold"]))
            chosen, source = choose_threshold(model, d["zyx"], d["scores"], float(d["min_d"]), DetectConfig())
            cells = []
            for t in (model.default_threshold, chosen):
                ev = evaluate(fz, fs, truth, r / 2, threshold=t)
                cells.append((int((fs >= t).sum()), ev.f1, ev.best_f1))
            (n0, f0, _), (n1, f1, best) = cells
            how = "model" if source.startswith("the model") else "tail" if "flank" in source else "edge"
            print(f"| {path.stem} | {len(truth)} | {n0} / {f0:.3f} | {n1} / {f1:.3f} ({how}) | {best:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
