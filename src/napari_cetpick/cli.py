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
from .device import PRECISIONS
from .config import AUTO_SMOOTHING, SMOOTHING_BELOW_SEPARATION
from .counts import SHOWN_SPLIT_WITHIN
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


class _PerTomogramList(argparse.Action):
    """Like :class:`_PerTomogram`, but a tomogram may take several values (one per class, ``NAME=FILE``)."""

    def __call__(self, parser, namespace, value, option_string=None):
        tomos = getattr(namespace, "tomogram", None) or []
        if not tomos:
            parser.error(f"{option_string} belongs to a --tomogram: give --tomogram first.")
        held = {k: list(v) for k, v in (getattr(namespace, self.dest, None) or {}).items()}
        held.setdefault(len(tomos) - 1, []).append(value)
        setattr(namespace, self.dest, held)


class _Labels(argparse.Action):
    """``--labels``: appended in order, each remembering how many ``--tomogram`` came before it."""

    def __call__(self, parser, namespace, value, option_string=None):
        setattr(namespace, self.dest, [*(getattr(namespace, self.dest, None) or []), value])
        after = [*(getattr(namespace, "labels_after", None) or []), len(getattr(namespace, "tomogram", None) or [])]
        namespace.labels_after = after


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
    """(Tomogram, labels zyx, None) per run from the picks of the ``--object``(s) in a copick project.

    One object: labels are an array (the one-class form). Several: a dict per object, and
    each object's radius in the project gives its class's diameter unless ``--bbox
    NAME=...``/``--diameter-a NAME=...`` is given.
    """
    import numpy as np

    from .io.copick_project import (copick_object_diameter_a, copick_runs_with_picks, open_copick,
                                    open_copick_tomogram, read_copick_picks)

    objects = list(dict.fromkeys(args.object or []))
    if args.voxel_spacing is None or not args.tomo_type or not objects:
        raise CetpickError("--copick needs --object, --voxel-spacing and --tomo-type.")
    root = open_copick(args.copick)
    runs = list(dict.fromkeys(args.run or []))
    if not runs:
        runs = list(dict.fromkeys(r for o in objects
                                  for r in copick_runs_with_picks(root, o, args.user_id, args.session_id)))
    if not runs:
        who = "".join(f" {k} {v!r}" for k, v in (("user", args.user_id), ("session", args.session_id)) if v)
        raise CetpickError(f"{Path(args.copick).name}: no run has picks of {' or '.join(map(repr, objects))}{who}.")
    pairs = []
    for run in runs:
        per = {}
        for o in objects:
            sets = read_copick_picks(root, run, o, args.voxel_spacing, args.user_id, args.session_id)
            zyx = np.concatenate([s.zyx for s in sets]) if sets else np.zeros((0, 3))
            # several users' picks of one particle: keep one per voxel
            _, first = np.unique(np.round(zyx), axis=0, return_index=True)
            per[o] = zyx[np.sort(first)]
        if sum(len(v) for v in per.values()) == 0:
            raise CetpickError(f"copick run {run!r} has no picks of {' or '.join(map(repr, objects))}; drop it "
                               "from --run.")
        tomo = open_copick_tomogram(root, run, args.voxel_spacing, args.tomo_type)
        pairs.append((tomo, per if len(objects) > 1 else per[objects[0]], None))
    args.copick_runs = runs
    if len(objects) == 1:
        if not args.bbox and not args.diameter_a:
            args.diameter_a = [str(copick_object_diameter_a(root, objects[0]))]
    else:
        _, bbox_n = _per_class(args.bbox, "--bbox")
        _, diam_n = _per_class(args.diameter_a, "--diameter-a")
        for o in objects:
            if o not in bbox_n and o not in diam_n:
                args.diameter_a = [*(args.diameter_a or []), f"{o}={copick_object_diameter_a(root, o)}"]
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
        from .config import ALL_CLASSES

        if not args.tomogram:
            raise CetpickError("Give --tomogram and --labels (or --train_img_txt and --train_coord_txt).")
        names = getattr(args, "classes", None)
        negatives = getattr(args, "negatives", None) or {}
        if getattr(args, "labels_from_cluster", None):
            per_tomo = [{}]
        elif names is None:
            if len(args.tomogram) != len(args.labels or []):
                raise CetpickError(f"Give one --labels per --tomogram ({len(args.tomogram)} tomograms, "
                                   f"{len(args.labels or [])} label files).")
            per_tomo = [{None: l} for l in args.labels]
        else:
            per_tomo = [[] for _ in args.tomogram]
            for text, after in zip(args.labels, args.labels_after):
                if after == 0:
                    raise CetpickError(f"--labels {text} belongs to a --tomogram: give --tomogram first.")
                per_tomo[after - 1].append(text)
            empty = [t for t, l in zip(args.tomogram, per_tomo) if not l]
            if empty:
                raise CetpickError(f"--tomogram {empty[0]} has no --labels NAME=FILE after it.")
            per_tomo = [_split_by_class(l, "--labels", names) for l in per_tomo]
        for i, t in enumerate(args.tomogram):
            tomo = _open(t, args)
            negs = _split_by_class(negatives.get(i, []), "--negatives", names, plain_key=ALL_CLASSES)
            neg = {k: _read_clicks(f, tomo, args.labels_format) for k, f in negs.items()}
            if getattr(args, "labels_from_cluster", None):
                from .explore import LIKELY_NOISE, cluster_summary, read_cluster_labels

                lab = {}
                for name, spec in _cluster_specs(args).items():
                    lab[name] = read_cluster_labels(spec, layout=tomo.layout, shape_zyx=tomo.shape_zyx,
                                                    voxel_size_a=tomo.voxel_size_a, tomogram=t, volume=tomo.data)
                    print(f"{len(lab[name])} labels{'' if name is None else ' of ' + repr(name)}: the members of "
                          f"cluster {spec}{' (' + LIKELY_NOISE + ')' if cluster_summary(spec).get('likely_noise') else ''}")
            else:
                lab = {k: _drop_duplicates(_read_clicks(f, tomo, args.labels_format), f)
                       for k, f in per_tomo[i].items()}
            if names is None:
                pairs.append((tomo, lab[None], neg.get(ALL_CLASSES)))
            else:
                pairs.append((tomo, lab, neg or None))
    return pairs


def _cluster_specs(args) -> dict:
    """``--labels-from-cluster [NAME=]DIR:ID`` (repeated): ``{class or None: DIR:ID}``."""
    out = {}
    for text in args.labels_from_cluster or []:
        folder = str(text).rpartition(":")[0]
        name, spec = (None, str(text)) if folder and Path(folder).is_dir() else _named(text, "--labels-from-cluster")
        if name in out:
            raise CetpickError(f"--labels-from-cluster is given twice for class {name!r}." if name else
                               "--labels-from-cluster is given twice without a class name: give each as "
                               "NAME=DIR:CLUSTER for several classes.")
        if spec in out.values():
            raise CetpickError(f"--labels-from-cluster: cluster {spec} is given for two classes; a particle is of "
                               "one class.")
        out[name] = spec
    if None in out and len(out) > 1:
        raise CetpickError("Give every --labels-from-cluster as NAME=DIR:CLUSTER when there are several (the class "
                           "each cluster's members belong to).")
    return out


def _labels_from_cluster_setup(args) -> None:
    """``--labels-from-cluster [NAME=]DIR:ID``: one tomogram, no --labels; each class's size from its
    cluster unless given."""
    from .explore import cluster_summary

    if args.labels or args.train_img_txt or getattr(args, "copick", None):
        raise CetpickError("--labels-from-cluster takes the place of --labels, --copick and --train_img_txt: give "
                           "one of them.")
    if not args.tomogram or len(args.tomogram) != 1:
        raise CetpickError("--labels-from-cluster labels one tomogram: give exactly one --tomogram (the explored one).")
    specs = _cluster_specs(args)
    summaries = {name: cluster_summary(spec) for name, spec in specs.items()}  # every cluster checked first
    if args.continue_from:  # a correction round keeps the model's sizes
        return
    every_d, sized = _per_class(args.diameter_a, "--diameter-a")
    every_b, boxed = _per_class(args.bbox, "--bbox")
    for name, summary in summaries.items():
        if every_d is not None or every_b is not None or name in sized or name in boxed:
            continue  # the user gave this class's size
        size = f"{summary['median_diameter_a']:g}"
        args.diameter_a = [*(args.diameter_a or []), size if name is None else f"{name}={size}"]
        args.cluster_notes = [*getattr(args, "cluster_notes", []), (  # said once the files are read and fit
            f"{'Particle' if name is None else repr(name)} diameter {size} Å: the cluster's median blob size "
            "(measured on the blob, often off the true size of particles that are not solid balls; give "
            f"--diameter-a {'' if name is None else name + '='}Å if you know it).")]


def _masks_for(args, tomograms) -> list | None:
    """The ``--mask`` of each ``--tomogram`` (None where it has none; None without any)."""
    held = getattr(args, "mask", None) or {}
    if not held:
        return None
    if getattr(args, "train_img_txt", None) or getattr(args, "train_coord_txt", None):
        raise CetpickError("--mask belongs to a --tomogram; it cannot be used with --train_img_txt.")
    from .io import open_mask

    return [open_mask(held[i], t) if i in held else None for i, t in enumerate(tomograms)]


# ----------------------------------------------------------------------------- several classes
def _named(text: str, option: str) -> tuple[str | None, str]:
    """``NAME=VALUE`` -> (NAME, VALUE), a plain value -> (None, value); the name checked."""
    from .config import check_class_name

    name, eq, value = str(text).partition("=")
    if not eq or any(c in name for c in "/\\") or Path(text).exists():
        return None, str(text)
    try:
        check_class_name(name)
    except CetpickError as exc:
        raise CetpickError(f"{option} {text}: {exc}") from None
    if not value:
        raise CetpickError(f"{option} {text}: give a value after '='.")
    head, eq2, _ = value.partition("=")
    if eq2 and not any(c in head for c in "/\\") and not Path(value).exists():
        raise CetpickError(f"{option} {text}: '=' is not allowed in a class name (give NAME=VALUE).")
    return name, value


def _number(text: str, option: str, kind=float):
    try:
        return kind(text)
    except ValueError:
        raise CetpickError(f"{option}: {text!r} is not a {'whole ' if kind is int else ''}number.") from None


def _per_class(values, option: str, kind=float) -> tuple:
    """``(plain value or None, {class: value})`` of an option given plain or as ``NAME=VALUE``."""
    plain_value, named = None, {}
    for text in values or []:
        name, value = _named(text, option)
        v = _number(value, option, kind)
        if name is None:
            if plain_value is not None:
                raise CetpickError(f"{option} is given twice without a class name.")
            plain_value = v
        elif name in named:
            raise CetpickError(f"{option} is given twice for class {name!r}.")
        else:
            named[name] = v
    return plain_value, named


def _label_classes(args) -> list[str] | None:
    """The class names of ``--labels NAME=FILE`` or ``--labels-from-cluster NAME=DIR:ID`` (in
    order), or None for the one-class form."""
    if getattr(args, "copick", None) and len(args.object or []) > 1:
        return list(dict.fromkeys(args.object))
    if getattr(args, "labels_from_cluster", None):
        names = [n for n in _cluster_specs(args) if n is not None]
        return names or None
    named = [_named(l, "--labels")[0] for l in args.labels or []]
    if not any(n is not None for n in named):
        return None
    if any(n is None for n in named):
        raise CetpickError("Give every --labels as NAME=FILE when one is (the class each file's particles belong "
                           "to), or none.")
    return list(dict.fromkeys(named))


def _class_specs(args, names: list[str] | None):
    """``(config-level settings, ClassSpecs or None)`` from --bbox, --diameter-a, --label-fraction, --expected-particles."""
    from .config import ClassSpec

    bbox, bbox_n = _per_class(args.bbox, "--bbox")
    diam, diam_n = _per_class(args.diameter_a, "--diameter-a")
    both = [f"class {n!r}" for n in bbox_n if n in diam_n] + (["every class"] if None not in (bbox, diam) else [])
    if both:
        raise CetpickError(f"--bbox and --diameter-a both give the size of {both[0]}: give one or the other.")
    frac, frac_n = _per_class(args.label_fraction, "--label-fraction")
    count, count_n = _per_class(args.expected_particles, "--expected-particles", int)
    top = dict(bbox=bbox, diameter_a=diam, label_fraction=frac, expected_particles=count)
    named = {"--bbox": bbox_n, "--diameter-a": diam_n, "--label-fraction": frac_n, "--expected-particles": count_n}
    if names is None:
        for option, d in named.items():
            if d:
                how = ("--labels-from-cluster {}=DIR:CLUSTER" if getattr(args, "labels_from_cluster", None)
                       else "--labels {}=FILE").format(next(iter(d)))
                raise CetpickError(f"{option} {next(iter(d))}=...: the labels name no classes; give {how}, or "
                                   f"{option} without a class name.")
        return top, None
    for option, d in named.items():
        stray = [n for n in d if n not in names]
        if stray:
            raise CetpickError(f"{option} is given for class {stray[0]!r}, which has no labels (classes with labels: "
                               f"{', '.join(names)}).")
    specs = []
    for n in names:
        if n not in bbox_n and n not in diam_n and bbox is None and diam is None \
                and not getattr(args, "continue_from", None):  # a correction round keeps the model's sizes
            raise CetpickError(f"Class {n!r} has labels but no size: give --bbox {n}=VOXELS or --diameter-a {n}=Å.")
        specs.append(ClassSpec(n, bbox=bbox_n.get(n), diameter_a=diam_n.get(n), label_fraction=frac_n.get(n),
                               expected_particles=count_n.get(n)))
    return top, specs


def _split_by_class(paths, option: str, names, plain_key=None) -> dict:
    """Files of one tomogram by class: ``{class: FILE}`` (a plain FILE under ``plain_key``)."""
    out = {}
    for text in paths:
        name, value = _named(text, option)
        key = name if name is not None else plain_key
        if name is not None and names is not None and name not in names:
            raise CetpickError(f"{option} {text}: {name!r} is not one of the classes ({', '.join(names)}).")
        if name is not None and names is None:
            raise CetpickError(f"{option} {text}: the labels name no classes; give {option} without a class name.")
        if key in out:
            raise CetpickError(f"{option} is given twice for {'class ' + repr(key) if name else 'one'} --tomogram.")
        out[key] = value
    return out


# ----------------------------------------------------------------------------- commands
def _train_knobs(args) -> dict:
    """The TrainConfig fields the user set on the command line (None = not given)."""
    top, _ = _class_specs(args, None if not getattr(args, "classes", None) else args.classes)
    return dict(
        **top, tau=args.tau, thresh=args.thresh,
        contrastive=args.contrastive, cr_weight=args.cr_weight, temp=args.temp, num_epochs=args.num_epochs,
        max_steps=args.max_steps, lr=args.lr, lr_step=tuple(args.lr_step) if args.lr_step else None, arch=args.arch,
        batch_size=args.batch_size, gauss=args.gauss, compress=args.compress,
        translation_ratio=args.translation_ratio, bin=args.bin, seed=args.seed,
        settle_steps=getattr(args, "settle_steps", None),
        look_alike_steps=getattr(args, "look_alike_steps", None),
        self_training_steps=getattr(args, "self_training_steps", None),
        precision=getattr(args, "precision", None),
    )


def _with_copick_info(ckpt, args):
    """Record the copick object a model was trained on (detection writes its picks back under it)."""
    if getattr(args, "copick", None):
        objects = list(dict.fromkeys(args.object))
        ckpt.info["copick"] = {"object": objects[0], "objects": objects, "voxel_spacing_a": float(args.voxel_spacing),
                               "tomo_type": args.tomo_type, "runs": list(args.copick_runs)}
    return ckpt


def cmd_train(args) -> int:
    from .config import preset
    from .train import Trainer, correction_config

    if getattr(args, "labels_from_cluster", None):
        _labels_from_cluster_setup(args)
    args.classes = _label_classes(args)
    if not getattr(args, "copick", None):
        _class_specs(args, args.classes)  # sizes and shares checked before any file is read
    negatives = [n for ns in (getattr(args, "negatives", None) or {}).values() for n in ns]
    out_path = _model_out_path(args, [*(args.tomogram or []), *[_named(l, "--labels")[1] for l in args.labels or []],
                                      *[_named(n, "--negatives")[1] for n in negatives], args.train_img_txt,
                                      args.train_coord_txt])
    pairs = _training_pairs(args)
    for note in getattr(args, "cluster_notes", []):
        print(note)
    _, specs = _class_specs(args, args.classes)  # with copick, each object's radius read from the project
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
        if specs is not None and any(c.bbox or c.diameter_a for c in specs):
            raise CetpickError("A correction round keeps each class's size; leave out --bbox/--diameter-a NAME=... "
                               "with --continue-from.")
        # a correction round: the model's settings and a short schedule; the user's knobs win
        cfg = correction_config(init, **knobs)
        if cfg.bbox is None and cfg.diameter_a is None:
            cfg = replace(cfg, bbox=init.diameter_vox)
    else:
        cfg = preset(args.preset, **knobs, classes=specs)
    masks = _masks_for(args, [p[0] for p in pairs])
    t0 = time.perf_counter()
    trainer = Trainer([p[0].data for p in pairs], [p[1] for p in pairs], cfg, voxel_size_a=voxel_size_a,
                      device=args.device, init=init, negatives=[p[2] for p in pairs], masks=masks)
    n_labels = trainer.n_labels
    n_neg = trainer.n_negatives
    what = "Continuing" if init is not None else "Training"
    if len(trainer.names) > 1:
        per = "; ".join(f"{c.name}: {c.n_labels} labels, particle {c.diameter_vox:g} voxels, tau {c.tau:.3g}"
                        for c in trainer.plan.classes)
        print(f"{what} {cfg.arch} on {len(pairs)} tomogram(s), {len(trainer.names)} classes ({per}), {n_neg} "
              f"negatives, bin {trainer.bin_xy}, {trainer.steps_text()} on {trainer.device_name}", file=sys.stderr)
    else:
        print(f"{what} {cfg.arch} on {len(pairs)} tomogram(s), {n_labels} labels, {n_neg} negatives, particle "
              f"{trainer.diameter_vox:g} voxels, bin {trainer.bin_xy}, tau {trainer.tau:.3g}, {trainer.steps_text()} "
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
    summary = ckpt.summary()
    summary = f"({summary})" if "\n" not in summary else "\n" + summary
    print(f"Saved model to {out}{' (replaced the existing file)' if replaced else ''} in "
          f"{time.perf_counter() - t0:.1f} s {summary}")
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


def _picks_line(picks, expected, threshold, source, moved=None, raised=None, gain=None) -> str:
    """``N picks (about E expected) at threshold T from SOURCE[, M moved below it (and R raised
    above it) by the profile check[ at the class's contrast here, G × the labels']]``."""
    exp = "" if expected is None else f" (about {expected:.0f} expected)"
    how = f" from {source}" if source else ""
    up = f" and {raised} raised above it" if raised else ""
    from .descriptors import gain_differs

    contrast = f" at the class's contrast here, {gain:.2f} × the labels'" if gain_differs(gain) else ""
    check = "" if moved is None else f", {moved} moved below it{up} by the profile check{contrast}"
    return f"{picks} picks{exp} at threshold {threshold:.3f}{how}{check}"


def _print_result(r, as_json: bool, done: int, total: int) -> None:
    for w in r.warnings:
        print(f"cetpick: warning: {r.name}: {w}", file=sys.stderr)
    if r.status == "failed":
        print(f"cetpick: error: {r.source}: {r.error}", file=sys.stderr)
    if as_json:
        print(json.dumps(r.to_dict()), flush=True)
    elif r.status == "ok" and getattr(r, "classes", None):
        per = "; ".join(f"{name} " + _picks_line(c["picks"], c.get("expected"), c["threshold"], c["threshold_source"],
                                                  c.get("profile_moved"), c.get("profile_raised"), c.get("profile_gain"))
                        for name, c in r.classes.items())
        print(f"[{done}/{total}] {r.name}: {r.picks} picks ({per}) in {r.seconds:.1f} s -> "
              + ", ".join(r.outputs.values()), flush=True)
    elif r.status == "ok":
        line = _picks_line(r.picks, r.expected, r.threshold, r.threshold_source, r.profile_moved, r.profile_raised,
                           r.profile_gain)
        print(f"[{done}/{total}] {r.name}: {line} "
              f"in {r.seconds:.1f} s -> " + ", ".join(r.outputs.values()), flush=True)
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

    if not args.profile_weight >= 0:
        raise CetpickError(f"--profile-weight must be 0 (off) or more, got {args.profile_weight:g}.")
    if not args.flatten >= 0:
        raise CetpickError(f"--flatten must be 0 (off) or a number of particle diameters, got {args.flatten:g}.")
    ckpt = load_model(args.model)  # a bad model stops the command before any job
    plain_t, named_t = _per_class(args.threshold, "--threshold")
    lacking = [n for n in named_t if n not in ckpt.class_names]
    if lacking:
        raise CetpickError(f"--threshold {lacking[0]}=...: the model has no class {lacking[0]!r} (its classes: "
                           f"{', '.join(ckpt.class_names)}).")
    threshold = ({n: named_t.get(n, plain_t) for n in ckpt.class_names if named_t.get(n, plain_t) is not None}
                 if named_t else plain_t)
    common = dict(model=str(Path(args.model).resolve()), threshold=threshold,
                  threshold_from=args.threshold_from, views=args.views, K=args.K,
                  precision=getattr(args, "precision", "auto"), profile_weight=args.profile_weight,
                  profile_contrast=args.profile_contrast, flatten=args.flatten,
                  min_distance_vox=args.min_distance, margin_z=args.margin_z, margin_xy=args.margin_xy,
                  tile_xy=args.tile_xy, device=args.device)
    if args.copick:
        from .io.copick_project import copick_object_diameter_a, open_copick

        if args.tomogram or args.tomogram_list or args.test_img_txt or args.out_dir:
            raise CetpickError("--copick reads tomograms from the project and writes picks into it; "
                               "leave out --tomogram, --tomogram-list, --test_img_txt and --out-dir.")
        if args.voxel_spacing is None or not args.tomo_type:
            raise CetpickError("--copick needs --voxel-spacing and --tomo-type.")
        if ckpt.n_classes > 1:
            from .io.copick_project import check_copick_objects

            if args.object:
                raise CetpickError(f"{args.model}: a model of several classes writes each class under the copick "
                                   f"object of its name ({', '.join(ckpt.class_names)}); leave out --object.")
            obj = None
            check_copick_objects(open_copick(args.copick), ckpt.class_names)
        else:
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


def _evaluation_sets(args) -> dict:
    """``{class (None for the one-class form): (picks zyx, scores, truth zyx)}`` from --picks/--truth."""
    import numpy as np

    from .io import read_points

    truths = {}
    for text in args.truth:
        name, path = _named(text, "--truth")
        if name in truths:
            raise CetpickError(f"--truth is given twice for {'class ' + repr(name) if name else 'one set'}.")
        truths[name] = path
    if None in truths and len(truths) > 1:
        raise CetpickError("Give every --truth as NAME=FILE when one is (one truth file per class), or one plain file.")
    picks = {}
    for text in args.picks:
        name, path = _named(text, "--picks")
        if name in picks:
            raise CetpickError(f"--picks is given twice for {'class ' + repr(name) if name else 'one set'}.")
        picks[name] = read_points(path, fmt=args.picks_format)
    out = {}
    for name, path in truths.items():
        truth = read_points(path, fmt=args.truth_format).zyx
        if name in picks:
            pred = picks[name]
            zyx, feats = pred.zyx, pred.features
        elif None in picks and name is not None and "class" in picks[None].features:
            pred = picks[None]
            sel = (pred.features["class"].astype(str) == name).to_numpy()
            zyx, feats = pred.zyx[sel], pred.features.loc[sel]
        elif None in picks and (name is None or len(picks) == 1 and len(truths) == 1):
            zyx, feats = picks[None].zyx, picks[None].features
        else:
            raise CetpickError(f"No picks of class {name!r}: give --picks {name}=FILE or one picks file with a class "
                               "column (CSV, STAR).")
        scores = feats["score"].to_numpy(float) if "score" in feats else None
        out[name] = (np.asarray(zyx), scores, truth)
    stray = [n for n in picks if n is not None and n not in truths]
    if stray:
        raise CetpickError(f"--picks {stray[0]}=...: no --truth {stray[0]}=FILE to compare with.")
    return out


def cmd_evaluate(args) -> int:
    """Precision, recall, F1, best F1, AP and the CZII F-beta of picks, per class."""
    from .evaluate import CZII_BETA, aggregate_fbeta, evaluate, fbeta

    sets = _evaluation_sets(args)
    r_plain, r_named = _per_class(args.radius, "--radius")
    t_plain, t_named = _per_class(args.threshold, "--threshold")
    _, weights = _per_class(args.weight, "--weight")
    diameters = {}
    if args.model:
        from .checkpoint import Checkpoint

        ckpt = Checkpoint.load(args.model)
        diameters = {c.name: c.diameter_vox for c in ckpt.classes}
    for option, named in (("--radius", r_named), ("--threshold", t_named), ("--weight", weights)):
        stray = [n for n in named if n not in sets]
        if stray:
            raise CetpickError(f"{option} {stray[0]}=...: no --truth {stray[0]}=FILE.")
    results = {}
    for name, (zyx, scores, truth) in sets.items():
        radius = r_named.get(name, r_plain)
        if radius is None:
            d = diameters.get(name) if name is not None else (next(iter(diameters.values())) if len(diameters) == 1
                                                                else None)
            if d is None:
                raise CetpickError(f"Give --radius{f' {name}=R' if name else ''} (match radius in voxels) or --model "
                                   "(a quarter of each class's diameter: the CZII rule, half the particle's radius).")
            radius = d / 4
        res = evaluate(zyx, scores, truth, radius, threshold=t_named.get(name, t_plain))
        d = res.to_dict()
        d[f"fbeta{CZII_BETA:g}"] = round(fbeta(res.precision, res.recall, CZII_BETA), 4)
        results[name] = d
    if list(results) == [None]:
        d = results[None]
        if args.json:
            print(json.dumps(d))
        else:
            width = max(len(k) for k in d)
            for k, v in d.items():
                print(f"{k:<{width}}  {v:.4f}" if isinstance(v, float) else f"{k:<{width}}  {v}")
        return 0
    key = f"fbeta{CZII_BETA:g}"
    agg = round(aggregate_fbeta({n: d[key] for n, d in results.items()}, weights), 4)
    if args.json:
        print(json.dumps({"classes": results, f"{key}_aggregate": agg}))
        return 0
    cols = ("n_true", "n_pred", "n_matched", "precision", "recall", "f1", "best_f1", "ap", key)
    rows = [("class", *cols)] + [(n, *(f"{d[c]:.4f}" if isinstance(d[c], float) else str(d[c]) for c in cols))
                                 for n, d in results.items()]
    widths = [max(len(r[i]) for r in rows) for i in range(len(cols) + 1)]
    for r in rows:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    print(f"F-beta (beta {CZII_BETA:g}) over the classes{' (weighted)' if weights else ''}: {agg:.4f}")
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


def cmd_explore(args) -> int:
    from .explore import LIKELY_NOISE, ExploreConfig, diameter_range_vox, explore, write_exploration

    cfg = ExploreConfig(diameter_range_a=tuple(args.diameter_range), max_candidates=args.max_candidates,
                        min_cluster_size=args.min_cluster_size or None, embedding=args.embedding, seed=args.seed).validate()
    tomo = _open(args.tomogram, args)
    if not tomo.voxel_size_a:
        raise CetpickError(f"{args.tomogram}: the header gives no voxel size; give --voxel-size (Å).")
    diameter_range_vox(cfg, tomo.voxel_size_a, tomo.shape_zyx)  # before any folder is made
    out_dir = _writable_folder(args.out_dir, "exploration")
    from .utils import run_generator

    t0 = time.perf_counter()
    res = run_generator(explore(tomo.data, tomo.voxel_size_a, cfg), None if args.quiet else (
        lambda p: print(f"[{time.perf_counter() - t0:6.1f} s] {p.stage}: {p.message}", file=sys.stderr)))
    paths = write_exploration(out_dir, res, layout=tomo.layout, tomogram_path=args.tomogram)
    print(f"Explored {args.tomogram} in {time.perf_counter() - t0:.0f} s: {len(res.zyx)} candidates, "
          f"{len(res.cluster_ids)} clusters, {res.info['n_unclustered']} candidates in none")
    for c in res.cluster_ids:
        d = res.info["clusters"][str(c)]
        print(f"  cluster {c:>2}: {d['members']:>5} members, median size {d['median_diameter_a']:g} Å, "
              f"median blob score {d['median_score']:.2f}{' (' + LIKELY_NOISE + ')' if d.get('likely_noise') else ''}")
    for k, p in paths.items():
        print(f"  {k:<11} {p}")
    if res.cluster_ids:
        # the strongest blobs are the likeliest particles (the largest cluster is often noise)
        best = max(res.cluster_ids, key=lambda c: res.info["clusters"][str(c)]["median_score"])
        print(f"Look at {paths['overview'].name}, then train from a cluster, e.g. the one of the strongest blobs: "
              f"cetpick train --tomogram {args.tomogram} --labels-from-cluster {out_dir}:{best} --out model.ckpt")
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


def _add_precision_option(p) -> None:
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="arithmetic of the network's pass: auto (default) runs bfloat16 on a CPU that computes it "
                        "natively (AVX512-BF16 or AMX: about 2x faster at bin 1, F1 within 0.011 of float32's on "
                        "the benchmark; docs/benchmark.md), float32 elsewhere; float32 forces full precision")


def _add_volume_options(p) -> None:
    _add_layout_options(p)
    _add_device_options(p)


def _add_layout_options(p) -> None:
    p.add_argument("--voxel-size", type=float, default=None, metavar="A",
                   help="override the header voxel size (Å); needed when the header says 0 or 1")
    p.add_argument("--thickness-axis", default="auto", choices=["auto", "0", "1", "2"],
                   help="file axis (0 = MRC sections, 1 = rows, 2 = columns) that holds the thickness; "
                        "auto = the thinnest (an unrotated IMOD reconstruction has it at 1)")
    p.add_argument("--order", choices=sorted(ORDER_TO_THICKNESS),
                   help="the original cet_pick's name for the layout: xyz = thickness-first file, "
                        "xzy = unrotated IMOD (thickness is the middle axis), zxy = thickness last")


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


def _add_explore_parser(sub) -> None:
    from .explore import DEFAULT_DIAMETER_RANGE_A, EMBEDDINGS, ExploreConfig

    p = sub.add_parser(
        "explore", help="find blob-like candidates without any label, cluster them by look, and write a map",
        description="Exploration before any click: every blob of the sizes given (scale-selective Laplacian of "
                    "Gaussian), moved to the centre of hollow ones (where the density is most radially symmetric), "
                    "described by its radial profile (any orientation), clustered (HDBSCAN) and mapped in 2D "
                    "(t-SNE). Writes candidates.csv (x y z in the tomogram file's frame, with size, score, "
                    "cluster, map position and embedding), explore.json, class_averages.npz and overview.html.",
        epilog="Then train from a cluster: cetpick train --tomogram T.mrc --labels-from-cluster DIR:CLUSTER "
               "--out M.ckpt; several clusters as classes of one model: --labels-from-cluster NAME=DIR:CLUSTER, "
               "repeated.")
    p.add_argument("--tomogram", required=True, help="the tomogram to explore (MRC/REC)")
    p.add_argument("--diameter-range", type=float, nargs=2, default=DEFAULT_DIAMETER_RANGE_A,
                   metavar=("MIN_A", "MAX_A"),
                   help="smallest and largest particle diameter in Å (default %(default)s), turned into voxels "
                        "with the header's voxel size")
    p.add_argument("--out-dir", required=True, help="folder for the exploration's files")
    p.add_argument("--max-candidates", type=int, default=ExploreConfig().max_candidates,
                   help="keep at most this many candidates, strongest blobs first (default %(default)s)")
    p.add_argument("--min-cluster-size", type=int, default=None,
                   help="the smallest group called a cluster (default or 0: 0.75 %% of the candidates, at least 10)")
    p.add_argument("--embedding", choices=EMBEDDINGS, default="profiles",
                   help="what the clusters are made of: radial profiles (default, seconds) or a small 3D encoder "
                        "trained on the candidates without labels (minutes on a CPU; see docs/explore.md)")
    p.add_argument("--seed", type=int, default=0, help="seed of the map, the clustering and the encoder")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    _add_layout_options(p)
    p.set_defaults(func=cmd_explore)


def _add_train_method_options(p) -> None:
    from .config import ARCHS, DEFAULT_MAX_STEPS, DEFAULT_MIN_EPOCHS, DEFAULT_STEPS

    g = p.add_argument_group("method knobs (the original's names)")
    g.add_argument("--tau", type=float, help="class prior of the PU loss (default: estimated from the labels)")
    g.add_argument("--expected-particles", action="append", metavar="[NAME=]N",
                   help="expected particle count in the training tomograms (instead of --label-fraction), to derive "
                        "tau and the default threshold; NAME=N for one class")
    g.add_argument("--label-fraction", action="append", metavar="[NAME=]F",
                   help="share of the particles you labelled in the region you worked in (default 0.5), to derive tau "
                        "and the default threshold (without it or --expected-particles, the default threshold is "
                        "where the labelled region's own scores split); NAME=F for one class, a plain F for every "
                        "class")
    g.add_argument("--thresh", type=float, help="target value splitting soft from hard positives (contrastive)")
    g.add_argument("--contrastive", action=argparse.BooleanOptionalAction, default=None,
                   help="use the debiased contrastive regulariser (default: off; on in --preset cetpick)")
    g.add_argument("--cr_weight", type=float, help="weight of the contrastive regulariser")
    g.add_argument("--temp", type=float, help="temperature of the contrastive regulariser")
    g.add_argument("--num_epochs", type=int,
                   help=f"epochs (one step per batch of labels each; default: {DEFAULT_STEPS} steps in all, or "
                        f"{DEFAULT_MIN_EPOCHS} epochs where that is more, at most {DEFAULT_MAX_STEPS} steps)")
    g.add_argument("--max-steps", type=int, help="cap on optimiser steps (0 = no cap)")
    g.add_argument("--lr", type=float, help="Adam learning rate (a correction round defaults to a tenth of the first round's)")
    g.add_argument("--lr_step", type=int, nargs="*", help="epochs at which the learning rate is multiplied by 0.1")
    g.add_argument("--settle-steps", type=int, metavar="N",
                   help="the last N steps of a first round (at most a third of its steps) run at a tenth of the learning rate (default 100; "
                        "0 = none; none in --preset cetpick or a correction round)")
    g.add_argument("--look-alike-steps", type=int, metavar="N",
                   help="after a first round, N more steps at a tenth of the learning rate (at most a third of its steps) with the "
                        "look-alikes calibration finds in the labelled region as negatives, where it finds some (default 0 = "
                        "none; measured in docs/benchmark.md, round 14; none in a correction round)")
    g.add_argument("--self-training-steps", type=int, metavar="N",
                   help="after a first round, detect in each whole training tomogram and train N more steps at a tenth of "
                        "the learning rate (at most a third of its steps) with the picks it is sure of as labels: a logit "
                        "above the threshold, the profile check agreeing (default 50; 0 = none; docs/benchmark.md, round "
                        "20; none in a correction round)")
    g.add_argument("--arch", choices=ARCHS, help="network: unet3d_4 (the default: a 3D U-Net of four levels), "
                        "unet3d_small or unet3d (3D U-Nets of three levels; unet3d about twice the time on a CPU), "
                        "unet_small (pseudo-3D, fast), unet_4 or unet_5 (the published pseudo-3D)")
    g.add_argument("--batch-size", type=int, help="crops per step")
    g.add_argument("--gauss", type=float,
                   help="sigma of a Gaussian pre-filter (working voxels; 0 = none). Default: chosen from your "
                        f"labels, {AUTO_SMOOTHING:g} where a class stands out of the tomogram's noise by a "
                        f"separation below {SMOOTHING_BELOW_SEPARATION:g} (its labels' radial profiles), else 0; "
                        "a correction round keeps its model's (--preset cetpick: 0)")
    g.add_argument("--compress", action=argparse.BooleanOptionalAction, default=None,
                   help="average slice pairs (z binning by 2)")
    g.add_argument("--translation_ratio", type=float,
                   help="jitter of training crops around their labels (the original's knob; default from the preset)")
    g.add_argument("--bin", default=None, type=_bin_value, help="binning before the network: auto or an integer")
    g.add_argument("--seed", type=int, help="random seed (training is deterministic on CPU)")
    p.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="arithmetic of the network's pass in each training step (the loss, the optimiser and the "
                        "weights stay float32): auto (the default; float32 in --preset cetpick; a correction round keeps "
                        "its model's) runs "
                        "bfloat16 on a CPU with AMX for it (Intel Xeon since Sapphire Rapids: the network's part "
                        "of a step about 1.8x faster, still deterministic; docs/benchmark.md, round 33), float32 "
                        "elsewhere; float32 forces full precision")


def _add_train_parser(sub) -> None:
    from .config import PRESETS

    p = sub.add_parser(
        "train", help="train a detector from sparse labels (one class, or several in one model)",
        epilog="Several classes in one model: name each labels file's class, e.g. cetpick train --tomogram T.mrc "
               "--labels ribosome=L1.txt --labels proteasome=L2.txt --bbox ribosome=26 --bbox proteasome=15 --out "
               "M.ckpt. Each class has its own size, share and threshold; each class's labels are negatives of the "
               "others.")
    p.add_argument("--tomogram", action="append", help="training tomogram (repeat for several)")
    p.add_argument("--labels", action=_Labels, metavar="[NAME=]FILE",
                   help="labels of the preceding tomogram: IMOD .txt/.mod, STAR, CSV; NAME=FILE names their class "
                        "(repeat per class; then every --labels names one)")
    p.add_argument("--negatives", action=_PerTomogramList, metavar="[NAME=]FILE",
                   help="known non-particles (negative clicks) of the preceding --tomogram, in the same formats as "
                        "labels (optional); NAME=FILE: not of that class, a plain FILE: none of the classes")
    p.add_argument("--labels-from-cluster", action="append", metavar="[NAME=]DIR:CLUSTER",
                   help="instead of --labels: the members of one cluster of a 'cetpick explore --out-dir DIR' of "
                        "this --tomogram (the particle size defaults to the cluster's median size); NAME=DIR:CLUSTER "
                        "names its class (repeat per class: several classes in one model)")
    p.add_argument("--labels-format", default=None, help="force the label format (default: from the extension)")
    p.add_argument("--train_img_txt", help="the original's image list (image_name<TAB>rec_path)")
    p.add_argument("--train_coord_txt", help="the original's coordinate list (image_name x_coord y_coord z_coord)")
    p.add_argument("--out", required=True,
                   help="model file to write (.ckpt; added when missing). Written as soon as training ends, "
                        "and on Ctrl-C with the steps done so far")
    p.add_argument("--preset", default="default", choices=PRESETS,
                   help="default: our settings (3D U-Net, tau from the expected count); cetpick: the published settings")
    g = p.add_argument_group("particle")
    g.add_argument("--bbox", action="append", metavar="[NAME=]VOXELS",
                   help="particle diameter (box size) in voxels; NAME=VOXELS for one class, a plain value for "
                        "every class without its own")
    g.add_argument("--diameter-a", action="append", metavar="[NAME=]A",
                   help="particle diameter in Å (instead of --bbox); NAME=A for one class, a plain value for every "
                        "class without its own")
    _add_train_method_options(p)
    p.add_argument("--continue-from", metavar="MODEL",
                   help="a correction round: fine-tune this model with the (added) labels and negatives; keeps its "
                        "voxel size and settings and runs 100 steps at a tenth of its learning rate unless "
                        "--max-steps/--num_epochs/--lr are given; a model that had a self-training round "
                        "also trains with the picks it is sure of (found first, in the training tomograms)")
    _add_mask_option(p, ", zero = left out of training")
    g = p.add_argument_group("copick project (instead of --tomogram/--labels)")
    g.add_argument("--copick", metavar="CONFIG.json", help="train on the picks of a copick project")
    g.add_argument("--object", action="append",
                   help="pickable object whose picks are the labels (its radius gives the diameter unless "
                        "--bbox/--diameter-a is given); repeat for several classes in one model")
    g.add_argument("--user-id", help="only picks by this user (default: every user's picks, none by tools)")
    g.add_argument("--session-id", help="only picks of this session")
    g.add_argument("--run", action="append", help="train on this run (repeat; default: every run with such picks)")
    _add_copick_tomogram_options(g)
    _add_volume_options(p)
    p.set_defaults(func=cmd_train)


def _add_detect_picking_options(p) -> None:
    from .config import VIEWS, DetectConfig

    p.add_argument("--format", default="imod", choices=sorted(f.name for f in WRITABLE_FORMATS),
                   help="picks file (default imod): " + "; ".join(f"{f.name} = {f.label}" for f in WRITABLE_FORMATS))
    p.add_argument("--threshold", "--out_thresh", dest="threshold", action="append", metavar="[NAME=]T",
                   help="score threshold (default: read off each tomogram's own scores, see --threshold-from); "
                        "NAME=T for one class of a model of several (repeat per class), a plain T for every class; "
                        "0 writes every candidate with its score. --out_thresh is the original's name")
    p.add_argument("--threshold-from", choices=("tomogram", "model"), default="tomogram",
                   help="without --threshold: 'tomogram' (default) puts each tomogram's threshold where its own "
                        "pick scores split into background and particles, whatever the particle density or the "
                        "share you labelled, and falls back to the model's default where they show no clear "
                        "split (or one that keeps a handful of top scores where the default keeps many more, or one "
                        "that lies where the background's scores are still dense); "
                        "'model' always uses the model's default (calibrated on your labelled region)")
    _add_precision_option(p)
    p.add_argument("--views", type=int, choices=tuple(sorted(VIEWS, reverse=True)), default=DetectConfig().views,
                   help="how many views of each tile the network scores, averaged: 4 (default): the tile, the tile "
                        "mirrored through its centre, and both turned a quarter in xy (higher AP on every class "
                        "measured, best F1 on most; each pick gets the mirror halves' agreement; a model trained "
                        "without quarter turns gets 2); 2: the tile and its mirror image, about half the time at "
                        "bin 1; 1: one pass, the fastest and least accurate")
    p.add_argument("--flatten", type=float, default=DetectConfig().flatten, metavar="D",
                   help="the network sees the tomogram less its local background, a line fitted to the density "
                        "over D particle diameters along each axis, so that a slow change of density across it "
                        "(ice thickness, a lamella's slope) does not dim the particles on its dark side (default "
                        "%(default)s; 0: off, the tomogram as it is)")
    p.add_argument("--profile-weight", type=float, default=DetectConfig().profile_weight, metavar="W",
                   help="the profile check: the best candidates lose W logits per unit by which their radial "
                        "profile (mean density in thin shells around the centre, any orientation) is less like "
                        "your labels' profiles than like this tomogram's other candidates, beyond what your "
                        "labels themselves show (half of it), or lies further from your labels than a new "
                        "particle would where it is cut by a face, and by which the negatives' profiles explain "
                        "it better than the labels' (look-alikes training found among its best picks in your "
                        "labelled region, rejected picks, --negatives; 5 or more); a candidate more like your "
                        "labels than the tomogram's candidates gains as much (default %(default)s; 0: off). "
                        "Each pick gets its 'profile_excess' (negative: raised). Each tomogram's split is read "
                        "off the network's own scores and placed on the checked scores where those split alike "
                        f"(keeping within a factor {SHOWN_SPLIT_WITHIN:g} as many picks, either way; above a fitted flank only to "
                        "keep more); the model's default was "
                        "counted after the check at the default W")
    p.add_argument("--no-profile-contrast", dest="profile_contrast", action="store_false",
                   help="the profile check compares every tomogram at your labels' contrast (default: at each "
                        "tomogram's own, read from its best candidates of your labels' shape: particles stand out "
                        "less in a noisier tomogram and more in a cleaner one; the line says it where not 1)")
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
    p.add_argument("--model", required=True, help="the model file (.ckpt) written by cetpick train")
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
    p = sub.add_parser(
        "evaluate", help="precision, recall, F1, best F1, AP and F-beta of picks against truth, per class",
        epilog="Several classes: --truth ribosome=R.txt --truth proteasome=P.txt with one picks file holding a "
               "class column (CSV, STAR) or --picks ribosome=R_picks.txt per class; --model M.ckpt matches within a "
               "quarter of each class's diameter (half its radius, the CZII challenge's rule).")
    p.add_argument("--picks", required=True, action="append", metavar="[NAME=]FILE",
                   help="picks file; NAME=FILE for one class's picks (repeat per class)")
    p.add_argument("--truth", required=True, action="append", metavar="[NAME=]FILE",
                   help="true particles; NAME=FILE for one class (repeat per class)")
    p.add_argument("--radius", action="append", metavar="[NAME=]R",
                   help="match radius in voxels (NAME=R for one class); default with --model: a quarter of the "
                        "class's diameter")
    p.add_argument("--model", help="the model whose classes' diameters give the match radii")
    p.add_argument("--threshold", action="append", metavar="[NAME=]T",
                   help="score threshold for precision/recall/F1 (default: all picks)")
    p.add_argument("--weight", action="append", metavar="NAME=W",
                   help="weight of a class in the aggregate F-beta (default 1 each)")
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
    for add in (_add_demo_parser, _add_simulate_parser, _add_convert_parser, _add_explore_parser, _add_train_parser,
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
