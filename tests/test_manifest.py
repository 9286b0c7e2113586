"""The napari manifest: valid, every python_name importable, shipped in the wheel."""
import importlib
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

MANIFEST = Path(__file__).parents[1] / "src" / "napari_cetpick" / "napari.yaml"


def test_every_python_name_imports():
    data = yaml.safe_load(MANIFEST.read_text())
    for cmd in data["contributions"]["commands"]:
        module, _, attr = cmd["python_name"].partition(":")
        obj = getattr(importlib.import_module(module), attr)
        assert callable(obj), cmd["id"]


def test_npe2_validate_with_imports():
    proc = subprocess.run([sys.executable, "-m", "npe2", "validate", "napari-cetpick", "--imports"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_plugin_is_discovered():
    import npe2

    pm = npe2.PluginManager.instance()
    pm.discover()
    assert pm.get_manifest("napari-cetpick").display_name


@pytest.mark.slow
def test_wheel_contains_manifest(tmp_path):
    root = Path(__file__).parents[1]
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path), str(root)], check=True)
    wheel = next(tmp_path.glob("napari_cetpick-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "napari_cetpick/napari.yaml" in names
    assert any(n.endswith("entry_points.txt") for n in names)
