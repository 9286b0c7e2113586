"""``cetpick train --negatives`` and ``--continue-from`` (the correction round) from the command line."""
import subprocess
import sys

import numpy as np
import pytest

from napari_cetpick.checkpoint import Checkpoint
from napari_cetpick.cli import main
from napari_cetpick.io import FileLayout, write_points, write_tomogram

from _planted import planted_volume


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    out = tmp_path_factory.mktemp("neg")
    v, pts = planted_volume(shape=(24, 64, 80), n=10, radius=4.0, min_gap=10.0)
    # an unrotated IMOD layout: the thickness is the middle file axis
    layout = FileLayout(1, (64, 24, 80))
    tomo = write_tomogram(out / "t.mrc", v, voxel_size_a=10.0, layout=layout)
    labels = write_points(out / "l.txt", pts[:4], fmt="imod", layout=layout, shape_zyx=v.shape)
    negs = write_points(out / "n.txt", pts[4:6], fmt="imod", layout=layout, shape_zyx=v.shape)
    return v, pts, tomo, labels, negs, out


def _train(files, *extra):
    v, pts, tomo, labels, negs, out = files
    return main(["train", "--tomogram", str(tomo), "--labels", str(labels), *extra, "--bbox", "8", "--tau", "0.05",
                 "--quiet", "--device", "cpu", "--thickness-axis", "1"])


def test_negatives_and_a_correction_round(files, tmp_path, capsys):
    v, pts, tomo, labels, negs, out = files
    m1 = tmp_path / "m1.ckpt"
    assert _train(files, "--negatives", str(negs), "--max-steps", "3", "--out", str(m1)) == 0
    ck = Checkpoint.load(m1)
    assert ck.info["n_positives"] == 4 and ck.info["n_negatives"] == 2 and ck.info["steps"] == 3
    err = capsys.readouterr().err
    assert "4 labels, 2 negatives" in err
    # a correction round: more positives, the model's settings, the short schedule (capped here)
    more = write_points(tmp_path / "l2.txt", np.concatenate([pts[:4], pts[6:8]]), fmt="imod",
                        layout=FileLayout(1, (64, 24, 80)), shape_zyx=v.shape)
    m2 = tmp_path / "m2.ckpt"
    rc = main(["train", "--tomogram", str(tomo), "--labels", str(more), "--negatives", str(negs),
               "--continue-from", str(m1), "--max-steps", "2", "--out", str(m2), "--quiet", "--device", "cpu",
               "--thickness-axis", "1"])
    assert rc == 0
    ck2 = Checkpoint.load(m2)
    assert ck2.info["steps"] == 5 and ck2.info["n_positives"] == 6 and ck2.info["n_negatives"] == 2
    assert ck2.voxel_size_a == ck.voxel_size_a and ck2.tau == ck.tau and ck2.diameter_vox == ck.diameter_vox
    assert "Continuing" in capsys.readouterr().err


def _cli(*argv):
    return subprocess.run([sys.executable, "-m", "napari_cetpick.cli", *argv], capture_output=True, text=True)


def test_negatives_errors_are_one_line(files, tmp_path):
    v, pts, tomo, labels, negs, out = files
    # --negatives with no --tomogram before it
    r = _cli("train", "--negatives", str(negs), "--tomogram", str(tomo), "--labels", str(labels), "--bbox", "8",
             "--out", str(tmp_path / "m.ckpt"))
    assert r.returncode == 2 and "give --tomogram first" in r.stderr and "Traceback" not in r.stderr
    # twice for one tomogram
    r = _cli("train", "--tomogram", str(tomo), "--negatives", str(negs), "--negatives", str(negs), "--labels",
             str(labels), "--bbox", "8", "--out", str(tmp_path / "m.ckpt"))
    assert r.returncode == 2 and "given twice" in r.stderr
    # outside the volume
    bad = tmp_path / "outside.txt"
    bad.write_text("5 5 5\n900 5 5\n")
    r = _cli("train", "--tomogram", str(tomo), "--labels", str(labels), "--negatives", str(bad), "--bbox", "8",
             "--out", str(tmp_path / "m.ckpt"), "--thickness-axis", "1")
    assert r.returncode == 2 and "outside" in r.stderr and "outside.txt" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    # wrong columns
    cols = tmp_path / "cols.txt"
    cols.write_text("5 5\n6 6\n")
    r = _cli("train", "--tomogram", str(tomo), "--labels", str(labels), "--negatives", str(cols), "--bbox", "8",
             "--out", str(tmp_path / "m.ckpt"), "--thickness-axis", "1")
    assert r.returncode == 2 and "cols.txt" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "m.ckpt").exists()
