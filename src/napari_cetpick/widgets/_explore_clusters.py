"""The clusters of an exploration: the map linked both ways to the candidates layer, the
chosen cluster's average and size, and "Use as labels of [class]".

:class:`ClusterBrowser` shows one :class:`Exploration` at a time (the selected tomogram's;
:class:`~._explore.ExploreSection` runs the explorations and hands them over).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from magicgui.widgets import ComboBox, Container, Label, PushButton
from napari.utils.notifications import show_error, show_info
from qtpy.QtWidgets import QLabel

from napari_cetpick._napari.session import PanelState
from napari_cetpick.errors import CetpickError
from napari_cetpick.explore import LIKELY_NOISE
from napari_cetpick.review import nearest_distance
from napari_cetpick.widgets._common import holder, narrow, plural, row, status_label
from napari_cetpick.widgets._explore_map import ClusterMap, average_pixmap

SAME_LABEL_VOX = 1.0  # a cluster member this close to a label is that label (not added twice)
CHOOSE_TEXT = "Click the map or choose a cluster."


@dataclass
class Exploration:
    """A tomogram's last exploration (:class:`~napari_cetpick.explore.ExploreResult`) and its
    candidates Points layer."""

    result: object
    layer: object
    chosen: int | None = None  # the cluster last chosen, shown again when the tomogram is


class ClusterBrowser(Container):
    """Map, cluster list, average and "Use as labels" for the shown exploration."""

    def __init__(self, state: PanelState, restore_points, status):
        super().__init__(labels=False)
        self.margins = (0, 0, 0, 0)
        self._state = state
        self._restore_points = restore_points  # callable(rec, what, zyx) -> added (the data section's)
        self._status = status  # callable(text): the section's status line
        self._ex: Exploration | None = None
        self._updating = False
        self._map = ClusterMap()
        self._cluster_combo = ComboBox(
            choices=self._cluster_choices, nullable=True,
            tooltip="A cluster of candidates (numbered by size, largest first): choosing one selects its members "
                    "in the candidates layer and shows its average.")
        self._average_label = QLabel()
        self._average_label.setFixedSize(76, 76)
        self._average_label.setToolTip("The cluster's average: mean central xy slice of its members.")
        self._cluster_info_label = status_label(CHOOSE_TEXT, "The chosen cluster's members and median size.")
        self._class_combo = ComboBox(choices=self._class_choices, value=state.active_class,
                                     tooltip="The class whose labels the cluster's members become.")
        self._use_labels_button = PushButton(
            text="Use as labels of", tooltip="Add the chosen cluster's members to the class's labels in this "
                                             "tomogram (made when it has none; labels already there stay, none "
                                             "twice), then Train as usual.")
        narrow(self._cluster_combo, self._class_combo)
        self.extend([holder(self._map), row(Label(value="Cluster"), self._cluster_combo),
                     row(holder(self._average_label), self._cluster_info_label),
                     row(self._use_labels_button, self._class_combo)])
        self._cluster_combo.changed.connect(self._on_cluster_changed)
        self._use_labels_button.changed.connect(self._on_use_labels_clicked)
        self._map.candidate_clicked.connect(self._on_map_clicked)
        state.classes_changed.connect(self._on_classes_changed)
        state.class_changed.connect(self._on_classes_changed)

    # ------------------------------------------------------------------ what is shown
    def show(self, ex: Exploration | None) -> None:
        """Show an exploration (None: none; the browser hides)."""
        self._ex = ex
        self._updating = True
        try:
            self._cluster_combo.reset_choices()
            self._cluster_combo.value = None
        finally:
            self._updating = False
        self.native.setVisible(ex is not None)
        if ex is None:
            self._map.clear()
        else:
            self._map.set_map(ex.result.map_xy, ex.result.cluster)
        chosen = None if ex is None else ex.chosen
        if chosen is not None:  # back to this tomogram: its cluster as the user left it
            self._updating = True
            try:
                self._cluster_combo.value = chosen
            finally:
                self._updating = False
            self._map.set_highlight(np.flatnonzero(ex.result.cluster == chosen))
        self._show_cluster(chosen)

    def watch(self, layer) -> None:
        """Follow a candidates layer's selection (its points are ringed on the map)."""
        layer.selected_data.events.items_changed.connect(self._on_candidates_selected)

    def _linked_layer(self):
        """The candidates layer while its points are still the exploration's (None once edited or closed)."""
        ex = self._ex
        live = ex is not None and self._state.live(ex.layer) and len(ex.layer.data) == len(ex.result.zyx)
        return ex.layer if live else None

    def _cluster_choices(self, widget=None) -> list:
        if self._ex is None:
            return []
        r = self._ex.result
        return [(f"{c} · {plural(int(np.sum(r.cluster == c)), 'member')}", c) for c in r.cluster_ids]

    def _class_choices(self, widget=None) -> list[str]:
        return self._state.class_names

    def _on_classes_changed(self, *_) -> None:
        self._class_combo.reset_choices()
        self._class_combo.value = self._state.active_class

    def _show_cluster(self, c) -> None:
        if self._ex is None or c is None or c < 0:
            self._average_label.clear()
            self._cluster_info_label.value = CHOOSE_TEXT
            return
        r = self._ex.result
        inside = r.cluster == c
        if c in r.averages:
            self._average_label.setPixmap(average_pixmap(r.averages[c], 72))
        self._cluster_info_label.value = (f"Cluster {c}: {plural(int(inside.sum()), 'member')}, median size "
                                          f"{np.median(r.diameter_vox[inside]) * r.voxel_size_a:.0f} Å, median "
                                          f"blob score {np.median(r.score[inside]):.2f}."
                                          + (f" {LIKELY_NOISE[0].upper()}{LIKELY_NOISE[1:]}." if
                                             r.info.get("clusters", {}).get(str(c), {}).get("likely_noise") else ""))

    # ------------------------------------------------------------------ map <-> layer
    def _select(self, indices, c=None) -> None:
        """Select these candidates in the layer (made the active one) and ring them on the map."""
        layer = self._linked_layer()
        self._updating = True
        try:
            if c is not None:
                self._cluster_combo.value = c
            if layer is not None:
                layer.selected_data = {int(i) for i in indices}
                if len(indices):
                    self._state.viewer.layers.selection.active = layer
        finally:
            self._updating = False
        self._map.set_highlight(indices)
        if c is not None:
            self._show_cluster(c)
            if self._ex is not None:
                self._ex.chosen = int(c)

    def choose_cluster(self, c: int) -> None:
        """Select a cluster's members everywhere: the layer, the map, the list."""
        if self._ex is not None:
            self._select(np.flatnonzero(self._ex.result.cluster == int(c)), int(c))

    def _on_cluster_changed(self, value=None) -> None:
        if not self._updating and value is not None:
            self.choose_cluster(int(value))

    def _on_map_clicked(self, index) -> None:
        r = None if self._ex is None else self._ex.result
        if r is None:
            return
        if index is None:  # empty space: nothing selected
            self._select([])
        elif r.cluster[index] >= 0:
            self.choose_cluster(int(r.cluster[index]))
        else:
            self._select([int(index)])
            self._cluster_info_label.value = (f"Candidate {index}: in no cluster, size "
                                              f"{r.diameter_vox[index] * r.voxel_size_a:.0f} Å.")

    def _on_candidates_selected(self, *_) -> None:
        """Points selected in the layer are ringed on the map (and their cluster shown when they share one)."""
        layer = self._linked_layer()
        if self._updating or layer is None:
            return
        idx = sorted(int(i) for i in layer.selected_data)
        self._map.set_highlight(idx)
        shared = set(self._ex.result.cluster[idx].tolist())
        if len(shared) == 1 and min(shared) >= 0:
            self._updating = True
            try:
                self._cluster_combo.value = min(shared)
            finally:
                self._updating = False
            self._show_cluster(min(shared))

    # ------------------------------------------------------------------ a cluster as labels
    def _on_use_labels_clicked(self, *_) -> None:
        self.use_as_labels()

    def use_as_labels(self, cluster: int | None = None, class_name: str | None = None) -> int | None:
        """Add a cluster's members to a class's labels in the selected tomogram (the layer made
        when there is none; members within a voxel of a label skipped); returns how many were added."""
        rec, ex = self._state.current, self._ex
        c = self._cluster_combo.value if cluster is None else cluster
        name = str(class_name or self._class_combo.value or self._state.active_class)
        try:
            if rec is None or ex is None:
                raise CetpickError("Explore this tomogram first, then choose a cluster.")
            if c is None:
                raise CetpickError("Choose a cluster first: click the map or pick one in the Cluster list.")
            members = ex.result.members(int(c))
        except CetpickError as err:
            show_error(str(err))
            return None
        target = rec if name == rec.active else rec.view(name)
        sized = self._size_class(name, int(c))
        have = target.points("labels") if self._state.live(target.labels) else np.zeros((0, 3))
        new = members[nearest_distance(members, have) > SAME_LABEL_VOX]
        added = self._restore_points(target, "labels", new) if len(new) else 0
        had = len(members) - added
        there = f"; {had} {'was a label' if had == 1 else 'were labels'} already" if had else ""
        message = (f"{plural(added, 'label')} of {name} from cluster {c} in '{target.labels.name}'{there}."
                   f"{sized} Train when ready.")
        self._status(message)
        show_info(message)
        return added

    def _size_class(self, name: str, c: int) -> str:
        """A class with no labels yet takes the cluster's median size as its diameter (returns
        the sentence saying so)."""
        records = [r for r in self._state.records.values() if self._state.live(r.layer)]
        if name in self._state.classes_with_labels(records):
            return ""
        r, cls = self._ex.result, self._state.particle_class(name)
        d_vox = float(np.median(r.diameter_vox[r.cluster == c]))
        value = round(d_vox * r.voxel_size_a, 1) if cls.unit == "Å" else round(d_vox, 2)
        self._state.set_diameter(value, cls.unit, name)
        return f" Its diameter is now {value:g} {cls.unit}, the cluster's median size."
