"""Shared test settings: tests run on CPU unless marked ``gpu``."""
import os

import pytest

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def pytest_configure(config):
    """Hide any GPU from the default run (CPU results, as CI has them); ``-m gpu`` keeps it.

    Runs before the test modules are collected, so before torch is imported.
    """
    if "gpu" in config.getoption("markexpr", "") and "not gpu" not in config.getoption("markexpr", ""):
        return
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    os.environ.setdefault("CETPICK_DEVICE", "cpu")


@pytest.fixture(autouse=True)
def _autosave_in_tmp(tmp_path_factory, monkeypatch):
    """The panel's autosave writes into a temporary folder, never into the user's cache."""
    monkeypatch.setenv("CETPICK_AUTOSAVE_DIR", str(tmp_path_factory.mktemp("autosave")))
