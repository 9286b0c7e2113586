"""Bad input: each problem raises CetpickError naming the file, or the reader declines."""
import mrcfile
import numpy as np
import pandas as pd
import pytest
import starfile

from napari_cetpick._napari.reader import get_reader
from napari_cetpick.errors import CetpickError
from napari_cetpick.io import FileLayout, open_tomogram, read_points, write_points


def _raises_naming(path, func, *args, match=None, **kwargs):
    with pytest.raises(CetpickError, match=match) as info:
        func(*args, **kwargs)
    assert path.name in str(info.value)
    return str(info.value)


def _mrc(path, data, **header):
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(np.asarray(data))
        for key, value in header.items():
            setattr(mrc.header, key, value)
    return path


# ---------------------------------------------------------------- tomograms


def test_not_an_mrc(tmp_path):
    path = tmp_path / "notes.mrc"
    path.write_text("this is not an MRC file at all\n" * 50)
    _raises_naming(path, open_tomogram, path, match="not a readable MRC")


def test_truncated_mrc(tmp_path):
    path = _mrc(tmp_path / "cut.mrc", np.ones((8, 32, 32), np.float32))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    _raises_naming(path, open_tomogram, path, match="truncated")


def test_2d_image(tmp_path):
    path = _mrc(tmp_path / "image.mrc", np.ones((32, 32), np.float32))
    _raises_naming(path, open_tomogram, path, match="2D image")


def test_stack_of_2d_images(tmp_path):
    path = tmp_path / "stack.mrc"
    with mrcfile.new(path) as mrc:
        mrc.set_data(np.ones((5, 32, 32), np.float32))
        mrc.set_image_stack()
    _raises_naming(path, open_tomogram, path, match="stack of 2D images")


def test_tilt_series_st(tmp_path):
    path = _mrc(tmp_path / "ts.st", np.ones((41, 32, 32), np.float32), ispg=0)
    _raises_naming(path, open_tomogram, path, match="stack of 2D images")


def test_imod_volume_with_space_group_zero_is_accepted(tmp_path):
    # IMOD writes space group 0 for reconstructions too; mz == nz tells them apart.
    path = _mrc(tmp_path / "rec.rec", np.ones((8, 32, 32), np.float32), ispg=0)
    assert open_tomogram(path).data.shape == (8, 32, 32)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_voxels(tmp_path, bad):
    vol = np.zeros((8, 32, 32), np.float32)
    vol[:, ::2, :] = bad  # found by the strided sample without reading the whole file
    path = _mrc(tmp_path / "nan.mrc", vol)
    _raises_naming(path, open_tomogram, path, match="NaN or Inf")


def test_voxel_size_zero_is_reported_not_an_error(tmp_path):
    path = _mrc(tmp_path / "v0.mrc", np.ones((8, 16, 16), np.float32))
    tomo = open_tomogram(path)  # mrcfile writes 0 Å by default
    assert tomo.voxel_size_a is None
    assert any("unknown" in n and path.name in n for n in tomo.notes)


def test_unknown_tomogram_extension(tmp_path):
    path = tmp_path / "vol.tif"
    path.write_bytes(b"\0" * 100)
    _raises_naming(path, open_tomogram, path, match="extension")


def test_missing_file(tmp_path):
    path = tmp_path / "gone.mrc"
    _raises_naming(path, open_tomogram, path, match="not found")


# ---------------------------------------------------------------- coordinates


def test_points_outside_the_volume_on_read(tmp_path):
    path = tmp_path / "far.txt"
    path.write_text("10.5 10.5 3\n500.5 10.5 3\n")
    msg = _raises_naming(path, read_points, path, shape_zyx=(8, 40, 30), match="outside")
    assert "1 of 2" in msg


def test_points_outside_the_volume_on_write(tmp_path):
    path = tmp_path / "out.star"
    _raises_naming(
        path, write_points, path, [[100.0, 1.0, 1.0]], layout=FileLayout(0, (8, 40, 30)),
        match="outside",
    )
    assert not path.exists()


@pytest.mark.parametrize(
    "text, match",
    [
        ("1 2 3\n4 5 six\n", "line 2"),
        ("1 2 3\n4 5\n", "line 2"),
        ("1 2 3\n4 5 6 7\n", "line 2"),
        ("", "no coordinates"),
        ("\n\n   \n", "no coordinates"),
        ("1 2 nan\n", "NaN"),
    ],
)
def test_malformed_or_empty_imod_text(tmp_path, text, match):
    path = tmp_path / "bad.txt"
    path.write_text(text)
    _raises_naming(path, read_points, path, match=match)


def test_binary_garbage_as_text(tmp_path):
    path = tmp_path / "garbage.coords"
    path.write_bytes(bytes(range(256)) * 4)
    _raises_naming(path, read_points, path)


def test_star_without_coordinate_columns(tmp_path):
    path = tmp_path / "nocoords.star"
    starfile.write({"particles": pd.DataFrame({"rlnAngleRot": [1.0], "rlnTomoName": ["a"]})}, path)
    _raises_naming(path, read_points, path, match="no coordinate columns")


def test_relion5_without_voxel_size(tmp_path):
    path = tmp_path / "r5.star"
    cols = [f"rlnCenteredCoordinate{a}Angst" for a in "XYZ"]
    starfile.write({"particles": pd.DataFrame({c: [0.0] for c in cols})}, path)
    _raises_naming(path, read_points, path, shape_zyx=(8, 8, 8), match="voxel size")
    _raises_naming(path, read_points, path, voxel_size_a=10.0, match="shape")


def test_star_unknown_tomogram_name(tmp_path):
    path = tmp_path / "one.star"
    df = pd.DataFrame({"rlnTomoName": ["a"], "rlnCoordinateX": [1.0],
                       "rlnCoordinateY": [1.0], "rlnCoordinateZ": [1.0]})
    starfile.write({"particles": df}, path)
    _raises_naming(path, read_points, path, tomogram_name="zzz", match="no points for tomogram")


def test_csv_without_xyz(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("a,b,c\n1,2,3\n")
    _raises_naming(path, read_points, path, match="x, y and z")


def test_csv_with_text_in_coordinates(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("x,y,z\n1,2,three\n")
    _raises_naming(path, read_points, path, match="non-numbers")


def test_corrupt_mod(tmp_path):
    path = tmp_path / "bad.mod"
    path.write_bytes(b"IMODV1.2" + b"\x00" * 10)
    _raises_naming(path, read_points, path, match="IMOD model")


def test_image_list_is_not_coordinates(tmp_path):
    path = tmp_path / "imgs.txt"
    path.write_text("image_name\trec_path\nt1\tt1.rec\n")
    _raises_naming(path, read_points, path, match="image list")


def test_unknown_coordinate_extension(tmp_path):
    path = tmp_path / "p.xyz"
    path.write_text("1 2 3\n")
    _raises_naming(path, read_points, path, match="extension")
    _raises_naming(path, write_points, path, [[1.0, 2.0, 3.0]], match="extension")


def test_unknown_format_name(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("1 2 3\n")
    _raises_naming(path, read_points, path, fmt="pdb", match="unknown coordinate format")


# ---------------------------------------------------------------- napari reader declines


@pytest.mark.parametrize(
    "name, content",
    [
        ("picture.tif", b"II*\x00"),
        ("notes.txt", b"Some notes about the grid, not numbers.\n"),
        ("imgs.txt", b"image_name\trec_path\nt\tt.rec\n"),
        ("empty.txt", b""),
        ("binary.coords", bytes(range(256))),
    ],
)
def test_get_reader_declines(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    assert get_reader(str(path)) is None


def test_get_reader_accepts_but_reports_a_bad_mrc(tmp_path):
    # A broken tomogram is ours to explain: the reader raises a plain CetpickError.
    path = tmp_path / "bad.mrc"
    path.write_text("nope")
    reader = get_reader(str(path))
    assert callable(reader)
    with pytest.raises(CetpickError, match="bad.mrc"):
        reader(str(path))
