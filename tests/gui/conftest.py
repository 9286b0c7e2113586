"""Fixtures of the panel's tests, in one place: a 32×128×128 simulated tomogram with its
truth and labels in a napari viewer, a two-step model, the panel opened through Plugins."""
from __future__ import annotations

import pytest

pytest.importorskip("qtpy")
pytest.importorskip("napari")

from _gui import DIAMETER_A, META_KEY, VOXEL_A, meta, open_panel  # noqa: E402

from napari_cetpick.config import TrainConfig  # noqa: E402


@pytest.fixture(scope="module")
def sim():
    from napari_cetpick.synthetic import simulate_tomogram

    return simulate_tomogram(shape=(32, 128, 128), voxel_size_a=VOXEL_A, snr=1.0, seed=1,
                             label_class="proteasome", label_fraction=1.0,
                             label_region=(0, 0, 0, 32, 128, 128))


@pytest.fixture(scope="module")
def checkpoint(sim):
    """A model trained for two steps without the GUI (for detection-side tests)."""
    from napari_cetpick.train import Trainer
    from napari_cetpick.utils import run_generator

    cfg = TrainConfig(diameter_a=DIAMETER_A, max_steps=2, num_epochs=1, crop_xy=32, crop_z=16, batch_size=2)
    trainer = Trainer([sim.volume], [sim.labels], cfg, voxel_size_a=VOXEL_A, device="cpu")
    return run_generator(trainer.steps())


@pytest.fixture
def viewer(make_napari_viewer, sim):
    viewer = make_napari_viewer()
    viewer.add_image(sim.volume, name="sim", metadata={META_KEY: meta(sim)})
    viewer.add_points(sim.particles["proteasome"], ndim=3, name="truth: proteasome", visible=False,
                      metadata={META_KEY: meta(sim, truth_class="proteasome")})
    viewer.add_points(sim.labels, ndim=3, name="labels", size=15,
                      metadata={META_KEY: meta(sim, label_class="proteasome")})
    return viewer


@pytest.fixture
def panel(viewer, qtbot):
    widget = open_panel(viewer)
    widget.data._diameter_spin.value = DIAMETER_A
    widget.train._device_combo.value = "cpu"
    yield widget
    widget._stop_worker()


@pytest.fixture
def notes():
    """Messages of the napari notifications shown during the test."""
    from napari.utils.notifications import notification_manager

    start = len(notification_manager.records)
    return lambda: [str(n.message) for n in notification_manager.records[start:]]
