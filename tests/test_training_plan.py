"""The plan the panel shows before Train matches what the Trainer then does."""
import numpy as np
import pytest

pytest.importorskip("qtpy")

from napari_cetpick.config import TrainConfig  # noqa: E402
from napari_cetpick.synthetic import simulate_tomogram  # noqa: E402


@pytest.mark.parametrize("overrides", [
    {},                                            # τ from the label density, epochs × labels
    {"expected_particles": 40, "max_steps": 7},    # τ from the count, max steps
    {"tau": 0.05, "arch": "unet3d_small", "crop_z": 16, "crop_xy": 32},
])
def test_plan_matches_the_trainer(overrides):
    from napari_cetpick.train import Trainer
    from napari_cetpick.widgets._engine import plan_training

    sim = simulate_tomogram(shape=(32, 96, 96), voxel_size_a=10.0, snr=1.0, seed=2, label_class="proteasome",
                            label_fraction=1.0, label_region=(0, 0, 0, 32, 96, 96))
    cfg = TrainConfig(diameter_a=150.0, num_epochs=3, batch_size=2, **overrides)
    plan = plan_training(cfg, [sim.volume.shape], [sim.labels], 10.0)
    trainer = Trainer([sim.volume], [sim.labels], cfg, voxel_size_a=10.0, device="cpu")
    # the look-alike and self-training rounds' steps count in the trainer's total until it turns out
    # they found nothing
    assert plan.total_steps + plan.look_alike_steps + plan.self_training_steps == trainer.total_steps
    assert plan.bin_xy == trainer.bin_xy
    assert plan.tau == pytest.approx(trainer.tau, rel=1e-6)
    assert np.isfinite(plan.tau) and str(plan.total_steps) in plan.describe()
