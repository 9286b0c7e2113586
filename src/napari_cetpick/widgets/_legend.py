"""What the marks in the viewer mean, with their counts in the selected tomogram."""
from __future__ import annotations

from magicgui.widgets import Container

from napari_cetpick._napari import styles
from napari_cetpick.widgets._common import status_label
from napari_cetpick._napari.session import PanelState

PICKS_SWATCH = "#20c0a0"  # the middle of the picks' blue → green score colours


def _swatch(color: str, symbol: str) -> str:
    return f'<span style="color:{color}; font-size:large">{symbol}</span>'


class PointsLegend(Container):
    """○ labels · ✕ negatives · ○ picks · □ truth, in their colours, with counts."""

    def __init__(self, state: PanelState):
        super().__init__(labels=False)
        self.margins = (0, 0, 0, 0)
        self._state = state
        self._legend_label = status_label("", "What the marks mean, with their counts in the selected tomogram.")
        self.append(self._legend_label)
        for signal in (state.points_changed, state.picks_changed, state.current_changed, state.detection_changed):
            signal.connect(self.update)
        self.update()

    @property
    def value(self) -> str:
        return self._legend_label.value

    def update(self, *_) -> None:
        rec = self._state.current
        n = {k: (0 if rec is None else rec.count(k)) for k in ("labels", "negatives", "picks")}
        self._legend_label.value = (
            f"{_swatch(styles.LABELS_COLOR, '○')} labels {n['labels']} &nbsp; "
            f"{_swatch(styles.NEGATIVES_COLOR, '✕')} negatives {n['negatives']} &nbsp; "
            f"{_swatch(PICKS_SWATCH, '○')} picks {n['picks']} &nbsp; "
            f"{_swatch(styles.TRUTH_COLOR, '□')} truth")
