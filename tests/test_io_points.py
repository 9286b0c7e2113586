"""Coordinate formats: hand-computed examples, round trips and re-reads with real libraries."""

import imodmodel
import numpy as np
import pandas as pd
import pytest
import starfile

from napari_cetpick.errors import CetpickError
from napari_cetpick.io import (
    FORMATS,
    FileLayout,
    imod_text_to_coordinate_list,
    list_tomogram_names,
    read_coordinate_list,
    read_image_list,
    read_points,
    write_coordinate_list,
    write_image_list,
    write_points,
)

# Unrotated IMOD reconstruction: file axes (a0, a1, a2) = (Y, Z = thickness, X).
UNROTATED = FileLayout(1, (40, 8, 30))
IDENTITY = FileLayout(0, (8, 40, 30))
POINT = np.array([[3.0, 10.0, 20.0]])  # napari (z, y, x)


def _numbers(path):
    lines = path.read_text().splitlines()
    return [[float(v) for v in line.split()] for line in lines if line.strip()]


# ---------------------------------------------------------------- hand-computed examples


def test_imod_text_hand_example_unrotated(tmp_path):
    # napari (z=3, y=10, x=20) on layout (a0=Y, a1=Z, a2=X): file index (a0, a1, a2) =
    # (10, 3, 20); IMOD (a2 + 0.5, a1 + 0.5, a0) = (20.5, 3.5, 10).
    path = write_points(tmp_path / "p.txt", POINT, layout=UNROTATED)
    assert path.read_text() == "20.5 3.5 10\n"
    assert np.allclose(read_points(path, layout=UNROTATED).zyx, POINT)


def test_imod_text_hand_example_rotated(tmp_path):
    path = write_points(tmp_path / "p.txt", POINT, layout=IDENTITY)
    assert _numbers(path) == [[20.5, 10.5, 3.0]]


def test_imod_text_reads_integers_and_extra_columns(tmp_path):
    path = tmp_path / "m.txt"
    path.write_text("  21   4   10  0.7\n\n 1 1 1 0.2\n")
    ps = read_points(path, layout=UNROTATED)
    assert np.allclose(ps.zyx[0], [3.5, 10, 20.5])
    assert list(ps.features.columns) == ["col4"]
    assert np.allclose(ps.features["col4"], [0.7, 0.2])


def test_mod_hand_example_and_header(tmp_path):
    path = write_points(tmp_path / "p.mod", POINT, layout=UNROTATED, voxel_size_a=7.5)
    df = imodmodel.read(path)
    assert np.allclose(df[["x", "y", "z"]].to_numpy(), [[20.5, 3.5, 10.0]])
    model = imodmodel.ImodModel.from_file(path)
    assert (model.header.xmax, model.header.ymax, model.header.zmax) == (30, 8, 40)
    assert model.header.pixelsize == pytest.approx(7.5)


def test_relion4_hand_example(tmp_path):
    path = write_points(
        tmp_path / "p.star", POINT, features=pd.DataFrame({"score": [0.8]}),
        layout=UNROTATED, tomogram_name="TS_01",
    )
    df = starfile.read(path)
    row = df.iloc[0]
    assert (row.rlnCoordinateX, row.rlnCoordinateY, row.rlnCoordinateZ) == (20.0, 3.0, 10.0)
    assert row.rlnTomoName == "TS_01"
    assert row.rlnAutopickFigureOfMerit == pytest.approx(0.8)


def test_relion5_hand_example(tmp_path):
    # shape (z, y, x) = (8, 40, 30): centre (x, y, z) = (15, 20, 4) voxels; 10 Å voxels.
    path = write_points(
        tmp_path / "p.star", POINT, fmt="star5", layout=IDENTITY, voxel_size_a=10.0,
        tomogram_name="TS_01",
    )
    row = starfile.read(path).iloc[0]
    assert row.rlnCenteredCoordinateXAngst == pytest.approx(50.0)
    assert row.rlnCenteredCoordinateYAngst == pytest.approx(-100.0)
    assert row.rlnCenteredCoordinateZAngst == pytest.approx(-10.0)
    ps = read_points(path, layout=IDENTITY, voxel_size_a=10.0)  # auto-detects RELION 5
    assert np.allclose(ps.zyx, POINT)


def test_csv_hand_example(tmp_path):
    feats = pd.DataFrame({"score": [0.5], "label": ["good"]})
    path = write_points(tmp_path / "p.csv", POINT, features=feats, layout=UNROTATED)
    df = pd.read_csv(path)
    assert list(df.columns) == ["x", "y", "z", "score", "label"]
    assert df.loc[0, ["x", "y", "z"]].tolist() == [20, 3, 10]
    ps = read_points(path, layout=UNROTATED)
    assert np.allclose(ps.zyx, POINT)
    assert ps.features["label"].tolist() == ["good"]


def test_cetpick_detection_text_hand_example(tmp_path):
    path = write_points(
        tmp_path / "p.coords", POINT, features=pd.DataFrame({"score": [0.9]}), layout=UNROTATED
    )
    assert path.read_text() == "20 3 10 0.9\n"  # x z y score, napari frame
    ps = read_points(path)
    assert np.allclose(ps.zyx, POINT) and ps.features["score"].tolist() == [0.9]


def test_cetpick_coordinate_list_hand_example(tmp_path):
    path = write_points(tmp_path / "l.txt", POINT, fmt="cetpick_list", tomogram_name="tomo1")
    assert path.read_text() == "image_name\tx_coord\ty_coord\tz_coord\ntomo1\t20\t10\t3\n"
    ps = read_points(path)  # .txt with the cet_pick header is recognised
    assert np.allclose(ps.zyx, POINT) and ps.tomogram_name == "tomo1"


@pytest.mark.parametrize(
    "order, expected", [("xzy", (20, 10, 3)), ("xyz", (20, 3, 10)), ("zxy", (3, 10, 20))]
)
def test_imod_text_to_coordinate_list(tmp_path, order, expected):
    (tmp_path / "tomo1.txt").write_text("20.5 3.5 10\n")
    (tmp_path / "tomo2.txt").write_text("1.5 1.5 1\n2.5 2.5 2\n")
    out = imod_text_to_coordinate_list(tmp_path, tmp_path / "train_coords.txt", order=order)
    df = pd.read_csv(out, sep="\t")
    assert list(df.columns) == ["image_name", "x_coord", "y_coord", "z_coord"]
    row = df[df.image_name == "tomo1"].iloc[0]
    assert (row.x_coord, row.y_coord, row.z_coord) == expected
    assert (df.image_name == "tomo2").sum() == 2
    # Converting again must not pick up its own output.
    out = imod_text_to_coordinate_list(tmp_path, tmp_path / "train_coords.txt", order=order)
    assert set(read_coordinate_list(out)) == {"tomo1", "tomo2"}


def test_imod_text_to_coordinate_list_matches_layout(tmp_path):
    # xzy is an unrotated IMOD file: the list's (x, y, z) are its napari (x, y, z).
    write_points(tmp_path / "t.txt", POINT, layout=UNROTATED)
    out = imod_text_to_coordinate_list([tmp_path / "t.txt"], tmp_path / "c.tsv")
    assert np.allclose(read_coordinate_list(out)["t"], POINT)


# ---------------------------------------------------------------- round trips


def _random_points(shape_zyx, n=25, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 1, (n, 3)) * (np.asarray(shape_zyx) - 1)


@pytest.mark.parametrize("fmt", ["imod", "mod", "star", "star5", "csv", "cetpick"])
@pytest.mark.parametrize("thickness_axis", [0, 1, 2])
def test_round_trip(tmp_path, fmt, thickness_axis):
    file_shape = [30, 36, 44]
    file_shape[thickness_axis] = 12
    layout = FileLayout(thickness_axis, tuple(file_shape))
    zyx = np.round(_random_points(layout.shape_zyx), 2)
    feats = pd.DataFrame({"score": np.linspace(0, 1, len(zyx))})
    ext = {"imod": ".txt", "mod": ".mod", "star": ".star", "star5": ".star", "csv": ".csv",
           "cetpick": ".coords"}[fmt]
    path = write_points(
        tmp_path / f"p{ext}", zyx, feats, fmt=fmt, layout=layout, voxel_size_a=8.0,
        tomogram_name="T",
    )
    ps = read_points(path, fmt=fmt, layout=layout, voxel_size_a=8.0)
    assert np.allclose(ps.zyx, zyx, atol=1e-3)
    if fmt in ("star", "star5", "csv", "cetpick"):
        assert np.allclose(ps.features["score"], feats["score"], atol=1e-5)


def test_round_trip_cetpick_list_whole_voxels(tmp_path):
    mapping = {"a": np.array([[1, 2, 3], [4, 5, 6.0]]), "b": np.array([[7, 8, 9.0]])}
    path = write_coordinate_list(tmp_path / "c.txt", mapping)
    back = read_coordinate_list(path)
    assert set(back) == {"a", "b"}
    assert all(np.allclose(back[k], mapping[k]) for k in mapping)
    assert np.allclose(read_points(path, tomogram_name="b").zyx, mapping["b"])
    assert list_tomogram_names(path) == ["a", "b"]


def test_image_list_round_trip(tmp_path):
    mapping = {"t1": tmp_path / "t1.rec", "t2": tmp_path / "sub" / "t2.rec"}
    path = write_image_list(tmp_path / "imgs.txt", mapping)
    assert path.read_text().splitlines()[0] == "image_name\trec_path"
    assert read_image_list(path) == mapping


@pytest.mark.parametrize("fmt", ["imod", "mod", "star", "csv"])
def test_binning_scales_pixel_coordinates(tmp_path, fmt):
    ext = {"imod": ".txt", "mod": ".mod", "star": ".star", "csv": ".csv"}[fmt]
    plain = read_points(write_points(tmp_path / f"a{ext}", POINT, fmt=fmt), fmt=fmt).zyx
    path = write_points(tmp_path / f"b{ext}", POINT, fmt=fmt, binning=2)
    assert np.allclose(read_points(path, fmt=fmt, binning=2).zyx, plain)
    unbinned = read_points(path, fmt=fmt).zyx  # read without binning: the unbinned frame
    assert not np.allclose(unbinned, plain)


def test_binning_maps_voxel_centres_as_mean_pooling_does(tmp_path):
    """A binned voxel i is the mean of unbinned b*i .. b*i+b-1: its centre is b*i + (b-1)/2.

    The same definition as the engine's working voxels (data.Geometry), in every format.
    """
    from napari_cetpick.data import make_geometry
    from napari_cetpick.io import binned_to_unbinned, unbinned_to_binned

    # napari (z=3, y=10, x=20) on a tomogram binned by 2 -> unbinned (6.5, 20.5, 40.5)
    assert np.allclose(binned_to_unbinned(POINT, 2), [[6.5, 20.5, 40.5]])
    assert np.allclose(unbinned_to_binned([[6.5, 20.5, 40.5]], 2), POINT)
    geom = make_geometry(2, compress=False)
    assert np.allclose(geom.tomo_to_work(binned_to_unbinned(POINT, 2)), POINT)
    star = write_points(tmp_path / "p.star", POINT, fmt="star", binning=2)
    df = starfile.read(star)
    assert (df["rlnCoordinateX"][0], df["rlnCoordinateY"][0], df["rlnCoordinateZ"][0]) == (40.5, 20.5, 6.5)
    csv = pd.read_csv(write_points(tmp_path / "p.csv", POINT, fmt="csv", binning=2))
    assert (csv["x"][0], csv["y"][0], csv["z"][0]) == (40.5, 20.5, 6.5)
    # IMOD x, y are corner-based: b * (i + 0.5), IMOD's own model scaling; z is centre-based
    assert _numbers(write_points(tmp_path / "p.txt", POINT, fmt="imod", binning=2)) == [[41.0, 21.0, 6.5]]
    for ext in (".star", ".csv", ".txt", ".mod"):
        back = read_points(write_points(tmp_path / f"r{ext}", POINT, binning=3), binning=3).zyx
        assert np.allclose(back, POINT), ext


def test_star_several_tomograms_select_by_name(tmp_path):
    df = pd.DataFrame({
        "rlnTomoName": ["TS_1", "TS_1", "TS_2"],
        "rlnCoordinateX": [1.0, 2.0, 3.0],
        "rlnCoordinateY": [4.0, 5.0, 6.0],
        "rlnCoordinateZ": [7.0, 8.0, 9.0],
        "rlnLCCmax": [0.1, 0.2, 0.3],
    })
    path = tmp_path / "many.star"
    starfile.write({"particles": df}, path)
    assert list_tomogram_names(path) == ["TS_1", "TS_2"]
    with pytest.raises(CetpickError, match="2 tomograms"):
        read_points(path)
    ps = read_points(path, tomogram_name="TS_2")
    assert np.allclose(ps.zyx, [[9, 6, 3]]) and ps.tomogram_name == "TS_2"
    assert ps.features["score"].tolist() == [0.3]


def test_star_optics_block_and_relion5_columns_preferred_when_possible(tmp_path):
    optics = pd.DataFrame({"rlnOpticsGroup": [1], "rlnTomoTiltSeriesPixelSize": [1.35]})
    parts = pd.DataFrame({
        "rlnTomoName": ["T"],
        "rlnCenteredCoordinateXAngst": [0.0],
        "rlnCenteredCoordinateYAngst": [0.0],
        "rlnCenteredCoordinateZAngst": [0.0],
    })
    path = tmp_path / "r5.star"
    starfile.write({"optics": optics, "particles": parts}, path)
    ps = read_points(path, shape_zyx=(8, 40, 30), voxel_size_a=10.0)
    assert np.allclose(ps.zyx, [[4, 20, 15]])  # the centre is size / 2


def test_formats_constant():
    assert FORMATS == ("imod", "mod", "star", "star5", "csv", "cetpick", "cetpick_list")


# ---------------------------------------------------------------- particle classes

# Points of two classes (and a third class without points), on quarter voxels so that every
# format (.mod holds float32) gives them back exactly.
CLASS_ZYX = np.array([[3.0, 10.0, 20.25], [1.5, 5.0, 7.0], [6.0, 33.75, 2.0], [0.0, 0.5, 29.0]])
CLASS_FEATS = pd.DataFrame({"score": [0.9, 0.8, 0.7, 0.6], "class": ["ribo", "apo", "ribo", "apo"]})
CLASS_NAMES = ["apo", "ribo", "empty"]


@pytest.mark.parametrize("fmt", ["csv", "star", "star5", "mod"])
@pytest.mark.parametrize("layout", [IDENTITY, UNROTATED], ids=["thickness_first", "unrotated_imod"])
def test_classes_round_trip_exactly(tmp_path, fmt, layout):
    ext = {"csv": ".csv", "star": ".star", "star5": ".star", "mod": ".mod"}[fmt]
    path = write_points(tmp_path / f"p{ext}", CLASS_ZYX, CLASS_FEATS, fmt=fmt, layout=layout, voxel_size_a=10.0,
                        tomogram_name="TS_1", class_names=CLASS_NAMES)
    ps = read_points(path, fmt=fmt, layout=layout, voxel_size_a=10.0)
    got = ps.features["class"].tolist()
    if fmt == "mod":  # one object per class, in class order
        order = np.argsort([CLASS_NAMES.index(c) for c in CLASS_FEATS["class"]], kind="stable")
    else:
        order = np.arange(len(CLASS_ZYX))
    assert got == CLASS_FEATS["class"][order].tolist()
    np.testing.assert_array_equal(ps.zyx, CLASS_ZYX[order])


def test_classes_in_star_files(tmp_path):
    path = write_points(tmp_path / "p.star", CLASS_ZYX, CLASS_FEATS, layout=UNROTATED, tomogram_name="TS_1",
                        class_names=CLASS_NAMES)
    df = starfile.read(path)
    assert df["rlnClassNumber"].tolist() == [2, 1, 2, 1]  # 1-based, in the order of class_names
    assert df["cetpickClassName"].tolist() == ["ribo", "apo", "ribo", "apo"]
    ps = read_points(path, layout=UNROTATED)
    assert ps.features["rlnClassNumber"].tolist() == [2, 1, 2, 1]
    # without class_names the classes are numbered in order of first appearance
    df = starfile.read(write_points(tmp_path / "q.star", CLASS_ZYX, CLASS_FEATS, layout=UNROTATED))
    assert df["rlnClassNumber"].tolist() == [1, 2, 1, 2]


def test_classes_in_mod_files_are_named_coloured_objects(tmp_path):
    path = write_points(tmp_path / "p.mod", CLASS_ZYX, CLASS_FEATS, layout=UNROTATED, class_names=CLASS_NAMES,
                        class_colours={"apo": "#ff8000", "ribo": "#0000ff"})
    model = imodmodel.ImodModel.from_file(path)
    assert [o.header.name for o in model.objects] == CLASS_NAMES
    assert [sum(len(c.points) for c in o.contours) for o in model.objects] == [2, 2, 0]
    assert all(o.header.flags.scattered for o in model.objects)
    assert model.objects[0].color == pytest.approx((1.0, 128 / 255, 0.0))
    assert model.objects[1].color == pytest.approx((0.0, 0.0, 1.0))
    # IMOD's own reader: object 1 holds the "ribo" points
    df = imodmodel.read(path)
    xyz = df.loc[df["object_id"] == 1, ["x", "y", "z"]].to_numpy()
    np.testing.assert_array_equal(xyz, [[20.75, 3.5, 10.0], [2.5, 6.5, 33.75]])
    ps = read_points(path, layout=UNROTATED)
    assert ps.features["object_id"].tolist() == [0, 0, 1, 1]
    with pytest.raises(CetpickError, match="#rrggbb"):
        write_points(tmp_path / "q.mod", CLASS_ZYX, CLASS_FEATS, class_colours={"apo": "orange"})


def test_mod_from_3dmod_with_named_objects_gives_classes(tmp_path):
    df = pd.DataFrame({"x": [1.5, 2.5, 3.5], "y": [1.5, 2.5, 3.5], "z": [1.0, 2.0, 3.0],
                       "object_id": [0, 1, 1], "contour_id": [0, 0, 1]}).astype(np.float32)
    model = imodmodel.ImodModel.from_dataframe(df)
    model.objects[1].header.name = "membrane"
    path = tmp_path / "m.mod"
    model.to_file(path)
    ps = read_points(path)
    assert ps.features["class"].tolist() == ["object1", "membrane", "membrane"]
    assert ps.features["object_id"].tolist() == [0, 1, 1]


@pytest.mark.parametrize("ext", [".txt", ".coords"])
def test_one_class_formats_refuse_several_classes(tmp_path, ext):
    with pytest.raises(CetpickError, match="one file per class"):
        write_points(tmp_path / f"p{ext}", CLASS_ZYX, CLASS_FEATS)
    # one class is fine, and the file is the one written without a class column
    one = CLASS_FEATS.assign(**{"class": "apo"})
    a = write_points(tmp_path / f"a{ext}", CLASS_ZYX, one)
    b = write_points(tmp_path / f"b{ext}", CLASS_ZYX, CLASS_FEATS[["score"]])
    assert a.read_bytes() == b.read_bytes()


def test_class_not_among_the_names_given_is_refused(tmp_path):
    with pytest.raises(CetpickError, match="'ribo', which is not one of the classes"):
        write_points(tmp_path / "p.star", CLASS_ZYX, CLASS_FEATS, class_names=["apo"])


def test_csv_class_names_stay_text(tmp_path):
    feats = pd.DataFrame({"class": ["1", "2", "1", "2"]})
    ps = read_points(write_points(tmp_path / "p.csv", CLASS_ZYX, feats))
    assert ps.features["class"].tolist() == ["1", "2", "1", "2"]


def test_star_keeps_the_detectors_per_pick_columns(tmp_path):
    """Score, margin, view agreement and profile excess: written under their STAR labels (read
    with starfile), read back as the same features."""
    from napari_cetpick.io.points import STAR_EXTRA_LABELS

    zyx = np.array([[3.0, 10.0, 20.0], [4.0, 11.5, 21.25]])
    feats = pd.DataFrame({"score": [0.9, 0.4], "margin": [2.2, -0.4], "agreement": [0.95, 0.7],
                          "profile_excess": [0.0, 12.5]})
    path = write_points(tmp_path / "p.star", zyx, features=feats, layout=UNROTATED)
    df = starfile.read(path)
    df = df["particles"] if isinstance(df, dict) else df
    for col, label in STAR_EXTRA_LABELS.items():
        np.testing.assert_allclose(df[label].to_numpy(float), feats[col].to_numpy(float))
    back = read_points(path, layout=UNROTATED)
    np.testing.assert_allclose(back.zyx, zyx, atol=1e-3)
    for col in feats.columns:
        np.testing.assert_allclose(back.features[col].to_numpy(float), feats[col].to_numpy(float), atol=1e-4)
