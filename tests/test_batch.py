"""Batch detection: globs and lists, isolation of failures, atomic writes, --skip-existing, Dask."""
import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from napari_cetpick import batch
from napari_cetpick.batch import BatchOptions, DetectJob, plan_file_jobs, run_batch
from napari_cetpick.cli import main
from napari_cetpick.errors import CetpickError
from napari_cetpick.io import read_points, write_tomogram
from napari_cetpick.synthetic import save_synthetic, simulate_tomogram
from napari_cetpick.utils import run_generator

DETECT = ["--threshold", "0", "--K", "15", "--quiet", "--device", "cpu"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A model trained for a few steps: good enough to compare runs, not to pick well."""
    out = tmp_path_factory.mktemp("model")
    sim = simulate_tomogram(shape=(32, 96, 96), voxel_size_a=10.0, snr=1.0, seed=3, label_class="proteasome",
                            label_fraction=1.0, label_region=(0, 0, 0, 32, 96, 96))
    paths = save_synthetic(sim, out, "train")
    path = out / "m.ckpt"
    assert main(["train", "--tomogram", str(paths["tomogram"]), "--labels", str(paths["labels"]), "--bbox", "15",
                 "--max-steps", "2", "--out", str(path), "--quiet", "--device", "cpu"]) == 0
    return path


@pytest.fixture(scope="module")
def tomos(tmp_path_factory):
    """Three small tomograms, the second of them a corrupt file."""
    d = tmp_path_factory.mktemp("tomos")
    rng = np.random.default_rng(0)
    for i in (1, 3):
        sim = simulate_tomogram(shape=(32, 64, 64), voxel_size_a=10.0, snr=1.0, seed=10 + i, label_class="proteasome")
        write_tomogram(d / f"t{i}.mrc", sim.volume, voxel_size_a=10.0)
    (d / "t2.mrc").write_bytes(rng.integers(0, 255, 300, dtype=np.uint8).tobytes())  # not an MRC file
    return d


def _cli(*argv):
    return subprocess.run([sys.executable, "-m", "napari_cetpick.cli", *map(str, argv)], capture_output=True,
                          text=True, env={**os.environ, "CETPICK_DEVICE": "cpu"})


def test_plan_expands_globs_lists_and_image_lists(tmp_path):
    for name in ("a.mrc", "b.mrc", "c.rec"):
        (tmp_path / name).write_bytes(b"")
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "d.mrc").write_bytes(b"")
    lst = sub / "list.txt"
    lst.write_text("# tomograms of day 2\nd.mrc\n\n../c.rec  # relative to the list\n")
    imgs = tmp_path / "imgs.txt"
    imgs.write_text(f"image_name\trec_path\nfirst\t{tmp_path / 'a.mrc'}\n")
    jobs = plan_file_jobs([str(tmp_path / "*.mrc")], [str(lst)], [str(imgs)])
    assert [j.name for j in jobs] == ["first", "d", "c", "a", "b"]
    assert all(os.path.isabs(j.path) for j in jobs)
    # the same file twice is one job; two files with one output name are refused
    assert len(plan_file_jobs([str(tmp_path / "a.mrc"), str(tmp_path / "a.mrc")])) == 1
    (sub / "a.mrc").write_bytes(b"")
    with pytest.raises(CetpickError, match="outputs named 'a'"):
        plan_file_jobs([str(tmp_path / "a.mrc"), str(sub / "a.mrc")])
    with pytest.raises(CetpickError, match="no file matches"):
        plan_file_jobs([str(tmp_path / "*.st")])
    with pytest.raises(CetpickError, match="Give --tomogram"):
        plan_file_jobs([])


def test_one_corrupt_tomogram_does_not_stop_the_others(model, tomos, tmp_path):
    # issue 9: a multi-tomogram detect used to abort all remaining tomograms on the first failure
    out = tmp_path / "out"
    proc = _cli("detect", "--model", model, "--tomogram", tomos / "*.mrc", "--out-dir", out, "--json", *DETECT)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [l for l in proc.stderr.splitlines() if l.startswith("cetpick: error:")]
    assert len(errors) == 1 and str(tomos / "t2.mrc") in errors[0] and "not a readable MRC file" in errors[0]
    lines = [json.loads(l) for l in proc.stdout.splitlines()]
    assert [(d["tomogram"], d["status"]) for d in lines] == [("t1", "ok"), ("t2", "failed"), ("t3", "ok")]
    assert lines[0]["picks"] == 15 and lines[0]["threshold"] == 0.0 and lines[1]["error"]
    for stem in ("t1", "t3"):
        assert len(read_points(out / f"{stem}_picks.txt").zyx) == 15
        assert (out / f"{stem}_heatmap.mrc").is_file()
    assert not list(out.glob("t2*")) and not list(out.glob(".*"))
    # the summary table (stderr with --json) has a row per tomogram
    table = proc.stderr[proc.stderr.index("tomogram  picks"):].splitlines()
    assert table[0].split() == ["tomogram", "picks", "threshold", "seconds", "status"]
    assert table[2].split()[0] == "t2" and table[2].split()[-1] == "failed"
    assert "3 tomograms: 2 ok, 0 skipped, 1 failed" in proc.stderr


def test_atomic_write_never_leaves_a_partial_file(tmp_path):
    final = tmp_path / "x_picks.txt"

    def half_then_fail(p):
        p.write_text("1 2 3\n4 5")
        raise OSError("disk full")

    with pytest.raises(OSError):
        batch.atomic_write(final, half_then_fail)
    assert list(tmp_path.iterdir()) == []
    final.write_text("old\n")
    batch.atomic_write(final, lambda p: p.write_text("new\n"))
    assert final.read_text() == "new\n" and len(list(tmp_path.iterdir())) == 1


def test_skip_existing_after_a_run_killed_mid_way(model, tomos, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in (1, 3, 4):  # three good tomograms
        (src / f"t{i}.mrc").write_bytes((tomos / f"t{1 if i != 3 else 3}.mrc").read_bytes())
    out = tmp_path / "out"
    # kill -9 the process while it writes t3's picks file: the half-written file must not count as done
    script = textwrap.dedent(f"""
        import os, signal, sys
        import napari_cetpick.io as io
        real = io.write_points
        def write_then_die(path, *a, **k):
            if "t3_picks" in str(path):
                open(path, "w").write("12.5 3")
                os.kill(os.getpid(), signal.SIGKILL)
            return real(path, *a, **k)
        io.write_points = write_then_die
        from napari_cetpick.cli import main
        sys.exit(main(sys.argv[1:]))
    """)
    argv = ["detect", "--model", model, "--tomogram", src / "*.mrc", "--out-dir", out, *DETECT]
    proc = subprocess.run([sys.executable, "-c", script, *map(str, argv)], capture_output=True, text=True,
                          env={**os.environ, "CETPICK_DEVICE": "cpu"})
    assert proc.returncode == -signal.SIGKILL
    assert (out / "t1_picks.txt").is_file() and (out / "t3_heatmap.mrc").is_file()
    assert not (out / "t3_picks.txt").exists() and not (out / "t4_picks.txt").exists()
    assert len(list(out.glob(".t3_picks.part-*"))) == 1  # what the kill left behind
    t1_mtime = (out / "t1_picks.txt").stat().st_mtime_ns

    proc = _cli(*argv, "--skip-existing", "--json")
    assert proc.returncode == 0, proc.stderr
    status = {d["tomogram"]: d["status"] for d in map(json.loads, proc.stdout.splitlines())}
    assert status == {"t1": "skipped", "t3": "ok", "t4": "ok"}
    assert (out / "t1_picks.txt").stat().st_mtime_ns == t1_mtime
    assert len(read_points(out / "t3_picks.txt").zyx) == 15 and (out / "t4_picks.txt").is_file()
    assert not list(out.glob(".*"))  # the stale temporary file is gone


def test_run_batch_generator_reports_tiles_and_results(model, tomos, tmp_path):
    opts = BatchOptions(model=str(model), out_dir=str(tmp_path), fmt="csv", heatmap=False, threshold=0.0, K=5,
                        tile_xy=32, device="cpu")
    jobs = [DetectJob("t1", str(tomos / "t1.mrc")), DetectJob("gone", str(tomos / "gone.mrc"))]
    seen = []
    results = run_generator(run_batch(jobs, opts), seen.append)
    assert [r.status for r in results] == ["ok", "failed"] and "file not found" in results[1].error
    tiles = [p.running["t1"] for p in seen if "t1" in p.running]
    assert len(tiles) > 1 and tiles[-1][0] == tiles[-1][1]  # per-tile progress up to the last tile
    finished = [p for p in seen if p.result is not None]
    assert [p.done for p in finished] == [1, 2] and finished[-1].failed == 1
    assert results[0].outputs == {"picks": str(tmp_path / "t1_picks.csv")}


def test_missing_dask_is_one_line_error(model, tomos, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "distributed", None)
    rc = main(["detect", "--model", str(model), "--tomogram", str(tomos / "t1.mrc"), "--out-dir", str(tmp_path),
               "--dask", "local:2", *DETECT])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("cetpick: error:") == 1 and "napari-cetpick[dask]" in err


@pytest.mark.slow
def test_dask_local_cluster_writes_what_the_local_run_writes(model, tomos, tmp_path):
    pytest.importorskip("distributed")
    local, remote = tmp_path / "local", tmp_path / "dask"
    argv = ["detect", "--model", model, "--tomogram", tomos / "t1.mrc", "--tomogram", tomos / "t2.mrc",
            "--tomogram", tomos / "t3.mrc", "--format", "star", *DETECT]
    p_local = _cli(*argv, "--out-dir", local)
    p_dask = _cli(*argv, "--out-dir", remote, "--dask", "local:2", "--json")
    for proc in (p_local, p_dask):
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        errors = [l for l in proc.stderr.splitlines() if l.startswith("cetpick: error:")]
        assert len(errors) == 1 and "t2.mrc" in errors[0]
    lines = {d["tomogram"]: d for d in map(json.loads, p_dask.stdout.splitlines())}
    assert {k: v["status"] for k, v in lines.items()} == {"t1": "ok", "t2": "failed", "t3": "ok"}
    assert {lines["t1"]["worker"], lines["t3"]["worker"]} <= {"0", "1"}
    assert sorted(f.name for f in remote.iterdir()) == sorted(f.name for f in local.iterdir()) == [
        "t1_heatmap.mrc", "t1_picks.star", "t3_heatmap.mrc", "t3_picks.star"]
    for stem in ("t1", "t3"):
        a, b = read_points(local / f"{stem}_picks.star"), read_points(remote / f"{stem}_picks.star")
        assert len(a.zyx) == 15
        np.testing.assert_allclose(b.zyx, a.zyx, atol=1e-3)
        np.testing.assert_allclose(b.features["score"], a.features["score"], atol=1e-4)


def test_dask_address_of_a_running_scheduler(model, tomos, tmp_path, capsys, monkeypatch):
    import logging

    distributed = pytest.importorskip("distributed")
    # a library imported earlier in this test session (copick does) may have put a handler on
    # the root logger that prints the in-process scheduler's records to stdout
    monkeypatch.setattr(logging.getLogger(), "handlers", [])
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cl:
        rc = main(["detect", "--model", str(model), "--tomogram", str(tomos / "t1.mrc"), "--tomogram",
                   str(tomos / "t3.mrc"), "--out-dir", str(tmp_path), "--json", "--dask", cl.scheduler_address,
                   *DETECT])
        out = capsys.readouterr().out
        assert rc == 0
        assert [json.loads(l)["status"] for l in out.splitlines()] == ["ok", "ok"]
        assert len(read_points(tmp_path / "t3_picks.txt").zyx) == 15
        # cetpick leaves somebody else's cluster running
        assert cl.status.name == "running" and len(cl.scheduler_info["workers"]) == 1
