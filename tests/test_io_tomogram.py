"""Tomogram reading/writing: layouts, voxel size, memory mapping."""
import subprocess
import sys

import mrcfile
import numpy as np
import pytest

from napari_cetpick.errors import CetpickError
from napari_cetpick.io import (
    FileLayout,
    guess_thickness_axis,
    open_tomogram,
    sample_voxels,
    write_tomogram,
)


def _write_raw(path, file_array, voxel_size=10.0):
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(np.asarray(file_array))
        mrc.voxel_size = voxel_size
    return path


@pytest.mark.parametrize(
    "file_shape, expected_axis",
    [((8, 40, 30), 0), ((40, 8, 30), 1), ((40, 30, 8), 2), ((16, 16, 32), 0), ((20, 16, 16), 1)],
)
def test_thickness_axis_is_thinnest_ties_to_first(file_shape, expected_axis):
    assert guess_thickness_axis(file_shape) == expected_axis


@pytest.mark.parametrize("thickness_axis", [0, 1, 2])
def test_view_is_pure_transpose(tmp_path, thickness_axis):
    file_shape = [20, 24, 28]
    file_shape[thickness_axis] = 6
    vol = np.arange(np.prod(file_shape), dtype=np.float32).reshape(file_shape)
    path = _write_raw(tmp_path / "t.mrc", vol)
    tomo = open_tomogram(path)
    layout = tomo.layout
    assert layout.thickness_axis == thickness_axis
    assert tomo.data.shape[0] == 6
    others = [s for a, s in enumerate(file_shape) if a != thickness_axis]
    assert tomo.data.shape[1:] == tuple(others)  # other axes keep their file order
    # Each napari voxel is the file voxel the layout maps it to.
    rng = np.random.default_rng(0)
    zyx = np.stack([rng.integers(0, n, 10) for n in tomo.data.shape], axis=1)
    file_idx = layout.to_file(zyx).astype(int)
    assert np.array_equal(
        tomo.data[tuple(zyx.T)], vol[tuple(file_idx.T)]
    )
    assert np.allclose(layout.to_napari(file_idx), zyx)


def test_thickness_override(tmp_path):
    path = _write_raw(tmp_path / "t.rec", np.zeros((8, 20, 30), np.float32))
    assert open_tomogram(path, thickness_axis=2).data.shape == (30, 8, 20)


def test_voxel_size_header_and_override(tmp_path):
    path = _write_raw(tmp_path / "t.mrc", np.zeros((4, 8, 8), np.float32), voxel_size=13.5)
    tomo = open_tomogram(path)
    assert tomo.voxel_size_a == pytest.approx(13.5)
    assert tomo.header_voxel_size_a == pytest.approx(13.5)
    tomo = open_tomogram(path, voxel_size_a=6.75)
    assert tomo.voxel_size_a == 6.75 and tomo.header_voxel_size_a == pytest.approx(13.5)


@pytest.mark.parametrize("header_value", [0.0, 1.0])
def test_placeholder_voxel_size_is_unknown_and_reported(tmp_path, header_value):
    path = _write_raw(tmp_path / "t.mrc", np.zeros((4, 8, 8), np.float32), voxel_size=header_value)
    tomo = open_tomogram(path)
    assert tomo.voxel_size_a is None
    assert tomo.header_voxel_size_a == pytest.approx(header_value)
    assert tomo.notes and "unknown" in tomo.notes[0]
    assert open_tomogram(path, voxel_size_a=8.0).voxel_size_a == 8.0


@pytest.mark.parametrize("thickness_axis", [0, 1, 2])
def test_write_tomogram_round_trip_in_layout(tmp_path, thickness_axis):
    rng = np.random.default_rng(1)
    data_zyx = rng.normal(size=(5, 12, 9)).astype(np.float32)
    layout = FileLayout(thickness_axis)
    path = write_tomogram(tmp_path / "w.mrc", data_zyx, voxel_size_a=4.2, layout=layout)
    with mrcfile.open(path) as mrc:
        assert mrc.voxel_size.x == pytest.approx(4.2)
        assert mrc.data.dtype == np.float32
        assert mrc.data.shape[thickness_axis] == 5
        assert mrc.is_volume()
    back = open_tomogram(path, thickness_axis=thickness_axis)
    assert np.array_equal(np.asarray(back.data), data_zyx)
    assert back.voxel_size_a == pytest.approx(4.2)


def test_write_keeps_small_integer_dtypes(tmp_path):
    data = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    path = write_tomogram(tmp_path / "i.mrc", data)
    with mrcfile.open(path) as mrc:
        assert mrc.data.dtype == np.int16
    assert open_tomogram(path).voxel_size_a is None  # no voxel size written -> unknown


def test_write_refuses_existing_without_overwrite(tmp_path):
    path = write_tomogram(tmp_path / "a.mrc", np.zeros((2, 3, 4), np.float32))
    with pytest.raises(CetpickError, match="exists"):
        write_tomogram(path, np.zeros((2, 3, 4), np.float32), overwrite=False)


def test_data_is_memory_mapped_and_read_only(tmp_path):
    path = _write_raw(tmp_path / "t.mrc", np.ones((6, 16, 16), np.float32))
    tomo = open_tomogram(path)
    base = tomo.data
    while base.base is not None and not isinstance(base, np.memmap):
        base = base.base
    assert isinstance(base, np.memmap)
    assert not tomo.data.flags.writeable
    assert not isinstance(open_tomogram(path, mmap=False).data.base, np.memmap)


def test_sample_voxels_is_bounded():
    data = np.zeros((100, 200, 300), np.float32)
    assert 0 < sample_voxels(data, max_voxels=10_000).size <= 20_000
    assert 0 < sample_voxels(data.transpose(1, 0, 2), max_voxels=10_000).size <= 20_000


_RSS_SCRIPT = r"""
import sys, numpy as np, mrcfile
from napari_cetpick.io import open_tomogram
path = sys.argv[1]
def rss_mb():
    # Anonymous memory only: mapped file pages live in the page cache and can be dropped.
    with open("/proc/self/status") as fh:
        line = next(l for l in fh if l.startswith("RssAnon:"))
    return int(line.split()[1]) / 1024
before = rss_mb()
tomo = open_tomogram(path)
_ = float(tomo.data[5, 10, 10])
print(rss_mb() - before, tomo.data.shape)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_opening_a_large_file_does_not_load_it(tmp_path):
    # 256 MiB file created sparse by new_mmap: opening must not pull it into RAM.
    path = tmp_path / "big.mrc"
    shape = (64, 1024, 1024)
    with mrcfile.new_mmap(path, shape=shape, mrc_mode=2) as mrc:
        mrc.voxel_size = 10.0
    out = subprocess.run(
        [sys.executable, "-c", _RSS_SCRIPT, str(path)], capture_output=True, text=True, check=True
    )
    grown_mb = float(out.stdout.split()[0])
    assert grown_mb < 32, f"opening grew RSS by {grown_mb:.0f} MiB"


def test_write_heatmap_overlays_in_file_frame(tmp_path):
    import mrcfile

    from napari_cetpick.io import FileLayout, write_heatmap

    heat = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)  # napari (z, y, x) grid
    # unrotated IMOD layout: napari z is file axis 1, napari y file axis 0
    path = write_heatmap(tmp_path / "h.mrc", heat, (1, 2, 2), (0, 0.5, 0.5), voxel_size_a=10.0,
                         layout=FileLayout(1, (10, 4, 12)))
    with mrcfile.open(path) as mrc:
        assert mrc.data.shape == (5, 4, 6)  # file (a0=y, a1=z, a2=x)
        assert np.array_equal(mrc.data[2, 1, :], heat[1, 2, :])
        vs = mrc.voxel_size
        # x = napari x (20 Å), y (file a1) = napari z (10 Å), z (file a0) = napari y (20 Å)
        assert (float(vs.x), float(vs.y), float(vs.z)) == (20.0, 10.0, 20.0)
        o = mrc.header.origin
        # IMOD origin: first heatmap corner at translate + 0.5 - scale / 2 = 0 voxels from the
        # tomogram's first corner on every axis here
        assert (float(o.x), float(o.y), float(o.z)) == (0.0, 0.0, 0.0)


def test_heatmap_header_overlays_its_tomogram_in_imod_and_napari(tmp_path):
    """Hand-computed IMOD origin that keeps the tomogram's origin; the reader restores the frame."""
    import mrcfile

    from napari_cetpick._napari.reader import read_files
    from napari_cetpick.data import make_geometry
    from napari_cetpick.io import FileLayout, heatmap_frame, open_tomogram, write_heatmap, write_tomogram

    # an unrotated IMOD tomogram (thickness on file axis 1) with its own header origin
    vol = np.zeros((12, 40, 48), np.float32)  # napari (z, y, x)
    layout = FileLayout(1, (40, 12, 48))
    tpath = write_tomogram(tmp_path / "t.rec", vol, voxel_size_a=10.0, layout=layout)
    with mrcfile.open(tpath, mode="r+") as mrc:
        mrc.header.origin = (30.0, -20.0, 50.0)  # x, y, z in Å
    tomo = open_tomogram(tpath, thickness_axis=1)
    assert tomo.origin_a == (30.0, -20.0, 50.0)
    geom = make_geometry(2, compress=False)  # bin 2: scale (2, 4, 4), translate (0.5, 1.5, 1.5)
    heat = np.random.default_rng(0).random((6, 10, 12)).astype(np.float32)
    hpath = write_heatmap(tmp_path / "t_heatmap.mrc", heat, geom.grid_scale, geom.grid_translate,
                          voxel_size_a=10.0, layout=tomo.layout, origin_a=tomo.origin_a)
    with mrcfile.open(hpath) as mrc:
        o, vs = mrc.header.origin, mrc.voxel_size
        # IMOD's origin is the coordinate origin seen from the file's first corner (the corner
        # lies at -origin; Chimera uses the other sign). First heatmap corner, in tomogram
        # voxels from the tomogram's first corner: translate + 0.5 - scale / 2 =
        # z: 0.5 + 0.5 - 1 = 0, y and x: 1.5 + 0.5 - 2 = 0 (a grid cell covers the 4 voxels
        # it bins), so the heatmap's first corner is the tomogram's: the same origin.
        assert (float(o.x), float(o.y), float(o.z)) == (30.0, -20.0, 50.0)
        assert (float(vs.x), float(vs.y), float(vs.z)) == (40.0, 20.0, 40.0)
    # the same in IMOD's terms: a voxel centre's position (corner-based index x voxel size
    # - origin) is the same in the heatmap and in the tomogram, on every axis
    i = np.array([[2.0, 3.0, 4.0]])  # a heatmap index (napari z, y, x)
    t = i * geom.grid_scale + geom.grid_translate  # the tomogram voxel it sits on
    h_file, t_file = FileLayout(1).to_file(i)[0], FileLayout(1).to_file(t)[0]
    h_pos = (h_file[::-1] + 0.5) * np.array([40.0, 20.0, 40.0]) - np.array([30.0, -20.0, 50.0])
    t_pos = (t_file[::-1] + 0.5) * 10.0 - np.array([30.0, -20.0, 50.0])
    assert np.allclose(h_pos, t_pos)
    # napari: the reader puts the re-opened heatmap on the tomogram layer (voxel units)
    frame = heatmap_frame(hpath)
    assert frame["thickness_axis"] == 1
    assert np.allclose(frame["scale"], geom.grid_scale) and np.allclose(frame["translate"], geom.grid_translate)
    (data, kwargs, kind), = read_files(str(hpath))
    assert kind == "image" and data.shape == heat.shape and np.array_equal(np.asarray(data), heat)
    assert np.allclose(kwargs["scale"], [2, 4, 4]) and np.allclose(kwargs["translate"], [0.5, 1.5, 1.5])
    # a plain tomogram stays in voxel units
    (_, tkw, _), = read_files(str(tpath))
    assert tkw["scale"] == (1.0, 1.0, 1.0) and "translate" not in tkw


def test_heatmap_layer_saved_from_napari_keeps_its_frame(tmp_path):
    from napari_cetpick._napari.reader import read_files
    from napari_cetpick._napari.writer import write_image
    from napari_cetpick.io import FileLayout, heatmap_frame, write_heatmap

    heat = np.random.default_rng(1).random((4, 6, 8)).astype(np.float32)
    src = write_heatmap(tmp_path / "h.mrc", heat, (1, 2, 2), (0, 0, 0), voxel_size_a=7.5,
                        layout=FileLayout(0), origin_a=(1.0, 2.0, 3.0))
    (data, kwargs, _), = read_files(str(src))
    out = write_image(str(tmp_path / "copy.mrc"), np.asarray(data), kwargs)
    assert heatmap_frame(out[0]) == heatmap_frame(src)
