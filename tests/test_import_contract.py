"""The import contract, in one place: the core loads no GUI, the light modules load no torch.

Each row imports some modules in a fresh interpreter and lists the top-level packages that
must not be in ``sys.modules`` afterwards (napari enforces its own layers/Qt split the same
way).
"""
import pkgutil
import subprocess
import sys

import pytest

QT = ("qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "magicgui", "superqt", "vispy")
GUI = ("qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "napari", "magicgui", "superqt", "vispy")
CORE = ["napari_cetpick", "napari_cetpick.io", "napari_cetpick.synthetic", "napari_cetpick.config",
        "napari_cetpick.memory", "napari_cetpick.data", "napari_cetpick.model", "napari_cetpick.losses",
        "napari_cetpick.train", "napari_cetpick.detect", "napari_cetpick.evaluate", "napari_cetpick.peaks",
        "napari_cetpick.baselines", "napari_cetpick.checkpoint", "napari_cetpick.cli", "napari_cetpick.batch",
        "napari_cetpick.io.copick_project", "napari_cetpick.review"]
# numpy/scipy-only modules: usable (and their settings checkable) without loading torch
NO_TORCH = ["napari_cetpick.io", "napari_cetpick.synthetic", "napari_cetpick.config", "napari_cetpick.memory",
            "napari_cetpick.data", "napari_cetpick.peaks", "napari_cetpick.evaluate", "napari_cetpick.baselines",
            "napari_cetpick.review"]



def _napari_side() -> list[str]:
    """Every module of ``napari_cetpick._napari``, found by walking the package."""
    import napari_cetpick._napari as pkg

    return sorted(f"{pkg.__name__}.{m.name}" for m in pkgutil.walk_packages(pkg.__path__))


NAPARI_SIDE = _napari_side()

CONTRACT = {
    # the session model, reader, writer and layer conversions: napari allowed, Qt not
    "napari side loads no Qt": ("\n".join(f"import {m}" for m in NAPARI_SIDE), QT),
    "core loads no GUI": ("\n".join(f"import {m}" for m in CORE), GUI),
    "numpy-only modules load no torch": ("\n".join(f"import {m}" for m in NO_TORCH), GUI + ("torch",)),
    "package import is light": ("import napari_cetpick", ("torch", "napari", "qtpy", "magicgui")),
    "cetpick --help loads no torch": ("from napari_cetpick.cli import build_parser; build_parser()", ("torch",)),
    # dask/distributed and copick are optional extras, imported only when used
    "optional extras load only when used": (
        "import napari_cetpick.batch, napari_cetpick.io.copick_project, napari_cetpick.cli",
        ("distributed", "copick", "zarr", "torch")),
}


@pytest.mark.parametrize("rule", sorted(CONTRACT))
def test_import_contract(rule):
    code, forbidden = CONTRACT[rule]
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys; print(' '.join(sys.modules))"],
                         capture_output=True, text=True, check=True).stdout
    loaded = {m.split(".")[0] for m in out.split()}
    assert not loaded & set(forbidden), sorted(loaded & set(forbidden))


def test_the_napari_side_is_walked():
    assert {"napari_cetpick._napari.session", "napari_cetpick._napari.session_file",
            "napari_cetpick._napari.reader"} <= set(NAPARI_SIDE)
