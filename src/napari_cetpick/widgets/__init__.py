"""Qt widgets of napari-cetpick (the only package that imports Qt or magicgui).

``PickerWidget`` is the dock widget named in the plugin manifest.
"""
from napari_cetpick.widgets._picker import PickerWidget

__all__ = ["PickerWidget"]
