"""Two small plots drawn with QPainter: the training loss curve and the score histogram.

They are plain QWidgets so that the panel needs no plotting library; both take numbers
through a ``set_*`` method and repaint themselves.
"""
from __future__ import annotations

import math

import numpy as np
from qtpy.QtCore import QPointF, QRectF, Qt, Signal
from qtpy.QtGui import QColor, QFont, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import QSizePolicy, QWidget

# Colours readable on napari's dark and light themes.
_AXIS = QColor(150, 150, 150)
_TEXT = QColor(190, 190, 190)
_RAW = QColor(120, 160, 220, 110)
_SMOOTH = QColor(110, 190, 255)
_KEPT = QColor(250, 170, 60)
_DROPPED = QColor(110, 110, 110)
_CUT = QColor(235, 70, 70)

_MARGIN_L, _MARGIN_R, _MARGIN_T, _MARGIN_B = 38, 8, 16, 18


def tick_labels(hi: float, lo: float) -> tuple[str, str]:
    """Labels of an axis's two ends, with as many significant digits as tell them apart (≤ 6)."""
    for digits in range(3, 7):
        a, b = (f"{v:.{digits}g}" for v in (hi, lo))
        if a != b:
            return a, b
    return a, b


class _PlotBase(QWidget):
    """Shared frame: margins, small font, an empty-state message."""

    def __init__(self, empty_text: str, parent=None):
        super().__init__(parent)
        self._empty_text = empty_text
        self.setMinimumHeight(110)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        font = QFont(self.font())
        font.setPointSizeF(max(7.0, font.pointSizeF() * 0.85))
        self.setFont(font)

    def _plot_rect(self, left: float = _MARGIN_L) -> QRectF:
        return QRectF(left, _MARGIN_T, max(10, self.width() - left - _MARGIN_R),
                      max(10, self.height() - _MARGIN_T - _MARGIN_B))

    def _draw_empty(self, painter: QPainter) -> None:
        painter.setPen(_TEXT)
        painter.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, self._empty_text)

    def _draw_axes(self, painter: QPainter, rect: QRectF) -> None:
        painter.setPen(QPen(_AXIS, 1))
        painter.drawLine(rect.bottomLeft(), rect.bottomRight())
        painter.drawLine(rect.bottomLeft(), rect.topLeft())


class LossCurve(_PlotBase):
    """Training loss against optimiser step: raw values faint, a running mean on top."""

    def __init__(self, parent=None):
        super().__init__("loss curve appears while training", parent)
        self._steps: list[int] = []
        self._losses: list[float] = []

    def clear(self) -> None:
        """Forget all points."""
        self._steps.clear()
        self._losses.clear()
        self.update()

    def append(self, step: int, loss: float) -> None:
        """Add one ``(step, loss)`` point; non-finite losses are skipped."""
        if math.isfinite(loss):
            self._steps.append(int(step))
            self._losses.append(float(loss))
            self.update()

    def set_history(self, steps, losses) -> None:
        """Replace the curve, e.g. with a loaded model's loss history."""
        self._steps = [int(s) for s in steps]
        self._losses = [float(v) for v in losses]
        self.update()

    @property
    def n_points(self) -> int:
        return len(self._steps)

    def _smoothed(self) -> np.ndarray:
        y = np.asarray(self._losses, float)
        # running mean over ~5 % of the run: readable trend without hiding the start
        w = max(1, len(y) // 20)
        if w == 1:
            return y
        c = np.cumsum(np.r_[0.0, y])
        out = np.empty_like(y)
        for i in range(len(y)):
            lo = max(0, i - w + 1)
            out[i] = (c[i + 1] - c[lo]) / (i + 1 - lo)
        return out

    def paintEvent(self, event) -> None:  # noqa: N802 (Qt name)
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        if not self._steps:
            self._draw_empty(painter)
            return
        x = np.asarray(self._steps, float)
        y = np.asarray(self._losses, float)
        ys = self._smoothed()
        x0, x1 = x.min(), max(x.max(), x.min() + 1)
        lo = float(np.percentile(y, 1))
        hi = float(np.percentile(y, 99))
        if not hi > lo:
            spread = max(abs(hi) * 0.05, 1e-12)  # a flat curve at any scale
            lo, hi = lo - spread, hi + spread
        pad = 0.05 * (hi - lo)
        lo, hi = lo - pad, hi + pad
        ticks = tick_labels(hi, lo)
        # the axis labels get the room their text needs, whatever the loss's scale
        left = max(_MARGIN_L, max(self.fontMetrics().horizontalAdvance(t) for t in ticks) + 8)
        rect = self._plot_rect(left)

        def to_px(xv, yv):
            px = rect.left() + (xv - x0) / (x1 - x0) * rect.width()
            py = rect.bottom() - (np.clip(yv, lo, hi) - lo) / (hi - lo) * rect.height()
            return px, py

        self._draw_axes(painter, rect)
        painter.setPen(_TEXT)
        painter.drawText(QRectF(0, rect.top() - 4, left - 4, 14), Qt.AlignmentFlag.AlignRight, ticks[0])
        painter.drawText(QRectF(0, rect.bottom() - 10, left - 4, 14), Qt.AlignmentFlag.AlignRight, ticks[1])
        painter.drawText(QRectF(rect.left(), rect.bottom() + 2, rect.width(), 14),
                         Qt.AlignmentFlag.AlignRight, f"step {int(x[-1])}")
        painter.drawText(QRectF(rect.left() + 4, 0, rect.width(), 14),
                         Qt.AlignmentFlag.AlignLeft, f"loss {ys[-1]:.3g}")
        for values, pen in ((y, QPen(_RAW, 1)), (ys, QPen(_SMOOTH, 2))):
            px, py = to_px(x, values)
            painter.setPen(pen)
            painter.drawPolyline(QPolygonF([QPointF(a, b) for a, b in zip(px, py)]))
        painter.end()


class ScoreHistogram(_PlotBase):
    """Histogram of candidate scores (log counts) with the threshold marked.

    The score axis spans the candidates' range (rounded out to 0.01), so that a model
    whose scores sit in a narrow band still shows a readable histogram. Clicking in the
    plot asks for that score as the new threshold (:attr:`threshold_clicked`).
    """

    threshold_clicked = Signal(float)

    def __init__(self, n_bins: int = 50, parent=None):
        super().__init__("score histogram appears after detection", parent)
        self._n_bins = n_bins
        self._counts: np.ndarray | None = None
        self._range = (0.0, 1.0)
        self._threshold = 0.5
        self._n_kept = 0
        self.setToolTip("Scores of all candidate peaks (log scale). Picks are the candidates right "
                        "of the red line that survive the minimum distance. Click to move the threshold.")

    def set_scores(self, scores) -> None:
        """Histogram these scores (values in [0, 1]); ``None`` clears the plot."""
        if scores is None or len(scores) == 0:
            self._counts = None if scores is None else np.zeros(self._n_bins, int)
            self._range = (0.0, 1.0)
        else:
            s = np.clip(np.asarray(scores, float), 0, 1)
            lo = math.floor(s.min() * 100) / 100
            hi = max(math.ceil(s.max() * 100) / 100, lo + 0.01)
            self._range = (lo, hi)
            self._counts, _ = np.histogram(s, bins=self._n_bins, range=self._range)
        self.update()

    def set_threshold(self, threshold: float, n_kept: int | None = None) -> None:
        """Move the cut line (and update the pick count shown in the plot)."""
        self._threshold = float(threshold)
        if n_kept is not None:
            self._n_kept = int(n_kept)
        self.update()

    @property
    def threshold(self) -> float:
        return self._threshold

    @property
    def score_range(self) -> tuple[float, float]:
        return self._range

    def mousePressEvent(self, event) -> None:  # noqa: N802 (Qt name)
        if self._counts is None:
            return
        rect = self._plot_rect()
        x = event.position().x() if hasattr(event, "position") else event.x()
        lo, hi = self._range
        value = lo + (x - rect.left()) / rect.width() * (hi - lo)
        self.threshold_clicked.emit(float(np.clip(value, lo, hi)))

    def paintEvent(self, event) -> None:  # noqa: N802 (Qt name)
        painter = QPainter(self)
        if self._counts is None:
            self._draw_empty(painter)
            return
        rect = self._plot_rect()
        lo, hi = self._range
        logc = np.log10(self._counts + 1.0)
        top = max(float(logc.max()), 1.0)
        bw = rect.width() / self._n_bins
        for i, v in enumerate(logc):
            if v <= 0:
                continue
            h = v / top * rect.height()
            centre = lo + (i + 0.5) / self._n_bins * (hi - lo)
            colour = _KEPT if centre >= self._threshold else _DROPPED
            painter.fillRect(QRectF(rect.left() + i * bw + 0.5, rect.bottom() - h, max(bw - 1, 1), h), colour)
        self._draw_axes(painter, rect)
        painter.setPen(_TEXT)
        painter.drawText(QRectF(0, rect.top() - 4, _MARGIN_L - 4, 14), Qt.AlignmentFlag.AlignRight,
                         f"{int(self._counts.max())}")
        painter.drawText(QRectF(0, rect.bottom() - 10, _MARGIN_L - 4, 14), Qt.AlignmentFlag.AlignRight, "0")
        painter.drawText(QRectF(rect.left(), rect.bottom() + 2, rect.width(), 14),
                         Qt.AlignmentFlag.AlignLeft, f"{lo:.2f}")
        painter.drawText(QRectF(rect.left(), rect.bottom() + 2, rect.width(), 14),
                         Qt.AlignmentFlag.AlignHCenter, "score")
        painter.drawText(QRectF(rect.left(), rect.bottom() + 2, rect.width(), 14),
                         Qt.AlignmentFlag.AlignRight, f"{hi:.2f}")
        frac = float(np.clip((self._threshold - lo) / (hi - lo), 0.0, 1.0))
        xc = rect.left() + frac * rect.width()
        painter.setPen(QPen(_CUT, 2))
        painter.drawLine(QPointF(xc, rect.top()), QPointF(xc, rect.bottom()))
        painter.setPen(_TEXT)
        painter.drawText(QRectF(rect.left() + 4, 0, rect.width() - 4, 14), Qt.AlignmentFlag.AlignRight,
                         f"threshold {self._threshold:.3f} · {self._n_kept} picks")
        painter.end()
