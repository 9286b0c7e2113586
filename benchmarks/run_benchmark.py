"""napari-cetpick benchmark: accuracy, speed and memory on simulated tomograms.

Protocol (docs/algorithm.md, section C; docs/benchmark.md): simulate a pair of tomograms
per noise level with the project's simulator; label ~30 % of one class's particles inside
one xy quarter of tomogram 1; train; detect on tomogram 2; match within half the particle
radius (the CZII rule) and within the radius. Every case runs in its own process so that
its peak RSS is its own. Prints one JSON line per case; ``--out`` also appends them to a
file.

Methods:

- ``ours``: the default settings (``--set key=value`` overrides any TrainConfig field, for
  ablations; ``--rounds 2`` adds a simulated correction round, below);
- ``cetpick``: the published settings via the preset;
- ``supervised``: the ceiling: the same network and schedule as ``ours``, trained with every
  particle of the class in tomogram 1 labelled and every particle of the other classes
  (and the gold beads) as negative clicks;
- ``dog``: difference-of-Gaussians peak picker (no learning);
- ``log``: scale-selective Laplacian of Gaussian (no learning): the scale-normalised LoG,
  kept only where the particle's scale responds most among neighbouring scales.

Simulated correction round (``--rounds 2``): after round 1, a scripted user reviews tomogram
1 as the panel orders review (``--review lookalike``, the default: 60 looks at the picks, the
suggestions and the picks most like the rejected ones; ``score``: down the score order;
``quota``: the earlier rounds' user, up to 20 rejections and 20 acceptances inside the
labelled region), rejecting picks that are not the class (negative clicks) and accepting true
particles not yet labelled (positive clicks); with ``--missed N`` it then clicks up to N
particles of the labelled region that no label or pick lies near (the tutorial's advice);
training continues from the round-1 model (``continue_training``) and tomogram 2 is scored
again.

    python benchmarks/run_benchmark.py                       # the default protocol (hours on 2 cores)
    python benchmarks/run_benchmark.py --classes proteasome --snr 0.1 --methods ours dog --rounds 2
    python benchmarks/run_benchmark.py --methods ours --set crop_z=32 --tag crop32   # one ablation line
    python benchmarks/run_benchmark.py --memory               # 1024x1024x500 detection: time and peak RSS
    python benchmarks/run_benchmark.py --memory --memory-model M.ckpt --memory-snr 0.05   # ... by a trained model
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
CLASSES = ("ribosome", "proteasome", "shell", "globular")
CORRECTION_QUOTA = 20


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


def emit(line: str, out: str | None) -> None:
    """Print one JSON line and, with ``out``, append it to that file."""
    print(line, flush=True)
    if out:
        with open(out, "a") as fh:
            fh.write(line + "\n")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def sim_stem(shape, snr: float, seed: int, suffix: str = "") -> str:
    """The cache's name for a simulated tomogram; it names the simulator's version, so that a
    tomogram kept from an earlier simulator is simulated again."""
    from napari_cetpick.synthetic import SIMULATOR_VERSION

    # no dots in the stem: Path.with_suffix would cut at the SNR's decimal point
    return f"sim{SIMULATOR_VERSION}_{'x'.join(map(str, shape))}_snr{snr:g}_seed{seed}{suffix}".replace(".", "p")


def simulated_pair(cache: Path, shape, snr: float, voxel_size_a: float):
    """Two simulated tomograms (seeds 101, 202) cached as MRC + truth npz."""
    from napari_cetpick.io import write_tomogram
    from napari_cetpick.synthetic import simulate_tomogram

    out = []
    for seed in (101, 202):
        stem = sim_stem(shape, snr, seed)
        mrc, npz = cache / f"{stem}.mrc", cache / f"{stem}.npz"
        if not (mrc.is_file() and npz.is_file()):
            cache.mkdir(parents=True, exist_ok=True)
            t0 = time.perf_counter()
            sim = simulate_tomogram(shape=tuple(shape), voxel_size_a=voxel_size_a, snr=snr, seed=seed)
            # the simulator's speed lives here, not in a timed test
            print(f"simulated {stem} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
            write_tomogram(mrc, sim.volume, voxel_size_a=voxel_size_a)
            np.savez(npz, **{f"truth_{k}": v for k, v in sim.particles.items()},
                     **{f"diam_{k}": np.array(v) for k, v in sim.diameters_a.items()},
                     gold=sim.distractors["gold"])
        out.append((mrc, npz))
    return out


def labelled_region(shape) -> tuple:
    """The first xy quarter over all z: (z0, y0, x0, z1, y1, x1)."""
    return (0, 0, 0, shape[0], shape[1] / 2, shape[2] / 2)


def in_region(zyx: np.ndarray, region) -> np.ndarray:
    lo, hi = np.asarray(region[:3], float), np.asarray(region[3:], float)
    return np.all((zyx >= lo) & (zyx < hi), axis=1) if len(zyx) else np.zeros(0, bool)


def sparse_labels(truth: np.ndarray, shape, fraction: float, seed: int) -> np.ndarray:
    """~fraction of the particles inside the first xy quarter, as a user clicks them."""
    idx = np.flatnonzero(in_region(truth, labelled_region(shape)))
    rng = np.random.default_rng(seed)
    n = max(1, int(round(fraction * len(idx))))
    return truth[np.sort(rng.choice(idx, size=min(n, len(idx)), replace=False))]


def offsets(zyx, truth, radius_vox) -> dict:
    """Mean and RMS offset (z, y, x, tomogram voxels) of picks matched one-to-one to truth."""
    from napari_cetpick.evaluate import match_points

    if len(zyx) == 0 or len(truth) == 0:
        return {"n": 0}
    pi, ti = match_points(zyx, truth, radius_vox)
    if len(pi) == 0:
        return {"n": 0}
    d = np.asarray(zyx)[pi] - truth[ti]
    return {"n": int(len(pi)), "mean_zyx": np.round(d.mean(0), 3).tolist(),
            "rms_zyx": np.round(np.sqrt((d**2).mean(0)), 3).tolist()}


def confusion(zyx, truths: dict, diameters_vox: dict) -> dict:
    """Where picks land: the nearest particle of any class within its radius, else background."""
    from scipy.spatial import cKDTree

    out = {k: 0 for k in truths}
    out["background"] = 0
    if len(zyx) == 0:
        return out
    best = np.full(len(zyx), np.inf)
    label = np.full(len(zyx), "background", dtype=object)
    for k, t in truths.items():
        if len(t) == 0:
            continue
        d, _ = cKDTree(t).query(zyx)
        rel = d / (diameters_vox[k] / 2)
        hit = (rel < 1.0) & (rel < best)
        best[hit] = rel[hit]
        label[hit] = k
    for k in out:
        out[k] = int((label == k).sum())
    return out


def metrics(zyx, scores, truth, radius_vox, threshold) -> dict:
    from napari_cetpick.evaluate import evaluate

    out = {}
    for tag, r in (("half_radius", radius_vox / 2), ("radius", radius_vox)):
        ev = evaluate(zyx, scores, truth, r, threshold=threshold)
        out[tag] = {"precision": round(ev.precision, 4), "recall": round(ev.recall, 4), "f1": round(ev.f1, 4),
                    "best_f1": round(ev.best_f1, 4), "ap": round(ev.ap, 4),
                    "best_threshold": None if ev.best_threshold != ev.best_threshold else round(float(ev.best_threshold), 4)}
    return out


def score_detection(rec: dict, zyx, scores, threshold, truth2, radius_vox, truths2, diam_vox) -> None:
    """Accuracy figures of one detection on tomogram 2, written into ``rec``."""
    zyx, scores = np.asarray(zyx).reshape(-1, 3), np.asarray(scores)
    rec["threshold"] = round(float(threshold), 4)
    at = scores >= threshold
    rec["n_picks_at_threshold"] = int(at.sum())
    rec.update(metrics(zyx, scores, truth2, radius_vox, threshold))
    bt = rec["half_radius"]["best_threshold"]
    best = scores >= (bt if bt is not None else threshold)
    rec["offset_best"] = offsets(zyx[best], truth2, radius_vox / 2)
    rec["picks_on_at_threshold"] = confusion(zyx[at], truths2, diam_vox)
    rec["picks_on_at_best"] = confusion(zyx[best], truths2, diam_vox)


def parse_sets(items) -> dict:
    """``key=value`` pairs; values parsed as JSON when they can be (numbers, true, [..])."""
    out = {}
    for it in items or []:
        k, _, v = it.partition("=")
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
        if isinstance(out[k], list):
            out[k] = tuple(out[k])
    return out


def train_model(cfg, tomo, labels, negatives=None, init=None, **overrides):
    from napari_cetpick.train import Trainer, continue_training

    t0 = time.perf_counter()
    if init is None:
        trainer = Trainer([tomo.data], [labels], cfg, voxel_size_a=tomo.voxel_size_a,
                          negatives=None if negatives is None else [negatives])
        for _ in trainer.steps(calibrate=False):  # calibrated once, below, as `cetpick train` does
            pass
        ckpt = trainer.checkpoint()
    else:
        from napari_cetpick.utils import run_generator

        ckpt = run_generator(continue_training(init, [tomo.data], [labels], negatives=[negatives],
                                               voxel_size_a=tomo.voxel_size_a, **overrides))
    return ckpt, time.perf_counter() - t0


#: DetectConfig fields the command line overrides (``--detect-set``), for ablations.
DETECT_SETS: dict = {}


def run_detect(ckpt, tomo):
    from napari_cetpick.config import DetectConfig
    from napari_cetpick.detect import detect
    from napari_cetpick.utils import run_generator

    t0 = time.perf_counter()
    res = run_generator(detect(ckpt, tomo.data, DetectConfig(**DETECT_SETS), voxel_size_a=tomo.voxel_size_a))
    return res, time.perf_counter() - t0


def all_candidates(res):
    """Every cached candidate at the default suppression distance (for best F1 and AP)."""
    threshold = res.threshold
    zyx, scores = res.reselect(threshold=0.0)
    zyx, scores = zyx.copy(), scores.copy()
    res.reselect(threshold=threshold)
    return zyx, scores


def quota_review(res1, truth1, labels, region, radius_vox, quota=CORRECTION_QUOTA):
    """The scripted user of earlier rounds (``--review quota``), on tomogram 1's picks inside ``region``.

    Walks the picks (all candidates, suppressed at the default distance) from the highest
    score down: a pick within half the radius of a true particle of the class that is not
    yet labelled is accepted (a positive click at the pick), a pick not on the class is
    rejected (a negative click at the pick), until both quotas are met — however many picks
    that takes.
    """
    from scipy.spatial import cKDTree

    zyx, scores = all_candidates(res1)
    inside = in_region(zyx, region)
    zyx = zyx[inside]
    tree = cKDTree(truth1)
    labelled = set(cKDTree(truth1).query(labels)[1].tolist()) if len(labels) else set()
    accepted, rejected, used = [], [], set()
    for p in zyx:
        d, j = tree.query(p)
        if d < radius_vox / 2:
            if j in labelled or j in used:
                continue
            if len(accepted) < quota:
                accepted.append(p)
                used.add(j)
        elif len(rejected) < quota:
            rejected.append(p)
        if len(accepted) >= quota and len(rejected) >= quota:
            break
    return np.array(accepted).reshape(-1, 3), np.array(rejected).reshape(-1, 3)


class ScriptedUser:
    """Judges places on tomogram 1 by the truth: a particle of the class not yet labelled is
    accepted, anything else rejected; each judgement is one look."""

    def __init__(self, truth1, labels, radius_vox):
        from scipy.spatial import cKDTree

        self.tree, self.half = cKDTree(truth1), radius_vox / 2
        self.used = set(self.tree.query(labels)[1].tolist()) if len(labels) else set()
        self.accepted, self.rejected, self.looks = [], [], 0

    def judge(self, zyx) -> str:
        """'accepted', 'rejected' or 'labelled' (already a label: not a look, as in the panel,
        where the user skips what they clicked themselves)."""
        d, j = self.tree.query(zyx)
        if d < self.half and j in self.used:
            return "labelled"
        self.looks += 1
        if d < self.half:
            self.used.add(int(j))
            self.accepted.append(np.asarray(zyx, float))
            return "accepted"
        self.rejected.append(np.asarray(zyx, float))
        return "rejected"

    def judge_queue(self, zyx, budget: int, seen: set) -> None:
        """Judge the queue's places in order until ``budget`` looks are spent."""
        start = self.looks
        for i, p in enumerate(zyx):
            if self.looks - start >= budget:
                break
            key = tuple(np.round(p, 3))
            if key in seen:
                continue
            seen.add(key)
            self.judge(p)

    def clicks(self) -> tuple[np.ndarray, np.ndarray]:
        return np.array(self.accepted).reshape(-1, 3), np.array(self.rejected).reshape(-1, 3)


def panel_review(res1, tomo1, truth1, labels, radius_vox, how: str, budget: int = CORRECTION_QUOTA):
    """The scripted user of ``--review score|lookalike``: the panel's review, in its order.

    On the whole of tomogram 1, as the panel shows it (the picks at the detection's own
    threshold): (1) Review picks, highest score first, ``budget`` looks; (2) Suggest where to
    look (the panel's :func:`suggest_locations`, ``budget`` suggestions), each judged; (3)
    ``budget`` more looks: the next picks by score (``score``) or the picks most like the
    rejected ones (``lookalike``: Review's "like my rejections" order on
    :func:`radial_profiles`). Three times ``budget`` looks in all, whatever they find.
    """
    from napari_cetpick.descriptors import radial_profiles
    from napari_cetpick.review import lookalike_order, review_order, suggest_locations

    user, seen = ScriptedUser(truth1, labels, radius_vox), set()
    order = review_order(res1.scores, res1.threshold, "score")
    picks = res1.zyx[order]
    user.judge_queue(picks, budget, seen)
    accepted, rejected = user.clicks()
    known = np.vstack([labels.reshape(-1, 3), accepted, rejected, res1.zyx])
    idx = suggest_locations(res1.cand_zyx, res1.cand_scores, res1.threshold, known, 2 * radius_vox, n=budget,
                            shape_zyx=tomo1.shape_zyx)
    user.judge_queue(res1.cand_zyx[idx], budget, seen)
    accepted, rejected = user.clicks()
    rest = np.array([p for p in picks if tuple(np.round(p, 3)) not in seen]).reshape(-1, 3)
    if how == "lookalike" and len(rejected) and len(rest):
        desc = radial_profiles(tomo1.data, np.vstack([rest, rejected, labels.reshape(-1, 3), accepted]),
                               2 * radius_vox)
        n_rest, n_rej = len(rest), len(rejected)
        rest = rest[lookalike_order(desc[:n_rest], desc[n_rest:n_rest + n_rej], desc[n_rest + n_rej:])]
    user.judge_queue(rest, budget, seen)
    accepted, rejected = user.clicks()
    return accepted, rejected, user.looks


def missed_in_region(truth1, shape, known, picks, radius_vox, n: int, seed: int = 5) -> np.ndarray:
    """Up to ``n`` particles of the labelled region (:func:`labelled_region`) that no label,
    accepted pick or pick at the threshold lies within half the radius of, drawn at random: the
    particles a user sees the picks miss in the region they labelled and clicks (``--missed``)."""
    from scipy.spatial import cKDTree

    box = truth1[in_region(truth1, labelled_region(shape))]
    far = np.ones(len(box), bool)
    for pts in (known, picks):
        if len(pts) and len(box):
            far &= cKDTree(np.asarray(pts, float).reshape(-1, 3)).query(box)[0] > radius_vox / 2
    missed = box[far]
    return missed[np.random.default_rng(seed).permutation(len(missed))[:n]]


def run_case(args) -> list[dict]:
    """One (snr, class, method) case, in this process; one record per round."""
    from napari_cetpick.io import open_tomogram

    (mrc1, npz1), (mrc2, npz2) = simulated_pair(Path(args.cache), args.shape, args.snr_one, args.voxel_size)
    t1, t2 = open_tomogram(mrc1), open_tomogram(mrc2)
    d1, d2 = np.load(npz1), np.load(npz2)
    cls = args.class_one
    present = [c for c in CLASSES if f"truth_{c}" in d1.files]
    diam_vox = {c: float(d1[f"diam_{c}"]) / args.voxel_size for c in present}
    diameter_a = float(d1[f"diam_{cls}"])
    diameter_vox = diameter_a / args.voxel_size
    radius_vox = diameter_vox / 2
    truth1, truth2 = d1[f"truth_{cls}"], d2[f"truth_{cls}"]
    truths2 = {c: d2[f"truth_{c}"] for c in present}
    labels = sparse_labels(truth1, t1.shape_zyx, args.label_fraction, seed=7)
    sets = parse_sets(args.set)
    rec = {"case": f"{cls}@snr{args.snr_one:g}", "method": args.method, "tag": args.tag or "", "class": cls,
           "snr": args.snr_one, "shape_zyx": list(args.shape), "voxel_size_a": args.voxel_size,
           "diameter_a": diameter_a, "n_labels": int(len(labels)), "n_true_test": int(len(truth2)),
           "set": {k: list(v) if isinstance(v, tuple) else v for k, v in sets.items()}, "round": 1,
           "detect_set": DETECT_SETS}
    if args.method in ("dog", "log"):
        from napari_cetpick.baselines import dog_picker, log_picker

        picker = dog_picker if args.method == "dog" else log_picker
        t0 = time.perf_counter()
        zyx, scores = picker(t2.data, diameter_vox, threshold=0.0)
        rec["train_s"] = 0.0
        rec["detect_s"] = round(time.perf_counter() - t0, 2)
        # no learning: the threshold is the picker's default (a 4-sigma response)
        score_detection(rec, zyx, scores, 0.5, truth2, radius_vox, truths2, diam_vox)
        rec["peak_rss_mb"] = round(peak_rss_mb(), 1)
        rec["machine"] = machine()
        return [rec]

    from napari_cetpick.config import preset

    kind = "cetpick" if args.method == "cetpick" else "default"
    # the user says which share of the particles in their region they labelled, as
    # `cetpick train --label-fraction` lets them (it sets the expected count and the threshold)
    sets.setdefault("label_fraction", args.label_fraction)
    cfg = preset(kind, diameter_a=diameter_a, seed=args.seed, max_steps=args.steps, **sets)
    negatives = None
    train_labels = labels
    if args.method == "supervised":
        train_labels = truth1
        negs = [d1[f"truth_{c}"] for c in present if c != cls]
        if "gold" in d1.files:
            negs.append(d1["gold"])
        negatives = np.concatenate([n.reshape(-1, 3) for n in negs])
        from dataclasses import replace

        cfg = replace(cfg, label_fraction=1.0, expected_particles=None)
    saved = Path(args.models) / f"{cls}_snr{args.snr_one:g}_{args.method}_{args.tag or 'default'}_r1.ckpt" \
        if args.models else None
    if saved is not None and saved.is_file():
        # round 1 of this very case trained before: ablate the correction round alone
        from napari_cetpick.checkpoint import Checkpoint

        ckpt = Checkpoint.load(saved)
        train_s = float(ckpt.info.get("elapsed_s", 0.0))
        rec["round1_from"] = str(saved)
    else:
        ckpt, train_s = train_model(cfg, t1, train_labels, negatives)
        if saved is not None:
            saved.parent.mkdir(parents=True, exist_ok=True)
            ckpt.save(saved)
    rec["train_s"] = round(train_s, 2)
    rec["steps"] = int(ckpt.info.get("steps", 0))
    rec["tau"] = round(float(ckpt.tau), 5)
    rec["bin"] = ckpt.bin_xy
    rec["arch"] = ckpt.config.arch
    rec["expected_particles"] = ckpt.info.get("expected_particles")
    res, detect_s = run_detect(ckpt, t2)
    rec["detect_s"] = round(detect_s, 2)
    zyx, scores = all_candidates(res)
    score_detection(rec, zyx, scores, res.threshold, truth2, radius_vox, truths2, diam_vox)
    rec["threshold_source"] = res.threshold_source
    rec["model_threshold"] = round(float(ckpt.default_threshold), 4)
    rec["peak_rss_mb"] = round(peak_rss_mb(), 1)
    rec["machine"] = machine()
    out = [rec]
    if args.rounds >= 2 and args.method == "ours":
        t0 = time.perf_counter()
        res1, _ = run_detect(ckpt, t1)
        if args.review == "quota":
            accepted, rejected = quota_review(res1, truth1, labels, labelled_region(t1.shape_zyx), radius_vox)
            looks = None
        else:
            accepted, rejected, looks = panel_review(res1, t1, truth1, labels, radius_vox, args.review)
        review_s = time.perf_counter() - t0
        known = np.concatenate([labels, accepted])
        clicked = missed_in_region(truth1, t1.shape_zyx, known, res1.zyx, radius_vox, args.missed)
        new_labels = np.concatenate([known, clicked])
        ckpt2, corr_s = train_model(None, t1, new_labels, rejected, init=ckpt, **parse_sets(args.correction))
        res2, detect_s2 = run_detect(ckpt2, t2)
        rec2 = {**{k: rec[k] for k in ("case", "method", "tag", "class", "snr", "shape_zyx", "voxel_size_a", "detect_set",
                                       "diameter_a", "n_true_test", "set")},
                "round": 2, "n_labels": int(len(new_labels)), "n_accepted": int(len(accepted)),
                "n_rejected": int(len(rejected)), "n_missed_clicked": int(len(clicked)), "review": args.review,
                "looks": looks, "detect_tomo1_s": round(review_s, 2),
                "correction_s": round(corr_s, 2), "steps": int(ckpt2.info.get("steps", 0)) - rec["steps"],
                "detect_s": round(detect_s2, 2), "correction": parse_sets(args.correction)}
        zyx, scores = all_candidates(res2)
        score_detection(rec2, zyx, scores, res2.threshold, truth2, radius_vox, truths2, diam_vox)
        rec2["threshold_source"] = res2.threshold_source
        rec2["model_threshold"] = round(float(ckpt2.default_threshold), 4)
        if saved is not None:
            ckpt2.save(saved.with_name(saved.name.replace("_r1.ckpt", "_r2.ckpt")))
        rec2["peak_rss_mb"] = round(peak_rss_mb(), 1)
        rec2["machine"] = rec["machine"]
        out.append(rec2)
    return out


def tiled_tomogram(cache: Path, shape, source_shape, snr: float, voxel_size_a: float) -> Path:
    """Tomogram 2 of the simulated pair (``source_shape``) at ``snr`` repeated along every axis to ``shape``
    (zyx), written slab by slab (memory stays at a slab): real particles for a trained model
    to find, at the large size, without simulating it."""
    import mrcfile

    src_path = simulated_pair(cache, source_shape, snr, voxel_size_a)[1][0]
    stem = f"tiled_{'x'.join(map(str, shape))}_of_{src_path.stem}".replace(".", "p")
    path = cache / f"{stem}.mrc"
    if path.is_file():
        return path
    part = cache / f"{stem}.part"  # renamed once whole: a file cut short is never reused
    with mrcfile.mmap(src_path, mode="r", permissive=True) as src:
        data = src.data
        reps = [int(np.ceil(n / m)) for n, m in zip(shape[1:], data.shape[1:])]
        with mrcfile.new_mmap(part, shape=tuple(shape), mrc_mode=2, overwrite=True) as out:
            for z in range(shape[0]):
                out.data[z] = np.tile(data[z % data.shape[0]], reps)[: shape[1], : shape[2]]
            out.voxel_size = voxel_size_a
    part.replace(path)
    return path


def run_memory(args) -> list[dict]:
    """Detection on a large tomogram: time and peak RSS. With ``--memory-model`` a trained
    model detects in tomogram 2 repeated to the large shape (:func:`tiled_tomogram`); without
    one, an untrained network of ``--memory-diameter`` in Gaussian noise (its maxima lie
    everywhere, so refining them takes much of the time; no accuracy either way)."""
    from napari_cetpick.checkpoint import Checkpoint
    from napari_cetpick.config import DetectConfig, TrainConfig
    from napari_cetpick.data import auto_bin
    from napari_cetpick.detect import detect
    from napari_cetpick.io import open_tomogram
    from napari_cetpick.model import build_network
    from napari_cetpick.synthetic import write_large_noise_tomogram
    from napari_cetpick.utils import run_generator

    shape = tuple(args.memory_shape)
    if args.memory_model:
        path = tiled_tomogram(Path(args.cache), shape, args.shape, args.memory_snr, args.voxel_size)
        ckpt = Checkpoint.load(args.memory_model)
    else:
        path = Path(args.cache) / f"noise_{'x'.join(map(str, shape))}.mrc"
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            write_large_noise_tomogram(path, shape=shape, voxel_size_a=10.0, seed=0)
        cfg = TrainConfig(bbox=args.memory_diameter)
        ckpt = Checkpoint(build_network(cfg.arch).state_dict(), cfg, args.memory_diameter, 10.0,
                          auto_bin(args.memory_diameter, cfg.min_particle_vox), 0.5)
    base = peak_rss_mb()
    tomo = open_tomogram(path)
    t0 = time.perf_counter()
    res = run_generator(detect(ckpt, tomo.data, DetectConfig(), voxel_size_a=tomo.voxel_size_a))
    return [{"case": f"memory {shape}", "method": "ours", "arch": ckpt.config.arch,
             "model": Path(args.memory_model).name if args.memory_model else "untrained",
             "tomogram": path.name, "diameter_vox": round(float(ckpt.diameter_vox), 2),
             "bin": ckpt.bin_xy, "detect_s": round(time.perf_counter() - t0, 2), "n_candidates": len(res.cand_scores),
             "n_picks": len(res.scores), "heatmap_shape": list(res.heatmap.shape),
             "file_gb": round(path.stat().st_size / 1e9, 2),
             "peak_rss_mb": round(peak_rss_mb(), 1), "rss_before_mb": round(base, 1), "machine": machine()}]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", type=int, nargs=3, default=(160, 512, 512), metavar=("Z", "Y", "X"))
    p.add_argument("--voxel-size", type=float, default=10.0)
    p.add_argument("--snr", type=float, nargs="+", default=(0.3, 0.1, 0.05),
                   help="noise levels (projection SNR); 0.05 is the hard level")
    p.add_argument("--classes", nargs="+", default=("ribosome", "proteasome", "shell"))
    p.add_argument("--methods", nargs="+", default=("ours", "supervised", "dog", "log"),
                   choices=("ours", "cetpick", "supervised", "dog", "log"))
    p.add_argument("--rounds", type=int, default=2, choices=(1, 2),
                   help="2: add the simulated correction round to 'ours'")
    p.add_argument("--label-fraction", type=float, default=0.3)
    p.add_argument("--steps", type=int, default=None, help="training steps (default: the preset's)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a TrainConfig field for ours/supervised (repeatable; for ablations)")
    p.add_argument("--detect-set", action="append", metavar="KEY=VALUE",
                   help="override a DetectConfig field of every detection, e.g. profile_weight=0 (repeatable)")
    p.add_argument("--tag", default="", help="a name for this configuration in the output")
    p.add_argument("--models", default="", metavar="DIR",
                   help="keep each case's round-1 model (and its round-2 model) here and reuse round 1 when present (to ablate the "
                        "correction round alone)")
    p.add_argument("--review", default="lookalike", choices=("lookalike", "score", "quota"),
                   help="the scripted user of the correction round: the panel's review with look-alikes "
                        "(default) or without them (score), or the quotas of earlier rounds (quota)")
    p.add_argument("--correction", action="append", metavar="KEY=VALUE",
                   help="a setting of the correction round (continue_training), e.g. lr=3e-4; repeatable")
    p.add_argument("--missed", type=int, default=0, metavar="N",
                   help="after the review the scripted user also clicks up to N particles of the labelled region "
                        "that no label or pick lies near (the tutorial's advice)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", default=str(DEFAULT_CACHE), help="folder for simulated tomograms")
    p.add_argument("--out", default=None, help="also append the JSON lines to this file")
    p.add_argument("--memory", action="store_true", help="run the large-tomogram memory/time case instead")
    p.add_argument("--memory-shape", type=int, nargs=3, default=(500, 1024, 1024))
    p.add_argument("--memory-diameter", type=float, default=15.0,
                   help="particle diameter (voxels) of the untrained network (without --memory-model)")
    p.add_argument("--memory-model", default="", metavar="CKPT",
                   help="a trained model: detect in tomogram 2 at --memory-snr repeated to --memory-shape")
    p.add_argument("--memory-snr", type=float, default=0.1, help="SNR of the tomogram --memory-model detects in")
    # internal: run one case in this process
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--snr-one", type=float, help=argparse.SUPPRESS)
    p.add_argument("--class-one", help=argparse.SUPPRESS)
    p.add_argument("--method", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    DETECT_SETS.update(parse_sets(args.detect_set))
    if args.one:
        for rec in (run_memory(args) if args.memory else run_case(args)):
            print("RESULT " + json.dumps(rec), flush=True)
        return 0

    jobs = [["--memory"]] if args.memory else [
        ["--snr-one", str(s), "--class-one", c, "--method", m]
        for s in args.snr for c in args.classes for m in args.methods]
    common = ["--shape", *map(str, args.shape), "--voxel-size", str(args.voxel_size), "--cache", args.cache,
              "--label-fraction", str(args.label_fraction), "--seed", str(args.seed), "--rounds", str(args.rounds),
              "--memory-shape", *map(str, args.memory_shape), "--memory-diameter", str(args.memory_diameter),
              "--memory-model", args.memory_model, "--memory-snr", str(args.memory_snr), "--tag", args.tag,
              "--review", args.review, "--missed", str(args.missed)]
    for s in args.set or []:
        common += ["--set", s]
    for s in args.correction or []:
        common += ["--correction", s]
    for s in args.detect_set or []:
        common += ["--detect-set", s]
    if args.models:
        common += ["--models", args.models]
    if args.steps:
        common += ["--steps", str(args.steps)]
    for job in jobs:
        proc = subprocess.run([sys.executable, __file__, "--one", *common, *job], capture_output=True, text=True)
        lines = [l[7:] for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
        if proc.returncode or not lines:
            print(json.dumps({"job": job, "error": proc.stderr.strip().splitlines()[-1:] or ["?"]}), flush=True)
            continue
        for line in lines:
            emit(line, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
