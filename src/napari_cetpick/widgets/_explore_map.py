"""The exploration's 2D map drawn with QPainter, and class-average thumbnails.

:class:`ClusterMap` is a plain QWidget (no plotting library): one dot per candidate at its
t-SNE position, coloured by cluster (grey: in none), each cluster's number at its middle.
Clicking asks for the candidate nearest the click (:attr:`ClusterMap.candidate_clicked`);
:meth:`ClusterMap.set_highlight` rings the candidates selected elsewhere and dims the rest.
"""
from __future__ import annotations

import numpy as np
from qtpy.QtCore import QPoint, QPointF, QRectF, Qt, Signal
from qtpy.QtGui import QColor, QFont, QPainter, QPen, QPixmap
from qtpy.QtWidgets import QSizePolicy, QWidget

from napari_cetpick._explore_overview import cluster_colour, png_gray

_FRAME = QColor(150, 150, 150)
_TEXT = QColor(200, 200, 200)
_RING = QColor(255, 255, 255)
_PAD = 12  # pixels between the frame and the outermost dots
_CAPTION = 16  # pixels below the dots for the caption
_PICK_PX = 14  # a click farther than this from every dot clears the selection


def average_pixmap(average, size: int = 72) -> QPixmap:
    """A class average as a greyscale pixmap ``size`` pixels wide (contrast: ±2.5 standard
    deviations, as in the overview page), enlarged without smoothing."""
    pix = QPixmap()
    pix.loadFromData(png_gray(np.asarray(average, float), scale=1), "PNG")
    return pix.scaled(size, size, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.FastTransformation)


class ClusterMap(QWidget):
    """Scatter plot of the candidates' map positions, coloured by cluster, clickable."""

    candidate_clicked = Signal(object)  # index of the candidate nearest the click, or None

    def __init__(self, parent=None):
        super().__init__(parent)
        self._xy = np.zeros((0, 2))
        self._cluster = np.zeros(0, int)
        self._highlight = np.zeros(0, int)
        self.setMinimumHeight(220)
        self.setMinimumWidth(120)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        font = QFont(self.font())
        font.setPointSizeF(max(7.0, font.pointSizeF() * 0.85))
        self.setFont(font)
        self.setToolTip("Each dot is a candidate placed by how it looks (t-SNE of its radial profile and size); "
                        "colour = cluster, grey = in no cluster. Click a dot to select its cluster in the "
                        "candidates layer; points selected in the layer are ringed here.")

    # ------------------------------------------------------------------ data
    def set_map(self, xy, cluster) -> None:
        """Show these map positions (n, 2) and clusters (n,); nothing is highlighted."""
        self._xy = np.asarray(xy, float).reshape(-1, 2)
        self._cluster = np.asarray(cluster, int).reshape(-1)
        self._highlight = np.zeros(0, int)
        self.update()

    def clear(self) -> None:
        self.set_map(np.zeros((0, 2)), np.zeros(0, int))

    def set_highlight(self, indices) -> None:
        """Ring these candidates (and dim the others); empty: none."""
        idx = np.unique(np.asarray(list(indices), int))
        self._highlight = idx[(idx >= 0) & (idx < len(self._xy))]
        self.update()

    @property
    def highlighted(self) -> set[int]:
        return {int(i) for i in self._highlight}

    @property
    def n_points(self) -> int:
        return len(self._xy)

    # ------------------------------------------------------------------ geometry
    def pixels(self) -> np.ndarray:
        """Each candidate's (x, y) in widget pixels: equal scales on both axes, up is up."""
        if not len(self._xy):
            return np.zeros((0, 2))
        lo, hi = self._xy.min(0), self._xy.max(0)
        span = np.maximum(hi - lo, 1e-9)
        w, h = max(self.width() - 2 * _PAD, 1), max(self.height() - 2 * _PAD - _CAPTION, 1)
        s = min(w / span[0], h / span[1])
        centre = np.array([self.width() / 2.0, _PAD + h / 2.0])
        px = (self._xy - (lo + hi) / 2.0) * s
        return np.column_stack([centre[0] + px[:, 0], centre[1] - px[:, 1]])

    def pixel_of(self, index: int) -> QPoint:
        x, y = self.pixels()[int(index)]
        return QPoint(int(round(x)), int(round(y)))

    def index_at(self, x: float, y: float) -> int | None:
        """The candidate nearest a pixel, None when none is within reach."""
        if not len(self._xy):
            return None
        d = np.hypot(*(self.pixels() - np.array([x, y])).T)
        i = int(np.argmin(d))
        return i if d[i] <= _PICK_PX else None

    # ------------------------------------------------------------------ Qt events
    def mousePressEvent(self, event) -> None:  # noqa: N802 (Qt name)
        pos = event.position() if hasattr(event, "position") else event.pos()
        if len(self._xy):
            self.candidate_clicked.emit(self.index_at(pos.x(), pos.y()))

    def paintEvent(self, event) -> None:  # noqa: N802 (Qt name)
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setPen(QPen(_FRAME, 1))
        painter.drawRect(QRectF(0.5, 0.5, self.width() - 1, self.height() - 1))
        if not len(self._xy):
            painter.setPen(_TEXT)
            painter.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, "the map of the candidates appears here")
            painter.end()
            return
        pix = self.pixels()
        dim = len(self._highlight) > 0
        painter.setPen(Qt.PenStyle.NoPen)
        # the unclustered first and smaller, so that the clusters are drawn on top
        for i in np.argsort(self._cluster >= 0, kind="stable"):
            c = int(self._cluster[i])
            colour = QColor(cluster_colour(c))
            colour.setAlpha(70 if dim else (170 if c < 0 else 230))
            painter.setBrush(colour)
            r = 2.2 if c < 0 else 3.0
            painter.drawEllipse(QPointF(*pix[i]), r, r)
        painter.setPen(QPen(_RING, 1.4))
        for i in self._highlight:
            painter.setBrush(QColor(cluster_colour(int(self._cluster[i]))))
            painter.drawEllipse(QPointF(*pix[i]), 4.2, 4.2)
        bold = QFont(self.font())
        bold.setBold(True)
        painter.setFont(bold)
        for c in sorted(set(self._cluster[self._cluster >= 0].tolist())):
            x, y = np.median(pix[self._cluster == c], axis=0)
            x, y = min(x + 6, self.width() - 20), max(y - 16, 2)  # beside its dots, inside the frame
            painter.setPen(QColor(cluster_colour(c)).lighter(130))
            painter.drawText(QRectF(x, y, 18, 14), Qt.AlignmentFlag.AlignLeft, str(c))
        painter.setFont(self.font())
        painter.setPen(_TEXT)
        painter.drawText(QRectF(4, self.height() - _CAPTION, self.width() - 8, 14), Qt.AlignmentFlag.AlignRight,
                         f"{len(self._xy)} candidates · colour = cluster, grey = none · click a dot")
        painter.end()
