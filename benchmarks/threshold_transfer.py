"""Does the default threshold hold on the next tomogram? (docs/benchmark.md, "Threshold transfer")

Protocol: the benchmark's simulated pair (run_benchmark.py), but the user's labelled share is
*not* given to the model (it assumes the default, 0.5), whatever the true share (0.2, 0.35,
0.5, 0.8 of one class's particles in the first xy quarter of tomogram 1), and the held-out
tomogram 2 is simulated at 0.5x, 1x and 2x the particle density of tomogram 1 (same seed,
every class's concentration scaled). For each (class, share) one model is trained on
tomogram 1; each density of tomogram 2 is detected; the line gives the best F1 over every
threshold and the F1 at the threshold detection chose by itself, and how it chose it.
``--held-out-snr`` also detects tomogram 2 (1x) simulated at other noise levels: another
tomogram of the data set, noisier or cleaner, where the class stands out less or more
(docs/benchmark.md, "Round 21"). ``--background`` also detects tomogram 2 (1x, the model's
noise level) with a smooth change of density added across it (:func:`smooth_background`, its
amplitude in the tomogram's standard deviations): real tomograms change slowly across their
width — ice thickness, a lamella's slope, carbon, the slab's faces (docs/benchmark.md,
"Round 22"). ``--train-background A`` trains on tomogram 1 with such a change added too (mirrored
in x, so that tomogram 2's differs; docs/benchmark.md, "Round 24").

Models and each detection's candidates are kept under ``--models`` so that a change to the
threshold rule alone can be measured again without training (``--rescore``).

    python benchmarks/threshold_transfer.py --classes ribosome --snr 0.1 --shares 0.2 0.8
    python benchmarks/threshold_transfer.py --snr 0.1 --held-out-snr 0.05 0.03 --densities 1
    python benchmarks/threshold_transfer.py --snr 0.1 --background 0.5 1 --densities 1
    python benchmarks/threshold_transfer.py --snr 0.1 --train-background 1 --background 1 --densities 1
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from run_benchmark import (DEFAULT_CACHE, emit, machine, metrics, offsets, peak_rss_mb,  # noqa: E402
                           sim_stem, simulated_pair, sparse_labels)


def density_variant(cache: Path, shape, snr: float, voxel_size_a: float, factor: float, absent: str | None = None):
    """Tomogram 2 (seed 202) at ``factor`` times the default concentration of every class;
    with ``absent``, that class left out (a tomogram a model is applied to without its class)."""
    from napari_cetpick.io import write_tomogram
    from napari_cetpick.synthetic import DEFAULT_CONCENTRATION, simulate_tomogram

    if factor == 1.0 and absent is None:
        return simulated_pair(cache, shape, snr, voxel_size_a)[1]
    stem = sim_stem(shape, snr, 202, f"_density{factor:g}" + (f"_no{absent}" if absent else ""))
    mrc, npz = cache / f"{stem}.mrc", cache / f"{stem}.npz"
    if not (mrc.is_file() and npz.is_file()):
        cache.mkdir(parents=True, exist_ok=True)
        conc = {k: (0.0 if k == absent else v * factor) for k, v in DEFAULT_CONCENTRATION.items()}
        sim = simulate_tomogram(shape=tuple(shape), voxel_size_a=voxel_size_a, snr=snr, seed=202, concentration=conc)
        write_tomogram(mrc, sim.volume, voxel_size_a=voxel_size_a)
        np.savez(npz, **{f"truth_{k}": v for k, v in sim.particles.items()},
                 **{f"diam_{k}": np.array(v) for k, v in sim.diameters_a.items()})
    return mrc, npz


def smooth_background(shape) -> np.ndarray:
    """A smooth change of density across a tomogram, spanning about [-1, 1] (float32, mean 0): a
    slope along x, a broad bright patch (sigma 0.3 of the width) off centre in y and x, and a
    bowl along z (the slab's faces). Scaled by the amplitude and the tomogram's standard
    deviation and added to it."""
    z, y, x = (np.linspace(-1.0, 1.0, n, dtype=np.float32) for n in shape)
    f = (0.6 * x[None, None, :]
         + 0.9 * np.exp(-((y[:, None] - 0.35) ** 2 + (x[None, :] + 0.4) ** 2) / (2 * 0.3 ** 2))[None]
         + 0.3 * z[:, None, None] ** 2)
    f = f - f.mean()
    return (f / (0.5 * (f.max() - f.min()))).astype(np.float32)


def recalibrate(ckpt, tomo, labels):
    """``ckpt`` calibrated anew on its labels (as :meth:`Trainer.checkpoint` does after training)."""
    from dataclasses import replace

    from napari_cetpick.calibration import calibrate
    from napari_cetpick.counts import label_box

    box = label_box(labels, tomo.shape_zyx, ckpt.diameter_vox)
    halo = int(np.ceil(max(ckpt.build().context_zyx[1:]) * ckpt.bin_xy))
    cal = calibrate(ckpt, [tomo.data], [labels], [box], float(ckpt.info["density_per_vox2"]),
                    voxel_size_a=tomo.voxel_size_a, halo_vox=halo, count_told=False)
    return replace(ckpt, default_threshold=cal.threshold, info={**ckpt.info, **cal.info()})


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", type=int, nargs=3, default=(160, 512, 512), metavar=("Z", "Y", "X"))
    p.add_argument("--voxel-size", type=float, default=10.0)
    p.add_argument("--snr", type=float, nargs="+", default=(0.1,))
    p.add_argument("--classes", nargs="+", default=("ribosome", "proteasome", "shell"))
    p.add_argument("--shares", type=float, nargs="+", default=(0.2, 0.35, 0.5, 0.8),
                   help="true labelled shares (never given to the model)")
    p.add_argument("--densities", type=float, nargs="+", default=(0.5, 1.0, 2.0),
                   help="particle density of the held-out tomogram, relative to the training one")
    p.add_argument("--held-out-snr", type=float, nargs="*", default=(), metavar="S",
                   help="also detect the held-out tomogram (1x density) simulated at these noise levels")
    p.add_argument("--train-background", type=float, default=0.0, metavar="A",
                   help="train on tomogram 1 with a smooth change of density of amplitude A added across it "
                        "(smooth_background mirrored in x; docs/benchmark.md, round 24)")
    p.add_argument("--background", type=float, nargs="*", default=(), metavar="A",
                   help="also detect tomogram 2 (1x) with a smooth change of density of amplitude A "
                        "(the tomogram's standard deviations) added across it")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", default=str(DEFAULT_CACHE))
    p.add_argument("--models", default=str(HERE / "models_transfer"), help="kept models (reused when present)")
    p.add_argument("--threshold-from", choices=("tomogram", "model"), default="tomogram",
                   help="how detection chooses each tomogram's threshold (DetectConfig.threshold_from)")
    p.add_argument("--views", type=int, default=1, choices=(1, 2, 4), help="detection views (DetectConfig.views)")
    p.add_argument("--out", default=None, help="also append the JSON lines to this file")
    args = p.parse_args(argv)

    from napari_cetpick.checkpoint import Checkpoint
    from napari_cetpick.config import DetectConfig, preset
    from napari_cetpick.detect import detect
    from napari_cetpick.io import open_tomogram
    from napari_cetpick.train import Trainer
    from napari_cetpick.utils import run_generator

    cache, models = Path(args.cache), Path(args.models)
    models.mkdir(parents=True, exist_ok=True)
    for snr in args.snr:
        (mrc1, npz1), _ = simulated_pair(cache, args.shape, snr, args.voxel_size)
        t1, d1 = open_tomogram(mrc1), np.load(npz1)
        if args.train_background:  # the change mirrored in x: not tomogram 2's
            raw1 = np.asarray(t1.data, np.float32)
            data1 = raw1 + np.float32(args.train_background * raw1.std()) * smooth_background(raw1.shape)[..., ::-1]
            t1 = SimpleNamespace(data=data1, shape_zyx=t1.shape_zyx, voxel_size_a=t1.voxel_size_a)
        held_out = {(f, snr, 0.0): density_variant(cache, args.shape, snr, args.voxel_size, f) for f in args.densities}
        held_out.update({(1.0, s2, 0.0): simulated_pair(cache, args.shape, s2, args.voxel_size)[1]
                         for s2 in args.held_out_snr if s2 != snr})
        held_out.update({(1.0, snr, a): simulated_pair(cache, args.shape, snr, args.voxel_size)[1]
                         for a in args.background if a != 0})
        for cls in args.classes:
            diameter_a = float(d1[f"diam_{cls}"])
            radius_vox = diameter_a / args.voxel_size / 2
            for share in args.shares:
                labels = sparse_labels(d1[f"truth_{cls}"], t1.shape_zyx, share, seed=7)
                trained_on = f"_trainbackground{args.train_background:g}" if args.train_background else ""
                path = models / f"{cls}_snr{snr:g}_share{share:g}{trained_on}.ckpt"
                train_s = None
                if path.is_file():
                    ckpt = Checkpoint.load(path)
                    if "n_offset_labels" not in ckpt.info:
                        # kept from before calibration measured the centre offset: calibrate it
                        # as training does now (same weights; threshold and offset)
                        ckpt = recalibrate(ckpt, t1, labels)
                        ckpt.save(path)
                else:
                    cfg = preset("default", diameter_a=diameter_a, seed=args.seed)  # the share is not told
                    t0 = time.perf_counter()
                    trainer = Trainer([t1.data], [labels], cfg, voxel_size_a=t1.voxel_size_a)
                    for _ in trainer.steps(calibrate=False):  # calibrated once, below, as `cetpick train` does
                        pass
                    ckpt = trainer.checkpoint()
                    train_s = round(time.perf_counter() - t0, 1)
                    ckpt.save(path)
                for (f, snr2, amp), (mrc2, npz2) in held_out.items():
                    t2, d2 = open_tomogram(mrc2), np.load(npz2)
                    truth2 = d2[f"truth_{cls}"]
                    data = t2.data
                    if amp:
                        data = np.asarray(data, np.float32)
                        data = data + np.float32(amp * data.std()) * smooth_background(data.shape)
                    t0 = time.perf_counter()
                    res = run_generator(detect(ckpt, data, DetectConfig(threshold_from=args.threshold_from, views=args.views),
                                              voxel_size_a=t2.voxel_size_a))
                    detect_s = round(time.perf_counter() - t0, 1)
                    other = ("" if snr2 == snr else f"_snr{snr2:g}") + (f"_background{amp:g}" if amp else "")
                    np.savez(models / f"{path.stem}_density{f:g}{other}_cands.npz", zyx=res.cand_zyx,
                             scores=res.cand_scores, truth=truth2, min_d=res.min_distance_vox, radius=radius_vox,
                             model_threshold=ckpt.default_threshold)
                    thr = res.threshold
                    zyx, scores = res.reselect(threshold=0.0)
                    m = metrics(zyx, scores, truth2, radius_vox, thr)["half_radius"]
                    rec = {"class": cls, "snr": snr, "share": share, "density": f, "detect_snr": snr2, "background": amp,
                           "profile_gain": res.profile_gain, "n_labels": int(len(labels)),
                           "n_true": int(len(truth2)), "model_threshold": round(float(ckpt.default_threshold), 4),
                           "threshold": round(float(thr), 4), "how": res.threshold_source,
                           "picks": int((scores >= thr).sum()), "f1_at_threshold": m["f1"], "best_f1": m["best_f1"],
                           "gap": round(m["best_f1"] - m["f1"], 4), "ap": m["ap"],
                           "best_threshold": m["best_threshold"], "views": args.views,
                           "offset_best": offsets(zyx[scores >= (m["best_threshold"] or thr)], truth2, radius_vox / 2),
                           "centre_offset_work": ckpt.info.get("centre_offset_work"),
                           "train_s": train_s, "detect_s": detect_s,
                           "peak_rss_mb": round(peak_rss_mb(), 1), "machine": machine()}
                    emit(json.dumps(rec), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
