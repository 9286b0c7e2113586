"""The bad-input matrix: what a user can get wrong, and what each mistake must produce.

Every row runs the ``cetpick`` command (in process, through ``main``, which is what the
console script calls) or a napari reader/writer entry point on deliberately bad input, and
asserts

- the exact message a user reads (one ``cetpick: error:`` line for a CLI error), and the
  exit status;
- that no traceback is printed (nothing escapes ``main``);
- that the user's label files are byte for byte unchanged.

Rows that are not errors (integer and float16 MRC modes, commas, labels on the border,
duplicates) assert the success message instead. A negatives file equal to the labels is
not a row yet: ``--negatives`` is being added with the accuracy work.
"""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import mrcfile
import numpy as np
import pytest
import torch

from napari_cetpick.cli import main
from napari_cetpick.errors import CetpickError

LABELS = "10.5 20.5 8\n30.5 40.5 5\n50.5 12.5 10\n"  # IMOD text (x, y, z), inside (16, 64, 64)
SECOND = "40.5 50.5 8\n20.5 10.5 6\n"  # a second class's labels


def _mrc(path, data, voxel_size=10.0):
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(np.asarray(data))
        mrc.voxel_size = voxel_size
    return path


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """Inputs shared by all rows (copied per row): a tomogram, labels and a trained model."""
    from napari_cetpick.config import TrainConfig
    from napari_cetpick.train import Trainer

    d = tmp_path_factory.mktemp("base")
    vol = np.random.default_rng(0).normal(size=(16, 64, 64)).astype(np.float32)
    _mrc(d / "tomo.mrc", vol)
    (d / "labels.txt").write_text(LABELS)
    lab = np.array([[8.0, 20.0, 10.0], [5.0, 40.0, 30.0], [10.0, 12.0, 50.0]])
    cfg = TrainConfig(bbox=10, max_steps=1, crop_xy=32, crop_z=16, batch_size=1, tau=0.05)
    trainer = Trainer([vol], [lab], cfg, voxel_size_a=10.0, device="cpu")
    list(trainer.steps(calibrate=False))
    trainer.checkpoint(calibrate=False).save(d / "model.ckpt")
    return d


def _hashes(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("labels*"))}


# --------------------------------------------------------------------------- row builders
# Each builder gets the row's folder (a copy of the base inputs) and returns the argv of
# `cetpick` (or a callable for reader/writer rows).

def _train(d, *extra, labels="labels.txt", tomo="tomo.mrc", out="m.ckpt"):
    return ["train", "--tomogram", str(d / tomo), "--labels", str(d / labels), "--bbox", "10", "--tau", "0.05",
            "--max-steps", "1", "--out", str(d / out), "--quiet", "--device", "cpu", *extra]


def _detect(d, *extra, tomo="tomo.mrc", model="model.ckpt", out="out"):
    return ["detect", "--model", str(d / model), "--tomogram", str(d / tomo), "--out-dir", str(d / out),
            "--quiet", "--device", "cpu", "--no-heatmap", *extra]


def _with(file_name, maker):
    """A builder that first writes an extra input file into the row's folder."""
    def build(d, argv_of):
        maker(d / file_name)
        return argv_of(d)
    return build


def _labels_file(text):
    return lambda p: p.write_text(text)


def _tomo_file(data, voxel_size=10.0):
    return lambda p: _mrc(p, data, voxel_size)


def _model_file(edit):
    def make(p):
        blob = torch.load(p.parent / "model.ckpt", weights_only=True)
        torch.save(edit(blob) if edit else blob, p)
    return make


def _drop_meta(blob):
    del blob["meta"]["bin_xy"], blob["meta"]["tau"]
    return blob


def _misfit_weights(blob):
    from napari_cetpick.model import build_network

    blob["state_dict"] = build_network("unet_4").state_dict()
    return blob


class _Evil:
    """Unpickling would create the marker file, if torch.load ran code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _evil_pickle(p):
    torch.save({"state_dict": {}, "meta": _Evil(p.parent / "pwned")}, p)


def _truncated(p):
    p.write_bytes((p.parent / "model.ckpt").read_bytes()[:3000])


VOL = np.random.default_rng(1).normal(size=(16, 64, 64)).astype(np.float32)
NAN = VOL.copy()
NAN[:, ::2] = np.nan
INF = VOL.copy()
INF[:, ::2] = np.inf


def _unwritable(d: Path) -> Path:
    """A folder nobody may write in (as root, chmod does not stop writes: use sysfs)."""
    ro = d / "readonly"
    ro.mkdir()
    ro.chmod(0o555)
    probe = ro / "probe"
    try:
        probe.write_text("")
        probe.unlink()
    except OSError:
        return ro / "sub"
    ro.chmod(0o755)
    if Path("/sys").is_dir():
        return Path("/sys/cetpick-cannot-write-here")
    pytest.skip("no unwritable folder on this machine")


# id: (builder, expected exit status, expected message (in the error line, or in stdout when 0))
CLI_ROWS = {
    # ------------------------------------------------------------------ tomograms
    "empty tomogram file": (_with("empty.mrc", lambda p: p.write_bytes(b"")), "tomo=empty.mrc", 2,
                            "empty.mrc: not a readable MRC file"),
    "one-voxel tomogram": (_with("one.mrc", _tomo_file(np.zeros((1, 1, 1), np.float32))), "tomo=one.mrc", 2,
                           "one.mrc: the file holds a single voxel, not a tomogram"),
    "2D image": (_with("image.mrc", _tomo_file(np.zeros((64, 64), np.float32))), "tomo=image.mrc", 2,
                 "image.mrc: this is a 2D image of shape (64, 64), not a tomogram"),
    "4D file": (_with("stack.mrc", _tomo_file(np.zeros((2, 4, 32, 32), np.float32))), "tomo=stack.mrc", 2,
                "stack.mrc: a volume stack of shape (2, 4, 32, 32) is not supported"),
    "NaN voxels": (_with("nan.mrc", _tomo_file(NAN)), "tomo=nan.mrc", 2, "nan.mrc: the volume contains NaN or Inf voxels"),
    "Inf voxels": (_with("inf.mrc", _tomo_file(INF)), "tomo=inf.mrc", 2, "inf.mrc: the volume contains NaN or Inf voxels"),
    "voxel size 0, diameter in Å": (_with("v0.mrc", _tomo_file(VOL, 0.0)), "diameter=v0.mrc", 2,
                                    "the voxel size is unknown; give the voxel size or the diameter in voxels"),
    "voxel size 1 (placeholder), diameter in Å": (_with("v1.mrc", _tomo_file(VOL, 1.0)), "diameter=v1.mrc", 2,
                                                  "the voxel size is unknown"),
    "negative voxel size in the header, diameter in Å": (_with("vneg.mrc", _tomo_file(VOL, -3.0)),
                                                         "diameter=vneg.mrc", 2, "the voxel size is unknown"),
    "negative voxel size override": (None, "negative", 2, "voxel size override -5 must be > 0 Å"),
    "tomogram too small to detect in": (_with("small.mrc", _tomo_file(np.ones((4, 10, 10), np.float32))),
                                        "detect-small", 2, "is too small to detect in"),
    "integer MRC mode": (_with("int16.mrc", _tomo_file((VOL * 100).astype(np.int16))), "detect-int16", 0,
                         "int16: "),
    "float16 MRC mode": (_with("f16.mrc", _tomo_file(VOL.astype(np.float16))), "detect-f16", 0, "f16: "),
    # ------------------------------------------------------------------ labels
    "labels with a header line": (_with("labels_h.txt", _labels_file("x y z\n" + LABELS)), "labels_h.txt", 2,
                                  "labels_h.txt: line 1 is not a row of numbers: 'x y z'. A header line"),
    "labels with a name column": (_with("labels_n.txt", _labels_file("t1 10.5 20.5 8\n")), "labels_n.txt", 2,
                                  "labels_n.txt: line 1 is not a row of numbers: 't1 10.5 20.5 8'"),
    "labels with commas": (_with("labels_c.txt", _labels_file(LABELS.replace(" ", ","))), "labels_c.txt", 0,
                           "Saved model to"),
    "duplicate labels": (_with("labels_d.txt", _labels_file(LABELS + LABELS.splitlines()[0] + "\n")),
                         "labels_d.txt", 0, "labels_d.txt: 1 duplicate label(s)"),
    "labels on the border": (_with("labels_b.txt", _labels_file("0 0 0\n64 64 15\n0.5 63.5 7\n")), "labels_b.txt",
                             0, "Saved model to"),
    "labels outside the tomogram": (_with("labels_o.txt", _labels_file("10.5 20.5 8\n500.5 20.5 3\n")),
                                    "labels_o.txt", 2,
                                    "labels_o.txt: 1 of 2 points lie outside the volume of shape (z, y, x) (16, 64, 64)"),
    "empty label file": (_with("labels_e.txt", _labels_file("")), "labels_e.txt", 2,
                         "labels_e.txt: the file contains no coordinates"),
    "NaN in labels": (_with("labels_nan.txt", _labels_file("10.5 nan 8\n")), "labels_nan.txt", 2,
                      "labels_nan.txt: the file contains NaN or infinite numbers"),
    "missing label file": (None, "labels_missing.txt", 2, "labels_missing.txt: file not found"),
    # ------------------------------------------------------------------ outputs
    "model written over the label file": (None, "out=labels.txt", 2,
                                          "labels.txt: model files end in .ckpt; choose --out NAME.ckpt"),
    "existing model file is replaced, said so": (_with("old.ckpt", lambda p: p.write_bytes(b"old")), "out=old.ckpt",
                                                 0, "(replaced the existing file)"),
    "output folder is a file": (None, "out-is-file", 2, "is a file, not a folder; cannot write the model there"),
    "unwritable output folder (train)": (None, "unwritable-train", 2, "cannot write the model there"),
    "unwritable output folder (detect)": (None, "unwritable-detect", 2, "cannot write the picks there"),
    # ------------------------------------------------------------------ models
    "missing model file": (None, "model=nope.ckpt", 2, "nope.ckpt: model file not found"),
    "truncated model file": (_with("cut.ckpt", _truncated), "model=cut.ckpt", 2,
                             "cut.ckpt: not a napari-cetpick model file"),
    "a pickle that tries to run code": (_with("evil.ckpt", _evil_pickle), "model=evil.ckpt", 2,
                                        "evil.ckpt: not a napari-cetpick model file"),
    "a text file as model": (_with("notes.ckpt", lambda p: p.write_text("weights\n")), "model=notes.ckpt", 2,
                             "notes.ckpt: not a napari-cetpick model file"),
    "model missing metadata keys": (_with("nometa.ckpt", _model_file(_drop_meta)), "model=nometa.ckpt", 2,
                                    "nometa.ckpt: the model file lacks bin_xy, tau"),
    "weights that do not fit the architecture": (_with("misfit.ckpt", _model_file(_misfit_weights)),
                                                 "model=misfit.ckpt", 2,
                                                 "misfit.ckpt: the weights do not fit the unet3d_4 network"),
    "model for another voxel size": (_with("t137.mrc", _tomo_file(VOL, 13.7)), "detect-t137", 2,
                                     "the ratio 0.73 is not a whole binning factor"),
    "model for another architecture": (None, "continue-arch", 2, "Cannot continue a unet3d_4 model as unet_4"),
    # ------------------------------------------------------------------ arguments
    "--bin abc": (None, "--bin abc", 2, "argument --bin: must be auto or a positive whole number, not 'abc'"),
    "--bin 0": (None, "--bin 0", 2, "argument --bin: must be auto or a positive whole number, not '0'"),
    "--bbox abc": (None, "--bbox abc", 2, "--bbox: 'abc' is not a number"),
    "--bbox and --diameter-a both": (None, "--diameter-a 100", 2,
                                     "--bbox and --diameter-a both give the size of every class: give one or the other"),
    # ------------------------------------------------------------------ several classes
    "--bbox for a class with no labels": (_with("second.txt", _labels_file(SECOND)), "mc --bbox c=5", 2,
                                          "--bbox is given for class 'c', which has no labels"),
    "a class with labels but no size": (_with("second.txt", _labels_file(SECOND)), "mc-nosize", 2,
                                        "Class 'b' has labels but no size: give --bbox b=VOXELS"),
    "a class name with a space": (None, "mc-space", 2, "' ' is not allowed in a class name"),
    "a class name with =": (None, "mc-equals", 2, "'=' is not allowed in a class name"),
    "one label given to two classes": (None, "mc-twice", 2, "is labelled both 'a' and 'b'"),
    "named and plain labels mixed": (_with("second.txt", _labels_file(SECOND)), "mc-mixed", 2,
                                     "Give every --labels as NAME=FILE when one is"),
    "negatives at the labels' places": (_with("neg.txt", lambda p: p.write_text((p.parent / "labels.txt").read_text())),
                                        "negatives=neg.txt", 2, "is both a label and a negative ("),
    "negatives of a class that has no labels": (_with("second.txt", _labels_file(SECOND)),
                                                "mc --negatives c=labels.txt", 2, "'c' is not one of the classes"),
    "a one-class model asked for a class it lacks": (None, "detect-threshold", 2,
                                                     "--threshold zz=...: the model has no class 'zz'"),
    "a negative --flatten": (None, "detect-flatten", 2, "--flatten must be 0 (off) or a number of particle diameters"),
    "batch size 0": (None, "--batch-size 0", 2, "num_epochs and batch_size at least 1"),
    "a batch that cannot fit in memory": (None, "--batch-size 100000", 2, "of memory is available"),
    "simulate with a tiny shape": (None, "simulate --shape 4 4 4", 2,
                                   "The shape must be at least 8 voxels a side, not (4, 4, 4)"),
    "simulate with voxel size 0": (None, "simulate --voxel-size 0", 2,
                                   "The voxel size must be a positive number of Å, not 0"),
    "simulate with snr 0": (None, "simulate --snr 0", 2, "snr must be > 0, not 0"),
    "demo with a tiny shape": (None, "demo --shape 4 64 64", 2,
                               "The shape must be at least 8 voxels a side, not (4, 64, 64)"),
}


def _train_classes(d, *extra, sizes=("--bbox", "a=10", "--bbox", "b=6"), labels=("a=labels.txt", "b=second.txt")):
    argv = _train(d, labels=labels[0].split("=")[-1])
    i = argv.index("--labels")
    argv[i:i + 2] = [w for lab in labels for w in ("--labels", f"{lab.rsplit('=', 1)[0]}={d / lab.split('=')[-1]}"
                                                    if "=" in lab else str(d / lab))]
    i = argv.index("--bbox")
    argv[i:i + 2] = list(sizes)
    return [*argv, *extra]


def _argv(kind, d):
    """The command line of a row from its short description."""
    if kind is None:
        return _train(d)
    if kind.startswith("mc "):
        words = kind.split()[1:]
        return _train_classes(d, *[w if "=" not in w or not w.endswith(".txt") else
                                   f"{w.split('=')[0]}={d / w.split('=')[1]}" for w in words])
    if kind == "mc-nosize":
        return _train_classes(d, sizes=("--bbox", "a=10"))
    if kind == "mc-space":
        return _train_classes(d, labels=("a b=labels.txt", "c=labels.txt"), sizes=("--bbox", "8"))
    if kind == "mc-equals":
        return _train_classes(d, labels=("a=b=labels.txt",), sizes=("--bbox", "8"))
    if kind == "mc-twice":
        return _train_classes(d, labels=("a=labels.txt", "b=labels.txt"), sizes=("--bbox", "8"))
    if kind == "mc-mixed":
        return _train_classes(d, labels=("a=labels.txt", "second.txt"), sizes=("--bbox", "8"))
    if kind.startswith("negatives="):
        return _train(d, "--negatives", str(d / kind.split("=")[1]))
    if kind == "detect-threshold":
        return _detect(d, "--threshold", "zz=0.5")
    if kind == "detect-flatten":
        return _detect(d, "--flatten", "-1")
    if kind.startswith("tomo="):
        return _train(d, tomo=kind[5:])
    if kind.startswith("diameter="):
        argv = _train(d, tomo=kind[9:])
        i = argv.index("--bbox")
        argv[i:i + 2] = ["--diameter-a", "100"]
        return argv
    if kind == "negative":
        return _train(d, "--voxel-size", "-5")
    if kind.startswith("detect-"):
        return _detect(d, tomo=f"{kind[7:]}.mrc")
    if kind.startswith("labels"):
        return _train(d, labels=kind)
    if kind.startswith("out="):
        return _train(d, out=kind[4:])
    if kind == "out-is-file":
        (d / "afile").write_text("")
        return _train(d, out="afile/m.ckpt")
    if kind == "unwritable-train":
        return _train(d, out=str(_unwritable(d) / "m.ckpt"))
    if kind == "unwritable-detect":
        return _detect(d, out=str(_unwritable(d)))
    if kind.startswith("model="):
        return _detect(d, model=kind[6:])
    if kind == "continue-arch":
        return _train(d, "--continue-from", str(d / "model.ckpt"), "--arch", "unet_4")
    if kind.startswith("--"):
        return _train(d, *kind.split())
    if kind.startswith(("simulate", "demo")):
        words = kind.split()
        return [words[0], "--out-dir", str(d / "sim"), *words[1:], *(["--quiet"] if words[0] == "demo" else [])]
    raise AssertionError(kind)


def _run(argv, capsys):
    capsys.readouterr()
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse's usage errors
        rc = exc.code
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.mark.parametrize("row", list(CLI_ROWS))
def test_cli_bad_input(row, base, tmp_path, capsys):
    build, kind, want_rc, message = CLI_ROWS[row]
    d = tmp_path / "in"
    shutil.copytree(base, d)
    if build is None:
        argv = _argv(kind, d)
    else:
        argv = build(d, lambda dd: _argv(kind, dd))
    before = _hashes(d)
    rc, out, err = _run(argv, capsys)
    assert "Traceback" not in err + out
    assert rc == want_rc, (rc, out, err)
    if want_rc == 0:
        assert message in out + err, (out, err)
    else:
        # one line: no usage dump, no traceback (warnings may precede it)
        errors = [line for line in err.splitlines() if line.strip() and "warning:" not in line]
        assert len(errors) == 1 and "error:" in errors[0], err
        assert message in errors[0], errors[0]
        assert "np.float64" not in errors[0] and "np.int64" not in errors[0]
    assert _hashes(d) == before  # the user's label files are untouched
    assert not (d / "pwned").exists()  # no code ran while loading a model


def test_matrix_is_big_enough():
    assert len(CLI_ROWS) + len(NAPARI_ROWS) >= 30


# --------------------------------------------------------------------------- napari reader / writers
def _reader(path):
    from napari_cetpick._napari.reader import get_reader

    reader = get_reader(str(path))
    return None if reader is None else reader(str(path))


def _points_writer(path, data, meta=None):
    from napari_cetpick._napari.writer import write_points

    return write_points(str(path), data, {"name": "picks", "metadata": {"cetpick": meta or {}}})


def _image_writer(path, data, meta=None):
    from napari_cetpick._napari.writer import write_image

    return write_image(str(path), data, {"name": "img", "metadata": {"cetpick": meta or {}}})


NAPARI_ROWS = {
    "reader: empty MRC": (lambda d: _reader(d / "empty.mrc"), "empty.mrc: not a readable MRC file"),
    "reader: 4D MRC": (lambda d: _reader(_mrc(d / "s.mrc", np.zeros((2, 3, 8, 8), np.float32))),
                       "s.mrc: a volume stack of shape (2, 3, 8, 8) is not supported"),
    "reader: NaN voxels": (lambda d: _reader(_mrc(d / "nan.mrc", NAN)), "nan.mrc: the volume contains NaN or Inf"),
    "reader: a text file with a header line is declined": (
        lambda d: _reader(d / "labels_h.txt"), None),
    "reader: float16 MRC opens": (lambda d: _reader(_mrc(d / "f16.mrc", VOL.astype(np.float16))), "ok"),
    "writer: points into an unwritable folder": (
        lambda d: _points_writer(_unwritable(d) / "p.txt", np.array([[1.0, 2.0, 3.0]])), "cannot write the file"),
    "writer: image into an unwritable folder": (
        lambda d: _image_writer(_unwritable(d) / "v.mrc", np.zeros((4, 8, 8), np.float32)), "cannot write the file"),
    "writer: image over its own open tomogram": (
        lambda d: _image_writer(d / "tomo.mrc", np.zeros((4, 8, 8), np.float32), {"path": str(d / "tomo.mrc")}),
        "tomo.mrc: refusing to overwrite the open tomogram file"),
    "writer: 2D points": (lambda d: _points_writer(d / "p2.txt", np.zeros((3, 2))),
                          "p2.txt: only 3D points can be exported"),
    "writer: points outside the tomogram": (
        lambda d: _points_writer(d / "po.txt", np.array([[100.0, 1.0, 1.0]]),
                                 {"thickness_axis": 0, "file_shape": [16, 64, 64]}), "po.txt: 1 of 1 points lie outside"),
}


@pytest.mark.parametrize("row", list(NAPARI_ROWS))
def test_napari_bad_input(row, base, tmp_path):
    act, message = NAPARI_ROWS[row]
    d = tmp_path / "in"
    shutil.copytree(base, d)
    (d / "empty.mrc").write_bytes(b"")
    (d / "labels_h.txt").write_text("x y z\n" + LABELS)
    before = _hashes(d)
    if message is None:
        assert act(d) is None  # the reader declines: napari tries other readers
    elif message == "ok":
        layers = act(d)
        assert layers and layers[0][0].dtype == np.float16
    else:
        with pytest.raises(CetpickError) as info:
            act(d)
        assert message in str(info.value)
        assert "\n" not in str(info.value)
    assert _hashes(d) == before


def test_core_messages_show_plain_numbers():
    # the panel hands labels straight to the trainer: its message must not read
    # "(np.float64(5.0), np.float64(500.0), ...)"
    from napari_cetpick.config import TrainConfig
    from napari_cetpick.train import Trainer

    with pytest.raises(CetpickError) as info:
        Trainer([VOL], [np.array([[5.0, 500.0, 10.0]])], TrainConfig(bbox=10), device="cpu")
    assert "(z, y, x) = (5, 500, 10)" in str(info.value) and "np." not in str(info.value)
