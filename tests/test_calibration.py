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
