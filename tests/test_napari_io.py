"""napari reader/writer: LayerData, metadata, and a viewer round trip (gui)."""
import imodmodel
import mrcfile
import numpy as np
import pandas as pd
import pytest
import starfile

from napari_cetpick._napari.layers import (
    layer_cetpick_meta,
    layout_from_meta,
    pointset_to_layer_data,
    tomogram_to_layer_data,
)
from napari_cetpick._napari.reader import get_reader
from napari_cetpick._napari.writer import write_image, write_points
from napari_cetpick.errors import CetpickError
from napari_cetpick.io import FileLayout, PointSet, open_tomogram, read_points, write_tomogram

# Unrotated IMOD layout: file (a0, a1, a2) = (Y=40, Z=8, X=30) -> napari (8, 40, 30).
FILE_SHAPE = (40, 8, 30)
POINT = np.array([[3.0, 10.0, 20.0]])


@pytest.fixture
def unrotated_rec(tmp_path):
    rng = np.random.default_rng(0)
    vol = rng.normal(size=FILE_SHAPE).astype(np.float32)
    path = tmp_path / "tomo_a.rec"
    with mrcfile.new(path) as mrc:
        mrc.set_data(vol)
        mrc.voxel_size = 12.0
    return path


def test_reader_tomogram_layer_data(unrotated_rec):
    reader = get_reader(str(unrotated_rec))
    [(data, kwargs, kind)] = reader(str(unrotated_rec))
    assert kind == "image" and data.shape == (8, 40, 30)
    assert kwargs["name"] == "tomo_a"
    assert tuple(kwargs["scale"]) == (1, 1, 1)
    assert kwargs["colormap"] == "gray"
    lo, hi = kwargs["contrast_limits"]
    assert -5 < lo < hi < 5
    meta = kwargs["metadata"]["cetpick"]
    assert meta["thickness_axis"] == 1 and meta["file_shape"] == list(FILE_SHAPE)
    assert meta["voxel_size_a"] == pytest.approx(12.0)
    assert meta["header_voxel_size_a"] == pytest.approx(12.0)
    assert meta["path"] == str(unrotated_rec)
    assert layout_from_meta(meta) == FileLayout(1, FILE_SHAPE)


def test_reader_points_layer_data(tmp_path):
    """Coordinates beside a thickness-first tomogram of the same name land on it."""
    write_tomogram(tmp_path / "tomo_b.mrc", np.zeros((8, 40, 30), np.float32), voxel_size_a=5.0)
    path = tmp_path / "tomo_b_picks.csv"
    pd.DataFrame({"x": [20.0], "y": [10.0], "z": [3.0], "score": [0.7]}).to_csv(path, index=False)
    [(data, kwargs, kind)] = get_reader(str(path))(str(path))
    assert kind == "points" and np.allclose(data, POINT)
    assert kwargs["features"]["score"].tolist() == [0.7]
    assert kwargs["size"] == 10
    assert kwargs["symbol"] == "disc" and kwargs["face_color"] == "transparent"  # a ring, not a white disc
    assert kwargs["border_color"] == "score"  # scored picks are coloured by score
    meta = kwargs["metadata"]["cetpick"]
    assert meta["thickness_axis"] == 0 and meta["file_shape"] == [8, 40, 30]
    assert meta["voxel_size_a"] == pytest.approx(5.0) and meta["kind"] == "picks"


def test_reader_refuses_when_the_tomogram_is_unknown(tmp_path):
    """IMOD text could belong to an unrotated tomogram: no silent guess of the axis order."""
    path = tmp_path / "lonely.txt"
    path.write_text("20.5 3.5 10\n")
    with pytest.raises(CetpickError, match="cannot tell which tomogram"):
        get_reader(str(path))(str(path))
    # the original cet_pick's x z y files are in the thickness frame by definition
    coords = tmp_path / "lonely.coords"
    coords.write_text("20 3 10 0.5\n")
    [(data, _, _)] = get_reader(str(coords))(str(coords))
    assert np.allclose(data, POINT)


def test_reader_finds_the_unrotated_tomogram_beside(tmp_path, unrotated_rec):
    """IMOD text for an unrotated tomogram (thickness = middle file axis) is not transposed."""
    path = tmp_path / "tomo_a_picks.txt"
    path.write_text("20.5 3.5 10\n")
    [(data, kwargs, _)] = get_reader(str(path))(str(path))
    assert np.allclose(data, POINT)
    assert kwargs["metadata"]["cetpick"]["thickness_axis"] == 1
    # RELION 5 needs the voxel size and shape: read from the tomogram beside
    star5 = tmp_path / "tomo_a.star"
    df = pd.DataFrame({"rlnCenteredCoordinateXAngst": [(20 - 15) * 12.0], "rlnCenteredCoordinateYAngst":
                       [(3 - 4) * 12.0], "rlnCenteredCoordinateZAngst": [(10 - 20) * 12.0]})
    starfile.write({"particles": df}, star5)
    [(data, _, _)] = get_reader(str(star5))(str(star5))
    assert np.allclose(data, POINT)


def test_reader_one_layer_per_tomogram(tmp_path):
    for name in ("a", "b"):
        write_tomogram(tmp_path / f"{name}.mrc", np.zeros((8, 40, 30), np.float32), voxel_size_a=5.0)
    path = tmp_path / "many.star"
    df = pd.DataFrame({"rlnTomoName": ["a", "b", "b"], "rlnCoordinateX": [1.0, 2, 3],
                       "rlnCoordinateY": [1.0, 2, 3], "rlnCoordinateZ": [1.0, 2, 3]})
    starfile.write({"particles": df}, path)
    layers = get_reader(str(path))(str(path))
    assert [len(d) for d, _, _ in layers] == [1, 2]
    assert [k["metadata"]["cetpick"]["tomogram_name"] for _, k, _ in layers] == ["a", "b"]
    (tmp_path / "a.mrc").unlink()
    (tmp_path / "b.mrc").unlink()
    with pytest.raises(CetpickError, match="cannot tell"):
        get_reader(str(path))(str(path))


def test_writer_uses_layer_layout(tmp_path, unrotated_rec):
    tomo = open_tomogram(unrotated_rec)
    _, image_kwargs, _ = tomogram_to_layer_data(tomo)
    ps = PointSet(POINT, pd.DataFrame({"score": [0.5]}))
    data, kwargs, _ = pointset_to_layer_data(ps, meta=image_kwargs["metadata"]["cetpick"])
    attributes = {"name": "picks", **kwargs}
    [out] = write_points(str(tmp_path / "p.txt"), data, attributes)
    assert open(out).read() == "20.5 3.5 10\n"  # file frame of the unrotated volume
    [out] = write_points(str(tmp_path / "p.star"), data, attributes)
    row = starfile.read(out).iloc[0]
    assert (row.rlnCoordinateX, row.rlnCoordinateY, row.rlnCoordinateZ) == (20, 3, 10)
    assert row.rlnTomoName == "tomo_a"
    assert row.rlnAutopickFigureOfMerit == pytest.approx(0.5)
    [out] = write_points(str(tmp_path / "p.mod"), data, attributes)
    assert np.allclose(imodmodel.read(out)[["x", "y", "z"]].to_numpy(), [[20.5, 3.5, 10]])
    [out] = write_points(str(tmp_path / "p.csv"), data, attributes)
    assert pd.read_csv(out).loc[0, ["x", "y", "z"]].tolist() == [20, 3, 10]


def test_writer_refuses_2d_points(tmp_path):
    with pytest.raises(CetpickError, match="3D"):
        write_points(str(tmp_path / "p.txt"), np.zeros((2, 2)), {"metadata": {}})


def test_write_image_keeps_layout_and_voxel_size(tmp_path, unrotated_rec):
    data, kwargs, _ = tomogram_to_layer_data(open_tomogram(unrotated_rec))
    [out] = write_image(str(tmp_path / "copy.mrc"), np.asarray(data), kwargs)
    with mrcfile.open(out) as mrc:
        assert mrc.data.shape == FILE_SHAPE
        assert mrc.voxel_size.x == pytest.approx(12.0)
    with pytest.raises(CetpickError, match="refusing"):
        write_image(str(unrotated_rec), np.asarray(data), kwargs)


def test_layer_meta_helpers():
    assert layer_cetpick_meta({}) == {}
    assert layout_from_meta({}) == FileLayout(0, None)
    meta = {"thickness_axis": 2, "file_shape": [5, 6, 7]}
    assert layer_cetpick_meta({"metadata": {"cetpick": meta}}) == meta
    assert layout_from_meta(meta).shape_zyx == (7, 5, 6)


@pytest.mark.gui
def test_viewer_open_and_save(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    rng = np.random.default_rng(2)
    path = write_tomogram(
        tmp_path / "vol.mrc", rng.normal(size=(8, 40, 30)).astype(np.float32),
        voxel_size_a=9.0, layout=FileLayout(1),
    )
    [image] = viewer.open(str(path), plugin="napari-cetpick")
    assert image.data.shape == (8, 40, 30)
    assert image.metadata["cetpick"]["thickness_axis"] == 1

    # a coordinate file read while one tomogram is open lands on it, in its (unrotated) frame
    picks = tmp_path / "other" / "picks.txt"
    picks.parent.mkdir()
    picks.write_text("20.5 3.5 10\n")
    [points] = viewer.open(str(picks), plugin="napari-cetpick")
    assert np.allclose(points.data, POINT)
    assert points.metadata["cetpick"]["thickness_axis"] == 1

    # Points picked over the tomogram carry its layout and export to its file frame.
    layer = viewer.add_points(
        POINT, features=pd.DataFrame({"score": [0.25]}),
        metadata={"cetpick": dict(image.metadata["cetpick"])}, name="picked",
    )
    out_star = tmp_path / "out.star"
    viewer.layers.selection = {layer}
    viewer.layers.save(str(out_star), selected=True, plugin="napari-cetpick")
    row = starfile.read(out_star).iloc[0]
    assert (row.rlnCoordinateX, row.rlnCoordinateY, row.rlnCoordinateZ) == (20, 3, 10)
    assert row.rlnAutopickFigureOfMerit == pytest.approx(0.25)

    out_mod = tmp_path / "out.mod"
    viewer.layers.save(str(out_mod), selected=True, plugin="napari-cetpick")
    assert np.allclose(imodmodel.read(out_mod)[["x", "y", "z"]].to_numpy(), [[20.5, 3.5, 10]])

    # Re-import the export over the same tomogram: it lands where it was picked.
    back = read_points(out_mod, layout=FileLayout(1, (40, 8, 30)))
    assert np.allclose(back.zyx, POINT)
