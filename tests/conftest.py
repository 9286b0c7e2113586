"""Shared test settings: tests run on CPU unless marked ``gpu``."""
import os

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("CETPICK_DEVICE", "cpu")


import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _autosave_in_tmp(tmp_path_factory, monkeypatch):
    """The panel's autosave writes into a temporary folder, never into the user's cache."""
    monkeypatch.setenv("CETPICK_AUTOSAVE_DIR", str(tmp_path_factory.mktemp("autosave")))
