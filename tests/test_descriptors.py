"""Orientation-free descriptors and the review's "like my rejections" order (no GUI, no torch)."""
import numpy as np
import pytest

from napari_cetpick.descriptors import N_SHELLS, radial_profiles
from napari_cetpick.review import lookalike_order

SHAPE = (48, 96, 96)


def _grid():
    return np.indices(SHAPE, dtype=float)


def planted(seed=0, noise=0.5, ball=1.0):
    """Solid balls (radius 6, density ``ball``), hollow shells (radius 6, wall 1.5) and small dark
    beads, in noise."""
    rng = np.random.default_rng(seed)
    g = _grid()
    vol = rng.normal(0.0, noise, SHAPE)
    kinds = {"ball": [], "shell": [], "bead": []}
    centres = [(z, y, x) for z in (12, 34) for y in (14, 38, 62, 84) for x in (14, 38, 62, 84)]
    rng.shuffle(centres)
    for i, c in enumerate(centres):
        kind = ("ball", "shell", "bead")[i % 3]
        r = np.sqrt(sum((g[k] - c[k]) ** 2 for k in range(3)))
        if kind == "ball":
            vol += ball * (r <= 6)
        elif kind == "shell":
            vol += (np.abs(r - 5.25) <= 0.75)
        else:
            vol -= 3.0 * (r <= 2.5)
        kinds[kind].append(c)
    return vol, {k: np.array(v, float) for k, v in kinds.items()}


def test_profiles_tell_a_ball_from_a_shell():
    vol, kinds = planted(noise=0.0)
    ball, shell = radial_profiles(vol, kinds["ball"][:1], 12.0)[0], radial_profiles(vol, kinds["shell"][:1], 12.0)[0]
    assert ball.shape == shell.shape == (2 * N_SHELLS,)
    # the ball is densest at the centre; the hollow shell is empty there and densest at its wall
    ball_mean, shell_mean = ball.reshape(-1, 2).mean(1), shell.reshape(-1, 2).mean(1)
    assert ball_mean[0] == pytest.approx(ball_mean.max()) and ball_mean[0] > ball_mean[-1] + 3
    wall = int(np.argmax(shell_mean))
    assert shell_mean[0] < shell_mean[wall] - 3 and 3 <= wall <= 5


@pytest.mark.parametrize("transform", ["flip_z", "flip_y", "rot90_xy", "transpose_xy"])
def test_profiles_do_not_depend_on_orientation(transform):
    vol, kinds = planted(noise=0.5)
    pts = np.vstack(list(kinds.values()))
    if transform == "flip_z":
        vol2, pts2 = vol[::-1], pts * [-1, 1, 1] + [SHAPE[0] - 1, 0, 0]
    elif transform == "flip_y":
        vol2, pts2 = vol[:, ::-1], pts * [1, -1, 1] + [0, SHAPE[1] - 1, 0]
    elif transform == "transpose_xy":
        vol2, pts2 = vol.transpose(0, 2, 1), pts[:, [0, 2, 1]]
    else:  # 90° about z: (y, x) -> (X-1-x, y)
        vol2 = np.rot90(vol, 1, axes=(1, 2))
        pts2 = np.c_[pts[:, 0], SHAPE[2] - 1 - pts[:, 2], pts[:, 1]]
    a = radial_profiles(np.ascontiguousarray(vol2), pts2, 12.0)
    b = radial_profiles(vol, pts, 12.0)
    # the same voxels in each shell; only the background estimate (a random sample) differs
    assert np.allclose(a - np.nanmean(a), b - np.nanmean(b), atol=0.05)


def test_profiles_at_and_beyond_the_border():
    vol, _ = planted()
    out = radial_profiles(vol, [[0, 0, 0], [-200, 5, 5], [24, 48, 48]], 12.0)
    assert np.isfinite(out[0]).all() and np.isfinite(out[2]).all()  # a corner: what lies inside
    assert np.isnan(out[1]).all()                                    # nowhere near: nothing to average
    assert radial_profiles(vol, np.zeros((0, 3)), 12.0).shape == (0, 2 * N_SHELLS)


def test_profiles_of_a_large_particle_use_a_coarser_grid():
    vol, kinds = planted(noise=0.0)
    # a 48-voxel particle is sampled every 3rd voxel: still finite and ordered centre first
    out = radial_profiles(vol, kinds["ball"][:2], 48.0)
    assert np.isfinite(out).all() and out.shape == (2, 2 * N_SHELLS)


def test_lookalikes_of_rejected_shells_come_first():
    vol, kinds = planted(seed=3, noise=0.5)
    labels, rejected = kinds["ball"][:3], kinds["shell"][:2]
    picks = np.vstack([kinds["ball"][3:], kinds["shell"][2:], kinds["bead"]])
    truth = np.r_[np.zeros(len(kinds["ball"]) - 3), np.ones(len(kinds["shell"]) - 2), np.full(len(kinds["bead"]), 2)]
    desc = radial_profiles(vol, np.vstack([picks, rejected, labels]), 12.0)
    n, m = len(picks), len(rejected)
    order = lookalike_order(desc[:n], desc[n:n + m], desc[n + m:])
    assert sorted(order.tolist()) == list(range(n))
    n_shells = int(np.sum(truth == 1))
    assert np.all(truth[order[:n_shells]] == 1)   # every other shell before any ball or bead
    assert np.all(truth[order[-(len(kinds["ball"]) - 3):]] == 0)  # the balls, like the labels, last
    # without accepted rows: still the shells first
    order2 = lookalike_order(desc[:n], desc[n:n + m])
    assert np.all(truth[order2[:n_shells]] == 1)


def test_lookalike_order_needs_a_rejection():
    with pytest.raises(ValueError, match="at least one rejected"):
        lookalike_order(np.ones((3, 4)), np.zeros((0, 4)))
    assert lookalike_order(np.zeros((0, 4)), np.ones((1, 4))).shape == (0,)


# ---------------------------------------------------------------------------- the profile check
from napari_cetpick.descriptors import MIN_PROFILE_LABELS, ProfileModel, model_profiles  # noqa: E402


def test_profile_model_of_balls_tells_shells_and_beads_apart():
    vol, kinds = planted(seed=2, noise=0.5)
    model = ProfileModel.fit([vol], [kinds["ball"][:6]], 12.0)
    assert model is not None and model.n_labels == 6
    far = {k: model.excess(model_profiles(vol, kinds[k], 12.0)) for k in kinds}
    # the unseen balls lie about as close as the labels; shells and beads far beyond
    assert np.median(far["ball"][6:] if len(far["ball"]) > 6 else far["ball"]) < 0.1 * min(
        far["shell"].min(), far["bead"].min())
    assert np.all(far["ball"] >= 0) and far["shell"].min() > 0
    back = ProfileModel.from_info(model.to_info())
    np.testing.assert_allclose(back.distance(model_profiles(vol, kinds["shell"], 12.0)),
                               model.distance(model_profiles(vol, kinds["shell"], 12.0)), rtol=1e-4)
    assert ProfileModel.from_info({**model.to_info(), "n_shells": 3}) is None  # another descriptor: not used
    assert ProfileModel.from_info(None) is None


def test_profile_model_needs_a_few_labels():
    vol, kinds = planted()
    assert ProfileModel.fit([vol], [kinds["ball"][:MIN_PROFILE_LABELS - 1]], 12.0) is None
    # labels spread over two tomograms count together
    two = ProfileModel.fit([vol, vol], [kinds["ball"][:3], kinds["ball"][3:6]], 12.0)
    assert two is not None and two.n_labels == 6


def test_profile_check_moves_look_unalikes_down_never_up():
    from napari_cetpick.checkpoint import Checkpoint
    from napari_cetpick.config import TrainConfig
    from napari_cetpick.detect import profile_check

    vol, kinds = planted(seed=4, noise=0.5)
    model = ProfileModel.fit([vol], [kinds["ball"][:5]], 12.0)
    ckpt = Checkpoint(state_dict={}, config=TrainConfig(), diameter_vox=12.0, voxel_size_a=10.0, bin_xy=1,
                      default_threshold=0.5, tau=0.1, info={"profile_model": model.to_info()})
    zyx = np.vstack([kinds["shell"], kinds["ball"]])
    scores = np.full(len(zyx), 0.8, np.float32)          # the network cannot tell them apart
    agreement = np.linspace(0, 1, len(zyx)).astype(np.float32)
    z2, s2, a2, excess = profile_check(ckpt, vol, zyx, scores, agreement, 0.1)[:4]
    is_ball = np.isin(z2[:, 1] * 1000 + z2[:, 2], kinds["ball"][:, 1] * 1000 + kinds["ball"][:, 2])
    assert np.all(is_ball[: len(kinds["ball"])])           # every ball now ranks above every shell
    assert np.all(s2 <= 0.8 + 1e-6) and np.all(np.diff(s2) <= 0)
    # each candidate keeps its own agreement and position
    src = {tuple(p): a for p, a in zip(zyx, agreement)}
    assert all(src[tuple(p)] == a for p, a in zip(z2, a2))
    assert np.isfinite(excess).all()
    # weight 0, or a model without a profile model: untouched
    same = profile_check(ckpt, vol, zyx, scores, agreement, 0.0)
    assert same[0] is zyx and same[3] is None
    bare = Checkpoint(state_dict={}, config=TrainConfig(), diameter_vox=12.0, voxel_size_a=10.0, bin_xy=1,
                      default_threshold=0.5, tau=0.1, info={})
    assert profile_check(bare, vol, zyx, scores, agreement, 0.1)[3] is None


def test_profile_check_looks_at_the_best_only_and_keeps_the_rest_below():
    from napari_cetpick.checkpoint import Checkpoint
    from napari_cetpick.config import TrainConfig
    from napari_cetpick import detect as D

    vol, kinds = planted(seed=5, noise=0.5)
    model = ProfileModel.fit([vol], [kinds["ball"][:5]], 12.0)
    ckpt = Checkpoint(state_dict={}, config=TrainConfig(), diameter_vox=12.0, voxel_size_a=10.0, bin_xy=1,
                      default_threshold=0.5, tau=0.1, info={"profile_model": model.to_info()})
    zyx = np.vstack([kinds["shell"], kinds["ball"], kinds["bead"]])
    scores = np.linspace(0.9, 0.1, len(zyx)).astype(np.float32)
    old = D.PROFILE_POOL_MIN
    D.PROFILE_POOL_MIN = 10
    try:
        z2, s2, _, excess = D.profile_check(ckpt, vol, zyx, scores, None, 0.1, expected=1.0)[:4]
    finally:
        D.PROFILE_POOL_MIN = old
    checked = np.isfinite(excess)
    assert checked.sum() == 10
    assert s2[~checked].max() <= s2[checked].min() + 1e-7


def test_profile_check_reads_a_memory_map_in_slabs_and_drops_its_pages(tmp_path, monkeypatch):
    """A large tomogram is read for its candidates' profiles slab by slab along z, the file's
    pages dropped after each (they would otherwise stay resident: 2.1 GB for a 1024 × 1024 × 500
    file); the scores are the same as from one read of the whole array."""
    from napari_cetpick import detect as D
    from napari_cetpick.checkpoint import Checkpoint
    from napari_cetpick.config import TrainConfig
    from napari_cetpick.io import write_tomogram
    from napari_cetpick.io.tomogram import open_tomogram

    vol, kinds = planted(seed=6, noise=0.5)
    mapped = open_tomogram(write_tomogram(tmp_path / "planted.mrc", vol.astype(np.float32), voxel_size_a=10.0)).data
    model = ProfileModel.fit([vol], [kinds["ball"][:5]], 12.0)
    ckpt = Checkpoint(state_dict={}, config=TrainConfig(), diameter_vox=12.0, voxel_size_a=10.0, bin_xy=1,
                      default_threshold=0.5, tau=0.1, info={"profile_model": model.to_info()})
    zyx = np.vstack([kinds["shell"], kinds["ball"], kinds["bead"]])
    scores = np.linspace(0.9, 0.1, len(zyx)).astype(np.float32)
    whole = D.profile_check(ckpt, np.asarray(vol, np.float32), zyx, scores, None, 0.1)
    released = []
    monkeypatch.setattr(D, "PROFILE_SLAB", 4)
    monkeypatch.setattr(D, "_release", lambda fm: released.append(fm) or True)
    slabs = D.profile_check(ckpt, mapped, zyx, scores, None, 0.1)
    np.testing.assert_array_equal(slabs[0], whole[0])
    np.testing.assert_allclose(slabs[1], whole[1], rtol=1e-6)
    # once after the local background's read, once after the best candidates' read for the
    # tomogram's contrast, then after each slab
    assert len(released) == 2 + -(-len(zyx) // 4) and all(fm is not None for fm in released)


def test_a_particle_cut_by_a_face_is_measured_on_what_lies_inside():
    from dataclasses import replace

    from napari_cetpick.descriptors import MIN_INSIDE_SHARE

    vol, kinds = planted(seed=2, noise=0.5)
    # every distance counts (no slack for what a new particle looks like)
    model = replace(ProfileModel.fit([vol], [kinds["ball"][:6]], 12.0), typical=0.0)
    # the volume cut 14 voxels into y and x: the balls at y or x = 14 now sit on a face, about
    # half their sampled sphere outside it
    cut_vol = np.ascontiguousarray(vol[:, 14:, 14:])
    balls = kinds["ball"]
    cut = balls[(balls[:, 1] == 14) | (balls[:, 2] == 14)] - [0, 14, 14]
    whole = balls[(balls[:, 1] > 30) & (balls[:, 2] > 30)] - [0, 14, 14]
    assert len(cut) >= 3 and len(whole) >= 3
    prof, inside = model_profiles(cut_vol, cut, 12.0, return_inside=True)
    assert inside.shape == prof.shape and inside.min() < 0.6 and np.all(inside[:, 0] == 1.0)
    whole_prof, whole_inside = model_profiles(cut_vol, whole, 12.0, return_inside=True)
    assert np.all(whole_inside == 1.0)  # away from the faces every voxel is inside
    # the whole ones measure as before; the cut ones, measured as whole, lie further out than
    # the whole balls, and with their share inside known, about as far
    np.testing.assert_allclose(model.excess(whole_prof, whole_inside), model.excess(whole_prof))
    plain, aware, ref = model.excess(prof), model.excess(prof, inside), np.median(model.excess(whole_prof))
    assert np.all(aware < plain)
    assert np.median(aware) < 1.5 * ref < np.median(plain), (np.median(aware), ref, np.median(plain))
    # a feature with (almost) nothing inside is left out rather than read as the mean
    few = inside.copy()
    few[:, -1] = MIN_INSIDE_SHARE / 2
    assert np.all(np.isfinite(model.excess(prof, few)))


def test_a_cut_profiles_distance_follows_its_larger_noise():
    """Profiles of the model's own law, each feature averaged over a quarter of its voxels (its
    variance four times the labels'): measured as whole ones they lie four times further out
    (a squared distance of mean 4 × 16); with the share inside known, as far as whole ones (16)."""
    rng = np.random.default_rng(0)
    n_feat = 2 * N_SHELLS
    var = np.linspace(0.5, 2.0, n_feat)
    model = ProfileModel(np.zeros(n_feat), np.diag(1.0 / var), typical=0.0, n_labels=50)
    share = np.full((4000, n_feat), 0.25)
    prof = rng.normal(0.0, np.sqrt(var / share))
    plain, aware = model.excess(prof), model.excess(prof, share)
    # means of 4000 chi-square draws: within 4 standard errors of 64 and of 16
    assert abs(plain.mean() - 4 * n_feat) < 4 * 4 * np.sqrt(2 * n_feat / 4000)
    assert abs(aware.mean() - n_feat) < 4 * np.sqrt(2 * n_feat / 4000)
    # with half the features (almost) outside: those left out, the rest scaled to every feature's count
    share[:, n_feat // 2:] = 0.01
    assert abs(model.excess(prof, share).mean() - n_feat) < 4 * 2 * np.sqrt(2 * n_feat / 4000)


def two_sizes(seed=3, noise=1.2, small=5.4):
    """Solid balls of radius 6 (the class) and of radius ``small`` (look-alikes), in noise."""
    rng = np.random.default_rng(seed)
    g = _grid()
    vol = rng.normal(0.0, noise, SHAPE)
    kinds = {"big": [], "small": []}
    centres = [(z, y, x) for z in (12, 34) for y in (14, 38, 62, 84) for x in (14, 38, 62, 84)]
    rng.shuffle(centres)
    for i, c in enumerate(centres):
        kind = ("big", "small")[i % 2]
        vol += np.sqrt(sum((g[k] - c[k]) ** 2 for k in range(3))) <= (6.0 if kind == "big" else small)
        kinds[kind].append(c)
    return vol, {k: np.array(v, float) for k, v in kinds.items()}


def test_rejected_lookalikes_teach_the_profile_model_what_the_labels_cannot():
    vol, kinds = two_sizes()
    labels, rejected = kinds["big"][:8], kinds["small"][:8]
    plain = ProfileModel.fit([vol], [labels], 12.0)
    told = ProfileModel.fit([vol], [labels], 12.0, negatives=[rejected])
    assert plain.n_negatives == 0 and plain.neg_mean is None and told.n_negatives == 8
    unseen_big, unseen_small = (model_profiles(vol, kinds[k][8:], 12.0) for k in ("big", "small"))
    # from the labels alone the slightly smaller balls lie within what a new particle may show
    assert np.median(plain.excess(unseen_small)) == 0.0
    # the rejections tell them apart: the unseen look-alikes lose, the unseen particles do not
    e_small = told.excess(unseen_small)
    assert np.sum(e_small > 0) >= 6 and np.median(e_small) > 5.0
    np.testing.assert_allclose(told.excess(unseen_big), plain.excess(unseen_big))
    # what the model file keeps is what detection uses; a model file without negatives reads as before
    back = ProfileModel.from_info(told.to_info())
    assert back.n_negatives == 8
    np.testing.assert_allclose(back.excess(unseen_small), e_small, rtol=1e-3, atol=1e-3)
    assert ProfileModel.from_info(plain.to_info()).neg_mean is None
    # too few negatives for a spread: none taken
    few = ProfileModel.fit([vol], [labels], 12.0, negatives=[rejected[: MIN_PROFILE_LABELS - 1]])
    assert few.neg_mean is None and few.n_negatives == 0



def test_rejected_particles_of_the_class_do_not_cost_new_ones_their_score():
    """A user who rejects true particles (off-centre picks, a bad region) teaches the
    negatives' model what the class looks like: the margin measured on the labels keeps
    unseen particles where the labels alone put them."""
    vol, kinds = two_sizes()
    labels, unseen = kinds["big"][:8], model_profiles(vol, kinds["big"][13:], 12.0)
    plain = ProfileModel.fit([vol], [labels], 12.0)
    wrong = ProfileModel.fit([vol], [labels], 12.0, negatives=[kinds["big"][8:13]])
    assert wrong.n_negatives == 5 and wrong.neg_margin > 0
    np.testing.assert_allclose(wrong.excess(unseen), plain.excess(unseen))
    # well-separated rejections need no margin
    told = ProfileModel.fit([vol], [labels], 12.0, negatives=[kinds["small"][:8]])
    assert told.neg_margin == 0.0
    # a look-alike cut by a face is measured on what lies inside under both models: whole
    # rows read as without ``inside``, cut rows stay finite and are still charged
    cut = kinds["small"][8:].copy()
    cut[:, 2] = 0.0
    prof, inside = model_profiles(vol, cut, 12.0, return_inside=True)
    assert inside.min() < 0.6
    aware = told.excess(prof, inside)
    assert np.all(np.isfinite(aware)) and np.sum(aware > 0) >= 6
    whole = model_profiles(vol, kinds["small"][8:], 12.0)
    np.testing.assert_allclose(told.excess(whole, np.ones_like(whole)), told.excess(whole))


@pytest.mark.parametrize("diameter", [12.0, 40.0])
def test_neighbour_profiles_are_the_profiles_one_step_around(diameter):
    """One cube read per place gives the profile of the place and of its 26 neighbours one
    sampling step away, exactly as read one by one, at the faces and beyond them too."""
    from napari_cetpick.descriptors import NEIGHBOURS, _sampling, neighbour_profiles

    vol, kinds = planted(seed=1, noise=0.5)
    pts = np.vstack([kinds["ball"], [[0.0, 0.0, 0.0], [47.0, 95.0, 95.0], [2.4, 50.0, 94.6], [-3.0, 50.0, 50.0]]])
    prof, inside = neighbour_profiles(vol, pts, diameter, batch=5)
    assert prof.shape == inside.shape == (len(pts), 27, 2 * N_SHELLS)
    step = _sampling(diameter)[1]
    assert step == (1 if diameter < 32 else 2)
    for k, offset in enumerate(NEIGHBOURS):
        one, one_inside = model_profiles(vol, np.rint(pts) + offset * step, diameter, return_inside=True)
        np.testing.assert_allclose(prof[:, k], one, rtol=0, atol=1e-9)  # each against its own background
        np.testing.assert_allclose(inside[:, k], one_inside, atol=1e-12)
    assert np.all(inside[-1, :, 0] == 0)  # the place outside the tomogram: nothing inside, read as the mean
    assert np.all(prof[-1, :, 0] == 0)


def test_look_alikes_are_read_where_they_fit_best():
    """A detector's peak on a look-alike lies off its centre: read at the pick alone, half of
    these small balls pass as the class; read where each hypothesis fits best (the pick or a
    neighbour), nearly all lose, while the unseen balls of the class keep their score."""
    from napari_cetpick.descriptors import neighbour_profiles

    vol, kinds = two_sizes(seed=3)
    model = ProfileModel.fit([vol], [kinds["big"][:8]], 12.0, negatives=[kinds["small"][:8]])
    assert model.reads_around() and model.neg_margin_around > 0  # measured on the labels the same way
    off_centre = kinds["small"][8:] + [0.0, 1.0, 1.0]
    prof, inside = neighbour_profiles(vol, off_centre, 12.0)
    at_pick = model.excess(prof[:, 13], inside[:, 13])
    around = model.excess(prof[:, 13], inside[:, 13], neighbours=(prof, inside))
    # 6 of 8 here, 4 at the pick: in this volume, four diameters thick and packed at two, the local
    # background (one diameter) takes in the neighbours; 7 of 8 against the tomogram's one mean
    assert np.sum(around > 0) >= 6 > np.sum(at_pick > 0) + 1 and np.median(around) > np.median(at_pick) + 0.75
    np.testing.assert_allclose(model.excess_at(vol, off_centre, 12.0), around)
    assert np.median(model.excess_at(vol, kinds["big"][8:], 12.0)) == 0.0
    # the model file keeps it; one saved before reads the look-alikes at the pick, as it was fitted
    back = ProfileModel.from_info(model.to_info())
    assert back.neg_margin_around == pytest.approx(model.neg_margin_around, abs=1e-5)
    np.testing.assert_allclose(back.excess_at(vol, off_centre, 12.0), around, rtol=1e-3, atol=1e-3)
    info = {k: v for k, v in model.to_info().items() if not k.endswith("_around")}
    before = ProfileModel.from_info(info)
    assert not before.reads_around()
    np.testing.assert_allclose(before.excess_at(vol, off_centre, 12.0), at_pick, rtol=1e-3, atol=1e-3)
    # without look-alikes there is nothing to read around
    assert not ProfileModel.fit([vol], [kinds["big"][:8]], 12.0).reads_around()


def test_look_alikes_kept_as_a_gaussian_fit_as_their_places_do():
    """A correction round keeps the look-alikes an earlier model found as their Gaussian: the
    margins measured on the new labels are those the places themselves would give."""
    vol, kinds = two_sizes(seed=3)
    labels, found = kinds["big"][:8], kinds["small"][:8]
    from_places = ProfileModel.fit([vol], [labels], 12.0, mined=[found])
    kept = ProfileModel.fit([vol], [labels], 12.0, mined_gaussian=from_places.look_alikes())
    assert kept.n_mined == from_places.n_mined == len(found)
    assert kept.mined_margin == pytest.approx(from_places.mined_margin)
    assert kept.mined_margin_around == pytest.approx(from_places.mined_margin_around)
    np.testing.assert_allclose(kept.excess_at(vol, kinds["small"][8:], 12.0),
                               from_places.excess_at(vol, kinds["small"][8:], 12.0))
    # through the model file, and on other labels: the same Gaussian, margins of these labels
    back = ProfileModel.from_info(from_places.to_info()).look_alikes()
    other = ProfileModel.fit([vol], [kinds["big"][4:12]], 12.0, mined_gaussian=back)
    np.testing.assert_allclose(other.mined_mean, from_places.mined_mean, atol=1e-5)
    assert ProfileModel.fit([vol], [labels], 12.0).look_alikes() is None
    with pytest.raises(ValueError, match="either"):
        ProfileModel.fit([vol], [labels], 12.0, mined=[found], mined_gaussian=back)


def crowd(seed=3, noise=1.2, small=5.6):
    """A tomogram of 64 solid balls of radius 6 (the class), 64 of radius ``small`` (look-alikes) and
    40 empty places: a candidate pool of 168 whole profiles, as a detector's best candidates are."""
    shape = (48, 200, 200)
    rng = np.random.default_rng(seed)
    g = np.indices(shape, dtype=float)
    vol = rng.normal(0.0, noise, shape)
    centres = [(z, y, x) for z in (12, 34) for y in range(14, 190, 24) for x in range(14, 190, 24)]
    rng.shuffle(centres)
    kinds = {"big": [], "small": [], "empty": []}
    for i, c in enumerate(centres):
        kind = ("big", "small")[i % 2]
        r = np.sqrt(sum((g[k] - c[k]) ** 2 for k in range(3)))
        vol += r <= (6.0 if kind == "big" else small)
        kinds[kind].append(c)
    kinds["empty"] = [(23.0, y, x) for y in range(26, 190, 24) for x in range(26, 190, 24)][:40]
    return vol, {k: np.array(v, float) for k, v in kinds.items()}


def test_the_tomogram_s_candidates_tell_the_class_from_a_look_alike_within_its_typical_distance():
    """Round 17: beside the labels' Gaussian the check fits one to the tomogram's own candidates
    (what the network proposes: the class, its look-alikes, background) and charges each whole
    profile by the log-likelihood ratio of the two, relative to the labels' median: look-alikes
    that lie within the labels' typical distance (no charge one-sided) pay, the class's unseen
    particles gain or stay level."""
    from napari_cetpick.descriptors import POOL_MIN_ROWS, ProfileReads

    vol, kinds = crowd()
    model = ProfileModel.fit([vol], [kinds["big"][:8]], 12.0)
    assert model.label_rows.shape == (8, 2 * N_SHELLS) and len(model.label_loo) == 8
    places = np.vstack([kinds["big"][8:], kinds["small"], kinds["empty"]])
    reads = model.read(vol, places, 12.0)
    pool = reads.pool()
    assert pool is not None and reads.whole().all()
    charge, excess = model.charge(reads, pool)
    np.testing.assert_allclose(excess, model.excess_at(vol, places, 12.0))
    big, small, empty = np.split(charge, [56, 120])
    e_small = excess[56:120]
    assert np.mean(e_small > 0) < 0.4                     # one-sided, most look-alikes pass as the class
    assert np.median(small) > 2.0 and np.mean(small > 0) > 0.9
    assert np.mean(big <= 0) > 0.4 and np.median(small) > np.median(big) + 3.0
    assert np.median(empty) > np.median(small)
    # too few candidates for a Gaussian of their own, or a model saved before: one-sided as before
    few = ProfileReads(*(getattr(reads, f)[:POOL_MIN_ROWS - 1] for f in
                         ("profiles", "inside", "dist", "logdet", "looks")))
    assert few.pool() is None
    np.testing.assert_allclose(model.charge(few, few.pool())[0], few.looks + np.maximum(few.dist - model.typical, 0))
    info = model.to_info()
    back = ProfileModel.from_info(info)
    np.testing.assert_allclose(back.label_rows, model.label_rows, atol=1e-6)
    np.testing.assert_allclose(back.charge(reads, pool)[0], charge, rtol=1e-4, atol=1e-3)
    old = ProfileModel.from_info({k: v for k, v in info.items() if not k.startswith("label_")})
    assert old.label_rows is None
    np.testing.assert_allclose(old.charge(reads, pool)[0], excess, rtol=1e-4, atol=1e-3)


def test_a_cut_candidate_keeps_the_one_sided_charge():
    vol, kinds = crowd()
    model = ProfileModel.fit([vol], [kinds["big"][:8]], 12.0)
    places = np.vstack([kinds["big"][8:], kinds["small"], [[2.0, 100.0, 100.0], [23.0, 1.0, 60.0]]])
    reads = model.read(vol, places, 12.0)
    charge, excess = model.charge(reads, reads.pool())
    cut = ~reads.whole()
    assert cut.sum() == 2 and cut[-2:].all()
    np.testing.assert_allclose(charge[cut], excess[cut])
    assert not np.allclose(charge[~cut], excess[~cut])


def test_profile_check_raises_what_looks_like_the_labels_among_many_candidates():
    """With the tomogram's candidates as the other hypothesis the check moves scores both ways:
    the class's unseen particles rise above look-alikes the network scored as high, and
    :meth:`Checked.crossed` counts who crossed a threshold each way."""
    from napari_cetpick.checkpoint import Checkpoint
    from napari_cetpick.config import TrainConfig
    from dataclasses import replace

    from napari_cetpick.detect import profile_check

    vol, kinds = crowd()
    model = ProfileModel.fit([vol], [kinds["big"][:8]], 12.0)
    ckpt = Checkpoint(state_dict={}, config=TrainConfig(), diameter_vox=12.0, voxel_size_a=10.0, bin_xy=1,
                      default_threshold=0.5, tau=0.1, info={"profile_model": model.to_info()})
    zyx = np.vstack([kinds["big"][8:], kinds["small"], kinds["empty"]])
    scores = np.full(len(zyx), 0.5, np.float32)          # the network cannot tell them apart
    # at the labels' own contrast: the model without label profiles below reads none
    c = profile_check(ckpt, vol, zyx, scores, None, 0.1, contrast=False)
    assert np.all(c.network == 0.5) and np.all(np.diff(c.scores) <= 0)
    key = lambda p: p[:, 1] * 1000 + p[:, 2]  # noqa: E731
    is_big = np.isin(key(c.zyx), key(kinds["big"][8:]))
    assert is_big[:56].mean() > 0.8                       # the class first
    # the network put every candidate at 0.5: at that threshold the check only takes some below
    # it, at 0.52 it only raises some above it
    assert c.crossed(0.5) == (int(np.sum(c.scores < 0.5)), 0) and c.crossed(0.5)[0] > 60
    assert c.crossed(0.52) == (0, int(np.sum(c.scores >= 0.52))) and c.crossed(0.52)[1] > 20
    # the one-sided order from the same reads is the check of a model without label profiles
    info = {k: v for k, v in model.to_info().items() if not k.startswith("label_")}
    plain = profile_check(replace(ckpt, info={"profile_model": info}), vol, zyx, scores, None, 0.1)
    one = c.one_sided(0.1)
    np.testing.assert_array_equal(one.zyx, plain.zyx)
    np.testing.assert_allclose(one.scores, plain.scores, rtol=1e-5)
    np.testing.assert_allclose(one.excess, plain.excess, rtol=1e-4, atol=1e-4)


def test_the_class_s_contrast_is_read_on_candidates_of_its_shape():
    from dataclasses import replace

    from napari_cetpick.descriptors import GAIN_BOUND, GAIN_MIN_SEPARATION

    vol, kinds = planted(seed=6, noise=0.5)
    model = ProfileModel.fit([vol], [kinds["ball"]], 12.0)
    # the same balls standing out half as much (a noisier tomogram, scaled to unit spread)
    weak, wk = planted(seed=7, noise=0.5, ball=0.5)
    gain, n = model.gain(*model_profiles(weak, wk["ball"], 12.0, return_inside=True))
    assert n >= len(wk["ball"]) // 2 and 0.35 < gain < 0.7
    strong, sk = planted(seed=8, noise=0.5, ball=1.6)
    assert 1.3 < model.gain(model_profiles(strong, sk["ball"], 12.0))[0] < 2.0
    # at the labels' own contrast the gain is 1 exactly (within its standard error of 1)
    same, ck = planted(seed=9, noise=0.5)
    assert model.gain(model_profiles(same, ck["ball"], 12.0))[0] == 1.0
    # candidates of another shape (a tomogram without the class) tell nothing: 1
    assert model.gain(model_profiles(weak, np.vstack([wk["shell"], wk["bead"]]), 12.0))[0] == 1.0
    # too few rows, or a model saved without the labels' rows: 1
    assert model.gain(model_profiles(weak, wk["ball"][:MIN_PROFILE_LABELS - 1], 12.0)) == (1.0, 0)
    assert replace(model, label_rows=None).gain(model_profiles(weak, wk["ball"], 12.0)) == (1.0, 0)
    # a class that hardly stands out from the tomogram's mean in its own spread: 1
    assert model.separation() > GAIN_MIN_SEPARATION
    faint = replace(model, mean=model.mean * np.sqrt(0.9 * GAIN_MIN_SEPARATION / model.separation()))
    assert faint.gain(model_profiles(weak, wk["ball"], 12.0)) == (1.0, 0)
    # bounded, and the model at a gain: the means scaled, the covariances kept
    far = 3.0 * model.mean + np.random.default_rng(0).normal(0.0, 0.01, (8, len(model.mean)))
    assert model.gain(far)[0] == GAIN_BOUND
    half = model.at_gain(0.5)
    np.testing.assert_allclose(half.mean, 0.5 * model.mean)
    np.testing.assert_allclose(half.label_rows, 0.5 * model.label_rows)
    np.testing.assert_array_equal(half.inv_cov, model.inv_cov)
    assert model.at_gain(1.0) is model


def test_profile_check_compares_at_the_tomogram_s_contrast(monkeypatch):
    from napari_cetpick import descriptors as S
    from napari_cetpick.checkpoint import Checkpoint
    from napari_cetpick.config import TrainConfig
    from napari_cetpick.detect import profile_check

    vol, kinds = planted(seed=6, noise=0.5)
    model = ProfileModel.fit([vol], [kinds["ball"]], 12.0)
    ckpt = Checkpoint(state_dict={}, config=TrainConfig(), diameter_vox=12.0, voxel_size_a=10.0, bin_xy=1,
                      default_threshold=0.5, tau=0.1, info={"profile_model": model.to_info()})
    weak, wk = planted(seed=7, noise=0.5, ball=0.5)
    zyx = np.vstack([wk["ball"], wk["shell"]])
    scores = np.r_[np.full(len(wk["ball"]), 0.9), np.full(len(wk["shell"]), 0.6)].astype(np.float32)
    monkeypatch.setattr(S, "GAIN_CANDIDATES", len(wk["ball"]))  # the best candidates: the balls
    read = profile_check(ckpt, weak, zyx, scores, None, 0.1)
    labels_own = profile_check(ckpt, weak, zyx, scores, None, 0.1, contrast=False)
    assert 0.35 < read.gain < 0.7 and labels_own.gain == 1.0
    balls = read.index < len(wk["ball"])
    balls_own = labels_own.index < len(wk["ball"])
    # at the labels' contrast every weak ball is charged; read at its own, they keep their score
    assert np.all(labels_own.excess[balls_own] > 0)
    assert np.median(read.excess[balls]) < 0.25 * np.median(labels_own.excess[balls_own])
    assert np.all(balls[: len(wk["ball"])])  # and every ball still ranks above every shell


def test_profiles_are_read_against_the_local_background():
    """Round 22: real tomograms change slowly across their width (ice thickness, a lamella's slope,
    the slab's faces). Read against the tomogram's one mean, a ball on the bright side looked
    denser and one on the dark side fainter than the labels, and the check charged them; read
    against the local background (:class:`Background`) the same ball reads the same on either
    side, and a model saved before keeps the global reading it was fitted with."""
    from dataclasses import replace

    from napari_cetpick.descriptors import Background

    vol, kinds = crowd()
    x = np.linspace(-1.0, 1.0, vol.shape[2])
    ramp = vol + 1.5 * x[None, None, :]          # ±1.25 noise sd from one side to the other
    balls = kinds["big"]
    # the background itself follows the ramp, and a flat tomogram's is flat
    bg = Background.of(ramp, 12.0).at(balls) - Background.of(vol, 12.0).at(balls)
    np.testing.assert_allclose(bg, 1.5 * x[balls[:, 2].astype(int)], atol=0.15)
    flat = radial_profiles(vol, balls, 12.0)
    local = radial_profiles(ramp, balls, 12.0)
    glob = radial_profiles(ramp, balls, 12.0, background="global")
    scale = np.std(vol) / np.std(ramp)  # profiles are in each tomogram's own standard deviations
    assert np.abs(local / scale - flat).max() < 0.2
    assert np.abs(glob / scale - flat).max() > 0.8
    # a model fitted on the flat tomogram keeps the balls on both sides of the ramped one typical
    model = ProfileModel.fit([vol], [balls[:8]], 12.0)
    assert model.background == "local" and ProfileModel.from_info(model.to_info()).background == "local"
    rest = balls[8:]
    assert np.median(model.excess_at(ramp, rest, 12.0)) < 1.0
    old = replace(model, background="global")  # how a model saved before round 22 reads
    assert np.median(old.excess_at(ramp, rest, 12.0)) > 5 * max(np.median(model.excess_at(ramp, rest, 12.0)), 0.2)
    # a model file without the key is one saved before: the global reading, its look-alikes mined anew
    info = {k: v for k, v in model.to_info().items() if k != "background"}
    assert ProfileModel.from_info(info).background == "global"
    assert replace(old, mined_mean=model.mean, mined_inv_cov=model.inv_cov, n_mined=8).look_alikes() is None


def test_background_is_the_weighted_mean_of_what_lies_inside():
    """The background's grid is the Gaussian-weighted mean of the coarse grid's values inside
    the tomogram: the normalised convolution, computed here with whole arrays of the data and of
    ones (Background builds it in place with one weight per axis, for memory)."""
    from scipy import ndimage

    from napari_cetpick.descriptors import BACKGROUND_DIAMETERS, Background

    rng = np.random.default_rng(3)
    vol = rng.normal(size=(37, 52, 45)).astype(np.float32) + np.linspace(0, 2, 45, dtype=np.float32)
    before = vol.copy()
    bg = Background.of(vol, 12.0)
    step = bg.step
    assert step == 3 and bg.grid.shape == (13, 17, 15)
    coarse = vol[::step, : 17 * step, : 15 * step].reshape(13, 17, step, 15, step).mean(axis=(2, 4))
    sigma = BACKGROUND_DIAMETERS * 12.0 / step
    want = (ndimage.gaussian_filter(coarse.astype(float), sigma, mode="constant")
            / ndimage.gaussian_filter(np.ones(coarse.shape), sigma, mode="constant"))
    np.testing.assert_allclose(bg.grid, want, atol=1e-5)
    np.testing.assert_array_equal(vol, before)  # the tomogram itself is left as it was


def test_background_is_a_local_line_fitted_to_what_lies_inside():
    """The background's grid: along each axis in turn, at every cell, the straight line fitted by
    Gaussian-weighted least squares to the coarse grid's values inside the tomogram, read at
    the cell (a local-linear smoother; computed here line by line with numpy's weighted fit;
    Background builds it in place, two grids in memory). Far from the faces that is the
    Gaussian mean; a slope to a face is followed to the face, where the mean of what lies
    inside leaned towards the middle."""
    from scipy import ndimage

    from napari_cetpick.descriptors import BACKGROUND_DIAMETERS, Background

    rng = np.random.default_rng(3)
    vol = rng.normal(size=(37, 52, 45)).astype(np.float32) + np.linspace(0, 2, 45, dtype=np.float32)
    before = vol.copy()
    bg = Background.of(vol, 12.0, linear=True)
    step = bg.step
    assert step == 3 and bg.grid.shape == (13, 17, 15)
    coarse = vol[::step, : 17 * step, : 15 * step].reshape(13, 17, step, 15, step).mean(axis=(2, 4))
    sigma = BACKGROUND_DIAMETERS * 12.0 / step
    want = coarse.astype(float)
    for axis in range(3):
        n = want.shape[axis]
        t = np.arange(n, dtype=float)
        kernel = ndimage.gaussian_filter1d(np.eye(n), sigma, axis=0, mode="constant")  # column j: cell j's weights
        lines = np.moveaxis(want, axis, -1).reshape(-1, n)
        out = np.empty_like(lines)
        for j in range(n):
            w = kernel[:, j]
            slope, offset = np.polyfit(t, lines.T, 1, w=np.sqrt(w))  # weighted least squares, every line
            out[:, j] = offset + slope * t[j]
        want = np.moveaxis(out.reshape(np.moveaxis(want, axis, -1).shape), -1, axis)
    np.testing.assert_allclose(bg.grid, want, atol=1e-4)
    np.testing.assert_array_equal(vol, before)  # the tomogram itself is left as it was
    # more than the kernel's reach (4 sigma) from the faces: the Gaussian mean
    from napari_cetpick.descriptors import _local_linear_1d

    line = rng.normal(size=(1, 1, 200)).astype(np.float32)
    mean = ndimage.gaussian_filter1d(line.astype(float), 4.0, axis=2, mode="constant")
    _local_linear_1d(line, 4.0, 2)
    np.testing.assert_allclose(line[..., 17:-17], mean[..., 17:-17], atol=1e-5)
    # a slope to a face: followed (a line is its own fit), where the mean stayed inward by ~a sigma's slope
    ramp = np.broadcast_to(np.linspace(-1, 1, 90, dtype=np.float32), (30, 60, 90)).copy()
    grid = Background.of(ramp, 12.0, linear=True).grid
    cells = ramp[::3, :60, :90].reshape(10, 20, 3, 30, 3).mean(axis=(2, 4))
    assert np.abs(grid - cells).max() < 1e-4
    leaned = (ndimage.gaussian_filter(cells.astype(float), 4.0, mode="constant")
              / ndimage.gaussian_filter(np.ones(cells.shape), 4.0, mode="constant"))
    assert np.abs(leaned - cells)[..., 0].min() > 0.1  # 0.2 of the ramp's span at its faces


def test_a_flattened_tomogram_reads_less_its_background_part_by_part():
    """:class:`Flattened` (what the network sees at detection): any box, slice or single index
    reads the tomogram there less its background — the same as :meth:`Background.at` at every
    voxel — without reading the rest."""
    from napari_cetpick.descriptors import Background, Flattened

    rng = np.random.default_rng(4)
    vol = rng.normal(size=(23, 40, 37)).astype(np.float32) + np.linspace(0, 2, 37, dtype=np.float32)
    bg = Background.of(vol, 12.0)
    zz, yy, xx = np.indices(vol.shape)
    want = vol - bg.at(np.stack([zz.ravel(), yy.ravel(), xx.ravel()], 1)).reshape(vol.shape)
    view = Flattened(vol, bg)
    assert view.shape == vol.shape and view.ndim == 3
    np.testing.assert_allclose(np.asarray(view), want, atol=1e-5)
    np.testing.assert_allclose(view[3:20, 5:33, 7:30], want[3:20, 5:33, 7:30], atol=1e-5)
    np.testing.assert_allclose(view[5], want[5], atol=1e-5)
    np.testing.assert_allclose(view[-1, 3:9], want[-1, 3:9], atol=1e-5)
    np.testing.assert_allclose(bg.subtract_from(vol.copy()), want, atol=1e-5)
    with pytest.raises(IndexError):
        view[::2]


def test_places_the_model_found_itself_join_the_labels_gaussian_but_not_its_margins():
    """The picks a self-training round was sure of are the ones the check already charged
    nothing: measured on them, how far a new particle may lie shrank to what the check allows.
    They join the Gaussian; ``typical`` and the look-alike margins stay the user's labels'."""
    from napari_cetpick.descriptors import TYPICAL_QUANTILE, TYPICAL_SLACK, _gaussian, _mahalanobis, neighbour_profiles

    vol, kinds = two_sizes()
    labels, others = kinds["big"][:6], kinds["big"][6:]
    # the sure picks: the unseen particles the labels' model finds most typical
    plain = ProfileModel.fit([vol], [labels], 12.0)
    found = others[np.argsort(plain.distance(model_profiles(vol, others, 12.0)))[:7]]
    as_labels = ProfileModel.fit([vol], [np.vstack([labels, found])], 12.0)
    with_found = ProfileModel.fit([vol], [labels], 12.0, found=[found])
    assert with_found.n_labels == as_labels.n_labels == 13
    np.testing.assert_allclose(with_found.mean, as_labels.mean)
    np.testing.assert_allclose(with_found.label_rows, as_labels.label_rows)
    # each of the user's labels against the model of every other row, the sure picks included
    rows = with_found.label_rows
    loo = [_mahalanobis(rows[i], *_gaussian(np.delete(rows, i, axis=0)))[0][0] for i in range(len(labels))]
    assert with_found.typical == pytest.approx(TYPICAL_SLACK * np.quantile(loo, TYPICAL_QUANTILE))
    assert with_found.typical > as_labels.typical
    # so are the margins on the rejections: the user's labels' side of them, at their best neighbour
    rejected = kinds["small"][:8]
    told = ProfileModel.fit([vol], [labels], 12.0, negatives=[rejected], found=[found])
    around = neighbour_profiles(vol, labels, 12.0)[0]
    ratio = []
    for i in range(len(labels)):
        d, ld = _mahalanobis(rows[i], *_gaussian(np.delete(rows, i, axis=0)))
        dn, ldn = _mahalanobis(around[i], told.neg_mean, told.neg_inv_cov)
        ratio.append(d[0] + ld[0] - np.min(dn + ldn))
    assert told.neg_margin_around == pytest.approx(TYPICAL_SLACK * max(0.0, np.quantile(ratio, TYPICAL_QUANTILE)))
    assert told.neg_margin_around > ProfileModel.fit([vol], [np.vstack([labels, found])], 12.0,
                                                     negatives=[rejected]).neg_margin_around
    # with too few labels of the user's for a spread, every row measures it
    few = ProfileModel.fit([vol], [labels[:MIN_PROFILE_LABELS - 1]], 12.0, found=[found])
    assert few.typical == pytest.approx(
        ProfileModel.fit([vol], [np.vstack([labels[:MIN_PROFILE_LABELS - 1], found])], 12.0).typical)
