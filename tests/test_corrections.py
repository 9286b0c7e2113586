"""Negative clicks, ignore masks and the correction round (continue_training)."""
import numpy as np
import pytest
from scipy import ndimage

from napari_cetpick.config import DetectConfig, TrainConfig
from napari_cetpick.detect import detect
from napari_cetpick.errors import CetpickError
from napari_cetpick.train import CORRECTION_LR_FACTOR, CORRECTION_STEPS, Trainer, continue_training, correction_config
from napari_cetpick.utils import run_generator


def two_kinds(shape=(32, 96, 96), seed=0):
    """Dark solid balls (the particles) and dark hollow shells of the same size (look-alikes)."""
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.indices(shape, dtype=np.float32)
    v = np.zeros(shape, np.float32)
    balls, shells = [], []
    centres = [(16.0, y, x) for y in np.arange(14.0, shape[1] - 13, 17) for x in np.arange(14.0, shape[2] - 13, 17)]
    for i, c in enumerate(centres):
        c = np.array(c) + rng.uniform(-1, 1, 3)
        r = np.sqrt((zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2)
        if i % 2:
            v -= (r < 5.0).astype(np.float32)
            balls.append(c)
        else:
            v -= ((r < 5.0) & (r > 3.2)).astype(np.float32) * 1.6
            shells.append(c)
    v = ndimage.gaussian_filter(v, 0.7) + rng.normal(0, 0.35, shape).astype(np.float32)
    return v.astype(np.float32), np.array(balls), np.array(shells)


def _score_at(res, pts):
    idx = np.clip(np.round((pts - res.translate) / res.scale).astype(int), 0, np.array(res.heatmap.shape) - 1)
    # max over the cell and its neighbours: the peak may sit one cell away
    out = []
    for i in idx:
        sl = tuple(slice(max(0, a - 1), a + 2) for a in i)
        out.append(res.heatmap[sl].max())
    return np.array(out)


# the rounds under test here are the corrections; the self-training round is tested on its own
TINY = dict(bbox=10, num_epochs=10**6, crop_xy=32, crop_z=16, batch_size=4, tau=0.05, seed=3, self_training_steps=0)


@pytest.fixture(scope="module")
def round1():
    v, balls, shells = two_kinds()
    tr = Trainer([v], [balls[:6]], TrainConfig(max_steps=60, **TINY), voxel_size_a=10.0, device="cpu")
    list(tr.steps())
    return v, balls, shells, tr.checkpoint()


@pytest.fixture(scope="module")
def round1_run():
    """Round 1 with the look-alike round (60 steps, then up to 20 against them) and each step's
    progress; on one CPU its first 60 steps are round 1's."""
    v, balls, shells = two_kinds()
    tr = Trainer([v], [balls[:6]], TrainConfig(max_steps=60, look_alike_steps=100, **TINY), voxel_size_a=10.0,
                 device="cpu")
    return v, balls, shells, tr, list(tr.steps())


@pytest.mark.slow
def test_negative_click_lowers_the_score_where_clicked(round1):
    v, balls, shells, ck = round1
    clicked = shells[: len(shells) // 2]
    with_neg = run_generator(continue_training(ck, [v], [balls[:6]], negatives=[clicked], max_steps=40, device="cpu"))
    without = run_generator(continue_training(ck, [v], [balls[:6]], max_steps=40, device="cpu"))
    det = DetectConfig(threshold=0.0)
    r_neg = run_generator(detect(with_neg, v, det, device="cpu"))
    r_ctl = run_generator(detect(without, v, det, device="cpu"))
    s_neg, s_ctl = _score_at(r_neg, clicked), _score_at(r_ctl, clicked)
    # the clicked look-alikes drop well below where the same round without clicks leaves them
    assert s_neg.mean() < 0.6 * s_ctl.mean(), (s_neg.mean(), s_ctl.mean())
    # the particles keep scoring above the look-alikes
    assert _score_at(r_neg, balls).mean() > 1.5 * s_neg.mean()
    assert with_neg.info["n_negatives"] == len(clicked) and without.info["n_negatives"] == 0


def test_correction_round_keeps_the_model_settings(round1):
    v, balls, shells, ck = round1
    cfg = correction_config(ck)
    assert cfg.max_steps == CORRECTION_STEPS and cfg.tau == ck.tau and cfg.arch == ck.config.arch
    assert correction_config(ck, max_steps=7).max_steps == 7
    assert correction_config(ck, num_epochs=2).max_steps is None  # the user's schedule wins
    # fine-tuning at a tenth of the first round's rate; a later round keeps it; the user's wins
    assert cfg.lr == pytest.approx(CORRECTION_LR_FACTOR * ck.config.lr)
    assert correction_config(ck, lr=0.01).lr == 0.01
    gen = continue_training(ck, [v], [balls[:8]], negatives=[shells[:2]], max_steps=2, device="cpu")
    new = run_generator(gen)
    assert new.voxel_size_a == ck.voxel_size_a == 10.0
    assert new.bin_xy == ck.bin_xy and new.diameter_vox == ck.diameter_vox and new.tau == ck.tau
    assert new.config.crop_xy == ck.config.crop_xy and new.config.arch == ck.config.arch
    assert new.info["steps"] == ck.info["steps"] + 2
    assert [r["n_positives"] for r in new.info["rounds"]] == [6, 8]
    assert new.info["n_negatives"] == 2
    assert correction_config(new).lr == pytest.approx(new.config.lr)  # no tenth of a tenth
    with pytest.raises(CetpickError, match="voxel size"):
        run_generator(continue_training(ck, [v], [balls[:8]], voxel_size_a=20.0, max_steps=1))


def test_mask_ignores_training_cells_and_drops_picks(round1):
    v, balls, shells, ck = round1
    keep = np.ones(v.shape, np.uint8)
    keep[:, :, 48:] = 0
    tr = Trainer([v], [balls[:6]], TrainConfig(max_steps=1, **TINY), negatives=[shells[:2]], masks=[keep],
                 device="cpu")
    o = np.array([8, 32, 32])
    t = tr._crop_targets(0, o, tuple(np.asarray(tr.crop) // np.asarray(tr.stride)))[0]  # the one class's channel
    # working x >= 48 is grid x >= 24, i.e. crop cells 8.. of a crop starting at x 32
    assert np.all(t[:, :, 8:] == -2.0) and not np.any(t[:, :, :8] == -2.0)
    res = run_generator(detect(ck, v, DetectConfig(threshold=0.0), device="cpu", mask=keep))
    assert len(res.cand_zyx) and np.all(res.cand_zyx[:, 2] < 47.5)
    with pytest.raises(CetpickError, match="mask has shape"):
        run_generator(detect(ck, v, device="cpu", mask=keep[:, :10]))
    with pytest.raises(CetpickError, match="mask has shape"):
        Trainer([v], [balls[:6]], TrainConfig(max_steps=1, **TINY), masks=[keep[:4]], device="cpu")


def test_negatives_outside_the_volume_are_refused(round1):
    v, balls, _, _ = round1
    with pytest.raises(CetpickError, match="negatives of tomogram 1.*outside"):
        Trainer([v], [balls[:3]], TrainConfig(max_steps=1, **TINY), negatives=[np.array([[5.0, 500.0, 3.0]])])
    with pytest.raises(CetpickError, match="one negatives entry per training tomogram"):
        Trainer([v], [balls[:3]], TrainConfig(max_steps=1, **TINY), negatives=[None, None])


def _detect_with_progress(ck, v):
    gen, seen = detect(ck, v, DetectConfig(), device="cpu"), []
    try:
        while True:
            seen.append(next(gen))
    except StopIteration as stop:
        return stop.value, seen


def test_the_correction_rounds_pass_serves_the_next_detection_there(round1):
    from dataclasses import replace

    v, balls, shells, ck = round1
    # labels over the whole volume (after a review across it): calibration runs over all of it
    new = run_generator(continue_training(ck, [v], [balls], max_steps=2, device="cpu", keep_pass_for=v))
    assert len(new.passes) == 1 and new.passes[0].volume is v
    fresh = replace(new, passes=[])  # the same model without the kept pass
    kept_res, progress = _detect_with_progress(new, v)
    assert [p.device for p in progress] == ["the calibration's pass, reused"] and new.passes == []
    ref, ref_progress = _detect_with_progress(fresh, v)
    assert len(ref_progress) >= 1 and ref_progress[-1].device != "the calibration's pass, reused"
    # the same detection, candidate for candidate
    assert kept_res.threshold == ref.threshold and kept_res.threshold_source == ref.threshold_source
    np.testing.assert_array_equal(kept_res.cand_zyx, ref.cand_zyx)
    np.testing.assert_array_equal(kept_res.cand_scores, ref.cand_scores)
    np.testing.assert_array_equal(kept_res.heatmap, ref.heatmap)
    np.testing.assert_array_equal(kept_res.zyx, ref.zyx)
    # another array (even equal to it), or no volume named: nothing kept, the network runs
    other = run_generator(continue_training(ck, [v], [balls], max_steps=2, device="cpu", keep_pass_for=v))
    _, progress = _detect_with_progress(other, v.copy())
    assert progress[-1].device != "the calibration's pass, reused" and other.passes == []  # dropped all the same
    assert run_generator(continue_training(ck, [v], [balls], max_steps=2, device="cpu")).passes == []
    # a pass over another number of views is not this detection's
    other = run_generator(continue_training(ck, [v], [balls], max_steps=2, device="cpu", keep_pass_for=v))
    res = run_generator(detect(other, v, DetectConfig(views=2), device="cpu"))
    assert other.passes == [] and res.heatmap.shape == ref.heatmap.shape
    assert not np.array_equal(res.heatmap, kept_res.heatmap)


def test_a_refused_detection_drops_the_kept_pass_all_the_same(round1):
    v, balls, shells, ck = round1
    new = run_generator(continue_training(ck, [v], [balls], max_steps=2, device="cpu", keep_pass_for=v))
    assert len(new.passes) == 1
    with pytest.raises(CetpickError, match="mask"):
        run_generator(detect(new, v, DetectConfig(), device="cpu", mask=np.ones((2, 2, 2))))
    assert new.passes == []  # one tomogram's scores not held past the detection it was kept for


def test_rejected_picks_give_the_profile_model_its_negatives(round1):
    from napari_cetpick.descriptors import MIN_PROFILE_LABELS, ProfileModel

    v, balls, shells, ck = round1
    assert ck.profile_negatives == 0  # round 1 had none of the user's (only the look-alikes it mined)
    new = run_generator(continue_training(ck, [v], [balls[:8]], negatives=[shells[:6]], max_steps=1, device="cpu"))
    model = ProfileModel.from_info(new.info["profile_model"])
    assert model.n_negatives == 6 == new.profile_negatives and model.neg_mean is not None
    assert "learned 6 negatives" in new.summary() and "negatives (" not in ck.summary()
    # the shells not rejected are what the negatives' model explains best: each loses more
    # than under the labels alone (the same labels, through the model file as detection reads it)
    from napari_cetpick.descriptors import model_profiles

    unseen = model_profiles(v, shells[6:], ck.diameter_vox)
    alone = ProfileModel.fit([v], [balls[:8]], ck.diameter_vox)
    before = ProfileModel.from_info(alone.to_info()).excess(unseen)
    assert np.all(model.excess(unseen) > before + 1.0)
    few = run_generator(continue_training(ck, [v], [balls[:8]], negatives=[shells[: MIN_PROFILE_LABELS - 1]],
                                          max_steps=1, device="cpu"))
    # too few to learn from; the look-alikes calibration mined are learned all the same
    assert few.profile_negatives == 0 and ProfileModel.from_info(few.info["profile_model"]).neg_mean is None
    assert few.profile_mined >= MIN_PROFILE_LABELS
    # detection says what its profile check learned from
    det = DetectConfig(threshold=0.0)
    assert run_generator(detect(new, v, det, device="cpu")).profile_negatives == 6
    found = run_generator(detect(few, v, det, device="cpu"))
    assert found.profile_negatives == 0 and found.profile_mined == few.profile_mined
    # the mined look-alikes have a Gaussian of their own: the rejections' term is kept as it
    # was given (each candidate pays the larger of the two), never blurred by the guesses
    background = np.array([[16.0, 5.0 + 17 * i, 48.0] for i in range(5)] + [[5.0, 48.0, 8.0 + 17 * i] for i in range(5)])
    both = ProfileModel.fit([v], [balls[:8]], ck.diameter_vox, negatives=[shells[:6]], mined=[background])
    assert both.n_negatives == 6 and both.n_mined == len(background)
    given_alone = ProfileModel.fit([v], [balls[:8]], ck.diameter_vox, negatives=[shells[:6]])
    anywhere = model_profiles(v, np.vstack([balls, shells, background]), ck.diameter_vox)
    assert np.all(both.excess(anywhere) >= given_alone.excess(anywhere))
    assert np.all(both.excess(anywhere[-len(background):]) > given_alone.excess(anywhere[-len(background):]))
    back = ProfileModel.from_info(both.to_info())  # and the model file keeps both
    assert back.n_mined == len(background) and back.n_negatives == 6 and back.mined_margin == round(both.mined_margin, 6)


def test_a_correction_round_keeps_the_look_alikes_round_1_found(round1):
    """After a review the labels spread over the tomogram; the correction round keeps the
    look-alikes round 1 found in its labelled box (their Gaussian, margins measured on the new
    labels) instead of mining the most class-like ones of the whole tomogram."""
    from napari_cetpick.descriptors import ProfileModel

    v, balls, shells, ck = round1
    first = ProfileModel.from_info(ck.info["profile_model"])
    assert first.look_alikes() is not None and ck.profile_mined == first.n_mined
    new = run_generator(continue_training(ck, [v], [balls], negatives=[shells[:6]], max_steps=1, device="cpu"))
    model = ProfileModel.from_info(new.info["profile_model"])
    np.testing.assert_allclose(model.mined_mean, first.mined_mean, atol=1e-5)
    assert new.profile_mined == first.n_mined and model.n_negatives == 6
    direct = ProfileModel.fit([v], [balls], ck.diameter_vox, negatives=[shells[:6]], mined_gaussian=first.look_alikes())
    assert model.mined_margin_around == pytest.approx(direct.mined_margin_around, abs=1e-4)
    assert model.neg_margin_around == pytest.approx(direct.neg_margin_around, abs=1e-4)


def test_calibration_mines_the_look_alikes_before_any_review(round1):
    """Round 1's profile model learned the picks its labels-only check still showed although
    unlike the labels: hollow shells and background, never a ball; the shells it did not see
    now lose much more than under the labels alone, the unseen balls nothing to speak of."""
    from dataclasses import replace

    from scipy.spatial import cKDTree

    from napari_cetpick.calibration import calibrate
    from napari_cetpick.counts import LabelBox
    from napari_cetpick.descriptors import MIN_PROFILE_LABELS, ProfileModel, model_profiles

    v, balls, shells, ck = round1
    model = ProfileModel.from_info(ck.info["profile_model"])
    assert model.n_mined >= MIN_PROFILE_LABELS and model.n_mined == ck.profile_mined and model.n_negatives == 0
    assert f"also learned {model.n_mined} look-alikes it found in its labelled region" in ck.summary()
    # where they were: the same calibration again, from the labels' model alone
    alone = ProfileModel.fit([v], [balls[:6]], ck.diameter_vox)
    plain = replace(ck, info={**ck.info, "profile_model": alone.to_info()})
    box = LabelBox(*ck.info["label_boxes"][0])
    halo = int(np.ceil(max(ck.build().context_zyx[1:]) * ck.bin_xy))  # as training sees the box
    cal = calibrate(plain, [v], [balls[:6]], [box], ck.info["density_per_vox2"], voxel_size_a=10.0, device="cpu",
                    halo_vox=halo)
    mined = cal.mined[0]
    assert len(mined) == model.n_mined and np.all(box.contains(mined))
    assert cKDTree(balls).query(mined)[0].min() > ck.diameter_vox / 2  # not one on a particle
    on_shell = cKDTree(mined).query(shells)[0] < ck.diameter_vox / 4
    assert on_shell.sum() >= MIN_PROFILE_LABELS // 2
    alone = ProfileModel.from_info(alone.to_info())  # rounded as the model file holds it
    unseen = model_profiles(v, shells[~on_shell], ck.diameter_vox)
    assert np.all(model.excess(unseen) > alone.excess(unseen) + 1.0)
    other_balls = model_profiles(v, balls[6:], ck.diameter_vox)
    assert np.all(model.excess(other_balls) < alone.excess(other_balls) + 1.0)
    # mining off: the labels' model is kept
    off = calibrate(plain, [v], [balls[:6]], [box], ck.info["density_per_vox2"], voxel_size_a=10.0, device="cpu",
                    halo_vox=halo, mine=0)
    assert off.profile_model is None and off.mined is None


def test_mine_look_alikes_keeps_the_checked_picks_beyond_typical_in_the_box_away_from_labels():
    from napari_cetpick.calibration import mine_look_alikes
    from napari_cetpick.counts import LabelBox

    zyx = np.array([[5.0, 10, 10], [5, 20, 20], [5, 30, 30], [5, 40, 40], [5, 50, 50], [5, 90, 90], [5, 60, 60]])
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.45, 0.4])
    excess = np.array([3.0, 0.0, 2.0, 1.0, np.nan, 5.0, 4.0])
    box = LabelBox(0.0, 0.0, 80.0, 80.0)
    labels = np.array([[5.0, 12, 12]])  # 2.8 voxels from the first: the same particle
    negatives = np.array([[5.0, 41, 40]])  # already given
    z, s = mine_look_alikes(zyx, scores, excess, labels, negatives, box, n_pool=5, diameter_vox=8.0)
    # the first lies by a label, the second is typical, the fourth already given, the fifth
    # unchecked, the sixth outside the box, the seventh beyond the pool
    assert z.tolist() == [[5.0, 30, 30]] and s.tolist() == [0.7]
    z, _ = mine_look_alikes(zyx, scores, excess, None, None, box, n_pool=7, diameter_vox=8.0)
    assert z[:, 1].tolist() == [10, 30, 40, 60]


def test_mining_pool_reaches_down_to_the_labels_lower_scores():
    from napari_cetpick.calibration import MINED_POOL_FACTOR, mining_pool
    from napari_cetpick.counts import LabelBox

    box = LabelBox(0.0, 0.0, 100.0, 100.0)
    zyx = np.array([[5.0, 5.0 * i + 2, 50.0] for i in range(19)] + [[5.0, 150.0, 50.0]])  # the last outside
    scores = 0.9 ** np.arange(20)  # best first
    labels = zyx[[1, 3, 5, 7, 9, 11]] + 0.5  # the labelled particles' picks: the 2nd, ..., the 12th
    # down to their 10th percentile: halfway between the 10th and the 12th pick's scores, above
    # the 11th's (0.9^9 + 0.9^11 > 2 · 0.9^10)
    assert mining_pool(zyx, scores, labels, box, expected=1.0, diameter_vox=8.0) == 10
    # the count implied wins where it reaches further, and without 5 matched labels it alone counts
    assert mining_pool(zyx, scores, labels, box, expected=8.0, diameter_vox=8.0) == 2 * 8 == MINED_POOL_FACTOR * 8
    assert mining_pool(zyx, scores, labels[:4], box, expected=1.0, diameter_vox=8.0) == 2


def test_look_alikes_cut_by_a_face_are_not_mined():
    """Whole inside means what the profile itself sees: every sampled voxel of every shell
    inside the tomogram (its inside share 1)."""
    from napari_cetpick.descriptors import profile_whole_inside, radial_profiles

    rng = np.random.default_rng(0)
    v = rng.normal(size=(40, 70, 80)).astype(np.float32)
    # a 8-voxel particle's shells reach 4.8 voxels: sampled voxels up to 4 from the centre voxel
    points = np.array([[4.0, 35, 40], [3.0, 35, 40], [20, 35, 75], [20, 35, 76], [4.4, 35, 40], [3.4, 35, 40]])
    assert profile_whole_inside(v.shape, points, 8.0).tolist() == [True, False, True, False, True, False]
    for d in (8.0, 15.0, 25.0):
        pts = rng.uniform((0, 0, 0), np.array(v.shape) - 1, (300, 3))
        _, inside = radial_profiles(v, pts, d, return_inside=True)
        whole = profile_whole_inside(v.shape, pts, d)
        assert np.array_equal(whole, inside.min(1) >= 1.0) and 0 < whole.sum() < len(pts)


def test_mining_with_two_tomograms_labelled_in_one(round1):
    """Look-alikes are mined where the class is labelled and kept per tomogram; the profile model
    is refitted over both tomograms, the second one's user negatives included."""
    from dataclasses import replace

    from napari_cetpick.calibration import calibrate_classes
    from napari_cetpick.counts import LabelBox
    from napari_cetpick.descriptors import ProfileModel

    v, balls, shells, ck = round1
    name = ck.class_names[0]
    other, _, other_shells = two_kinds(seed=1)
    alone = ProfileModel.fit([v], [balls[:6]], ck.diameter_vox)
    plain = replace(ck, info={**ck.info, "profile_model": alone.to_info()})
    box = LabelBox(*ck.info["label_boxes"][0])
    halo = int(np.ceil(max(ck.build().context_zyx[1:]) * ck.bin_xy))
    cal = calibrate_classes(plain, [other, v], [{name: np.zeros((0, 3))}, {name: balls[:6]}], [{name: None}, {name: box}],
                            {name: ck.info["density_per_vox2"]}, voxel_size_a=10.0, device="cpu", halo_vox=halo,
                            negatives=[{name: other_shells[:5]}, {}])[name]
    assert len(cal.mined) == 2 and len(cal.mined[0]) == 0 and len(cal.mined[1]) == cal.profile_model.n_mined >= 5
    assert cal.profile_model.n_negatives == 5  # the first tomogram's clicked negatives


def test_a_first_round_settles_at_a_tenth_of_the_rate_and_a_correction_round_keeps_its_own(round1, tmp_path):
    """A first round's last ``settle_steps`` run at a tenth of the rate, and up to them the run
    is round 1's very run (same steps, same weights); the model records where it settled; a
    correction round, at a tenth throughout, has no settling steps of its own."""
    from napari_cetpick.checkpoint import Checkpoint
    from napari_cetpick.config import preset
    from napari_cetpick.train import SETTLE_LR_FACTOR, plan_training

    v, balls, shells, ck = round1
    tr = Trainer([v], [balls[:6]], TrainConfig(max_steps=80, settle_steps=20, look_alike_steps=0, **TINY), voxel_size_a=10.0,
                 device="cpu")
    assert tr.plan.settle_steps == 20 and "the last 20 at a tenth of the rate" in tr.plan.describe()
    lrs, losses = [], []
    for p in tr.steps(calibrate=False):
        lrs.append(p.lr)
        losses.append(p.loss)
    assert lrs[:60] == [TrainConfig.lr] * 60
    assert lrs[60:] == [pytest.approx(TrainConfig.lr * SETTLE_LR_FACTOR)] * 20
    # up to there, the very run without settling
    plain = Trainer([v], [balls[:6]], TrainConfig(max_steps=60, settle_steps=0, look_alike_steps=0, **TINY), voxel_size_a=10.0,
                    device="cpu")
    assert plain.plan.settle_steps == 0 and "tenth" not in plain.plan.describe()
    np.testing.assert_allclose(losses[:60], [p.loss for p in plain.steps(calibrate=False)], rtol=1e-6)
    settled = tr.checkpoint(calibrate=False)
    assert settled.info["rounds"][-1]["settle_from"] == 60
    back = Checkpoint.load(settled.save(tmp_path / "settled.ckpt"))
    assert back.config.settle_steps == 20 and back.info["rounds"][-1]["settle_from"] == 60
    # a correction round continues at its own rate (a tenth of the first round's), no settling
    assert correction_config(back).settle_steps == 0
    assert plan_training(correction_config(back), [v.shape], [balls[:6]], 10.0, init=back).settle_steps == 0
    cont = Trainer([v], [balls[:6]], correction_config(back, max_steps=3), voxel_size_a=10.0, device="cpu", init=back)
    assert [p.lr for p in cont.steps(calibrate=False)] == [pytest.approx(TrainConfig.lr * CORRECTION_LR_FACTOR)] * 3
    # a run stopped before its settling steps never settled, and its record says none
    from itertools import islice
    early = Trainer([v], [balls[:6]], TrainConfig(max_steps=80, settle_steps=20, look_alike_steps=0, **TINY), voxel_size_a=10.0,
                    device="cpu")
    list(islice(early.steps(calibrate=False), 5))
    assert early.step == 5 and "settle_from" not in early.checkpoint(calibrate=False).info["rounds"][-1]
    # at most a third of the schedule settles (round 1: 60 steps, 100 asked)
    assert ck.info["rounds"][-1]["settle_from"] == 40 and ck.config.settle_steps == 100
    # a model saved before settling existed had none; the published recipe has none
    old = {k: w for k, w in TrainConfig().to_dict().items() if k != "settle_steps"}
    assert TrainConfig.from_dict(old).settle_steps == 0 and TrainConfig().settle_steps > 0
    assert preset("cetpick").settle_steps == 0
    with pytest.raises(CetpickError, match="settle_steps"):
        TrainConfig(settle_steps=-1).validate()


def test_round_one_ends_against_the_look_alikes_calibration_finds(round1_run, round1, tmp_path):
    """After the schedule, calibration's look-alikes in the labelled box (here the hollow
    shells) become negatives of the class for ``look_alike_steps`` more steps (at most a third
    of the schedule) at a tenth of the rate with a fresh optimiser; the model records how many;
    the user's own negatives stay as given; a run where none are found ends with its schedule."""
    from scipy.spatial import cKDTree

    from napari_cetpick.checkpoint import Checkpoint
    from napari_cetpick.config import preset
    from napari_cetpick.descriptors import MIN_PROFILE_LABELS
    from napari_cetpick.train import plan_training

    v, balls, shells, tr, progress = round1_run
    name = tr.names[0]
    assert tr.plan.look_alike_steps == 20 and "then 20 against the look-alikes it finds" in tr.plan.describe()
    found = tr.look_alike_points[0][name]
    assert tr.look_alikes == len(found) >= 5
    # they are the look-alikes: most lie on a shell, none on a labelled ball
    assert np.mean(cKDTree(shells).query(found)[0] < 2.5) > 0.5
    assert cKDTree(balls[:6]).query(found)[0].min() > 5
    assert [p.step for p in progress] == list(range(1, 81)) and {p.total for p in progress} == {80}
    assert [p.lr for p in progress[60:]] == [pytest.approx(TrainConfig.lr * CORRECTION_LR_FACTOR)] * 20
    assert [p.lr for p in progress[40:60]] == [pytest.approx(TrainConfig.lr * 0.1)] * 20  # the settling before
    ck = Checkpoint.load(tr.checkpoint().save(tmp_path / "m.ckpt"))
    last = ck.info["rounds"][-1]
    assert last["look_alikes"] == tr.look_alikes and last["look_alikes_from"] == 60 and last["steps"] == 80
    assert ck.info["steps"] == ck.info["total_steps"] == 80
    assert ck.info["n_negatives"] == 0 and tr.n_negatives == 0  # the user gave none
    assert "neg_mean" not in ck.info["profile_model"]  # not the user's: the profile model has none
    # the final calibration keeps them among the look-alikes it mines (the new weights may no
    # longer rank them with the labels): each is one of them or within a radius of one
    mined = tr.calibrate()[name].mined[0]
    # (two of them within a radius of one mined now count once: the count is no invariant)
    assert ck.info["profile_model"]["n_mined"] == len(mined) >= MIN_PROFILE_LABELS
    assert cKDTree(mined).query(found)[0].max() <= ck.diameter_vox / 2
    # none found (too few labels for a profile model): the run ends with its schedule
    few = Trainer([v], [balls[:3]], TrainConfig(max_steps=9, look_alike_steps=100, **TINY), voxel_size_a=10.0,
                  device="cpu")
    steps = [(p.step, p.total) for p in few.steps(calibrate=False)]
    assert steps[-1] == (9, 9) and few.look_alikes is None
    assert few.checkpoint(calibrate=False).info["rounds"][-1]["look_alikes_skipped"] == "no look-alikes found"
    # a correction round, the published recipe and a model saved before have none; negative refused
    assert correction_config(ck).look_alike_steps == 0
    assert plan_training(TrainConfig(max_steps=60, **TINY), [v.shape], [balls[:6]], 10.0, init=ck).look_alike_steps == 0
    assert preset("cetpick").look_alike_steps == 0 and TrainConfig().look_alike_steps == 0  # off by default
    plain = round1[3].info["rounds"][-1]  # the default: no round, nothing to say about one
    assert not {"look_alikes", "look_alikes_from", "look_alikes_skipped"} & set(plain) and round1[3].info["steps"] == 60
    old = {k: w for k, w in TrainConfig().to_dict().items() if k != "look_alike_steps"}
    assert TrainConfig.from_dict(old).look_alike_steps == 0
    with pytest.raises(CetpickError, match="look_alike_steps"):
        TrainConfig(look_alike_steps=-1).validate()


@pytest.mark.slow
def test_the_look_alike_round_lowers_their_scores_and_keeps_the_particles(round1_run, round1):
    """Detected without and after the round: the look-alikes it trained against lose score, the
    labelled particles' kind keeps scoring well above them."""
    v, balls, shells, tr, _ = round1_run
    before = round1[3]  # the same 60 steps without the round
    found = tr.look_alike_points[0][tr.names[0]]
    det = DetectConfig(threshold=0.0)
    r0 = run_generator(detect(before, v, det, device="cpu"))
    r1 = run_generator(detect(tr.checkpoint(), v, det, device="cpu"))
    s0, s1 = _score_at(r0, found), _score_at(r1, found)
    assert s1.mean() < 0.8 * s0.mean(), (s1.mean(), s0.mean())
    assert _score_at(r1, balls).mean() > 1.5 * s1.mean()


def test_earlier_look_alikes_join_those_mined_now():
    from napari_cetpick.calibration import _with_earlier

    now = [np.array([[5.0, 10, 10], [5, 30, 30]]), np.zeros((0, 3))]
    earlier = [np.array([[5.0, 11, 10], [5, 50, 50]]), np.array([[5.0, 20, 20], [5, 40, 40], [5, 60, 60]])]
    out = _with_earlier(now, earlier, reach=3.0)
    # the one within reach of a point mined now is that point; the rest join, per tomogram
    assert out[0].tolist() == [[5, 10, 10], [5, 30, 30], [5, 50, 50]] and len(out[1]) == 3
    assert _with_earlier(None, earlier, 3.0)[1].tolist() == earlier[1].tolist()
    assert _with_earlier(None, [np.zeros((0, 3)), earlier[1]], 3.0) is None  # fewer than a profile model needs


def test_round_one_ends_with_the_picks_it_is_sure_of(tmp_path):
    """After the schedule, detection in the whole training tomogram; the picks the network and
    the profile check agree on (here solid balls, never the hollow shells, never a labelled
    ball) become labels of the class for ``self_training_steps`` more steps (at most a third of
    the schedule) at a tenth of the rate with a fresh optimiser, and the profile model and the
    default are fitted on them too, as after a review. They are not the user's: the labelled
    box, the counts and the share estimate stay the labels'. Without a profile model (fewer
    than 5 labels) the run ends with its schedule and says why."""
    from scipy.spatial import cKDTree

    from napari_cetpick.checkpoint import Checkpoint
    from napari_cetpick.config import preset
    from napari_cetpick.train import plan_training

    v, balls, shells = two_kinds()
    tr = Trainer([v], [balls[:6]], TrainConfig(**{**TINY, "max_steps": 60, "self_training_steps": 100}),
                 voxel_size_a=10.0, device="cpu")
    assert tr.plan.self_training_steps == 20 and "then 20 with the picks it is sure of" in tr.plan.describe()
    assert tr.steps_text() == "60 steps, then up to 20 with the picks it is sure of"
    progress = list(tr.steps())
    name = tr.names[0]
    sure = tr.sure_points[0][name]
    assert tr.self_trained == len(sure) >= 1
    assert cKDTree(balls[6:]).query(sure)[0].max() < 2.5  # each on an unlabelled ball
    assert cKDTree(shells).query(sure)[0].min() > 5 and cKDTree(balls[:6]).query(sure)[0].min() > 5
    assert [p.step for p in progress] == list(range(1, 81)) and {p.total for p in progress} == {80}
    assert [p.lr for p in progress[60:]] == [pytest.approx(TrainConfig.lr * CORRECTION_LR_FACTOR)] * 20
    # they trained as labels: the targets of a crop on one of them hold a positive there
    assert len(tr.labels_work[0][name]) == 6 + len(sure)
    ck = Checkpoint.load(tr.checkpoint().save(tmp_path / "m.ckpt"))
    last = ck.info["rounds"][-1]
    assert last["self_training"] == len(sure) and last["self_training_from"] == 60 and last["steps"] == 80
    # the user's labels are 6; the profile model and calibration, as after a review, know the sure picks too
    assert ck.info["n_positives"] == 6 and ck.info["profile_model"]["n_labels"] == 6 + len(sure)
    # ... though how far a new particle may lie is measured on the user's labels (ProfileModel.fit's found)
    from napari_cetpick.descriptors import ProfileModel

    fitted = ProfileModel.from_info(ck.info["profile_model"])
    assert fitted.typical == pytest.approx(ProfileModel.fit([v], [balls[:6]], ck.diameter_vox, found=[sure]).typical,
                                           rel=1e-5)
    from napari_cetpick.counts import label_box

    assert ck.info["label_boxes"][0] == label_box(balls[:6], v.shape, ck.diameter_vox).to_list()
    # the share the user labelled stays round 1's reading (none here: no split in a box of 6 balls)
    assert ck.info.get("estimated_label_fraction") == tr.first_estimates[name].get("estimated_label_fraction")
    # too few labels for a profile model: no second opinion, no round, and the reason recorded
    few = Trainer([v], [balls[:3]], TrainConfig(**{**TINY, "max_steps": 9, "self_training_steps": 100}),
                  voxel_size_a=10.0, device="cpu")
    steps = [(p.step, p.total) for p in few.steps(calibrate=False)]
    assert steps[-1] == (9, 9) and few.self_trained is None
    from napari_cetpick.detect import PROFILE_SKIPPED

    assert (few.checkpoint(calibrate=False).info["rounds"][-1]["self_training_skipped"]
            == PROFILE_SKIPPED.format(name=name))
    # after a look-alike round that found none, the self-training round still runs its steps
    both = Trainer([v], [balls[:3]],
                   TrainConfig(**{**TINY, "max_steps": 9, "look_alike_steps": 100, "self_training_steps": 100}),
                   voxel_size_a=10.0, device="cpu")
    assert both.total_steps == 9 + 3 + 3
    steps = [(p.step, p.total) for p in both.steps(calibrate=False)]
    assert steps[-1] == (9, 9)  # neither found anything (3 labels): both rounds dropped
    # a correction round of this model rehearses its round: before the first step, the picks the
    # model is sure of — never a label, an accepted pick or a rejected one — are labels of the
    # class for the round, and the profile model is fitted on them too
    accepted = next(b for b in balls[6:] if cKDTree(sure).query(b)[0] > 5)[None]
    review = Trainer([v], [np.vstack([balls[:6], accepted])], correction_config(ck, max_steps=3), voxel_size_a=10.0,
                     device="cpu", init=ck, negatives=[shells[:2]])
    assert review.rehearsed is None and review.total_steps == 3
    list(review.steps(calibrate=False))
    assert not review.rehearsal_skipped, review.rehearsal_skipped
    again = review.sure_points[0][name]
    assert review.rehearsed == len(again) >= 1
    assert cKDTree(balls[6:]).query(again)[0].max() < 2.5
    assert cKDTree(np.vstack([shells, balls[:6], accepted])).query(again)[0].min() > 5
    assert len(review.labels_work[0][name]) == 7 + len(again)
    back = review.checkpoint(calibrate=False)
    assert back.info["rounds"][-1]["rehearsed"] == len(again) and back.info["n_positives"] == 7
    assert back.info["profile_model"]["n_labels"] == 7 + len(again)
    # ... and so does a correction of that correction; a model that never self-trained does not
    assert Trainer([v], [balls[:6]], correction_config(back, max_steps=1), voxel_size_a=10.0, device="cpu",
                   init=back)._rehearse_from is back
    assert Trainer([v], [balls[:6]], correction_config(few.checkpoint(calibrate=False), max_steps=1),
                   voxel_size_a=10.0, device="cpu", init=few.checkpoint(calibrate=False))._rehearse_from is None
    # a correction round and the published recipe have no self-training round; on by default; negative refused
    assert correction_config(ck).self_training_steps == 0
    assert plan_training(TrainConfig(**{**TINY, "max_steps": 60, "self_training_steps": 30}), [v.shape], [balls[:6]],
                         10.0, init=ck).self_training_steps == 0
    assert preset("cetpick").self_training_steps == 0
    old = {k: w for k, w in TrainConfig().to_dict().items() if k != "self_training_steps"}
    assert TrainConfig.from_dict(old).self_training_steps == 0 and TrainConfig().self_training_steps > 0
    with pytest.raises(CetpickError, match="self_training_steps"):
        TrainConfig(self_training_steps=-1).validate()


def test_the_rehearsal_is_counted_in_the_time_spent_not_in_the_time_left(round1, monkeypatch):
    """The rehearsal's detection runs before a correction round's first step: the round's
    elapsed time includes it, but the time left is read from the steps alone (else the first
    step's estimate would charge the detection to each of the remaining steps)."""
    import copy
    import time

    import napari_cetpick.calibration as calibration

    v, balls, shells, ck = round1
    ck = copy.deepcopy(ck)
    ck.info["rounds"][-1]["self_training"] = 3  # as if round 1 had trained with picks it was sure of

    def slow_sure_picks(model, volumes, *args, **kwargs):
        time.sleep(2.0)
        return [{model.class_names[0]: balls[8:9].astype(float)}], ""

    monkeypatch.setattr(calibration, "sure_picks", slow_sure_picks)
    tr = Trainer([v], [balls[:6]], correction_config(ck, max_steps=20), voxel_size_a=10.0, device="cpu", init=ck)
    progress = list(tr.steps(calibrate=False))
    assert tr.rehearsed == 1 and len(progress) == 20
    assert progress[0].elapsed_s >= 2.0
    step_s = (progress[-1].elapsed_s - progress[0].elapsed_s) / 19
    # counted in: about 19 x (2 s + a step); read from the steps: about 19 steps
    assert progress[0].eta_s < 19 * (step_s + 1.0)
