"""Training and detection on a CUDA GPU (marked ``gpu``: skipped by default, CI has no GPU).

Run on a machine with a GPU:  python -m pytest -m gpu  (the default run hides the GPU; -m gpu keeps it)

A model trained on the GPU finds the planted particles there, its file loads and detects on
a machine without a GPU, and CPU and GPU detections of one model agree: the same picks (the
heatmaps differ only by the GPU's reduced-precision convolution arithmetic, TF32).
"""
import numpy as np
import pytest

from napari_cetpick.checkpoint import Checkpoint
from napari_cetpick.config import DetectConfig, TrainConfig
from napari_cetpick.detect import detect
from napari_cetpick.evaluate import match_points
from napari_cetpick.train import Trainer
from napari_cetpick.utils import run_generator

from _planted import planted_volume

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_train_and_detect_on_gpu_then_on_cpu(tmp_path):
    radius, n = 6.0, 24
    v, pts = planted_volume(shape=(48, 128, 128), n=n, radius=radius, noise=0.8, seed=3, min_gap=2 * radius + 3)
    cfg = TrainConfig(bbox=2 * radius, max_steps=150, seed=0, bin=1, label_fraction=0.5)
    tr = Trainer([v], [pts[: n // 2]], cfg, voxel_size_a=10.0, device="cuda")
    assert tr.device.type == "cuda"
    ck = run_generator(tr.steps())
    path = ck.save(tmp_path / "gpu.cetpick")

    gpu = run_generator(detect(ck, v, DetectConfig(threshold=0.0), voxel_size_a=10.0, device="cuda"))
    top = gpu.zyx[np.argsort(-gpu.scores)][:n]
    assert len(match_points(top, pts, radius)[0]) == n

    cpu = run_generator(detect(Checkpoint.load(path), v, DetectConfig(threshold=0.0), voxel_size_a=10.0,
                               device="cpu"))
    # the same model: the heatmaps agree to TF32's precision, the top picks are the same places
    assert np.abs(cpu.heatmap - gpu.heatmap).max() < 0.05
    top_cpu = cpu.zyx[np.argsort(-cpu.scores)][:n]
    assert len(match_points(top_cpu, top, 1.0)[0]) == n
