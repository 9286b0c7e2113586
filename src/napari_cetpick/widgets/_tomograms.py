"""A table of the open tomograms with their labels, negatives, picks and threshold (of the
selected class, named in the first column's header when there are several)."""
from __future__ import annotations

from magicgui.widgets import Container
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QAbstractItemView, QHeaderView, QTableWidget, QTableWidgetItem

from napari_cetpick.widgets import _layers as L
from napari_cetpick._napari.session import PanelState

COLUMNS = ("Tomogram", "Labels", "Neg.", "Picks", "Threshold")


class TomogramTable(Container):
    """One row per open tomogram; clicking a row selects that tomogram in the panel."""

    def __init__(self, state: PanelState, select):
        super().__init__(labels=False)
        self._state, self._select = state, select  # select(layer): make it the panel's tomogram
        self._layers: list = []
        self._table = QTableWidget(0, len(COLUMNS))
        self._table.setHorizontalHeaderLabels(COLUMNS)
        self._table.verticalHeader().setVisible(False)
        self._table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self._table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self._table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        header = self._table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for i in range(1, len(COLUMNS)):
            header.setSectionResizeMode(i, QHeaderView.ResizeMode.ResizeToContents)
        self._table.setToolTip("Open tomograms with their labels, negatives, picks and threshold; click a row "
                               "to work on that tomogram. Detections stay with their tomogram; a threshold marked "
                               "'(other model)' is of picks another model than the current one made (before a "
                               "Train, Improve, Load or Undo model).")
        self._table.setMinimumWidth(0)
        self.native.layout().addWidget(self._table)
        self.margins = (0, 0, 0, 0)
        self._table.cellClicked.connect(self._on_row_clicked)
        for signal in (state.points_changed, state.picks_changed, state.detection_changed, state.current_changed,
                       state.layers_changed, state.checkpoint_changed):
            signal.connect(self.refresh)
        self.refresh()

    def rows(self) -> list[tuple]:
        """The table's content: (name, labels, negatives, picks, threshold text)."""
        out = []
        for layer in self._layers:
            rec = self._state.record(layer, create=False)
            if rec is None:
                out.append((layer.name, 0, 0, 0, "–"))
            else:
                live = {k: self._state.live(getattr(rec, k)) for k in ("labels", "negatives", "picks")}
                out.append((layer.name, *(rec.count(k) if live[k] else 0 for k in ("labels", "negatives", "picks")),
                            "–" if rec.threshold is None else f"{rec.threshold:.3f}"
                            + (" (other model)" if self._state.from_other_model(rec) else "")))
        return out

    def refresh(self, *_) -> None:
        self._layers = L.tomogram_layers(self._state.viewer)
        rows = self.rows()
        cls = self._state.named_class()  # with several classes the counts are the selected class's
        self._table.setHorizontalHeaderLabels([f"Tomogram · {cls}" if cls else COLUMNS[0], *COLUMNS[1:]])
        self._table.setRowCount(len(rows))
        current = None if self._state.current is None else self._state.current.layer
        for r, values in enumerate(rows):
            for c, value in enumerate(values):
                item = QTableWidgetItem(str(value))
                if c:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self._table.setItem(r, c, item)
            if self._layers[r] is current:
                self._table.selectRow(r)
        height = self._table.horizontalHeader().height() + sum(self._table.rowHeight(r) for r in range(len(rows)))
        self._table.setFixedHeight(height + 4)

    def _on_row_clicked(self, row: int, column: int = 0) -> None:
        if 0 <= row < len(self._layers):
            self._select(self._layers[row])
