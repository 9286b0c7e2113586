"""The cetpick command end to end on a tiny simulated volume, and its error paths."""
import json
import subprocess
import sys

import mrcfile
import numpy as np
import pandas as pd
import pytest
import starfile

from napari_cetpick.cli import main
from napari_cetpick.io import FileLayout, read_points, write_points, write_tomogram
from napari_cetpick.synthetic import save_synthetic, simulate_tomogram


@pytest.fixture(scope="module")
def sim_files(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim")
    sim = simulate_tomogram(shape=(32, 96, 96), voxel_size_a=10.0, snr=1.0, seed=3, label_class="proteasome",
                            label_fraction=1.0, label_region=(0, 0, 0, 32, 96, 96))
    return sim, save_synthetic(sim, out, "t")


def test_train_detect_evaluate(sim_files, tmp_path, capsys):
    sim, paths = sim_files
    model = tmp_path / "m.ckpt"
    rc = main(["train", "--tomogram", str(paths["tomogram"]), "--labels", str(paths["labels"]), "--bbox", "15",
               "--max-steps", "4", "--out", str(model), "--quiet", "--device", "cpu", "--tau", "0.05"])
    assert rc == 0 and model.is_file()
    out = tmp_path / "det"
    for fmt, ext in [("imod", ".txt"), ("star", ".star"), ("csv", ".csv"), ("cetpick", ".coords"), ("mod", ".mod")]:
        rc = main(["detect", "--model", str(model), "--tomogram", str(paths["tomogram"]), "--out-dir", str(out),
                   "--format", fmt, "--threshold", "0.0", "--K", "20", "--quiet", "--device", "cpu"])
        assert rc == 0
        assert (out / f"t_picks{ext}").is_file()
    # the CSV has scores; STAR re-reads with starfile onto the same positions
    csv = pd.read_csv(out / "t_picks.csv")
    assert {"x", "y", "z", "score"} <= set(csv.columns) and 0 < len(csv) <= 20
    star = starfile.read(out / "t_picks.star")
    assert np.allclose(star["rlnCoordinateX"].to_numpy(), csv["x"].to_numpy(), atol=1e-3)
    # the heatmap is on the network's output grid: the default 3D network halves every axis
    with mrcfile.open(out / "t_heatmap.mrc") as mrc:
        assert mrc.data.shape == (16, 48, 48)
        assert float(mrc.voxel_size.x) == pytest.approx(20.0)
        assert float(mrc.voxel_size.z) == pytest.approx(20.0)
    capsys.readouterr()
    rc = main(["evaluate", "--picks", str(out / "t_picks.csv"), "--truth", str(paths["truth:proteasome"]),
               "--radius", "6", "--json"])
    assert rc == 0
    d = json.loads(capsys.readouterr().out)
    assert {"precision", "recall", "f1", "best_f1", "ap"} <= set(d)
    rc = main(["evaluate", "--picks", str(out / "t_picks.csv"), "--truth", str(paths["truth:proteasome"]),
               "--radius", "6"])
    assert "best_f1" in capsys.readouterr().out


def test_original_lists_and_convert(sim_files, tmp_path, capsys):
    sim, paths = sim_files
    imod_dir = tmp_path / "imod"
    imod_dir.mkdir()
    # an unrotated IMOD-style coordinate text in x z y order (the original's default --order xzy)
    lab = sim.labels
    np.savetxt(imod_dir / "t.txt", lab[:, [2, 0, 1]], fmt="%.0f")
    coords = tmp_path / "coords.txt"
    assert main(["convert", str(imod_dir), "--out", str(coords), "--order", "xzy"]) == 0
    table = pd.read_csv(coords, sep="\t")
    assert list(table.columns) == ["image_name", "x_coord", "y_coord", "z_coord"]
    assert np.allclose(table[["z_coord", "y_coord", "x_coord"]].to_numpy(), np.round(lab), atol=1)
    imgs = tmp_path / "imgs.txt"
    imgs.write_text(f"image_name\trec_path\nt\t{paths['tomogram']}\n")
    model = tmp_path / "m.ckpt"
    assert main(["train", "--train_img_txt", str(imgs), "--train_coord_txt", str(coords), "--bbox", "15",
                 "--max-steps", "2", "--out", str(model), "--quiet", "--device", "cpu"]) == 0
    assert main(["detect", "--model", str(model), "--test_img_txt", str(imgs), "--out-dir", str(tmp_path / "o"),
                 "--quiet", "--device", "cpu", "--no-heatmap"]) == 0
    assert (tmp_path / "o" / "t_picks.txt").is_file()


def test_unrotated_imod_layout_exports_into_the_file_frame(tmp_path):
    # the same volume stored unrotated (thickness = middle file axis): picks must come back
    # in that file's frame, i.e. re-read with the file's layout onto the same napari positions
    rng = np.random.default_rng(0)
    vol = rng.normal(size=(16, 64, 80)).astype(np.float32)
    layout = FileLayout(1, (64, 16, 80))
    path = write_tomogram(tmp_path / "unrot.rec", vol, voxel_size_a=10.0, layout=layout)
    labels = np.array([[8.0, 30.0, 40.0], [5.0, 20.0, 60.0]])
    lab_path = write_points(tmp_path / "lab.txt", labels, layout=layout)
    model = tmp_path / "m.ckpt"
    assert main(["train", "--tomogram", str(path), "--labels", str(lab_path), "--bbox", "10", "--max-steps", "1",
                 "--out", str(model), "--quiet", "--device", "cpu"]) == 0
    assert main(["detect", "--model", str(model), "--tomogram", str(path), "--out-dir", str(tmp_path / "o"),
                 "--threshold", "0", "--K", "5", "--format", "csv", "--quiet", "--device", "cpu"]) == 0
    ps = read_points(tmp_path / "o" / "unrot_picks.csv", layout=layout)
    assert np.all(ps.zyx.max(0) < np.array([16, 64, 80])) and len(ps.zyx) == 5
    # the same detection in process, in napari (z, y, x) of the opened view: the CSV columns
    # are the file frame, x = a2 = napari x, y = a1 = napari z (thickness), z = a0 = napari y
    from napari_cetpick.checkpoint import Checkpoint
    from napari_cetpick.config import DetectConfig
    from napari_cetpick.detect import detect
    from napari_cetpick.io import open_tomogram
    from napari_cetpick.utils import run_generator

    tomo = open_tomogram(path)
    assert tomo.layout.thickness_axis == 1
    res = run_generator(detect(Checkpoint.load(model), tomo.data, DetectConfig(threshold=0.0, K=5),
                               voxel_size_a=10.0, device="cpu"))
    raw = pd.read_csv(tmp_path / "o" / "unrot_picks.csv")
    assert np.allclose(raw[["y", "z", "x"]].to_numpy(), res.zyx, atol=1e-3)
    assert raw["y"].max() < 16


@pytest.mark.parametrize("argv, message", [
    (["train", "--tomogram", "nope.mrc", "--labels", "x.txt", "--bbox", "10", "--out", "m.ckpt"], "nope.mrc"),
    (["detect", "--model", "missing.ckpt", "--tomogram", "t.mrc", "--out-dir", "o"], "missing.ckpt"),
    (["evaluate", "--picks", "a.txt", "--truth", "b.txt", "--radius", "3"], "a.txt"),
])
def test_user_errors_one_line_no_traceback(argv, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "napari_cetpick.cli", *argv], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = [l for l in proc.stderr.splitlines() if l.startswith("cetpick: error:")]
    assert len(lines) == 1 and message in lines[0]


def test_labels_outside_volume(sim_files, tmp_path, capsys):
    sim, paths = sim_files
    bad = tmp_path / "bad.txt"
    bad.write_text("10 10 5\n500 20 3\n")
    rc = main(["train", "--tomogram", str(paths["tomogram"]), "--labels", str(bad), "--bbox", "15", "--out",
               str(tmp_path / "m.ckpt")])
    assert rc == 2
    assert "outside" in capsys.readouterr().err


def test_help_everywhere():
    for sub in ["", "demo", "simulate", "convert", "train", "detect", "evaluate"]:
        proc = subprocess.run([sys.executable, "-m", "napari_cetpick.cli", *([sub] if sub else []), "--help"],
                              capture_output=True, text=True)
        assert proc.returncode == 0 and "usage: cetpick" in proc.stdout


@pytest.mark.slow
def test_demo_runs(tmp_path, capsys):
    rc = main(["demo", "--out-dir", str(tmp_path), "--shape", "64", "192", "192", "--steps", "30", "--quiet",
               "--device", "cpu", "--snr", "1.0"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "F1" in out and (tmp_path / "tomo2_picks.txt").is_file() and (tmp_path / "model.ckpt").is_file()


def _train_argv(paths, model, *extra):
    return ["train", "--tomogram", str(paths["tomogram"]), "--labels", str(paths["labels"]), "--bbox", "15",
            "--tau", "0.05", "--out", str(model), "--quiet", "--device", "cpu", *extra]


def test_original_knob_names(sim_files, tmp_path, capsys):
    from napari_cetpick.checkpoint import Checkpoint

    sim, paths = sim_files
    model = tmp_path / "m.ckpt"
    assert main(_train_argv(paths, model, "--max-steps", "2", "--translation_ratio", "0.05")) == 0
    ck = Checkpoint.load(model)
    assert ck.config.translation_ratio == 0.05
    # the threshold comes with the count it was set for
    n = ck.info["expected_particles"]
    assert n > len(sim.labels)
    assert f"about {n:.0f} particles expected" in capsys.readouterr().out
    out = tmp_path / "o"

    assert main(["detect", "--model", str(model), "--tomogram", str(paths["tomogram"]), "--out-dir", str(out),
                 "--out_thresh", "0.01", "--cutoff_z", "5", "--format", "csv", "--no-heatmap", "--quiet",
                 "--device", "cpu"]) == 0
    # the whole tomogram was the training one: the same count is expected in it
    assert f"(about {n:.0f} expected) at threshold 0.010" in capsys.readouterr().out
    picks = read_points(out / "t_picks.csv")
    # --cutoff_z drops that many slices at the top and bottom (the original's meaning)
    assert len(picks) and picks.zyx[:, 0].min() >= 5 and picks.zyx[:, 0].max() <= 32 - 1 - 5
    assert (picks.features["score"] >= 0.01).all()


def test_a_failure_after_training_keeps_the_model(sim_files, tmp_path, monkeypatch, capsys):
    from napari_cetpick.checkpoint import Checkpoint
    from napari_cetpick.train import Trainer

    def broken(self, *a, **k):
        raise RuntimeError("calibration crop 48 is not a multiple of 32")

    monkeypatch.setattr(Trainer, "calibrate", broken)
    sim, paths = sim_files
    model = tmp_path / "m.ckpt"
    rc = main(_train_argv(paths, model, "--max-steps", "3"))
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err
    line, = [l for l in err.splitlines() if l.startswith("cetpick: error:")]
    assert "threshold calibration failed" in line and str(model) in line
    ck = Checkpoint.load(model)
    assert ck.info["steps"] == 3 and ck.info["threshold_calibrated"] is False
    assert "not calibrated" in ck.summary()


def test_ctrl_c_saves_the_last_good_model(sim_files, tmp_path, monkeypatch, capsys):
    from napari_cetpick.checkpoint import Checkpoint
    from napari_cetpick.train import Trainer

    real = Trainer._batch
    calls = {"n": 0}

    def interrupted_on_third_step(self):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # what Ctrl-C raises in the main thread
        return real(self)

    monkeypatch.setattr(Trainer, "_batch", interrupted_on_third_step)
    sim, paths = sim_files
    model = tmp_path / "m.ckpt"
    rc = main(_train_argv(paths, model, "--max-steps", "10"))
    err = capsys.readouterr().err
    assert rc == 130 and "Traceback" not in err
    assert "10 steps, then up to 3 with the picks it is sure of" in err  # the self-training round, on by default
    assert f"the model after 2 of 13 steps was saved to {model}" in err
    ck = Checkpoint.load(model)
    assert ck.info["steps"] == 2 and ck.info["status"] == "interrupted at step 2 of 13"
    # with the look-alike round asked for: 10 steps, then up to 3 (a third) against the look-alikes
    calls["n"] = 0
    rc = main(_train_argv(paths, tmp_path / "m2.ckpt", "--max-steps", "10", "--look-alike-steps", "100",
                          "--self-training-steps", "0"))
    err = capsys.readouterr().err
    assert rc == 130 and "10 steps, then up to 3 against the look-alikes calibration finds" in err
    assert "the model after 2 of 13 steps was saved" in err
    # and with the self-training round too: each round's steps said, the total counting both
    calls["n"] = 0
    rc = main(_train_argv(paths, tmp_path / "m3.ckpt", "--max-steps", "10", "--look-alike-steps", "100",
                          "--self-training-steps", "100"))
    err = capsys.readouterr().err
    assert rc == 130 and ("10 steps, then up to 3 against the look-alikes calibration finds, then up to 3 with the "
                          "picks it is sure of") in err
    assert "the model after 2 of 16 steps was saved" in err
    assert Checkpoint.load(tmp_path / "m3.ckpt").config.self_training_steps == 100
    # the training arithmetic asked for reaches the steps and is kept with the model
    calls["n"] = 0
    rc = main(_train_argv(paths, tmp_path / "m4.ckpt", "--max-steps", "10", "--precision", "float32"))
    err = capsys.readouterr().err
    assert rc == 130 and "bfloat16" not in err
    m4 = Checkpoint.load(tmp_path / "m4.ckpt")
    assert m4.config.precision == "float32" and m4.info["rounds"][-1]["precision"] == "float32"
    # interrupted before any step: nothing to save, nothing written
    calls["n"] = 2
    other = tmp_path / "none.ckpt"
    assert main(_train_argv(paths, other, "--max-steps", "10")) == 130
    assert not other.exists() and "no model saved" in capsys.readouterr().err


def test_ctrl_c_with_a_real_signal(sim_files, tmp_path):
    import signal
    import time

    from napari_cetpick.checkpoint import Checkpoint

    sim, paths = sim_files
    model = tmp_path / "m.ckpt"
    argv = ["train", "--tomogram", str(paths["tomogram"]), "--labels", str(paths["labels"]), "--bbox", "15",
            "--tau", "0.05", "--out", str(model), "--device", "cpu", "--batch-size", "1",
            "--max-steps", "100000", "--num_epochs", "100000"]
    # A child inherits an ignored SIGINT (earlier tests' libraries may leave it so in this process) and
    # Python then installs no Ctrl-C handler: give the child the default, as a terminal would.
    # -X faulthandler: should it ever hang after Ctrl-C, SIGABRT makes it print where it is.
    proc = subprocess.Popen([sys.executable, "-X", "faulthandler", "-m", "napari_cetpick.cli", *argv],
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        line = proc.stderr.readline()  # printed once the trainer is ready, just before the first step
        assert line.startswith("Training"), line
        time.sleep(3.0)
        proc.send_signal(signal.SIGINT)
        try:
            err = proc.communicate(timeout=120)[1]
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)
            pytest.fail("no exit 120 s after Ctrl-C; where it hung:\n" + proc.communicate(timeout=30)[1][-4000:])
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and f"was saved to {model}" in err
    assert Checkpoint.load(model).info["steps"] >= 1


def test_mask_must_match_the_tomogram_in_its_file_layout(sim_files, tmp_path, capsys):
    sim, paths = sim_files
    bad = write_tomogram(tmp_path / "bad_mask.mrc", np.ones((32, 96, 48), np.uint8))
    rc = main(["train", "--tomogram", str(paths["tomogram"]), "--labels", str(paths["labels"]), "--bbox", "15",
               "--max-steps", "1", "--out", str(tmp_path / "m.ckpt"), "--quiet", "--device", "cpu",
               "--mask", str(bad)])
    assert rc == 2
    assert "mask shape (32, 96, 48) differs from the tomogram's (32, 96, 96)" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # one mask per tomogram
        main(["detect", "--model", str(tmp_path / "none.ckpt"), "--tomogram", str(paths["tomogram"]),
              "--out-dir", str(tmp_path), "--mask", str(bad), "--mask", str(bad)])
    assert "--mask given twice" in capsys.readouterr().err


def test_read_mask_in_the_unrotated_layout(tmp_path):
    """A mask saved in an unrotated tomogram's file layout comes back in its napari frame."""
    from napari_cetpick.io import open_mask, open_tomogram

    keep = np.ones((8, 40, 30), np.uint8)
    keep[2:5, :10, :] = 0
    tomo_path = write_tomogram(tmp_path / "t.rec", np.zeros((8, 40, 30), np.float32), layout=FileLayout(1))
    mask_path = write_tomogram(tmp_path / "m.mrc", keep * 7, layout=FileLayout(1))
    tomo = open_tomogram(tomo_path)
    assert tomo.layout.thickness_axis == 1
    mask = open_mask(mask_path, tomo)
    assert mask.shape == (8, 40, 30) and mask.dtype == np.uint8
    np.testing.assert_array_equal(mask, keep)


def test_detect_and_train_with_a_mask(sim_files, tmp_path):
    """Picks in the mask's zero region are dropped; training accepts the same mask."""
    sim, paths = sim_files
    keep = np.ones(sim.volume.shape, np.uint8)
    keep[:, :48] = 0  # ignore y < 48
    mask = write_tomogram(tmp_path / "t_mask.mrc", keep)
    model = tmp_path / "m.ckpt"
    rc = main(["train", "--tomogram", str(paths["tomogram"]), "--mask", str(mask), "--labels", str(paths["labels"]),
               "--bbox", "15", "--max-steps", "2", "--out", str(model), "--quiet", "--device", "cpu"])
    assert rc == 0
    for name, extra in (("all", []), ("masked", ["--mask", str(mask)])):
        rc = main(["detect", "--model", str(model), "--tomogram", str(paths["tomogram"]), *extra, "--out-dir",
                   str(tmp_path / name), "--format", "csv", "--threshold", "0.0", "--quiet", "--device", "cpu",
                   "--no-heatmap"])
        assert rc == 0
    everything = pd.read_csv(tmp_path / "all" / "t_picks.csv")
    masked = pd.read_csv(tmp_path / "masked" / "t_picks.csv")
    assert (everything["y"] < 47.5).any()
    assert len(masked) and (masked["y"] >= 47.5).all()
    assert len(masked) >= (everything["y"] >= 47.5).sum()  # no pick left out in the kept region


def test_detect_says_how_each_threshold_was_chosen(sim_files, tmp_path, capsys):
    from napari_cetpick.checkpoint import Checkpoint

    sim, paths = sim_files
    model = tmp_path / "m.ckpt"
    assert main(["train", "--tomogram", str(paths["tomogram"]), "--labels", str(paths["labels"]), "--bbox", "15",
                 "--max-steps", "4", "--out", str(model), "--quiet", "--device", "cpu", "--tau", "0.05"]) == 0
    default = Checkpoint.load(model).default_threshold
    capsys.readouterr()
    runs = {}
    for extra in ([], ["--threshold-from", "model"], ["--threshold", "0.25"], ["--views", "1"],
                  ["--no-profile-contrast"]):
        out = tmp_path / ("det" + "".join(extra).replace("-", "_"))
        rc = main(["detect", "--model", str(model), "--tomogram", str(paths["tomogram"]), "--out-dir", str(out),
                   "--format", "csv", "--json", "--quiet", "--device", "cpu", *extra])
        assert rc == 0
        cap = capsys.readouterr()
        rec = json.loads(cap.out.strip().splitlines()[-1])
        runs[" ".join(extra)] = rec
        # too few labels for a profile model: the check asked for (the default) is said to be skipped
        assert "no profile check for particle" in cap.err and "Traceback" not in cap.err
        # the picks written are those at the threshold reported
        csv = pd.read_csv(out / "t_picks.csv")
        assert len(csv) == rec["picks"] and (csv["score"] >= rec["threshold"] - 1e-6).all()
    assert runs[""]["threshold_source"].startswith(("this tomogram's scores", "the model's default: "))
    # too few labels (2) for a profile model: no check, and the line says none
    assert "profile_moved" in runs[""] and runs[""]["profile_moved"] is None
    assert runs[""]["profile_gain"] is None
    assert runs["--no-profile-contrast"]["picks"] == runs[""]["picks"]  # no check to read a contrast for
    assert runs["--threshold-from model"]["threshold_source"] == "the model's default"
    assert runs["--threshold-from model"]["threshold"] == pytest.approx(default)
    assert runs["--threshold 0.25"]["threshold_source"] == "given" and runs["--threshold 0.25"]["threshold"] == 0.25
    # mirrored views (the default: four) give each pick the mirror halves' agreement; one view has none
    assert "agreement" in pd.read_csv(tmp_path / "det" / "t_picks.csv").columns
    assert "agreement" not in pd.read_csv(tmp_path / "det__views1" / "t_picks.csv").columns


def test_the_picks_line_says_the_contrast_the_check_read():
    from napari_cetpick.cli import _picks_line

    line = _picks_line(120, 100.0, 0.5, "this tomogram's scores", 3, 1, 0.593)
    assert line == ("120 picks (about 100 expected) at threshold 0.500 from this tomogram's scores, 3 moved below it "
                    "and 1 raised above it by the profile check at the class's contrast here, 0.59 × the labels'")
    # at the labels' contrast (as read to two decimals), or without a check: nothing said
    plain = "120 picks at threshold 0.500 from x, 3 moved below it by the profile check"
    assert _picks_line(120, None, 0.5, "x", 3, 0, 1.004) == plain
    assert _picks_line(120, None, 0.5, "x") == "120 picks at threshold 0.500 from x"
