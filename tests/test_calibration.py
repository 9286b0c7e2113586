"""The model's centre offset from its labels: kept where the labels show it, zero where they cannot."""
import numpy as np

from napari_cetpick.calibration import Calibration, shrunk_mean


def test_a_clear_offset_is_kept_and_click_noise_is_not_taken_for_one():
    rng = np.random.default_rng(0)
    # 20 labels, picks 0.3 voxel off in y (a spread of 0.2): the offset is plain to see
    d = rng.normal(0, 0.2, (20, 3)) + [0.0, 0.3, 0.0]
    m, se = shrunk_mean(d)
    assert abs(m[1] - 0.3) < 0.05 and np.all(se > 0)
    # on the axes without an offset, the mean of the noise is at most shrunk towards zero
    assert np.all(np.abs(m[[0, 2]]) <= np.abs(d.mean(0)[[0, 2]]))
    # pure click noise over a few labels: nothing that its error could not explain survives
    noise = rng.normal(0, 1.0, (6, 3))
    m, se = shrunk_mean(noise)
    assert np.all(np.abs(m) < np.abs(noise.mean(0)) + 1e-12)
    assert np.all((m == 0) | (np.abs(noise.mean(0)) > se))


def test_the_model_file_gets_the_offset_only_when_measured():
    assert Calibration(0.4, n_matched=3).info() == {"n_offset_labels": 3}
    info = Calibration(0.4, (0.1, -0.2, 0.0), (0.05, 0.05, 0.05), 12).info()
    assert info["centre_offset_work"] == [0.1, -0.2, 0.0] and info["n_offset_labels"] == 12


def test_the_labelled_share_is_told_back_only_when_the_user_did_not_give_it():
    from dataclasses import replace

    from napari_cetpick.checkpoint import Checkpoint
    from napari_cetpick.config import TrainConfig

    cal = Calibration(0.4, n_matched=12, particles_in_boxes=80, estimated_label_fraction=0.2)
    assert cal.info()["estimated_label_fraction"] == 0.2 and cal.info()["particles_in_labelled_region"] == 80
    ck = Checkpoint({}, TrainConfig(bbox=12), 12.0, 10.0, 1, 0.4, info=cal.info())
    assert "about 20 % of the 80 particles" in ck.summary() and "assumed 50 %" in ck.summary()
    assert ck.share_hint() != ""
    assert replace(ck, config=TrainConfig(bbox=12, label_fraction=0.2)).share_hint() == ""
    assert replace(ck, config=TrainConfig(bbox=12, expected_particles=300)).share_hint() == ""
    assert replace(ck, info={}).share_hint() == ""
    # the labelled region's scores did not split: the user is told the threshold rests on the
    # assumed share, and how to give theirs; not for a share told or a model not calibrated
    flat = Checkpoint({}, TrainConfig(bbox=12), 12.0, 10.0, 1, 0.4,
                      info=Calibration(0.4, n_matched=12, labelled_split=False).info())
    assert "did not split" in flat.summary() and "assumed share of 50 %" in flat.summary()
    assert replace(flat, config=TrainConfig(bbox=12, label_fraction=0.2)).share_hint() == ""
    # a model file from before calibration recorded whether the region split: nothing said
    assert replace(flat, info={"threshold_calibrated": True}).share_hint() == ""


def test_the_summary_says_whether_and_why_the_input_is_smoothed():
    from napari_cetpick.checkpoint import Checkpoint
    from napari_cetpick.config import SMOOTHING_BELOW_SEPARATION, TrainConfig

    chosen = {"rounds": [{"steps": 350, "smoothing": {"separation": 4.2, "gauss": 1.0}}, {"steps": 100}]}
    ck = Checkpoint({}, TrainConfig(bbox=12, gauss=1.0), 12.0, 10.0, 1, 0.4, info=chosen)
    assert (f"smoothed by 1 working voxel (chosen: the labels stand out of the noise by 4.2, below "
            f"{SMOOTHING_BELOW_SEPARATION:g})") in ck.summary()
    given = Checkpoint({}, TrainConfig(bbox=12, gauss=0.8), 12.0, 10.0, 1, 0.4, info={"rounds": [{"steps": 350}]})
    assert "smoothed by 0.8 working voxel (as set)" in given.summary()
    # a correction round given its own value (--gauss) records none: round 1's choice no longer holds
    later = Checkpoint({}, TrainConfig(bbox=12, gauss=0.5), 12.0, 10.0, 1, 0.4, info=chosen)
    assert "smoothed by 0.5 working voxel (as set)" in later.summary() and "chosen" not in later.summary()
    for gauss, rounds in ((0.0, [{"smoothing": {"separation": 30.0, "gauss": 0.0}}]), (None, [])):
        plain = Checkpoint({}, TrainConfig(bbox=12, gauss=gauss), 12.0, 10.0, 1, 0.4, info={"rounds": rounds})
        assert "smoothed" not in plain.summary() and plain.smoothing_hint() == ""


def test_a_model_of_several_classes_says_its_smoothing_once_and_each_class_s_share_its_own():
    from napari_cetpick.checkpoint import Checkpoint, ModelClass
    from napari_cetpick.config import ClassSpec, TrainConfig

    cfg = TrainConfig(gauss=1.0, classes=(ClassSpec("big", bbox=20), ClassSpec("small", bbox=10)))
    big = ModelClass("big", 20.0, 0.001, 0.6, info=Calibration(0.6, n_matched=9, particles_in_boxes=60,
                                                                  estimated_label_fraction=0.25,
                                                                  labelled_split=True).info())
    small = ModelClass("small", 10.0, 0.001, 0.4, info=Calibration(0.4, n_matched=9, labelled_split=False).info())
    rounds = [{"steps": 350, "smoothing": {"separation": 3.0, "gauss": 1.0}}]
    ck = Checkpoint({}, cfg, 20.0, 10.0, 1, 0.6, classes=[big, small], info={"rounds": rounds, "steps": 350})
    text = ck.summary()
    assert text.count("smoothed by 1 working voxel (chosen") == 1
    big_line = next(line for line in text.splitlines() if line.strip().startswith("big:"))
    small_line = next(line for line in text.splitlines() if line.strip().startswith("small:"))
    assert "about 25 % of the 60 particles" in big_line and "did not split" not in big_line
    assert "did not split" in small_line and "about" not in small_line.split("particles expected")[-1]


def test_without_a_told_share_the_default_threshold_is_where_the_labelled_box_splits():
    """A user clicked a quarter of a box's particles. With a share given (here a wrong
    one, 0.1), the count it implies sets the threshold; with none, the box's own scores."""
    from types import SimpleNamespace

    from napari_cetpick.calibration import _calibrate_one
    from napari_cetpick.counts import LabelBox

    rng = np.random.default_rng(3)
    n_bg, n_part = 3000, 80
    zyx = np.column_stack([rng.uniform(0, 40, n_bg + n_part), rng.uniform(0, 200, n_bg + n_part),
                           rng.uniform(0, 200, n_bg + n_part)])
    z = np.concatenate([rng.normal(-3.0, 0.6, n_bg), rng.normal(3.0, 0.8, n_part)])
    scores = 1 / (1 + np.exp(-z))
    labels = zyx[n_bg:][:20]  # a quarter of the particles
    # detection caches the candidates above its floor (0.05) only, best first
    order = np.argsort(-scores)
    order = order[scores[order] >= 0.05]
    zyx, scores = zyx[order], scores[order]
    res = SimpleNamespace(zyx=zyx, scores=scores, min_distance_vox=0.0, first_view=(zyx, scores))
    box = LabelBox(0.0, 0.0, 200.0, 200.0)
    density = len(labels) / 0.1 / box.area  # a share of 0.1 implies 200 particles
    # what detection shows: the profile check moved 40 of the best 200 candidates down
    shown = scores.copy()
    moved = rng.choice(200, 40, replace=False)
    shown[moved] = shown[moved] * 0.01
    found = [(res, (0, 0), labels, box, (zyx, shown))]
    told = _calibrate_one(found, density, 8.0, np.ones(3), count_told=True)
    assumed = _calibrate_one(found, density, 8.0, np.ones(3), count_told=False)
    # the count, as told, of the picks detection shows (not of the network's own scores,
    # where 40 of them would fall below the threshold afterwards)
    assert int((shown >= told.threshold).sum()) == 200
    assert int((scores >= told.threshold).sum()) > 200
    # a check that moved nearly everything below the candidates' floor leaves the default at
    # that floor, never below it (every threshold detection offers stays above it)
    few = _calibrate_one([(res, (0, 0), labels, box, (zyx, np.where(np.arange(len(shown)) < 50, shown, 0.01)))],
                         density, 8.0, np.ones(3), count_told=True)
    assert few.threshold == 0.05
    kept = int((scores >= assumed.threshold).sum())
    assert abs(kept - n_part) <= 5, kept  # the particles, read off the network's own scores
    assert assumed.estimated_label_fraction == told.estimated_label_fraction
    assert abs(assumed.estimated_label_fraction - 0.25) < 0.03
    assert assumed.info()["labelled_split"] is True
    # one population only (the particles' scores among the background's): no split, and the file says so
    flat = SimpleNamespace(zyx=zyx, scores=np.sort(rng.uniform(0.05, 0.3, len(scores)))[::-1], min_distance_vox=0.0,
                           first_view=(zyx, scores))
    none = _calibrate_one([(flat, (0, 0), labels, box, (zyx, flat.scores))], density, 8.0, np.ones(3), count_told=False)
    assert none.info()["labelled_split"] is False and "estimated_label_fraction" not in none.info()
