"""The core never imports Qt or napari; the package import loads nothing heavy."""
import subprocess
import sys

CORE = ["napari_cetpick", "napari_cetpick.io", "napari_cetpick.synthetic", "napari_cetpick.config",
        "napari_cetpick.data", "napari_cetpick.model", "napari_cetpick.losses", "napari_cetpick.train",
        "napari_cetpick.detect", "napari_cetpick.evaluate", "napari_cetpick.peaks", "napari_cetpick.baselines",
        "napari_cetpick.checkpoint", "napari_cetpick.cli", "napari_cetpick.review"]


def _loaded(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys; print(' '.join(sys.modules))"],
                         capture_output=True, text=True, check=True).stdout
    return {m.split(".")[0] for m in out.split()}


def test_core_imports_no_gui():
    mods = _loaded("\n".join(f"import {m}" for m in CORE))
    assert not mods & {"qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "napari", "magicgui", "superqt", "vispy"}


def test_package_import_is_light():
    mods = _loaded("import napari_cetpick")
    assert not mods & {"torch", "napari", "qtpy", "magicgui"}


def test_cli_help_does_not_load_torch():
    mods = _loaded("from napari_cetpick.cli import build_parser; build_parser()")
    assert "torch" not in mods
