"""The ``cetpick`` command: the engine without napari, from a laptop to a cluster.

Sub-commands: ``demo``, ``simulate``, ``convert``, ``train``, ``detect``, ``evaluate``.
User errors print one line ``cetpick: error: ...`` and exit with status 2.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path

from . import __version__
from .errors import CetpickError

PICK_FORMATS = {"imod": ".txt", "mod": ".mod", "star": ".star", "star5": ".star", "csv": ".csv", "cetpick": ".coords"}
ORDER_TO_THICKNESS = {"xyz": 0, "xzy": 1, "zxy": 2}


# ----------------------------------------------------------------------------- helpers
class _Bar:
    """A one-line text progress bar on stderr (silent when stderr is not a terminal, except every 10 %)."""

    def __init__(self, label: str, quiet: bool = False):
        self.label, self.quiet = label, quiet
        self.tty = sys.stderr.isatty()
        self._last_decile = -1

    def update(self, done: int, total: int, extra: str = "", eta_s: float | None = None) -> None:
        if self.quiet:
            return
        frac = done / max(total, 1)
        eta = "" if eta_s is None else f" ETA {eta_s:5.0f}s"
        line = f"{self.label} [{'#' * int(frac * 30):<30}] {done}/{total}{eta} {extra}"
        if self.tty:
            sys.stderr.write("\r" + line[:150])
            if done >= total:
                sys.stderr.write("\n")
        elif int(frac * 10) != self._last_decile:
            self._last_decile = int(frac * 10)
            sys.stderr.write(line + "\n")
        sys.stderr.flush()


class _PerTomogram(argparse.Action):
    """An option that belongs to the preceding ``--tomogram`` (``--negatives``, ``--mask``).

    Stores ``{tomogram index: value}`` under ``dest``; refuses a value with no ``--tomogram``
    before it, or a second value for the same tomogram.
    """

    def __call__(self, parser, namespace, value, option_string=None):
        tomos = getattr(namespace, "tomogram", None) or []
        if not tomos:
            parser.error(f"{option_string} belongs to a --tomogram: give --tomogram first.")
        held = dict(getattr(namespace, self.dest, None) or {})
        i = len(tomos) - 1
        if i in held:
            parser.error(f"{option_string} given twice for --tomogram {tomos[i]}.")
        held[i] = value
        setattr(namespace, self.dest, held)


def _thickness_axis(args) -> int | None:
    if getattr(args, "thickness_axis", None) not in (None, "auto"):
        return int(args.thickness_axis)
    if getattr(args, "order", None):
        return ORDER_TO_THICKNESS[args.order]
    return None


def _open(path, args):
    from .io import open_tomogram

    return open_tomogram(path, thickness_axis=_thickness_axis(args), voxel_size_a=getattr(args, "voxel_size", None))


def _read_clicks(path, tomo, fmt):
    """Positive or negative clicks of one tomogram, in its layout, checked to lie inside it."""
    from .io import check_inside, read_points

    ps = read_points(path, fmt=fmt, layout=tomo.layout, voxel_size_a=tomo.voxel_size_a, shape_zyx=tomo.shape_zyx)
    check_inside(ps.zyx, tomo.shape_zyx, path)
    return ps.zyx


def _training_pairs(args) -> list[tuple]:
    """(Tomogram, labels zyx, negatives zyx or None) from --tomogram/--labels or the original's lists."""
    from .io import read_coordinate_list, read_image_list, read_points  # noqa: F401

    if getattr(args, "negatives", None) and (args.train_img_txt or args.train_coord_txt):
        raise CetpickError("--negatives belongs to a --tomogram; it cannot be used with --train_img_txt.")
    pairs = []
    if args.train_img_txt or args.train_coord_txt:
        if not (args.train_img_txt and args.train_coord_txt):
            raise CetpickError("Give both --train_img_txt and --train_coord_txt.")
        images = read_image_list(args.train_img_txt)
        coords = read_coordinate_list(args.train_coord_txt)
        for name, rec in images.items():
            tomo = _open(rec, args)
            lab = coords.get(name)
            if lab is None:
                raise CetpickError(f"{args.train_coord_txt}: no coordinates for image {name!r}.")
            from .io import check_inside

            check_inside(lab, tomo.shape_zyx, args.train_coord_txt)
            pairs.append((tomo, lab, None))
    else:
        if not args.tomogram:
            raise CetpickError("Give --tomogram and --labels (or --train_img_txt and --train_coord_txt).")
        if len(args.tomogram) != len(args.labels or []):
            raise CetpickError(f"Give one --labels per --tomogram ({len(args.tomogram)} tomograms, "
                               f"{len(args.labels or [])} label files).")
        negatives = getattr(args, "negatives", None) or {}
        for i, (t, l) in enumerate(zip(args.tomogram, args.labels)):
            tomo = _open(t, args)
            lab = _read_clicks(l, tomo, args.labels_format)
            neg = _read_clicks(negatives[i], tomo, args.labels_format) if i in negatives else None
            pairs.append((tomo, lab, neg))
    return pairs


def _read_mask(path, tomo):
    """An ignore mask for an opened tomogram: nonzero = keep, in the tomogram file's own layout.

    Returns a ``(Z, Y, X)`` uint8 array in the napari frame of the tomogram.
    """
    import numpy as np

    from .io import open_tomogram

    mask = open_tomogram(path, thickness_axis=tomo.layout.thickness_axis)
    if tuple(mask.layout.file_shape) != tuple(tomo.layout.file_shape):
        raise CetpickError(f"{path}: mask shape {tuple(mask.layout.file_shape)} differs from the tomogram's "
                           f"{tuple(tomo.layout.file_shape)}; the mask must have the tomogram's shape, in the "
                           f"same file layout (nonzero = keep).")
    return (np.asarray(mask.data) != 0).astype(np.uint8)


def _masks_for(args, tomograms) -> list | None:
    """The ``--mask`` of each ``--tomogram`` (None where it has none; None without any)."""
    held = getattr(args, "mask", None) or {}
    if not held:
        return None
    if getattr(args, "train_img_txt", None) or getattr(args, "train_coord_txt", None):
        raise CetpickError("--mask belongs to a --tomogram; it cannot be used with --train_img_txt.")
    return [_read_mask(held[i], t) if i in held else None for i, t in enumerate(tomograms)]


# ----------------------------------------------------------------------------- commands
def _train_knobs(args) -> dict:
    """The TrainConfig fields the user set on the command line (None = not given)."""
    return dict(
        bbox=args.bbox, diameter_a=args.diameter_a, tau=args.tau,
        expected_particles=args.expected_particles, label_fraction=args.label_fraction, thresh=args.thresh,
        contrastive=args.contrastive, cr_weight=args.cr_weight, temp=args.temp, num_epochs=args.num_epochs,
        max_steps=args.max_steps, lr=args.lr, lr_step=tuple(args.lr_step) if args.lr_step else None, arch=args.arch,
        batch_size=args.batch_size, gauss=args.gauss, compress=args.compress,
        bin=(None if args.bin is None else (args.bin if args.bin == "auto" else int(args.bin))), seed=args.seed,
    )


def cmd_train(args) -> int:
    from .config import preset
    from .train import Trainer, correction_config

    pairs = _training_pairs(args)
    vsizes = {p[0].voxel_size_a for p in pairs}
    if len(vsizes) > 1:
        raise CetpickError(f"Training tomograms have different voxel sizes {sorted(v or 0 for v in vsizes)}; "
                           "bin them to one voxel size first.")
    voxel_size_a = vsizes.pop()
    knobs = _train_knobs(args)
    init = None
    if args.continue_from:
        from .checkpoint import Checkpoint

        init = Checkpoint.load(args.continue_from)
        if voxel_size_a and init.voxel_size_a and abs(voxel_size_a / init.voxel_size_a - 1) > 0.02:
            raise CetpickError(f"{args.continue_from}: the model was trained at {init.voxel_size_a:g} Å/voxel but "
                               f"the tomograms have {voxel_size_a:g} Å/voxel.")
        voxel_size_a = init.voxel_size_a or voxel_size_a
        # a correction round: the model's settings and a short schedule; the user's knobs win
        cfg = correction_config(init, **knobs)
        if cfg.bbox is None and cfg.diameter_a is None:
            cfg = replace(cfg, bbox=init.diameter_vox)
    else:
        cfg = preset(args.preset, **knobs)
    masks = _masks_for(args, [p[0] for p in pairs])
    t0 = time.perf_counter()
    trainer = Trainer([p[0].data for p in pairs], [p[1] for p in pairs], cfg, voxel_size_a=voxel_size_a,
                      device=args.device, init=init, negatives=[p[2] for p in pairs], masks=masks)
    n_labels = sum(len(p[1]) for p in pairs)
    n_neg = sum(0 if p[2] is None else len(p[2]) for p in pairs)
    what = "Continuing" if init is not None else "Training"
    print(f"{what} {cfg.arch} on {len(pairs)} tomogram(s), {n_labels} labels, {n_neg} negatives, particle "
          f"{trainer.diameter_vox:g} voxels, bin {trainer.bin_xy}, tau {trainer.tau:.3g}, {trainer.total_steps} steps "
          f"on {trainer.device_name}", file=sys.stderr)
    bar = _Bar("train", args.quiet)
    gen = trainer.steps()
    message = ""
    while True:
        try:
            pr = next(gen)
        except StopIteration:
            break
        bar.update(pr.step, pr.total, f"loss {pr.loss:.4f}", pr.eta_s)
        message = pr.message or message
    ckpt = trainer.checkpoint()
    out = ckpt.save(args.out)
    print(f"Saved model to {out} ({ckpt.summary()}) in {time.perf_counter() - t0:.1f} s")
    if message:
        print(f"cetpick: error: {message}", file=sys.stderr)
        return 1
    return 0


def _detect_targets(args) -> list[tuple[str, Path]]:
    from .io import read_image_list

    targets = []
    if args.test_img_txt:
        targets += [(name, Path(p)) for name, p in read_image_list(args.test_img_txt).items()]
    targets += [(Path(t).stem, Path(t)) for t in (args.tomogram or [])]
    if not targets:
        raise CetpickError("Give --tomogram (or --test_img_txt).")
    return targets


def run_detection(ckpt, tomo, args, quiet: bool = False, mask=None):
    """Detect in one opened tomogram with CLI-style arguments; returns the DetectResult.

    ``mask``: ``(Z, Y, X)`` array in the tomogram's napari frame, 0 where picks are dropped.
    """
    from .config import DetectConfig
    from .detect import detect

    cfg = DetectConfig(threshold=args.threshold, K=args.K, min_distance_vox=args.min_distance,
                       margin_z=args.margin_z, margin_xy=args.margin_xy, tile_xy=args.tile_xy)
    bar = _Bar(f"detect {tomo.name or ''}".strip(), quiet)
    extra = {} if mask is None else {"mask": mask}
    gen = detect(ckpt, tomo.data, cfg, voxel_size_a=tomo.voxel_size_a, device=args.device, **extra)
    while True:
        try:
            pr = next(gen)
        except StopIteration as stop:
            return stop.value
        bar.update(pr.tile, pr.n_tiles, "tiles", pr.eta_s)


def write_detection(res, tomo, out_dir: Path, stem: str, fmt: str, heatmap: bool = True) -> dict[str, Path]:
    """Write picks (and the heatmap MRC) of one tomogram; returns the paths."""
    import pandas as pd

    from .io import write_heatmap, write_points

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    feats = pd.DataFrame({"score": res.scores.astype(float)})
    paths["picks"] = write_points(out_dir / f"{stem}_picks{PICK_FORMATS[fmt]}", res.zyx, features=feats, fmt=fmt,
                                  layout=tomo.layout, voxel_size_a=tomo.voxel_size_a, tomogram_name=stem,
                                  shape_zyx=tomo.shape_zyx)
    if heatmap:
        paths["heatmap"] = write_heatmap(out_dir / f"{stem}_heatmap.mrc", res.heatmap, res.scale, res.translate,
                                         voxel_size_a=tomo.voxel_size_a, layout=tomo.layout)
    return paths


def cmd_detect(args) -> int:
    from .checkpoint import Checkpoint

    targets = _detect_targets(args)
    masks = getattr(args, "mask", None) or {}
    first = len(targets) - len(args.tomogram or [])  # --test_img_txt targets come first and have no mask
    ckpt = Checkpoint.load(args.model)
    out_dir = Path(args.out_dir)
    for i, (name, path) in enumerate(targets):
        tomo = _open(path, args)
        mask = _read_mask(masks[i - first], tomo) if (i - first) in masks else None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            res = run_detection(ckpt, tomo, args, args.quiet, mask=mask)
        for w in caught:
            print(f"cetpick: warning: {w.message}", file=sys.stderr)
        paths = write_detection(res, tomo, out_dir, name, args.format, heatmap=not args.no_heatmap)
        print(f"{name}: {len(res.zyx)} picks at threshold {res.threshold:.3f} in {res.elapsed_s:.1f} s -> "
              + ", ".join(str(p) for p in paths.values()))
    return 0


def cmd_evaluate(args) -> int:
    from .evaluate import evaluate
    from .io import read_points

    pred = read_points(args.picks, fmt=args.picks_format)
    truth = read_points(args.truth, fmt=args.truth_format)
    scores = pred.features["score"].to_numpy() if "score" in pred.features else None
    res = evaluate(pred.zyx, scores, truth.zyx, args.radius, threshold=args.threshold)
    d = res.to_dict()
    if args.json:
        print(json.dumps(d))
    else:
        width = max(len(k) for k in d)
        for k, v in d.items():
            print(f"{k:<{width}}  {v:.4f}" if isinstance(v, float) else f"{k:<{width}}  {v}")
    return 0


def cmd_simulate(args) -> int:
    from .synthetic import save_synthetic, simulate_tomogram

    t0 = time.perf_counter()
    sim = simulate_tomogram(shape=tuple(args.shape), voxel_size_a=args.voxel_size, snr=args.snr, seed=args.seed,
                            label_class=args.label_class, label_fraction=args.label_fraction)
    paths = save_synthetic(sim, args.out_dir, args.stem)
    n = {k: len(v) for k, v in sim.particles.items()}
    print(f"Simulated {sim.shape} at {sim.voxel_size_a:g} Å in {time.perf_counter() - t0:.1f} s: particles {n}, "
          f"{len(sim.labels)} labels of {sim.label_class}")
    for k, p in paths.items():
        print(f"  {k:<20} {p}")
    return 0


def cmd_convert(args) -> int:
    from .io import imod_text_to_coordinate_list

    out = imod_text_to_coordinate_list(args.input, args.out, order=args.order, ext=args.ext)
    print(f"Wrote {out}")
    return 0


def cmd_demo(args) -> int:
    """Simulate a pair, train on tomogram 1's sparse labels, detect on tomogram 2, export, evaluate."""
    from .checkpoint import Checkpoint  # noqa: F401  (import cost paid before timing)
    from .config import DetectConfig, preset
    from .detect import detect
    from .evaluate import evaluate
    from .io import open_tomogram
    from .synthetic import save_synthetic, simulate_tomogram
    from .train import Trainer
    from .utils import run_generator

    out = Path(args.out_dir)
    shape = tuple(args.shape)
    t0 = time.perf_counter()
    print(f"[1/5] Simulating two {shape} tomograms at {args.voxel_size:g} Å (SNR {args.snr:g}) ...", file=sys.stderr)
    sims, paths = [], []
    for i, seed in enumerate((args.seed, args.seed + 1)):
        sim = simulate_tomogram(shape=shape, voxel_size_a=args.voxel_size, snr=args.snr, seed=seed,
                                label_class=args.label_class)
        sims.append(sim)
        paths.append(save_synthetic(sim, out, f"tomo{i + 1}"))
    cls = args.label_class
    diameter_a = sims[0].diameters_a[cls]
    tomo1 = open_tomogram(paths[0]["tomogram"])
    print(f"[2/5] Training on {len(sims[0].labels)} sparse labels of {cls} ({diameter_a:g} Å) ...", file=sys.stderr)
    # the demo trains exactly --steps steps, however few labels the simulation drew
    cfg = preset("default", diameter_a=diameter_a, seed=args.seed, max_steps=args.steps, num_epochs=args.steps)
    trainer = Trainer([tomo1.data], [sims[0].labels], cfg, voxel_size_a=tomo1.voxel_size_a, device=args.device)
    bar = _Bar("train", args.quiet)
    for pr in trainer.steps():
        bar.update(pr.step, pr.total, f"loss {pr.loss:.4f}", pr.eta_s)
    ckpt = trainer.checkpoint()
    model_path = ckpt.save(out / "model.ckpt")
    print("[3/5] Detecting on tomogram 2 ...", file=sys.stderr)
    tomo2 = open_tomogram(paths[1]["tomogram"])
    res = run_generator(detect(ckpt, tomo2.data, DetectConfig(), voxel_size_a=tomo2.voxel_size_a, device=args.device))
    print("[4/5] Exporting ...", file=sys.stderr)
    written = write_detection(res, tomo2, out, "tomo2", "imod")
    print("[5/5] Evaluating against the simulated truth ...", file=sys.stderr)
    radius = 0.5 * diameter_a / args.voxel_size
    ev = evaluate(res.zyx, res.scores, sims[1].particles[cls], radius / 2, threshold=res.threshold)
    ev_r = evaluate(res.zyx, res.scores, sims[1].particles[cls], radius, threshold=res.threshold)
    print(f"\ncetpick demo: {cls}, trained on {len(sims[0].labels)} labels in {trainer.elapsed_s:.0f} s "
          f"({trainer.device_name}), detected in {res.elapsed_s:.1f} s")
    print(f"  picks {len(res.zyx)} / true {len(sims[1].particles[cls])} at threshold {res.threshold:.2f}")
    print(f"  within half the radius: precision {ev.precision:.3f} recall {ev.recall:.3f} F1 {ev.f1:.3f} "
          f"(best F1 {ev.best_f1:.3f}, AP {ev.ap:.3f})")
    print(f"  within the radius:      precision {ev_r.precision:.3f} recall {ev_r.recall:.3f} F1 {ev_r.f1:.3f}")
    print(f"  model    {model_path}\n  picks    {written['picks']}\n  heatmap  {written['heatmap']}")
    print(f"  inputs   {paths[0]['tomogram']}, {paths[1]['tomogram']} (truth and labels beside them)")
    print(f"  total {time.perf_counter() - t0:.0f} s. Open in napari: napari {paths[1]['tomogram']} {written['picks']}")
    return 0


# ----------------------------------------------------------------------------- parser
def _add_volume_options(p) -> None:
    p.add_argument("--voxel-size", type=float, default=None, metavar="A",
                   help="override the header voxel size (Å); needed when the header says 0 or 1")
    p.add_argument("--thickness-axis", default="auto", choices=["auto", "0", "1", "2"],
                   help="file axis (0 = MRC sections, 1 = rows, 2 = columns) that holds the thickness; "
                        "auto = the thinnest (an unrotated IMOD reconstruction has it at 1)")
    p.add_argument("--order", choices=sorted(ORDER_TO_THICKNESS),
                   help="the original cet_pick's name for the layout: xyz = thickness-first file, "
                        "xzy = unrotated IMOD (thickness is the middle axis), zxy = thickness last")
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    from .config import ARCHS, PRESETS

    parser = argparse.ArgumentParser(
        prog="cetpick",
        description="Sparse-label particle picking in cryo-electron tomograms (the cet_pick PU detector).",
        epilog="Coordinates: see docs/coordinates.md. Every sub-command has --help.")
    parser.add_argument("--version", action="version", version=f"napari-cetpick {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("demo", help="simulate two tomograms, train on one, detect on the other, export, evaluate",
                       description=cmd_demo.__doc__)
    p.add_argument("--out-dir", default="cetpick_demo", help="folder for every file the demo writes")
    p.add_argument("--shape", type=int, nargs=3, default=(64, 256, 256), metavar=("Z", "Y", "X"))
    p.add_argument("--voxel-size", type=float, default=10.0, help="voxel size of the simulation (Å)")
    p.add_argument("--snr", type=float, default=0.3, help="projection signal-to-noise ratio (1 easy, 0.3 typical, 0.1 hard)")
    p.add_argument("--label-class", default="ribosome", help="the class whose particles are labelled and picked")
    p.add_argument("--steps", type=int, default=400, help="training steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("simulate", help="write a synthetic tomogram with ground truth and sparse labels")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--stem", default="tomo", help="file name stem")
    p.add_argument("--shape", type=int, nargs=3, default=(64, 256, 256), metavar=("Z", "Y", "X"))
    p.add_argument("--voxel-size", type=float, default=10.0)
    p.add_argument("--snr", type=float, default=0.3, help="projection signal-to-noise ratio (1 easy, 0.3 typical, 0.1 hard)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--label-class", default="ribosome")
    p.add_argument("--label-fraction", type=float, default=0.3)
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("convert", help="IMOD text files (one per tomogram) -> the original cet_pick coordinate list")
    p.add_argument("input", help="folder of IMOD model2point text files (image name = file stem)")
    p.add_argument("--out", required=True, help="coordinate list to write (image_name x_coord y_coord z_coord)")
    p.add_argument("--order", default="xzy", choices=["xyz", "xzy", "zxy"],
                   help="column order of the IMOD files in the thickness frame (xzy: unrotated IMOD volume)")
    p.add_argument("--ext", default=".txt", help="extension of the IMOD text files")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("train", help="train a detector from sparse labels")
    p.add_argument("--tomogram", action="append", help="training tomogram (repeat for several)")
    p.add_argument("--labels", action="append", help="labels of the preceding tomogram: IMOD .txt/.mod, STAR, CSV")
    p.add_argument("--negatives", action=_PerTomogram, metavar="FILE",
                   help="known non-particles (negative clicks) of the preceding --tomogram, in the same formats as "
                        "labels (optional)")
    p.add_argument("--labels-format", default=None, help="force the label format (default: from the extension)")
    p.add_argument("--train_img_txt", help="the original's image list (image_name<TAB>rec_path)")
    p.add_argument("--train_coord_txt", help="the original's coordinate list (image_name x_coord y_coord z_coord)")
    p.add_argument("--out", required=True, help="model file to write (.ckpt)")
    p.add_argument("--preset", default="default", choices=PRESETS,
                   help="default: our fast, augmented settings; cetpick: the published settings")
    g = p.add_argument_group("particle")
    g.add_argument("--bbox", type=float, help="particle diameter (box size) in voxels")
    g.add_argument("--diameter-a", type=float, help="particle diameter in Å (instead of --bbox)")
    g = p.add_argument_group("method knobs (the original's names)")
    g.add_argument("--tau", type=float, help="class prior of the PU loss (default: estimated from the labels)")
    g.add_argument("--expected-particles", type=int, help="expected particle count, to derive tau")
    g.add_argument("--label-fraction", type=float,
                   help="share of the particles you labelled in the region you worked in (default 0.5), to derive tau")
    g.add_argument("--thresh", type=float, help="target value splitting soft from hard positives (contrastive)")
    g.add_argument("--contrastive", action=argparse.BooleanOptionalAction, default=None,
                   help="use the debiased contrastive regulariser")
    g.add_argument("--cr_weight", type=float, help="weight of the contrastive regulariser")
    g.add_argument("--temp", type=float, help="temperature of the contrastive regulariser")
    g.add_argument("--num_epochs", type=int, help="epochs (one crop pair per label each)")
    g.add_argument("--max-steps", type=int, help="cap on optimiser steps (0 = no cap)")
    g.add_argument("--lr", type=float, help="Adam learning rate")
    g.add_argument("--lr_step", type=int, nargs="*", help="epochs at which the learning rate is multiplied by 0.1")
    g.add_argument("--arch", choices=ARCHS, help="network: unet_small (fast), unet_4 or unet_5 (published)")
    g.add_argument("--batch-size", type=int, help="crop pairs per step")
    g.add_argument("--gauss", type=float, help="sigma of a Gaussian pre-filter (working voxels; 0 = none)")
    g.add_argument("--compress", action=argparse.BooleanOptionalAction, default=None,
                   help="average slice pairs (z binning by 2)")
    g.add_argument("--bin", default=None, help="binning before the network: auto or an integer")
    g.add_argument("--seed", type=int, help="random seed (training is deterministic on CPU)")
    p.add_argument("--continue-from", metavar="MODEL",
                   help="a correction round: fine-tune this model with the (added) labels and negatives; keeps its "
                        "voxel size and settings and runs a short schedule unless --max-steps/--num_epochs are given")
    p.add_argument("--mask", action=_PerTomogram, metavar="M.mrc",
                   help="ignore regions of the preceding --tomogram: an MRC of the tomogram's shape in the same "
                        "file layout, nonzero = keep, zero = left out of training")
    _add_volume_options(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("detect", help="detect particles with a trained model")
    p.add_argument("--model", required=True)
    p.add_argument("--tomogram", action="append", help="tomogram to detect in (repeat for several)")
    p.add_argument("--test_img_txt", help="the original's image list of tomograms")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--format", default="imod", choices=sorted(PICK_FORMATS),
                   help="picks file: imod (.txt, default), mod, star (RELION 4), star5 (RELION 5), csv "
                        "(with scores), cetpick (the original's 'x z y score')")
    p.add_argument("--threshold", type=float, help="score threshold (default: calibrated when training)")
    p.add_argument("--K", type=int, help="keep at most K picks")
    p.add_argument("--min-distance", type=float, help="minimum distance between picks in voxels (default: radius)")
    p.add_argument("--margin-z", type=int, default=0, help="drop picks this close to the top/bottom (voxels)")
    p.add_argument("--margin-xy", type=int, default=0, help="drop picks this close to the xy borders (voxels)")
    p.add_argument("--tile-xy", type=int, default=256, help="tile size in working voxels (memory)")
    p.add_argument("--no-heatmap", action="store_true", help="do not write the heatmap MRC")
    p.add_argument("--mask", action=_PerTomogram, metavar="M.mrc",
                   help="ignore regions of the preceding --tomogram: an MRC of the tomogram's shape in the same "
                        "file layout, nonzero = keep; picks in zero regions are dropped")
    _add_volume_options(p)
    p.set_defaults(func=cmd_detect)

    p = sub.add_parser("evaluate", help="precision, recall, F1, best F1 and AP of picks against a truth file")
    p.add_argument("--picks", required=True)
    p.add_argument("--truth", required=True)
    p.add_argument("--radius", type=float, required=True, help="match radius in voxels")
    p.add_argument("--threshold", type=float, help="score threshold for precision/recall/F1 (default: all picks)")
    p.add_argument("--picks-format", default=None)
    p.add_argument("--truth-format", default=None)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_evaluate)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CetpickError as exc:
        print(f"cetpick: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cetpick: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
