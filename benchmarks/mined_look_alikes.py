"""Calibration with and without the look-alikes it mines, on the same weights (docs/benchmark.md, "Round 12").

After training, calibration detects in the labelled region and takes the picks its profile
check still shows although their profile lies beyond typical as negatives of the profile
model (napari_cetpick.calibration.mine_look_alikes). This script measures that on kept models
(named ``{class}_snr{snr}_share{share}.ckpt`` as threshold_transfer.py keeps them): the profile
model is fitted on tomogram 1's labels as training fits it (the same sparse labels, seed 7),
the model is calibrated twice on tomogram 1 as training calibrates it (``mine`` 0 and
``--mine``), and tomogram 2 is detected once per density (default views, profile weight 0) and
rescored with each calibrated model, the threshold chosen as detection chooses it. ``--absent``
adds tomogram 2 simulated without the class (every pick false). One JSON line per (model,
tomogram 2, mine).

    python benchmarks/mined_look_alikes.py benchmarks/models_transfer_v2/*.ckpt --densities 0.5 1 2 --absent
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

from profile_check import add_tomogram2_options, parse_name, tomogram2_scores  # noqa: E402
from run_benchmark import emit, machine, metrics, simulated_pair, sparse_labels  # noqa: E402


def main(argv=None) -> int:
    from napari_cetpick.calibration import MINED_MAX

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+", type=Path)
    p.add_argument("--mine", type=int, default=MINED_MAX, help=f"look-alikes mined at most (default {MINED_MAX})")
    add_tomogram2_options(p)
    args = p.parse_args(argv)

    from dataclasses import replace

    from scipy.spatial import cKDTree

    from napari_cetpick.calibration import calibrate_classes
    from napari_cetpick.checkpoint import Checkpoint
    from napari_cetpick.config import DetectConfig
    from napari_cetpick.counts import LabelBox
    from napari_cetpick.descriptors import ProfileModel
    from napari_cetpick.detect import choose_threshold, profile_check
    from napari_cetpick.io import open_tomogram
    from napari_cetpick.peaks import select

    cache = Path(args.cache)
    weight = DetectConfig().profile_weight
    for path in args.models:
        cls, snr, share = parse_name(path)
        (mrc1, npz1), _ = simulated_pair(cache, args.shape, snr, args.voxel_size)
        t1, d1 = open_tomogram(mrc1), np.load(npz1)
        labels = sparse_labels(d1[f"truth_{cls}"], t1.shape_zyx, share, seed=7)
        ckpt = Checkpoint.load(path)
        name = ckpt.class_names[0]
        radius_vox = float(d1[f"diam_{cls}"]) / args.voxel_size / 2
        base = ProfileModel.fit([t1.data], [labels], ckpt.diameter_vox)
        plain = replace(ckpt, info={**ckpt.info, "profile_model": base.to_info()})
        told = bool(ckpt.config.label_fraction or ckpt.config.expected_particles)
        halo = int(np.ceil(max(ckpt.build().context_zyx[1:]) * ckpt.bin_xy))
        box = LabelBox(*ckpt.info["label_boxes"][0])
        calibrated = []
        for mine in (0, args.mine):
            t0 = time.perf_counter()
            cal = calibrate_classes(plain, [t1.data], [{name: labels}], [{name: box}],
                                    {name: float(ckpt.info["density_per_vox2"])}, voxel_size_a=t1.voxel_size_a,
                                    halo_vox=halo, counts_told={name: told}, mine=mine)[name]
            cal_s = time.perf_counter() - t0
            model = cal.profile_model or base
            info = {**plain.info, **cal.info(), "profile_model": model.to_info()}
            # the mined places that lie on a particle of the class (within half its radius)
            on = 0 if cal.mined is None else int((cKDTree(d1[f"truth_{cls}"]).query(cal.mined[0])[0]
                                                  < radius_vox / 2).sum())
            calibrated.append((mine, model, cal_s, on, replace(plain, default_threshold=cal.threshold, info=info)))
        for f, gone, t2, truth2, res in tomogram2_scores(args, plain, cls, snr):
            for mine, model, cal_s, on, ck in calibrated:
                # as detection does: the threshold from the network's scores, then the check
                thr, how = choose_threshold(ck, res.cand_zyx, res.cand_scores, res.min_distance_vox, DetectConfig())
                zyx, scores, _, _ = profile_check(ck, t2.data, res.cand_zyx, res.cand_scores, None, weight,
                                                  t2.voxel_size_a, res.expected_particles)
                keep = select(zyx, scores, 0.0, res.min_distance_vox)
                rec = {"model": path.name, "class": cls, "snr": snr, "share": share, "density": f,
                       "absent": bool(gone), "mine": mine, "mined": int(model.n_mined),
                       "model_threshold": round(float(ck.default_threshold), 4), "threshold": round(float(thr), 4),
                       "how": how, "picks": int((scores[keep] >= thr).sum()), "n_true": int(len(truth2))}
                if model.n_mined:
                    rec["mined_on_particles"] = on
                if len(truth2):
                    m = metrics(zyx[keep], scores[keep], truth2, radius_vox, thr)["half_radius"]
                    rec.update(best_f1=m["best_f1"], f1_at_threshold=m["f1"], gap=round(m["best_f1"] - m["f1"], 4),
                               ap=m["ap"])
                rec.update(calibrate_s=round(cal_s, 1), machine=machine())
                emit(json.dumps(rec), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
