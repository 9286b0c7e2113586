"""Small building blocks shared by the panel's sections."""
from __future__ import annotations

import math

from magicgui.widgets import Container, Label
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QComboBox, QSizePolicy


def fmt_duration(seconds: float) -> str:
    """``75`` -> ``"1 min 15 s"``."""
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, s = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {s:02d} s"
    hours, m = divmod(minutes, 60)
    return f"{hours} h {m:02d} min"


def plural(n: int, word: str) -> str:
    """``plural(1, "label")`` -> ``"1 label"``, ``plural(3, "label")`` -> ``"3 labels"``."""
    return f"{n} {word}{'' if n == 1 else 's'}"


def row(*widgets, label: str = "") -> Container:
    """A horizontal row of widgets with no margins."""
    box = Container(layout="horizontal", labels=False, widgets=list(widgets), label=label)
    box.margins = (0, 0, 0, 0)
    return box


def holder(qwidget, label: str = "") -> Container:
    """A magicgui container holding a plain QWidget (the plots, the collapsible, tables)."""
    box = Container(labels=False, label=label)
    box.margins = (0, 0, 0, 0)
    box.native.layout().addWidget(qwidget)
    return box


def heading(text: str) -> Container:
    return row(Label(value=f"<b>{text}</b>"))


def status_label(value: str = "", tooltip: str = "") -> Label:
    """A label that wraps and uses the panel's width (magicgui labels are fixed-size)."""
    label = Label(value=value, tooltip=tooltip)
    label.native.setWordWrap(True)
    label.native.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
    label.native.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
    label.native.setMinimumWidth(40)
    return label


def narrow(*widgets, chars: int = 6) -> None:
    """Let combo boxes and spin boxes shrink with the dock instead of clipping the panel.

    A QComboBox asks for the width of its longest item by default, which pushes the
    panel wider than napari's dock and cuts off the right edge.
    """
    for w in widgets:
        native = getattr(w, "native", w)
        combos = [native] if isinstance(native, QComboBox) else native.findChildren(QComboBox)
        for combo in combos:
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(chars)
        native.setMinimumWidth(0)
        native.setSizePolicy(QSizePolicy.Policy.Expanding, native.sizePolicy().verticalPolicy())


def section(title: str, widgets) -> list:
    """The widgets of a section, after its heading."""
    return [heading(title), *widgets]
