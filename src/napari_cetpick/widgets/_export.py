"""Section 6 · Export: picks, labels or negatives of one tomogram or of all, in each
tomogram file's own frame."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
from magicgui.widgets import ComboBox, Container, FloatSpinBox, PushButton
from napari.utils.notifications import show_error, show_info

from napari_cetpick._napari.layers import layout_from_meta
from napari_cetpick.errors import CetpickError
from napari_cetpick.io.formats import WRITABLE_FORMATS, export_formats
from napari_cetpick.widgets import _layers as L
from napari_cetpick.widgets._common import heading, narrow, plural, row, status_label
from napari_cetpick._napari.session import PanelState, TomogramRecord

# label -> (format name, extension), from the formats table in io/formats.py
EXPORT_FORMATS = {label: (f.name, f.extension) for label, f in export_formats().items()}
_WRITER_EXTENSIONS = " ".join(dict.fromkeys(f.extension for f in WRITABLE_FORMATS))
EXPORT_WHAT = ("picks", "labels", "negatives")


class ExportSection(Container):
    """Write coordinates where downstream tools (IMOD, RELION, copick via CSV) find them."""

    def __init__(self, state: PanelState, ask_path, ask_folder):
        super().__init__(labels=True)
        self._state, self._ask_path, self._ask_folder = state, ask_path, ask_folder
        self._export_what_combo = ComboBox(
            label="Export", choices=EXPORT_WHAT, value="picks",
            tooltip="Picks (with scores), your labels, or the negatives (e.g. for `cetpick train --negatives`).")
        self._export_format_combo = ComboBox(
            label="Format", choices=list(EXPORT_FORMATS), value=next(iter(EXPORT_FORMATS)),
            tooltip="IMOD text is model2point's x y z (3dmod frame); .mod opens in 3dmod; RELION 4 "
                    "STAR has pixel coordinates, RELION 5 centred Å; CSV keeps the scores.")
        self._export_binning_spin = FloatSpinBox(
            label="Scale coordinates ×", min=0.01, max=64.0, step=0.5, value=1.0,
            tooltip="Multiply pixel coordinates by this factor, e.g. 4 to export picks made on a "
                    "bin-4 tomogram into the unbinned frame (not used for RELION 5).")
        self._export_button = PushButton(text="Export…", tooltip="Write the selected tomogram's points, in its file's frame.")
        self._export_all_button = PushButton(
            text="Export all…", tooltip="Write the points of every open tomogram into a folder, one file each "
                                        "(<tomogram>_picks.txt …), each in its own file's frame.")
        narrow(self._export_what_combo, self._export_format_combo)
        self.extend([
            heading("6 · Export"), self._export_what_combo, self._export_format_combo, self._export_binning_spin,
            row(self._export_button, self._export_all_button, label=" "),
            row(status_label(f"<small>File › Save Selected Layers also writes {_WRITER_EXTENSIONS}</small>")),
        ])
        self._export_button.changed.connect(self._on_export_clicked)
        self._export_all_button.changed.connect(self._on_export_all_clicked)

    def _format(self, format_key=None) -> tuple[str, str, str]:
        key = str(format_key or self._export_format_combo.value)
        fmt, ext = EXPORT_FORMATS[key]
        return key, fmt, ext

    def _default_name(self, rec: TomogramRecord, what: str, folder: Path | None = None,
                      format_key: str | None = None) -> Path:
        _, fmt, ext = self._format(format_key)
        path = L.tomogram_meta(rec.layer).get("path")
        stem = Path(path).stem if path else rec.name.replace(" ", "_")
        folder = folder or (Path(path).parent if path else Path.cwd())
        cls = self._state.named_class(rec.active)  # as the command line names one file per class
        return folder / f"{stem}_{f'{cls}_' if cls else ''}{what}{'_relion5' if fmt == 'star5' else ''}{ext}"

    def _on_export_clicked(self, *_) -> None:
        rec, what = self._state.current, str(self._export_what_combo.value)
        if rec is None or rec.count(what) == 0:
            show_error(f"No {what} to export: " + ("run Detect on the selected tomogram first." if what == "picks"
                                                   else f"the selected tomogram has no {what}."))
            return
        key, _, ext = self._format()
        path = self._ask_path(True, f"Export {what}", f"{key.split(' (')[0]} (*{ext});;All files (*)",
                              str(self._default_name(rec, what)))
        if path:
            self.export(path, format_key=key, what=what)

    def _on_export_all_clicked(self, *_) -> None:
        folder = self._ask_folder("Export every tomogram's points into")
        if folder:
            self.export_all(folder)

    def export_all(self, folder, format_key: str | None = None, what: str | None = None) -> list[Path]:
        """Write one file per tomogram that has points of that kind; returns the paths written."""
        what = what or str(self._export_what_combo.value)
        pairs = [r.view(n) for r in self._state.records.values() if self._state.live(r.layer)
                 for n in self._state.class_names]
        recs = [v for v in pairs if getattr(v, what) is not None and self._state.live(getattr(v, what)) and v.count(what)]
        skipped = [self._who(v) for v in pairs if v not in recs]
        if not recs:
            show_error(f"No tomogram has {what} to export.")
            return []
        written = []
        for rec in recs:
            out = self.export(self._default_name(rec, what, Path(folder), format_key), format_key, what, rec,
                              quiet=True)
            if out is not None:
                written.append(out)
        none = f" No {what} in: {', '.join(skipped)}." if skipped else ""
        old = [self._who(v) for v in recs if what == "picks" and self._state.from_other_model(v)]
        if old:
            none += (f" The picks of {', '.join(old)} came from another model than the current one (Detect with "
                     "'All open tomograms' renews them).")
        show_info(f"Exported {plural(len(written), 'file')} of {what} to {folder}.{none}")
        return written

    def _who(self, rec: TomogramRecord) -> str:
        """A tomogram's name, with the class's where the panel has several."""
        return f"{rec.name}{f' ({n})' if (n := self._state.named_class(rec.active)) else ''}"

    def export(self, path, format_key: str | None = None, what: str = "picks", rec: TomogramRecord | None = None,
               quiet: bool = False) -> Path | None:
        """Write a tomogram's picks, labels or negatives in its file's frame; returns the path written."""
        from napari_cetpick.io import write_points

        rec = rec or self._state.current
        layer = None if rec is None else getattr(rec, what)
        if layer is None or not self._state.live(layer):
            show_error(f"No {what} to export: " + ("run Detect on the selected tomogram first." if what == "picks"
                                                   else f"the selected tomogram has no {what}."))
            return None
        _, fmt, ext = self._format(format_key)
        path = Path(path)
        if path.suffix.lower() != ext:
            path = path.with_name(path.name + ext)
        zyx = L.points_in_image_frame(layer, rec.layer)
        # picks: their columns (score, margin to the threshold, agreement …) as the command line writes them
        features = layer.features.reset_index(drop=True)
        if what != "picks":
            features = features[["score"]] if "score" in features.columns else pd.DataFrame(index=range(len(zyx)))
        meta = L.tomogram_meta(rec.layer)
        try:
            out = write_points(path, zyx, features=features, fmt=fmt, layout=layout_from_meta(meta),
                               voxel_size_a=rec.voxel_size_a, tomogram_name=meta.get("tomogram_name") or rec.name,
                               shape_zyx=rec.shape,
                               binning=1.0 if fmt == "star5" else float(self._export_binning_spin.value))
        except (CetpickError, OSError) as err:
            show_error(f"Export failed: {err}")
            return None
        if not quiet:
            old = (". They came from another model than the current one: Detect renews them." if what == "picks"
                   and self._state.from_other_model(rec) else "")
            show_info(f"Exported {plural(len(zyx), what[:-1] if what != 'negatives' else 'negative')} to {out}{old}")
        return out
