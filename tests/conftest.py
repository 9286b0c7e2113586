"""Shared test settings: tests run on CPU unless marked ``gpu``."""
import os

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("CETPICK_DEVICE", "cpu")
