"""The ``cetpick`` command: the engine without napari, from a laptop to a cluster.

Sub-commands: ``demo``, ``simulate``, ``convert``, ``train``, ``detect``, ``evaluate``.
User errors print one line ``cetpick: error: ...`` and exit with status 2.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

from . import __version__
from .io.formats import WRITABLE_FORMATS
from .errors import CetpickError

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


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (``cetpick train: error: ...``) and exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _bin_value(text: str):
    """``--bin``: ``auto`` or a positive whole number."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be auto or a positive whole number, not {text!r}")
    return value


def _writable_folder(folder, what: str) -> Path:
    """Create ``folder`` if needed and make sure files can be written there, else CetpickError.

    Checked before long work starts, so a bad output place never costs a training run.
    """
    import tempfile

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise CetpickError(f"{folder}: is a file, not a folder; cannot write the {what} there.")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder, prefix=".cetpick-write-test-"):
            pass
    except OSError as exc:
        raise CetpickError(f"{folder}: cannot write the {what} there ({exc.strerror or exc}).") from None
    return folder


def _model_out_path(args, inputs) -> Path:
    """The model file to write: ``.ckpt`` (added when missing), in a writable folder, not an input."""
    from .checkpoint import MODEL_EXTENSION

    out = Path(args.out)
    if not out.suffix:
        out = out.with_suffix(MODEL_EXTENSION)
    if out.suffix.lower() != MODEL_EXTENSION:
        raise CetpickError(f"{out}: model files end in {MODEL_EXTENSION}; choose --out NAME{MODEL_EXTENSION}.")
    if out.is_dir():
        raise CetpickError(f"{out}: is a folder; give a file name for --out.")
    for i in inputs:
        if i and Path(i).exists() and out.exists() and out.resolve() == Path(i).resolve():
            raise CetpickError(f"{out}: is one of the input files; choose another --out.")
    _writable_folder(out.parent if str(out.parent) else Path("."), "model")
    return out


def _thickness_axis(args) -> int | None:
    if getattr(args, "thickness_axis", None) not in (None, "auto"):
        return int(args.thickness_axis)
    if getattr(args, "order", None):
        return ORDER_TO_THICKNESS[args.order]
    return None


def _open(path, args):
    from .io import open_tomogram

    return open_tomogram(path, thickness_axis=_thickness_axis(args), voxel_size_a=getattr(args, "voxel_size", None))


def _copick_training_pairs(args) -> list[tuple]:
    """(Tomogram, labels zyx) pairs from the picks of one object in a copick project."""
    import numpy as np

    from .io.copick_project import copick_runs_with_picks, open_copick, open_copick_tomogram, read_copick_picks

    if args.voxel_spacing is None or not args.tomo_type or not args.object:
        raise CetpickError("--copick needs --object, --voxel-spacing and --tomo-type.")
    root = open_copick(args.copick)
    runs = list(dict.fromkeys(args.run or [])) or copick_runs_with_picks(root, args.object, args.user_id,
                                                                          args.session_id)
    if not runs:
        who = "".join(f" {k} {v!r}" for k, v in (("user", args.user_id), ("session", args.session_id)) if v)
        raise CetpickError(f"{Path(args.copick).name}: no run has picks of {args.object!r}{who}.")
    pairs = []
    for run in runs:
        sets = read_copick_picks(root, run, args.object, args.voxel_spacing, args.user_id, args.session_id)
        zyx = np.concatenate([s.zyx for s in sets]) if sets else np.zeros((0, 3))
        if len(zyx) == 0:
            raise CetpickError(f"copick run {run!r} has no picks of {args.object!r}; drop it from --run.")
        # several users' picks of one particle: keep one per voxel
        _, first = np.unique(np.round(zyx), axis=0, return_index=True)
        tomo = open_copick_tomogram(root, run, args.voxel_spacing, args.tomo_type)
        pairs.append((tomo, zyx[np.sort(first)], None))
    args.copick_runs = runs
    if args.bbox is None and args.diameter_a is None:
        from .io.copick_project import copick_object_diameter_a

        args.diameter_a = copick_object_diameter_a(root, args.object)
    return pairs


def _drop_duplicates(zyx, source) -> "np.ndarray":
    """Labels with repeats (closer than half a voxel to an earlier one) removed, saying so."""
    import numpy as np
    from scipy.spatial import cKDTree

    zyx = np.asarray(zyx, float).reshape(-1, 3)
    if len(zyx) < 2:
        return zyx
    pairs = cKDTree(zyx).query_pairs(0.5, output_type="ndarray")
    if len(pairs) == 0:
        return zyx
    drop = np.zeros(len(zyx), bool)
    drop[pairs.max(axis=1)] = True
    print(f"cetpick: warning: {Path(str(source)).name}: {int(drop.sum())} duplicate label(s) (the same "
          f"particle clicked twice) ignored", file=sys.stderr)
    return zyx[~drop]


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
    if getattr(args, "copick", None):
        return _copick_training_pairs(args)
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
            pairs.append((tomo, _drop_duplicates(lab, f"{args.train_coord_txt} ({name})"), None))
    else:
        if not args.tomogram:
            raise CetpickError("Give --tomogram and --labels (or --train_img_txt and --train_coord_txt).")
        if len(args.tomogram) != len(args.labels or []):
            raise CetpickError(f"Give one --labels per --tomogram ({len(args.tomogram)} tomograms, "
                               f"{len(args.labels or [])} label files).")
        negatives = getattr(args, "negatives", None) or {}
        for i, (t, l) in enumerate(zip(args.tomogram, args.labels)):
            tomo = _open(t, args)
            lab = _drop_duplicates(_read_clicks(l, tomo, args.labels_format), l)
            neg = _read_clicks(negatives[i], tomo, args.labels_format) if i in negatives else None
            pairs.append((tomo, lab, neg))
    return pairs


def _masks_for(args, tomograms) -> list | None:
    """The ``--mask`` of each ``--tomogram`` (None where it has none; None without any)."""
    held = getattr(args, "mask", None) or {}
    if not held:
        return None
    if getattr(args, "train_img_txt", None) or getattr(args, "train_coord_txt", None):
        raise CetpickError("--mask belongs to a --tomogram; it cannot be used with --train_img_txt.")
    from .io import open_mask

    return [open_mask(held[i], t) if i in held else None for i, t in enumerate(tomograms)]


# ----------------------------------------------------------------------------- commands
def _train_knobs(args) -> dict:
    """The TrainConfig fields the user set on the command line (None = not given)."""
    return dict(
        bbox=args.bbox, diameter_a=args.diameter_a, tau=args.tau,
        expected_particles=args.expected_particles, label_fraction=args.label_fraction, thresh=args.thresh,
        contrastive=args.contrastive, cr_weight=args.cr_weight, temp=args.temp, num_epochs=args.num_epochs,
        max_steps=args.max_steps, lr=args.lr, lr_step=tuple(args.lr_step) if args.lr_step else None, arch=args.arch,
        batch_size=args.batch_size, gauss=args.gauss, compress=args.compress,
        translation_ratio=args.translation_ratio, bin=args.bin, seed=args.seed,
    )


def _with_copick_info(ckpt, args):
    """Record the copick object a model was trained on (detection writes its picks back under it)."""
    if getattr(args, "copick", None):
        ckpt.info["copick"] = {"object": args.object, "voxel_spacing_a": float(args.voxel_spacing),
                               "tomo_type": args.tomo_type, "runs": list(args.copick_runs)}
    return ckpt


def cmd_train(args) -> int:
    from .config import preset
    from .train import Trainer, correction_config

    out_path = _model_out_path(args, [*(args.tomogram or []), *(args.labels or []),
                                      *(getattr(args, "negatives", None) or {}).values(), args.train_img_txt,
                                      args.train_coord_txt])
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
        if init.voxel_size_differs(voxel_size_a):
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
    # the weights are saved before anything after training (threshold calibration) can fail
    gen = trainer.steps(calibrate=False)
    message = ""
    replaced = out_path.exists()
    try:
        for pr in gen:
            bar.update(pr.step, pr.total, f"loss {pr.loss:.4f}", pr.eta_s)
            message = pr.message or message
    except KeyboardInterrupt:
        trainer.status = f"interrupted at step {trainer.step} of {trainer.total_steps}"
        if trainer.step == 0:
            print("\ncetpick: interrupted before the first training step; no model saved", file=sys.stderr)
            return 130
        out = trainer.checkpoint(calibrate=False).save(out_path)
        print(f"\ncetpick: interrupted: the model after {trainer.step} of {trainer.total_steps} steps was saved to "
              f"{out} (threshold not calibrated; continue with --continue-from {out})", file=sys.stderr)
        return 130
    out = _with_copick_info(trainer.checkpoint(calibrate=False), args).save(out_path)
    try:
        ckpt = _with_copick_info(trainer.checkpoint(), args)
    except KeyboardInterrupt:
        print(f"\ncetpick: interrupted during threshold calibration; the trained model was saved to {out} "
              "without a calibrated threshold (give --threshold when detecting)", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001  (the model is safe on disk; say what failed, in one line)
        print(f"cetpick: error: threshold calibration failed ({type(exc).__name__}: {exc}); the trained model was "
              f"saved to {out} without a calibrated threshold (give --threshold when detecting)", file=sys.stderr)
        return 1
    out = ckpt.save(out_path)
    print(f"Saved model to {out}{' (replaced the existing file)' if replaced else ''} ({ckpt.summary()}) "
          f"in {time.perf_counter() - t0:.1f} s")
    if message:
        print(f"cetpick: error: {message}", file=sys.stderr)
        return 1
    return 0


def write_detection(res, tomo, out_dir: Path, stem: str, fmt: str, heatmap: bool = True) -> dict[str, Path]:
    """Write picks (and the heatmap MRC) of one tomogram, each file atomically; returns the paths."""
    from .batch import write_outputs

    return write_outputs(res, tomo, out_dir, stem, fmt, heatmap=heatmap)


class _BatchDisplay:
    """Progress of a batch on stderr: on a terminal one line (tomograms with ETA, then the tiles
    of the tomogram(s) being detected); in a log, one line per tenth of each tomogram's tiles."""

    def __init__(self, total: int, quiet: bool = False):
        self.total, self.quiet = total, quiet
        self.tty = sys.stderr.isatty()
        self._deciles: dict = {}
        self._shown = False

    def clear(self) -> None:
        if self.tty and self._shown:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
            self._shown = False

    def update(self, pr) -> None:
        if self.quiet:
            return
        if self.tty:
            frac = (pr.done + sum(t / max(n, 1) for t, n in pr.running.values())) / max(pr.total, 1)
            eta = "" if pr.eta_s is None else f" ETA {pr.eta_s:5.0f}s"
            tiles = " ".join(f"{k} {t}/{n}" for k, (t, n) in list(pr.running.items())[:3])
            line = f"detect [{'#' * int(frac * 30):<30}] {pr.done}/{pr.total}{eta}  {'tiles ' + tiles if tiles else ''}"
            sys.stderr.write("\r\033[K" + line[:160])
            sys.stderr.flush()
            self._shown = True
            return
        for name, (t, n) in pr.running.items():
            dec = int(10 * t / max(n, 1))
            if self._deciles.get(name) != dec:
                self._deciles[name] = dec
                eta = "" if pr.eta_s is None else f", batch ETA {pr.eta_s:.0f} s"
                sys.stderr.write(f"detect {name}: tile {t}/{n} [{pr.done}/{pr.total} tomograms done{eta}]\n")
                sys.stderr.flush()


def _print_result(r, as_json: bool, done: int, total: int) -> None:
    for w in r.warnings:
        print(f"cetpick: warning: {r.name}: {w}", file=sys.stderr)
    if r.status == "failed":
        print(f"cetpick: error: {r.source}: {r.error}", file=sys.stderr)
    if as_json:
        print(json.dumps(r.to_dict()), flush=True)
    elif r.status == "ok":
        expected = "" if r.expected is None else f" (about {r.expected:.0f} expected)"
        how = f" from {r.threshold_source}" if r.threshold_source else ""
        print(f"[{done}/{total}] {r.name}: {r.picks} picks{expected} at threshold {r.threshold:.3f}{how} "
              f"in {r.seconds:.1f} s -> "
              + ", ".join(r.outputs.values()), flush=True)
    elif r.status == "skipped":
        print(f"[{done}/{total}] {r.name}: skipped, outputs exist", flush=True)


def _summary_table(results) -> str:
    rows = [("tomogram", "picks", "threshold", "seconds", "status")]
    for r in results:
        rows.append((r.name, "-" if r.picks is None else str(r.picks),
                     "-" if r.threshold is None else f"{r.threshold:.3f}",
                     "-" if r.status == "skipped" else f"{r.seconds:.1f}", r.status))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = ["  ".join(c.ljust(w) if i in (0, 4) else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
             for row in rows]
    n = {s: sum(r.status == s for r in results) for s in ("ok", "skipped", "failed")}
    lines.append(f"{len(results)} tomograms: {n['ok']} ok, {n['skipped']} skipped, {n['failed']} failed")
    return "\n".join(lines)


def _detect_jobs_and_options(args):
    """The jobs and options of `cetpick detect` (files or a copick project)."""
    from .batch import BatchOptions, load_model, plan_copick_jobs, plan_file_jobs

    ckpt = load_model(args.model)  # a bad model stops the command before any job
    common = dict(model=str(Path(args.model).resolve()), threshold=args.threshold,
                  threshold_from=args.threshold_from, views=args.views, K=args.K,
                  min_distance_vox=args.min_distance, margin_z=args.margin_z, margin_xy=args.margin_xy,
                  tile_xy=args.tile_xy, device=args.device)
    if args.copick:
        from .io.copick_project import copick_object_diameter_a, open_copick

        if args.tomogram or args.tomogram_list or args.test_img_txt or args.out_dir:
            raise CetpickError("--copick reads tomograms from the project and writes picks into it; "
                               "leave out --tomogram, --tomogram-list, --test_img_txt and --out-dir.")
        if args.voxel_spacing is None or not args.tomo_type:
            raise CetpickError("--copick needs --voxel-spacing and --tomo-type.")
        obj = args.object or ckpt.info.get("copick", {}).get("object")
        if not obj:
            raise CetpickError(f"{args.model}: the model was not trained on a copick object; give --object NAME.")
        copick_object_diameter_a(open_copick(args.copick), obj)  # the object must exist in the project
        opts = BatchOptions(**common, copick_config=str(Path(args.copick).resolve()), object_name=obj,
                            voxel_spacing_a=float(args.voxel_spacing), tomo_type=args.tomo_type,
                            out_user_id=args.out_user_id, out_session_id=str(args.out_session_id))
        jobs = plan_copick_jobs(args.copick, args.run or [], args.voxel_spacing, args.tomo_type)
    else:
        if not args.out_dir:
            raise CetpickError("Give --out-dir (or --copick CONFIG to write picks into a copick project).")
        for flag in ("run", "object", "voxel_spacing", "tomo_type"):
            if getattr(args, flag) not in (None, []):
                raise CetpickError(f"--{flag.replace('_', '-')} is for copick projects; give --copick CONFIG too.")
        _writable_folder(args.out_dir, "picks")  # before any tomogram is read
        opts = BatchOptions(**common, out_dir=str(Path(args.out_dir).resolve()), fmt=args.format,
                            heatmap=not args.no_heatmap, thickness_axis=_thickness_axis(args),
                            voxel_size_a=args.voxel_size)
        jobs = plan_file_jobs(args.tomogram or [], args.tomogram_list or [],
                              [args.test_img_txt] if args.test_img_txt else [])
        jobs = _with_masks(jobs, args)
    return jobs, opts


def _with_masks(jobs, args) -> list:
    """Each ``--mask`` goes to the job of the ``--tomogram`` it follows (one file, not a pattern)."""
    held = getattr(args, "mask", None) or {}
    if not held:
        return jobs
    from .batch import _expand

    masks = {}
    for i, mask in held.items():
        files = _expand(args.tomogram[i])
        if len(files) != 1:
            raise CetpickError(f"--mask {mask} follows --tomogram {args.tomogram[i]}, which names "
                               f"{len(files)} files; a mask belongs to one tomogram file.")
        masks[str(files[0].resolve())] = str(Path(mask).resolve())
    return [replace(job, mask=masks.get(job.path)) for job in jobs]


def cmd_detect(args) -> int:
    """Detect in every tomogram given, each isolated from the others; exit 2 if any failed."""
    from .batch import run_batch

    jobs, opts = _detect_jobs_and_options(args)
    display = _BatchDisplay(len(jobs), args.quiet)
    gen = run_batch(jobs, opts, skip_existing=args.skip_existing, dask=args.dask)
    while True:
        try:
            pr = next(gen)
        except StopIteration as stop:
            results = stop.value
            break
        if pr.result is not None:
            display.clear()
            _print_result(pr.result, args.json, pr.done, pr.total)
        display.update(pr)
    display.clear()
    print(_summary_table(results), file=sys.stderr if args.json else sys.stdout)
    return 2 if any(r.status == "failed" for r in results) else 0


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
    from .synthetic import check_simulation_args, save_synthetic, simulate_tomogram
    from .train import Trainer
    from .utils import run_generator

    out = Path(args.out_dir)
    shape = tuple(args.shape)
    check_simulation_args(shape, args.voxel_size, args.snr)
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
    cfg = preset("default", diameter_a=diameter_a, seed=args.seed, max_steps=args.steps)
    trainer = Trainer([tomo1.data], [sims[0].labels], cfg, voxel_size_a=tomo1.voxel_size_a, device=args.device)
    bar = _Bar("train", args.quiet)
    for pr in trainer.steps(calibrate=False):  # calibrated once, below
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
# Option groups that several sub-commands share, then one builder per sub-command.
def _add_device_options(p) -> None:
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_volume_options(p) -> None:
    p.add_argument("--voxel-size", type=float, default=None, metavar="A",
                   help="override the header voxel size (Å); needed when the header says 0 or 1")
    p.add_argument("--thickness-axis", default="auto", choices=["auto", "0", "1", "2"],
                   help="file axis (0 = MRC sections, 1 = rows, 2 = columns) that holds the thickness; "
                        "auto = the thinnest (an unrotated IMOD reconstruction has it at 1)")
    p.add_argument("--order", choices=sorted(ORDER_TO_THICKNESS),
                   help="the original cet_pick's name for the layout: xyz = thickness-first file, "
                        "xzy = unrotated IMOD (thickness is the middle axis), zxy = thickness last")
    _add_device_options(p)


def _add_simulation_options(p) -> None:
    p.add_argument("--shape", type=int, nargs=3, default=(64, 256, 256), metavar=("Z", "Y", "X"))
    p.add_argument("--voxel-size", type=float, default=10.0, help="voxel size of the simulation (Å)")
    p.add_argument("--snr", type=float, default=0.3, help="projection signal-to-noise ratio (1 easy, 0.3 typical, 0.1 hard)")


def _add_mask_option(p, zero_regions: str) -> None:
    p.add_argument("--mask", action=_PerTomogram, metavar="M.mrc",
                   help="ignore regions of the preceding --tomogram: an MRC of the tomogram's shape in the same "
                        "file layout, nonzero = keep" + zero_regions)


def _add_copick_tomogram_options(g) -> None:
    g.add_argument("--voxel-spacing", type=float, metavar="A", help="voxel spacing of the tomograms to read (Å)")
    g.add_argument("--tomo-type", help="tomogram type to read, e.g. wbp or denoised")


def _add_demo_parser(sub) -> None:
    from .config import DEFAULT_STEPS

    p = sub.add_parser("demo", help="simulate two tomograms, train on one, detect on the other, export, evaluate",
                       description=cmd_demo.__doc__)
    p.add_argument("--out-dir", default="cetpick_demo", help="folder for every file the demo writes")
    _add_simulation_options(p)
    p.add_argument("--label-class", default="ribosome", help="the class whose particles are labelled and picked")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="training steps (default %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    _add_device_options(p)
    p.set_defaults(func=cmd_demo)


def _add_simulate_parser(sub) -> None:
    p = sub.add_parser("simulate", help="write a synthetic tomogram with ground truth and sparse labels")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--stem", default="tomo", help="file name stem")
    _add_simulation_options(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--label-class", default="ribosome")
    p.add_argument("--label-fraction", type=float, default=0.3)
    p.set_defaults(func=cmd_simulate)


def _add_convert_parser(sub) -> None:
    p = sub.add_parser("convert", help="IMOD text files (one per tomogram) -> the original cet_pick coordinate list")
    p.add_argument("input", help="folder of IMOD model2point text files (image name = file stem)")
    p.add_argument("--out", required=True, help="coordinate list to write (image_name x_coord y_coord z_coord)")
    p.add_argument("--order", default="xzy", choices=["xyz", "xzy", "zxy"],
                   help="column order of the IMOD files in the thickness frame (xzy: unrotated IMOD volume)")
    p.add_argument("--ext", default=".txt", help="extension of the IMOD text files")
    p.set_defaults(func=cmd_convert)


def _add_train_method_options(p) -> None:
    from .config import ARCHS

    g = p.add_argument_group("method knobs (the original's names)")
    g.add_argument("--tau", type=float, help="class prior of the PU loss (default: estimated from the labels)")
    g.add_argument("--expected-particles", type=int, help="expected particle count in the training tomograms (instead of --label-fraction), to derive tau "
                        "and the default threshold")
    g.add_argument("--label-fraction", type=float,
                   help="share of the particles you labelled in the region you worked in (default 0.5), to derive tau "
                        "and the default threshold")
    g.add_argument("--thresh", type=float, help="target value splitting soft from hard positives (contrastive)")
    g.add_argument("--contrastive", action=argparse.BooleanOptionalAction, default=None,
                   help="use the debiased contrastive regulariser (default: off; on in --preset cetpick)")
    g.add_argument("--cr_weight", type=float, help="weight of the contrastive regulariser")
    g.add_argument("--temp", type=float, help="temperature of the contrastive regulariser")
    g.add_argument("--num_epochs", type=int, help="epochs (one step per batch of labels each; default: 300 steps in all)")
    g.add_argument("--max-steps", type=int, help="cap on optimiser steps (0 = no cap)")
    g.add_argument("--lr", type=float, help="Adam learning rate (a correction round defaults to a tenth of the first round's)")
    g.add_argument("--lr_step", type=int, nargs="*", help="epochs at which the learning rate is multiplied by 0.1")
    g.add_argument("--arch", choices=ARCHS, help="network: unet3d_small (default) or unet3d (3D U-Nets), unet_small (pseudo-3D, fast), "
                        "unet_4 or unet_5 (the published pseudo-3D)")
    g.add_argument("--batch-size", type=int, help="crops per step")
    g.add_argument("--gauss", type=float, help="sigma of a Gaussian pre-filter (working voxels; 0 = none)")
    g.add_argument("--compress", action=argparse.BooleanOptionalAction, default=None,
                   help="average slice pairs (z binning by 2)")
    g.add_argument("--translation_ratio", type=float,
                   help="jitter of training crops around their labels (the original's knob; default from the preset)")
    g.add_argument("--bin", default=None, type=_bin_value, help="binning before the network: auto or an integer")
    g.add_argument("--seed", type=int, help="random seed (training is deterministic on CPU)")


def _add_train_parser(sub) -> None:
    from .config import PRESETS

    p = sub.add_parser("train", help="train a detector from sparse labels")
    p.add_argument("--tomogram", action="append", help="training tomogram (repeat for several)")
    p.add_argument("--labels", action="append", help="labels of the preceding tomogram: IMOD .txt/.mod, STAR, CSV")
    p.add_argument("--negatives", action=_PerTomogram, metavar="FILE",
                   help="known non-particles (negative clicks) of the preceding --tomogram, in the same formats as "
                        "labels (optional)")
    p.add_argument("--labels-format", default=None, help="force the label format (default: from the extension)")
    p.add_argument("--train_img_txt", help="the original's image list (image_name<TAB>rec_path)")
    p.add_argument("--train_coord_txt", help="the original's coordinate list (image_name x_coord y_coord z_coord)")
    p.add_argument("--out", required=True,
                   help="model file to write (.ckpt; added when missing). Written as soon as training ends, "
                        "and on Ctrl-C with the steps done so far")
    p.add_argument("--preset", default="default", choices=PRESETS,
                   help="default: our settings (3D U-Net, tau from the expected count); cetpick: the published settings")
    g = p.add_argument_group("particle")
    g.add_argument("--bbox", type=float, help="particle diameter (box size) in voxels")
    g.add_argument("--diameter-a", type=float, help="particle diameter in Å (instead of --bbox)")
    _add_train_method_options(p)
    p.add_argument("--continue-from", metavar="MODEL",
                   help="a correction round: fine-tune this model with the (added) labels and negatives; keeps its "
                        "voxel size and settings and runs 100 steps at a tenth of its learning rate unless "
                        "--max-steps/--num_epochs/--lr are given")
    _add_mask_option(p, ", zero = left out of training")
    g = p.add_argument_group("copick project (instead of --tomogram/--labels)")
    g.add_argument("--copick", metavar="CONFIG.json", help="train on the picks of a copick project")
    g.add_argument("--object", help="pickable object whose picks are the labels (its radius gives the diameter "
                                    "unless --bbox/--diameter-a is given)")
    g.add_argument("--user-id", help="only picks by this user (default: every user's picks, none by tools)")
    g.add_argument("--session-id", help="only picks of this session")
    g.add_argument("--run", action="append", help="train on this run (repeat; default: every run with such picks)")
    _add_copick_tomogram_options(g)
    _add_volume_options(p)
    p.set_defaults(func=cmd_train)


def _add_detect_picking_options(p) -> None:
    p.add_argument("--format", default="imod", choices=sorted(f.name for f in WRITABLE_FORMATS),
                   help="picks file (default imod): " + "; ".join(f"{f.name} = {f.label}" for f in WRITABLE_FORMATS))
    p.add_argument("--threshold", "--out_thresh", dest="threshold", type=float,
                   help="score threshold (default: read off each tomogram's own scores, see --threshold-from); "
                        "--out_thresh is the original's name")
    p.add_argument("--threshold-from", choices=("tomogram", "model"), default="tomogram",
                   help="without --threshold: 'tomogram' (default) puts each tomogram's threshold where its own "
                        "pick scores split into background and particles, whatever the particle density or the "
                        "share you labelled, and falls back to the model's default where they show no clear "
                        "split; 'model' always uses the model's default (calibrated on your labelled region)")
    p.add_argument("--views", type=int, choices=(1, 2), default=2,
                   help="2 (default): run the network on each tile and on the tile mirrored through its centre, "
                        "and average the two (each pick gets the views' agreement); 1: one pass, twice as fast, "
                        "a little less accurate")
    p.add_argument("--K", type=int, help="keep at most K picks")
    p.add_argument("--min-distance", type=float, help="minimum distance between picks in voxels (default: radius)")
    p.add_argument("--margin-z", "--cutoff_z", dest="margin_z", type=int, default=0,
                   help="drop picks within this many slices of the top and bottom (tomogram voxels); "
                        "--cutoff_z is the original's name")
    p.add_argument("--margin-xy", type=int, default=0, help="drop picks this close to the xy borders (voxels)")
    p.add_argument("--tile-xy", type=int, default=256, help="tile size in working voxels (memory; rounded down to a multiple of the network's 8, 16 or 32)")
    p.add_argument("--no-heatmap", action="store_true", help="do not write the heatmap MRC")


def _add_detect_parser(sub) -> None:
    p = sub.add_parser(
        "detect", help="detect particles with a trained model in one or many tomograms",
        description="Detect particles in every tomogram given, one job per tomogram. A tomogram that fails is "
                    "reported in one line and the others go on; the exit status is 2 if any failed or if an "
                    "error stops the whole command (such as a missing model), 0 otherwise.",
        epilog="Examples: cetpick detect --model m.ckpt --tomogram 'tomos/*.mrc' --out-dir picks --dask local:2;  "
               "cetpick detect --model m.ckpt --copick project.json --voxel-spacing 10 --tomo-type wbp")
    p.add_argument("--model", required=True)
    p.add_argument("--tomogram", action="append",
                   help="tomogram file, or a quoted pattern such as 'dir/*.mrc' (repeat for several)")
    p.add_argument("--tomogram-list", action="append", metavar="FILE",
                   help="file with one tomogram path (or pattern) per line; relative to the file's folder")
    p.add_argument("--test_img_txt", help="the original's image list of tomograms")
    p.add_argument("--out-dir", help="folder for the picks and heatmaps (not with --copick)")
    _add_detect_picking_options(p)
    _add_mask_option(p, "; picks in zero regions are dropped")
    g = p.add_argument_group("many tomograms")
    g.add_argument("--skip-existing", action="store_true",
                   help="skip tomograms whose outputs all exist (resume an interrupted run; files are written "
                        "atomically, so a killed run leaves no half-written file)")
    g.add_argument("--json", action="store_true",
                   help="print one JSON line per tomogram on stdout (the summary table goes to stderr)")
    g.add_argument("--dask", metavar="ADDRESS",
                   help="run the jobs on a Dask cluster: a scheduler address (tcp://host:8786) or local:N for N "
                        "worker processes on this machine; needs pip install 'napari-cetpick[dask]' and paths "
                        "the workers can read (docs/cluster.md)")
    g = p.add_argument_group("copick project (instead of --tomogram and --out-dir)")
    g.add_argument("--copick", metavar="CONFIG.json",
                   help="read tomograms from this copick project and write the picks (with scores) into it")
    g.add_argument("--run", action="append", help="detect in this run (repeat; default: every run with the tomogram)")
    _add_copick_tomogram_options(g)
    g.add_argument("--object", help="pickable object to write (default: the one the model was trained on)")
    g.add_argument("--out-user-id", default="cetpick", help="user id of the written picks (default: cetpick)")
    g.add_argument("--out-session-id", default="0", help="session id of the written picks (default: 0, a tool)")
    _add_volume_options(p)
    p.set_defaults(func=cmd_detect)


def _add_evaluate_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="precision, recall, F1, best F1 and AP of picks against a truth file")
    p.add_argument("--picks", required=True)
    p.add_argument("--truth", required=True)
    p.add_argument("--radius", type=float, required=True, help="match radius in voxels")
    p.add_argument("--threshold", type=float, help="score threshold for precision/recall/F1 (default: all picks)")
    p.add_argument("--picks-format", default=None)
    p.add_argument("--truth-format", default=None)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_evaluate)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="cetpick",
        description="Sparse-label particle picking in cryo-electron tomograms (the cet_pick PU detector).",
        epilog="Coordinates: see docs/coordinates.md. Every sub-command has --help.")
    parser.add_argument("--version", action="version", version=f"napari-cetpick {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for add in (_add_demo_parser, _add_simulate_parser, _add_convert_parser, _add_train_parser,
                _add_detect_parser, _add_evaluate_parser):
        add(sub)
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
