"""The particle classes of the panel: choose the class to label, train and review; add one.

Each class has its own diameter (the data section's diameter field shows the selected
class's), colour, labels and negatives layers per tomogram, picks, threshold and review.
Train trains one model for every class with labels.
"""
from __future__ import annotations

from magicgui.widgets import ComboBox, Container, LineEdit, PushButton
from napari.utils.notifications import show_error, show_info

from napari_cetpick._napari.session import PanelState
from napari_cetpick.errors import CetpickError
from napari_cetpick.widgets._common import narrow


class ClassRow(Container):
    """"Class [ribosome ▾] [new name] [Add class] [Rename]" in the data section (which labels it)."""

    def __init__(self, state: PanelState):
        super().__init__(layout="horizontal", labels=False, label="Class")
        self._state = state
        self._updating = False
        self._class_combo = ComboBox(
            choices=self._choices, value=state.active_class,
            tooltip="The particle class you label, train, detect and review now. Labels, negatives, picks, "
                    "threshold and diameter are per class; Train trains one model for every class with labels.")
        self._class_name_edit = LineEdit(value="", tooltip="Name of a new class (letters, digits, '-', '_', '.'; "
                                                           "no spaces), e.g. proteasome.")
        self._add_class_button = PushButton(text="Add class", tooltip="Add a class with this name (its diameter starts "
                                                                     "as the selected class's) and select it.")
        self._rename_class_button = PushButton(text="Rename", tooltip="Give the selected class the name typed here.")
        narrow(self._class_combo, self._class_name_edit)
        self.margins = (0, 0, 0, 0)
        self.extend([self._class_combo, self._class_name_edit, self._add_class_button, self._rename_class_button])
        self._class_combo.changed.connect(self._on_class_changed)
        self._add_class_button.changed.connect(self._on_add_class_clicked)
        self._rename_class_button.changed.connect(self._on_rename_class_clicked)
        state.classes_changed.connect(self._refresh)
        state.class_changed.connect(self._refresh)

    def _choices(self, widget=None) -> list[str]:
        return self._state.class_names

    def _refresh(self, *_) -> None:
        self._updating = True
        try:
            self._class_combo.reset_choices()
            self._class_combo.value = self._state.active_class
        finally:
            self._updating = False

    def _on_class_changed(self, name=None) -> None:
        if not self._updating and name:
            self._state.set_class(str(name))

    def _on_add_class_clicked(self, *_) -> None:
        self.add_class(str(self._class_name_edit.value))

    def add_class(self, name: str) -> bool:
        """Add a class and select it; False (the reason shown) when the name cannot be used."""
        try:
            c = self._state.add_class(name)
        except CetpickError as err:
            show_error(str(err))
            return False
        self._class_name_edit.value = ""
        show_info(f"Class {c.name} added: set its diameter, then click its particles ('New labels').")
        return True

    def _on_rename_class_clicked(self, *_) -> None:
        try:
            self._state.rename_class(self._state.active_class, str(self._class_name_edit.value))
        except CetpickError as err:
            show_error(str(err))
            return
        self._class_name_edit.value = ""
