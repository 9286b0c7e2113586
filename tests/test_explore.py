"""Exploration before any label: candidates, clusters, map, files, and training from a cluster."""
import json

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from napari_cetpick.cli import main
from napari_cetpick.errors import CetpickError
from napari_cetpick.explore import (CANDIDATES_FILE, ExploreConfig, explore, find_candidates, members_of,
                                    read_cluster_labels, write_exploration)
from napari_cetpick.io import FileLayout, open_tomogram, read_points, write_tomogram
from napari_cetpick.utils import run_generator

VOXEL_A = 10.0


def two_kinds(shape=(40, 160, 160), seed=0, noise=0.35):
    """Dark solid balls of 8 voxels and dark hollow shells of 16 voxels, apart, in noise."""
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.indices(shape, dtype=np.float32)
    v = np.zeros(shape, np.float32)
    pts, kinds = [], []
    for y in range(16, shape[1] - 12, 22):
        for x in range(16, shape[2] - 12, 22):
            p = np.array([shape[0] / 2 + rng.uniform(-4, 4), y + rng.uniform(-2, 2), x + rng.uniform(-2, 2)])
            kind = int(rng.integers(2))
            r = np.sqrt((zz - p[0]) ** 2 + (yy - p[1]) ** 2 + (xx - p[2]) ** 2)
            v -= (r < 4.0) if kind == 0 else ((r < 8.0) & (r > 5.5))
            pts.append(p)
            kinds.append(kind)
    v = ndimage.gaussian_filter(v, 0.8) + rng.normal(0, noise, shape)
    return v.astype(np.float32), np.array(pts), np.array(kinds)


@pytest.fixture(scope="module")
def explored():
    v, pts, kinds = two_kinds()
    res = run_generator(explore(v, VOXEL_A, ExploreConfig(diameter_range_a=(60, 180), min_cluster_size=8)))
    return v, pts, kinds, res


def _nearest(res, pts):
    d = np.linalg.norm(res.zyx[None] - pts[:, None], axis=2)
    return d.min(1), d.argmin(1)


def test_every_particle_is_a_candidate_near_its_centre_with_its_size(explored):
    v, pts, kinds, res = explored
    dist, which = _nearest(res, pts)
    assert np.all(dist[kinds == 0] < 1.5), dist[kinds == 0]  # solid balls: on the centre
    # hollow shells too (their LoG peaks on the wall, 5.5–8 voxels out; the centring moves them
    # to the centre): each within an eighth of its 16-voxel diameter, most within a voxel (the
    # working lattice alone rounds by up to 0.87)
    assert np.all(dist[kinds == 1] < 2.0) and np.median(dist[kinds == 1]) < 1.0, dist[kinds == 1]
    size = res.diameter_vox[which]
    assert np.median(size[kinds == 0]) < np.median(size[kinds == 1])
    # within the range, each with a map position, an embedding and a cluster
    assert res.diameter_vox.min() >= 6 - 1e-6 and res.diameter_vox.max() <= 18 + 1e-6
    assert res.map_xy.shape == (len(res.zyx), 2) and len(res.embedding) == len(res.zyx)
    assert np.all(np.isfinite(res.embedding)) and np.all(np.isfinite(res.map_xy))


def test_the_two_kinds_fall_into_different_clusters(explored):
    v, pts, kinds, res = explored
    dist, which = _nearest(res, pts)
    cl = res.cluster[which]
    for k in (0, 1):
        got = cl[(kinds == k) & (cl >= 0)]
        assert len(got) >= 0.6 * (kinds == k).sum(), (k, cl, kinds)
        main_cluster = np.bincount(got).argmax()
        # the kind's main cluster holds nothing of the other kind
        assert not np.any(cl[kinds != k] == main_cluster), (k, cl, kinds)
    # an average per cluster, the clusters numbered by size
    assert sorted(res.averages) == res.cluster_ids
    sizes = [int((res.cluster == c).sum()) for c in res.cluster_ids]
    assert sizes == sorted(sizes, reverse=True)


def test_files_round_trip_in_thickness_first_and_unrotated_layouts(explored, tmp_path):
    v, pts, kinds, res = explored
    for layout in (None, FileLayout(1, (v.shape[1], v.shape[0], v.shape[2]))):
        out = tmp_path / f"layout{layout.thickness_axis if layout else 0}"
        paths = write_exploration(out, res, layout=layout)
        assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in paths.values())
        ps = read_points(out / CANDIDATES_FILE, layout=layout)
        assert np.allclose(ps.zyx, res.zyx, atol=1e-3)  # exact to the CSV's decimals
        assert np.array_equal(ps.features["cluster"].to_numpy(), res.cluster)
        raw = pd.read_csv(out / CANDIDATES_FILE)
        if layout is not None:  # file x = napari x, file y = napari z (thickness), file z = napari y
            assert np.allclose(raw[["y", "z", "x"]].to_numpy(), res.zyx, atol=1e-3)
        c = res.cluster_ids[0]
        got = read_cluster_labels(f"{out}:{c}", layout=layout, shape_zyx=v.shape)
        assert np.allclose(got, res.members(c), atol=1e-3)
        summary = json.loads((out / "explore.json").read_text())
        assert summary["clusters"][str(c)]["members"] == len(got)
        html = (out / "overview.html").read_text()
        assert html.count("<circle") == len(res.zyx) and html.count("data:image/png;base64,") == len(res.cluster_ids)
        assert html.count("<text") == len(res.cluster_ids) and "of 60–180 Å" in html  # numbered clusters, the range
        assert f"--labels-from-cluster {out}:N" in html  # how to go on


def test_bad_input_one_clear_message_nothing_written(explored, tmp_path, monkeypatch):
    v, pts, kinds, res = explored
    with pytest.raises(CetpickError, match="does not fit in the tomogram"):
        run_generator(explore(v, VOXEL_A, ExploreConfig(diameter_range_a=(60, 900))))
    with pytest.raises(CetpickError, match="smallest first"):
        ExploreConfig(diameter_range_a=(200, 60)).validate()
    with pytest.raises(CetpickError, match="Found 0 blobs"):
        run_generator(explore(np.zeros((32, 64, 64), np.float32), VOXEL_A, ExploreConfig(diameter_range_a=(60, 120))))
    with pytest.raises(CetpickError, match="no cluster 99: the clusters are 0"):
        members_of(res.cluster, 99)
    # cancelled half-way: the generator closes, nothing is returned or written
    gen = explore(v, VOXEL_A, ExploreConfig(diameter_range_a=(60, 180)))
    assert next(gen).stage == "candidates"
    gen.close()
    # a failure while writing leaves no half-written files behind
    import napari_cetpick._explore_overview as ov

    monkeypatch.setattr(ov, "overview_html", lambda r, **k: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        write_exploration(tmp_path / "half", res)
    assert list((tmp_path / "half").iterdir()) == []


@pytest.mark.parametrize("radius, range_vox", [(6.0, (6.0, 30.0)), (13.0, (12.0, 80.0))])  # bin 1; bin 3
def test_centring_moves_a_wall_candidate_to_the_hollow_centre_and_leaves_balls(radius, range_vox):
    """A candidate on a hollow shell's wall moves to its centre; one on a solid ball's centre
    stays, and one a voxel off it ends on the centre or stays."""
    from napari_cetpick.explore import _SymmetryWindows, iter_symmetry_centres

    rng = np.random.default_rng(7)
    shape = (64, 128, 160)
    zz, yy, xx = np.indices(shape, dtype=np.float32)
    shell_c, ball_c = np.array([32.3, 64.0, 40.6]), np.array([31.0, 62.5, 118.2])
    r_shell = np.sqrt(((np.stack([zz, yy, xx], -1) - shell_c) ** 2).sum(-1))
    r_ball = np.sqrt(((np.stack([zz, yy, xx], -1) - ball_c) ** 2).sum(-1))
    v = ((r_ball < 0.6 * radius) - 1.0 * (np.abs(r_shell - radius) < 1.2) + 0.5 * (r_shell < radius - 1.2))
    v = (ndimage.gaussian_filter(v.astype(np.float32), 0.8) + rng.normal(0, 0.5, shape)).astype(np.float32)
    wall = shell_c + radius * np.array([0.0, 0.6, 0.8])
    pts = np.vstack([wall, ball_c, ball_c + [0.0, 1.0, 0.0]])
    moved, size, signif = run_generator(iter_symmetry_centres(v, pts, [range_vox[0]] * 3, range_vox))
    b = _SymmetryWindows(range_vox).b
    half_bin = 0.5 * (b - 1) * np.sqrt(3)  # a binned place's centre lies up to this far from a voxel
    assert np.linalg.norm(moved[0] - shell_c) <= 1.0 + half_bin, (moved[0], shell_c, b)
    assert np.array_equal(moved[1], ball_c) and signif[1] > 5  # the ball's centre: already the most symmetric
    # the moved candidate takes the shell's size (its LoG size would be the wall's), within a bin
    assert abs(size[0] - 2 * (radius + 1.2)) <= 2 * b + 1, (size[0], radius, b)
    assert size[1] == range_vox[0]  # stayed: kept its size
    assert np.linalg.norm(moved[2] - ball_c) <= 1.0 + half_bin, (moved[2], ball_c, b)


@pytest.mark.parametrize("sigma", [0.0, 1.5])
@pytest.mark.parametrize("range_vox", [(10.0, 30.0), (12.0, 80.0)])  # bin 1; bin 3
def test_centring_leaves_solid_balls_and_plain_noise_in_white_and_correlated_noise(sigma, range_vox):
    """The background's statistics come from the tomogram's own spectrum, and the gain needed
    from random places in it: in noise correlated over voxels (as CTF-filtered tomograms are)
    balls on their centre, on whole voxels or not, stay, and noise alone moves few candidates
    (measured: 0–10 % with noise sd 0.5 of the balls' contrast and 2 at every correlation)."""
    from napari_cetpick.explore import iter_symmetry_centres

    rng = np.random.default_rng(3)
    shape = (64, 160, 160)
    zz, yy, xx = np.indices(shape, dtype=np.float32)
    centres = np.array([[32.0, 40.0, 40.0], [30.4, 40.3, 118.6], [33.0, 118.0, 40.0], [31.5, 120.5, 119.5]])
    v = np.zeros(shape, np.float32)
    for c in centres:
        v -= np.sqrt((zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2) < 5
    noise = rng.normal(0, 1, shape).astype(np.float32)
    if sigma:
        noise = ndimage.gaussian_filter(noise, sigma)
    v += 0.5 * noise / noise.std()
    elsewhere = rng.uniform([12, 12, 12], [52, 148, 148], (150, 3))
    elsewhere = elsewhere[np.min(np.linalg.norm(elsewhere[:, None] - centres[None], axis=2), axis=1) > 15]
    pts = np.vstack([centres, elsewhere])
    moved, size, signif = run_generator(iter_symmetry_centres(v, pts, np.full(len(pts), range_vox[0]), range_vox))
    assert np.array_equal(moved[:4], centres) and np.all(size[:4] == range_vox[0])
    assert np.mean(np.any(moved[4:] != pts[4:], axis=1)) <= 0.3


def test_a_slope_across_the_tomogram_does_not_split_the_kinds():
    """Real tomograms change density slowly across their width (ice thickness, a lamella's
    slope). The profiles are read against the local background, so the same particle reads the
    same on either side of a slope of ±1.85 noise standard deviations; read against the
    tomogram's one mean (before round 23) they were 1.5 apart and no cluster held the balls."""
    from napari_cetpick.explore import profile_embedding

    v, pts, kinds = two_kinds()
    sloped = v + 0.7 * np.linspace(-1.0, 1.0, v.shape[2], dtype=np.float32)
    size = np.where(kinds == 0, 8.0, 16.0)
    scale = np.std(v) / np.std(sloped)  # profiles are in each tomogram's own standard deviations
    flat_emb, sloped_emb = (profile_embedding(x, pts, size, 18.0)[:, :-1] for x in (v, sloped))
    assert np.abs(sloped_emb / scale - flat_emb).max() < 0.3  # 1.5 against the global mean
    res = run_generator(explore(sloped, VOXEL_A, ExploreConfig(diameter_range_a=(60, 180), min_cluster_size=8)))
    dist, which = _nearest(res, pts)
    cl = res.cluster[which]
    for k in (0, 1):
        got = cl[(kinds == k) & (cl >= 0)]
        assert len(got) >= 0.6 * (kinds == k).sum(), (k, cl, kinds)
        assert not np.any(cl[kinds != k] == np.bincount(got).argmax()), (k, cl, kinds)


def test_a_cluster_of_weak_blobs_at_the_smallest_size_is_flagged_as_likely_noise():
    from napari_cetpick.explore import likely_noise

    everyone = np.linspace(0.3, 0.9, 101)  # median 0.6
    assert likely_noise(np.full(50, 6.0), np.full(50, 0.35), 6.0, everyone)
    assert not likely_noise(np.full(50, 6.0), np.full(50, 0.8), 6.0, everyone)  # strong: small particles
    assert not likely_noise(np.full(50, 12.0), np.full(50, 0.35), 6.0, everyone)  # larger than the smallest
    assert not likely_noise(np.zeros(0), np.zeros(0), 6.0, everyone)


def test_find_candidates_strongest_first_and_capped():
    v, pts, kinds = two_kinds(seed=1)
    zyx, diam, score = find_candidates(v, (6.0, 18.0), max_candidates=5)
    assert len(zyx) == 5 and np.all(np.diff(score) <= 0)


@pytest.mark.slow
def test_cli_explore_then_train_from_a_cluster(tmp_path, capsys, monkeypatch):
    v, pts, kinds = two_kinds(seed=2)
    tomo_path = write_tomogram(tmp_path / "t.mrc", v, voxel_size_a=VOXEL_A)
    out = tmp_path / "ex"
    assert main(["explore", "--tomogram", str(tomo_path), "--diameter-range", "60", "180", "--out-dir", str(out),
                 "--min-cluster-size", "8", "--quiet"]) == 0
    said = capsys.readouterr().out
    assert "clusters" in said and "--labels-from-cluster" in said and "strongest blobs" in said
    ps = read_points(out / CANDIDATES_FILE)
    c = int(ps.features["cluster"].max())
    members = ps.zyx[ps.features["cluster"].to_numpy() == c]
    model = tmp_path / "m.ckpt"
    from napari_cetpick.io import write_points

    negs = write_points(tmp_path / "neg.txt", np.array([[20.0, 8.0, 8.0]]))
    assert main(["train", "--tomogram", str(tomo_path), "--labels-from-cluster", f"{out}:{c}", "--negatives",
                 str(negs), "--max-steps", "2", "--out", str(model), "--quiet", "--device", "cpu"]) == 0
    said = capsys.readouterr().out
    assert f"{len(members)} labels: the members of cluster" in said and "the cluster's median blob size" in said
    from napari_cetpick.checkpoint import Checkpoint

    ck = Checkpoint.load(model)
    assert ck.info["n_labels"] == len(members)
    assert ck.info["rounds"][-1]["n_negatives"] == 1  # the negatives given beside the cluster are used
    # two clusters as two named classes of one model, each class's size from its own cluster
    clusters = json.loads((out / "explore.json").read_text())["clusters"]
    assert len(clusters) >= 2, clusters  # the balls and the shells
    a, b = sorted(clusters, key=int)[:2]
    assert main(["train", "--tomogram", str(tomo_path), "--labels-from-cluster", f"balls={out}:{a}",
                 "--labels-from-cluster", f"shells={out}:{b}", "--max-steps", "2", "--out",
                 str(tmp_path / "two.ckpt"), "--quiet", "--device", "cpu"]) == 0
    said = capsys.readouterr().out
    assert f"of 'balls': the members of cluster {out}:{a}" in said and "'shells' diameter" in said
    two = Checkpoint.load(tmp_path / "two.ckpt")
    assert two.class_names == ["balls", "shells"]
    for cls, key in zip(two.classes, (a, b)):
        assert cls.diameter_vox == pytest.approx(clusters[key]["median_diameter_a"] / VOXEL_A, abs=0.06)
    for argv, msg in ((["--labels-from-cluster", f"x={out}:{a}", "--labels-from-cluster", f"{out}:{b}"],
                       "as NAME=DIR:CLUSTER when there are several"),
                      (["--labels-from-cluster", f"x={out}:{a}", "--labels-from-cluster", f"x={out}:{b}"],
                       "given twice for class 'x'"),
                      (["--labels-from-cluster", f"x={out}:{a}", "--labels-from-cluster", f"y={out}:{a}"],
                       "given for two classes"),
                      (["--labels-from-cluster", f"{out}:{a}", "--diameter-a", "x=120"],
                       "--labels-from-cluster x=DIR:CLUSTER"),
                      (["--labels-from-cluster", f"x={out}:99", "--continue-from", str(model)],
                       "no cluster 99")):
        assert main(["train", "--tomogram", str(tomo_path), *argv, "--out", str(tmp_path / "n.ckpt")]) == 2
        err = capsys.readouterr().err
        assert msg in err and "Traceback" not in err, err
    # a folder whose name holds '=' (given relative, as typed in the folder) is a folder, not a class
    import shutil

    shutil.copytree(out, tmp_path / "run=2")
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--tomogram", str(tomo_path), "--labels-from-cluster", f"run=2:{c}", "--max-steps", "1",
                 "--out", str(tmp_path / "eq.ckpt"), "--quiet", "--device", "cpu"]) == 0
    assert f"{len(members)} labels: the members of cluster run=2:{c}" in capsys.readouterr().out
    # bad cluster, bad folder, with --labels too: one line, exit 2, no traceback
    for argv, msg in ((["--labels-from-cluster", f"{out}:77"], "no cluster 77"),
                      (["--labels-from-cluster", f"{tmp_path}:1"], "no explore.json"),
                      (["--labels-from-cluster", f"{out}:x"], "whole number"),
                      (["--labels-from-cluster", f"{out}:0", "--labels", str(out / CANDIDATES_FILE)],
                       "takes the place of --labels")):
        assert main(["train", "--tomogram", str(tomo_path), *argv, "--out", str(tmp_path / "n.ckpt")]) == 2
        err = capsys.readouterr().err
        assert msg in err and "Traceback" not in err, err
    # another tomogram of the same shape and voxel size (the usual case in a data set): refused too
    same = write_tomogram(tmp_path / "same.mrc", two_kinds(seed=5)[0], voxel_size_a=VOXEL_A)
    assert main(["train", "--tomogram", str(same), "--labels-from-cluster", f"{out}:{c}", "--out",
                 str(tmp_path / "s.ckpt"), "--device", "cpu"]) == 2
    assert "explore this tomogram first" in capsys.readouterr().err
    # even the same tomogram flipped (same size, same statistics of its central block)
    flipped = write_tomogram(tmp_path / "flipped.mrc", v[:, ::-1, :].copy(), voxel_size_a=VOXEL_A)
    assert main(["train", "--tomogram", str(flipped), "--labels-from-cluster", f"{out}:{c}", "--out",
                 str(tmp_path / "f.ckpt"), "--device", "cpu"]) == 2
    assert "explore this tomogram first" in capsys.readouterr().err
    # a cluster of another tomogram (other shape) would mean other places: refused, naming both
    other = write_tomogram(tmp_path / "other.mrc", v[:, :120, :150], voxel_size_a=VOXEL_A)
    assert main(["train", "--tomogram", str(other), "--labels-from-cluster", f"{out}:{c}", "--out",
                 str(tmp_path / "o.ckpt"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "explore this tomogram first" in err and "t.mrc" in err and "Traceback" not in err, err
    assert main(["explore", "--tomogram", str(tomo_path), "--diameter-range", "60", "5000", "--out-dir",
                 str(tmp_path / "never")]) == 2
    assert "does not fit" in capsys.readouterr().err and not (tmp_path / "never").exists()
    assert open_tomogram(tomo_path).shape_zyx == v.shape


def test_the_encoder_embedding_trains_without_labels_and_separates_the_two_kinds(tmp_path):
    """The self-supervised encoder (a short run on the tiny volume): finite embeddings, one per
    candidate, the same for the same seed, and the two kinds of blob still apart."""
    from napari_cetpick.explore_encoder import train_encoder

    v, pts, kinds = two_kinds(seed=3)
    zyx, diam, score = find_candidates(v, (6.0, 18.0), max_candidates=120)
    emb, encoder = run_generator(train_encoder(v, zyx, 18.0, steps=15, seed=0))
    assert emb.shape == (len(zyx), 64) and np.all(np.isfinite(emb))
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-4)
    assert encoder["meta"]["steps"] == 15 and np.isfinite(encoder["meta"]["last_loss"])
    again, _ = run_generator(train_encoder(v, zyx, 18.0, steps=15, seed=0))
    assert np.allclose(emb, again, atol=1e-5)
    # nearest candidate of each planted particle; the kinds' mean embeddings differ more than
    # a kind's own spread
    which = np.linalg.norm(zyx[None] - pts[:, None], axis=2).argmin(1)
    e0, e1 = emb[which[kinds == 0]], emb[which[kinds == 1]]
    between = np.linalg.norm(e0.mean(0) - e1.mean(0))
    within = max(np.linalg.norm(e0 - e0.mean(0), axis=1).mean(), np.linalg.norm(e1 - e1.mean(0), axis=1).mean())
    assert between > 2 * within, (between, within)  # measured 6-10x on two volumes and seeds
    gen = explore(v, VOXEL_A, ExploreConfig(diameter_range_a=(60, 180), embedding="encoder", encoder_steps=3,
                                            max_candidates=60))
    stages = []
    while True:
        try:
            stages.append(next(gen).stage)
        except StopIteration as stop:
            res = stop.value
            break
    assert "embedding" in stages and res.embedding.shape == (60, 65)
    # the encoder is saved beside the candidates, loadable with weights_only and giving the same embedding
    import torch

    from napari_cetpick.explore_encoder import CROP, SHIFT, candidate_cubes, load_encoder

    paths = write_exploration(tmp_path / "enc", res)
    backbone, head, meta = load_encoder(paths["encoder"])
    assert meta["n_candidates"] == 60 and meta["steps"] == 3
    cubes = candidate_cubes(v, res.zyx, meta["largest_vox"])
    c = SHIFT
    with torch.no_grad():
        again = torch.nn.functional.normalize(backbone(torch.from_numpy(
            np.ascontiguousarray(cubes[:, None, c:c + CROP, c:c + CROP, c:c + CROP]))), dim=1).numpy()
    assert np.allclose(again, res.embedding[:, :-1], atol=1e-5)
    with pytest.raises(CetpickError, match="not an exploration encoder"):
        load_encoder(paths["summary"])
