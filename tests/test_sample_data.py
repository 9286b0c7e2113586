"""The napari sample tomogram: LayerData without a viewer, and through the plugin in a viewer."""
import numpy as np
import pytest

from napari_cetpick.synthetic import CLASS_DIAMETERS_A


@pytest.fixture(scope="module")
def layer_data():
    from napari_cetpick._napari.sample import sample_tomogram

    return sample_tomogram()


def test_sample_layer_data(layer_data):
    names = [kwargs["name"] for _, kwargs, _ in layer_data]
    assert names == ["synthetic tomogram", *[f"truth: {c}" for c in CLASS_DIAMETERS_A], "labels"]

    data, kwargs, kind = layer_data[0]
    assert kind == "image" and data.dtype == np.float32 and data.ndim == 3
    meta = kwargs["metadata"]["cetpick"]
    assert meta["voxel_size_a"] == 10.0 and meta["header_voxel_size_a"] == 10.0
    assert meta["thickness_axis"] == 0 and meta["path"] is None
    assert tuple(meta["file_shape"]) == data.shape
    lo, hi = kwargs["contrast_limits"]
    assert lo < hi

    truth = {}
    for zyx, kw, kind in layer_data[1:-1]:
        name = kw["name"].removeprefix("truth: ")
        assert kind == "points" and kw["visible"] is False and kw["projection_mode"] == "rescale_spherical"
        assert kw["size"] == pytest.approx(CLASS_DIAMETERS_A[name] / 10.0)
        assert zyx.shape[1] == 3 and len(zyx) > 0
        truth[name] = zyx

    labels, kw, kind = layer_data[-1]
    label_class = kw["metadata"]["cetpick"]["label_class"]
    assert kind == "points" and kw.get("visible", True) and label_class == "ribosome"
    assert kw["size"] == pytest.approx(25.0)
    assert len(labels) > 0
    for p in labels:
        assert np.any(np.all(truth[label_class] == p, axis=1))


def test_sample_is_deterministic(layer_data):
    from napari_cetpick._napari.sample import sample_tomogram

    again = sample_tomogram()
    np.testing.assert_array_equal(again[0][0], layer_data[0][0])
    np.testing.assert_array_equal(again[-1][0], layer_data[-1][0])


def test_sample_kwargs_make_valid_layers(layer_data):
    # Building the layers checks every keyword against napari without opening a viewer.
    from napari.layers import Image, Points

    for data, kwargs, kind in layer_data:
        layer = Image(data, **kwargs) if kind == "image" else Points(data, **kwargs)
        assert layer.name == kwargs["name"]
        if kind == "points":
            assert len(layer.features.columns) == 0


@pytest.mark.gui
def test_open_sample_in_viewer(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-cetpick", "synthetic")
    names = [layer.name for layer in viewer.layers]
    assert "synthetic tomogram" in names and "labels" in names
    assert viewer.layers["labels"].visible and not viewer.layers["truth: ribosome"].visible
