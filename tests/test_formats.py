"""The coordinate formats table (io/formats.py) and every place that lists formats agree."""
from pathlib import Path

import pytest
import yaml

from napari_cetpick.errors import CetpickError
from napari_cetpick.io import (
    FORMATS,
    POINT_EXTENSIONS,
    POINT_FORMATS,
    TOMOGRAM_EXTENSIONS,
    WRITABLE_FORMATS,
    export_formats,
    format_for_extension,
    point_format,
)

ROOT = Path(__file__).parents[1]
MANIFEST = yaml.safe_load((ROOT / "src" / "napari_cetpick" / "napari.yaml").read_text())["contributions"]


def _command(name: str) -> str:
    return next(c["id"] for c in MANIFEST["commands"] if c["python_name"].endswith(f":{name}"))


def test_table_is_consistent():
    names = [f.name for f in POINT_FORMATS]
    assert len(set(names)) == len(names)
    assert FORMATS == tuple(names)
    for f in POINT_FORMATS:
        assert f.extension.startswith(".") and f.extension == f.extension.lower()
        assert point_format(f.name) is f
    # every extension's own format (the first with it) is one that is written under that extension
    for ext in POINT_EXTENSIONS:
        assert format_for_extension(ext).writable
        assert format_for_extension(ext.upper()) is format_for_extension(ext)
    assert format_for_extension(".txt").name == "imod"
    assert format_for_extension(".star").name == "star"
    assert format_for_extension(".pdb") is None
    with pytest.raises(CetpickError, match="Unknown coordinate format .pdb."):
        point_format("pdb")


def test_reader_patterns_match_the_table():
    (reader,) = MANIFEST["readers"]
    assert reader["command"] == _command("get_reader")
    patterns = {"*" + ext for ext in (*TOMOGRAM_EXTENSIONS, *POINT_EXTENSIONS)}
    assert set(reader["filename_patterns"]) == patterns


def test_points_writer_matches_the_table():
    (writer,) = [w for w in MANIFEST["writers"] if w["command"] == _command("write_points")]
    assert writer["layer_types"] == ["points"]
    assert set(writer["filename_extensions"]) == {f.extension for f in WRITABLE_FORMATS}


def test_derived_views():
    from napari_cetpick._napari.reader import FRAME_FREE_FORMATS
    from napari_cetpick.batch import PICK_FORMATS

    assert PICK_FORMATS == {f.name: f.extension for f in WRITABLE_FORMATS}
    assert set(FRAME_FREE_FORMATS) == {"cetpick", "cetpick_list"}
    assert [f.name for f in export_formats().values()] == ["imod", "mod", "star", "star5", "csv"]
    assert all(f.writable for f in export_formats().values())


def test_carries_classes():
    carries = {f.name for f in POINT_FORMATS if f.carries_classes}
    assert carries == {"mod", "star", "star5", "csv"}


def test_docs_describe_every_format():
    text = (ROOT / "docs" / "coordinates.md").read_text()
    for f in POINT_FORMATS:
        assert f"| `{f.name}`" in text, f.name
