"""copick projects: the Å convention, a round trip against our IMOD/STAR exports, lazy reads,
and train -> detect -> re-read with the copick library."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import starfile

from napari_cetpick.cli import main
from napari_cetpick.errors import CetpickError
from napari_cetpick.io import FileLayout, read_points, write_points, write_tomogram
from napari_cetpick.io.copick_project import (
    LazyVolume,
    copick_picks_complete,
    copick_to_zyx,
    open_copick,
    open_copick_tomogram,
    read_copick_picks,
    write_copick_picks,
    zyx_to_copick,
)
from napari_cetpick.synthetic import simulate_tomogram

copick = pytest.importorskip("copick")
from copick.models import PickableObject  # noqa: E402

SPACING = 10.0


def _project(path, volumes: dict, picks: dict | None = None):
    """A filesystem copick project built with the copick library: one run per volume, tomogram type 'wbp'.

    ``picks`` maps run -> (user, session, xyz Å).
    """
    cfg = path / "copick.json"
    root = copick.new_config(str(cfg), overlay_root=str(path / "overlay"), pickable_objects=[
        PickableObject(name="proteasome", is_particle=True, label=1, radius=75.0),
        PickableObject(name="ribosome", is_particle=True, label=2, radius=125.0)])
    for run_name, vol in volumes.items():
        run = root.new_run(run_name)
        run.new_voxel_spacing(SPACING).new_tomogram("wbp").from_numpy(vol)
        for user, session, xyz in (picks or {}).get(run_name, []):
            run.new_picks("proteasome", session, user).from_numpy(np.asarray(xyz, float))
    return cfg


def test_copick_convention_hand_example():
    # voxel index (z=3, y=10, x=20) at 10 Å: copick (x, y, z) = (200, 100, 30) Å, voxel centres at i * spacing
    np.testing.assert_allclose(zyx_to_copick([[3, 10, 20]], 10.0), [[200.0, 100.0, 30.0]])
    np.testing.assert_allclose(copick_to_zyx([[200.0, 100.0, 30.0]], 10.0), [[3, 10, 20]])
    with pytest.raises(CetpickError, match="voxel spacing"):
        zyx_to_copick([[1, 2, 3]], 0)


def test_round_trip_through_copick_lands_on_our_imod_and_star_exports(tmp_path):
    shape = (16, 40, 30)
    cfg = _project(tmp_path, {"TS_1": np.zeros(shape, np.float32)})
    rng = np.random.default_rng(1)
    zyx = rng.uniform(0, 1, (12, 3)) * (np.array(shape) - 1)
    zyx[0] = (3, 10, 20)
    scores = rng.uniform(0, 1, 12)
    root = open_copick(cfg)
    write_copick_picks(root, "TS_1", "proteasome", zyx, scores, SPACING)

    # re-read with the copick library alone
    picks = copick.from_file(str(cfg)).get_run("TS_1").get_picks(object_name="proteasome", user_id="cetpick")[0]
    xyz_a, _ = picks.numpy()
    np.testing.assert_allclose(picks.scores(), scores)
    assert picks.session_id == "0" and picks.meta.unit == "angstrom"

    layout = FileLayout.identity(shape)
    imod = np.loadtxt(write_points(tmp_path / "p.txt", zyx, fmt="imod", layout=layout))
    star4 = starfile.read(write_points(tmp_path / "p4.star", zyx, fmt="star", layout=layout))
    star5 = starfile.read(write_points(tmp_path / "p5.star", zyx, fmt="star5", layout=layout,
                                       voxel_size_a=SPACING, shape_zyx=shape))
    # IMOD: x, y are half a pixel up (corner origin), z is the slice centre
    np.testing.assert_allclose(xyz_a / SPACING, imod - [0.5, 0.5, 0.0], atol=1e-3)  # 3 decimals in the file
    # RELION 4: 0-based pixels, voxel centre at the integer
    np.testing.assert_allclose(xyz_a / SPACING, star4[["rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ"]],
                               atol=1e-3)
    # RELION 5: copick's own RELION export (centre = shape / 2 * spacing) equals ours
    cols = ["rlnCenteredCoordinateXAngst", "rlnCenteredCoordinateYAngst", "rlnCenteredCoordinateZAngst"]
    theirs = picks.df("relion", voxel_spacing=SPACING, tomo_type="wbp")
    np.testing.assert_allclose(theirs[cols].to_numpy(float), star5[cols].to_numpy(float), atol=1e-2)
    # every point lands on the same voxel
    assert np.array_equal(np.round(xyz_a[:, ::-1] / SPACING), np.round(zyx))
    # and back into the package's frame
    back = read_copick_picks(open_copick(cfg), "TS_1", "proteasome", SPACING, user_id="cetpick")
    assert len(back) == 1
    np.testing.assert_allclose(back[0].zyx, zyx, atol=1e-9)
    np.testing.assert_allclose(back[0].scores, scores)


def test_reading_picks_adds_the_transform_shift_and_leaves_out_tool_picks(tmp_path):
    cfg = _project(tmp_path, {"TS_1": np.zeros((8, 16, 16), np.float32)},
                   {"TS_1": [("alice", "1", [[20.0, 30.0, 40.0]]), ("oldtool", "0", [[50.0, 50.0, 50.0]])]})
    root = copick.from_file(str(cfg))
    p = root.get_run("TS_1").get_picks(user_id="alice")[0]
    t = np.eye(4)
    t[:3, 3] = (10.0, 0.0, -10.0)  # a refined shift, in Å
    p.from_numpy(np.array([[20.0, 30.0, 40.0]]), transforms=t[None])
    sets = read_copick_picks(open_copick(cfg), "TS_1", "proteasome", SPACING)
    assert [(s.user_id, s.session_id) for s in sets] == [("alice", "1")]
    np.testing.assert_allclose(sets[0].zyx, [[3.0, 3.0, 3.0]])  # (x, y, z) = (30, 30, 30) Å
    assert len(read_copick_picks(open_copick(cfg), "TS_1", "proteasome", SPACING, session_id="0")) == 1


def test_copick_tomogram_is_read_lazily_tile_by_tile(tmp_path):
    from napari_cetpick.checkpoint import Checkpoint
    from napari_cetpick.config import DetectConfig, TrainConfig
    from napari_cetpick.detect import detect
    from napari_cetpick.model import build_network
    from napari_cetpick.utils import run_generator

    vol = np.random.default_rng(0).normal(size=(16, 128, 128)).astype(np.float32)
    cfg = _project(tmp_path, {"TS_1": vol})
    tomo = open_copick_tomogram(open_copick(cfg), "TS_1", SPACING, "wbp")
    assert isinstance(tomo.data, LazyVolume) and tomo.shape_zyx == vol.shape and tomo.voxel_size_a == SPACING
    reads = []

    class Counting(LazyVolume):
        def __getitem__(self, key):
            out = super().__getitem__(key)
            reads.append(out.size)
            return out

        def __array__(self, *a, **k):
            raise AssertionError("the whole volume was read into memory")

    data = Counting(tomo.data._array)
    np.testing.assert_array_equal(data[2:4, 10:20, 30:33], vol[2:4, 10:20, 30:33])
    reads.clear()
    ckpt = Checkpoint(state_dict=build_network("unet_small").state_dict(), config=TrainConfig(bbox=10, arch="unet_small"),
                      diameter_vox=10.0, voxel_size_a=SPACING, bin_xy=1)
    res = run_generator(detect(ckpt, data, DetectConfig(tile_xy=32, threshold=0.0, K=3), voxel_size_a=SPACING,
                               device="cpu"))
    assert res.heatmap.shape[0] == 16 and len(res.zyx) == 3
    tile_reads = [n for n in reads if n < vol.size]
    assert len(tile_reads) >= 4  # read tile by tile (one central block for the statistics aside)


def test_missing_copick_is_one_line_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "copick", None)
    cfg = tmp_path / "c.json"
    cfg.write_text("{}")
    rc = main(["train", "--copick", str(cfg), "--object", "x", "--voxel-spacing", "10", "--tomo-type", "wbp",
               "--bbox", "10", "--out", str(tmp_path / "m.ckpt")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("cetpick: error:") == 1 and "napari-cetpick[copick]" in err


def test_copick_errors_name_the_problem(tmp_path):
    cfg = _project(tmp_path, {"TS_1": np.zeros((8, 16, 16), np.float32)})
    root = open_copick(cfg)
    with pytest.raises(CetpickError, match="no run 'TS_9'"):
        open_copick_tomogram(root, "TS_9", SPACING, "wbp")
    with pytest.raises(CetpickError, match="no voxel spacing 7"):
        open_copick_tomogram(root, "TS_1", 7.0, "wbp")
    with pytest.raises(CetpickError, match="types: wbp"):
        open_copick_tomogram(root, "TS_1", SPACING, "denoised")
    with pytest.raises(CetpickError, match="no pickable object 'virus'"):
        write_copick_picks(root, "TS_1", "virus", [[1, 1, 1]], [1.0], SPACING)
    with pytest.raises(CetpickError, match="not found"):
        open_copick(tmp_path / "nope.json")


def test_skip_existing_needs_a_finished_copick_set(tmp_path):
    cfg = _project(tmp_path, {"TS_1": np.zeros((8, 16, 16), np.float32)})
    root = open_copick(cfg)
    assert not copick_picks_complete(root, "TS_1", "proteasome", "cetpick", "0")
    # what a run killed between copick's empty set and the points leaves behind
    root.get_run("TS_1").new_picks("proteasome", "0", "cetpick")
    assert not copick_picks_complete(open_copick(cfg), "TS_1", "proteasome", "cetpick", "0")
    write_copick_picks(root, "TS_1", "proteasome", np.zeros((0, 3)), [], SPACING)  # no picks, but finished
    assert copick_picks_complete(open_copick(cfg), "TS_1", "proteasome", "cetpick", "0")


def test_train_detect_and_reread_with_copick(tmp_path):
    sims = [simulate_tomogram(shape=(32, 96, 96), voxel_size_a=SPACING, snr=1.0, seed=s, label_class="proteasome",
                              label_fraction=1.0, label_region=(0, 0, 0, 32, 96, 96)) for s in (3, 4)]
    labels_a = zyx_to_copick(sims[0].labels, SPACING)
    cfg = _project(tmp_path, {"TS_1": sims[0].volume, "TS_2": sims[1].volume},
                   {"TS_1": [("alice", "1", labels_a)]})
    model = tmp_path / "m.ckpt"
    assert main(["train", "--copick", str(cfg), "--object", "proteasome", "--voxel-spacing", "10", "--tomo-type",
                 "wbp", "--max-steps", "2", "--out", str(model), "--quiet", "--device", "cpu"]) == 0
    from napari_cetpick.checkpoint import Checkpoint

    ckpt = Checkpoint.load(model)
    assert ckpt.info["copick"]["object"] == "proteasome" and ckpt.info["copick"]["runs"] == ["TS_1"]
    assert ckpt.diameter_vox == pytest.approx(15.0)  # the object's radius, 75 Å, at 10 Å per voxel

    proc = subprocess.run([sys.executable, "-m", "napari_cetpick.cli", "detect", "--model", str(model), "--copick",
                           str(cfg), "--voxel-spacing", "10", "--tomo-type", "wbp", "--threshold", "0", "--K", "12",
                           "--json", "--quiet", "--device", "cpu"], capture_output=True, text=True,
                          env={**os.environ, "CETPICK_DEVICE": "cpu"})
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(l) for l in proc.stdout.splitlines()]
    assert [(d["tomogram"], d["status"], d["picks"]) for d in lines] == [("TS_1", "ok", 12), ("TS_2", "ok", 12)]

    # re-read with the copick library: picks with scores, by the tool user, in every run
    root = copick.from_file(str(cfg))
    for run_name, sim in (("TS_1", sims[0]), ("TS_2", sims[1])):
        sets = root.get_run(run_name).get_picks(object_name="proteasome", user_id="cetpick", session_id="0")
        assert len(sets) == 1
        xyz_a, _ = sets[0].numpy()
        scores = sets[0].scores()
        assert len(xyz_a) == 12 and np.all(np.diff(scores) <= 1e-6) and np.all((scores >= 0) & (scores <= 1))
        assert np.all(xyz_a >= -5) and np.all(xyz_a / SPACING <= np.array(sim.volume.shape[::-1]) - 0.5)
        # the same volume as an MRC file gives the same picks through our STAR export
        mrc = write_tomogram(tmp_path / f"{run_name}.mrc", sim.volume, voxel_size_a=SPACING)
        assert main(["detect", "--model", str(model), "--tomogram", str(mrc), "--out-dir", str(tmp_path / "files"),
                     "--format", "star", "--threshold", "0", "--K", "12", "--quiet", "--device", "cpu"]) == 0
        star = read_points(tmp_path / "files" / f"{run_name}_picks.star")
        np.testing.assert_allclose(copick_to_zyx(xyz_a, SPACING), star.zyx, atol=1e-3)
        np.testing.assert_allclose(scores, star.features["score"], atol=1e-5)
    # the labels were left alone and a second detection with --skip-existing does nothing
    assert len(root.get_run("TS_1").get_picks(user_id="alice")[0].points) == len(labels_a)
    assert main(["detect", "--model", str(model), "--copick", str(cfg), "--voxel-spacing", "10", "--tomo-type",
                 "wbp", "--skip-existing", "--quiet", "--device", "cpu"]) == 0


def test_detect_copick_refuses_mixed_inputs(tmp_path, capsys):
    cfg = _project(tmp_path, {"TS_1": np.zeros((8, 16, 16), np.float32)})
    sim = simulate_tomogram(shape=(32, 96, 96), voxel_size_a=SPACING, snr=1.0, seed=3, label_class="proteasome",
                            label_fraction=1.0, label_region=(0, 0, 0, 32, 96, 96))
    mrc = write_tomogram(tmp_path / "t.mrc", sim.volume, voxel_size_a=SPACING)
    lab = write_points(tmp_path / "l.txt", sim.labels)
    model = tmp_path / "m.ckpt"
    assert main(["train", "--tomogram", str(mrc), "--labels", str(lab), "--bbox", "15", "--max-steps", "1",
                 "--out", str(model), "--quiet", "--device", "cpu"]) == 0
    base = ["detect", "--model", str(model), "--copick", str(cfg), "--voxel-spacing", "10", "--tomo-type", "wbp"]
    capsys.readouterr()
    assert main(base) == 2 and "give --object" in capsys.readouterr().err
    assert main(base + ["--object", "proteasome", "--out-dir", str(tmp_path)]) == 2
    assert "leave out" in capsys.readouterr().err
    assert main(["detect", "--model", str(model), "--tomogram", str(mrc), "--out-dir", str(tmp_path), "--run",
                 "TS_1"]) == 2
    assert "--copick" in capsys.readouterr().err


def test_importing_copick_leaves_the_root_logger_alone():
    import logging

    pytest.importorskip("copick")
    from napari_cetpick.io.copick_project import _import_copick

    before = list(logging.getLogger().handlers)
    _import_copick()
    assert logging.getLogger().handlers == before


def test_train_several_objects_into_one_model_and_detect_each_back(tmp_path):
    from napari_cetpick.checkpoint import Checkpoint

    sim = simulate_tomogram(shape=(48, 128, 128), voxel_size_a=SPACING, snr=1.0, seed=5,
                            n_particles={"ribosome": 3, "proteasome": 3, "shell": 0, "globular": 0})
    cfg = _project(tmp_path, {"TS_1": sim.volume})
    root = copick.from_file(str(cfg))
    run = root.get_run("TS_1")
    run.new_picks("proteasome", "1", "alice").from_numpy(zyx_to_copick(sim.particles["proteasome"][:2], SPACING))
    run.new_picks("ribosome", "1", "alice").from_numpy(zyx_to_copick(sim.particles["ribosome"][:2], SPACING))
    model = tmp_path / "m.ckpt"
    assert main(["train", "--copick", str(cfg), "--object", "proteasome", "--object", "ribosome", "--bbox",
                 "ribosome=20", "--voxel-spacing", "10", "--tomo-type", "wbp", "--max-steps", "1", "--out",
                 str(model), "--quiet", "--device", "cpu"]) == 0
    ckpt = Checkpoint.load(model)
    assert ckpt.class_names == ["proteasome", "ribosome"]
    # the proteasome's size is its radius in the project (75 Å), the ribosome's the one given
    assert [c.diameter_vox for c in ckpt.classes] == [pytest.approx(15.0), pytest.approx(20.0)]
    assert ckpt.info["copick"]["objects"] == ["proteasome", "ribosome"]
    assert [ckpt.for_class(n).info["n_labels"] for n in ckpt.class_names] == [2, 2]
    assert main(["detect", "--model", str(model), "--copick", str(cfg), "--voxel-spacing", "10", "--tomo-type",
                 "wbp", "--threshold", "0", "--K", "5", "--quiet", "--device", "cpu"]) == 0
    root = copick.from_file(str(cfg))
    for obj in ("proteasome", "ribosome"):
        sets = root.get_run("TS_1").get_picks(object_name=obj, user_id="cetpick", session_id="0")
        assert len(sets) == 1 and len(sets[0].points) == 5
