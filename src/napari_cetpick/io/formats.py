"""The coordinate formats: one table that the readers, writers, CLI and panel look up.

Only the facts that select a format live here (name, extension, what it can hold, where it
is offered). How each format's columns, frames and units convert is in
:mod:`napari_cetpick.io.points` and ``docs/coordinates.md``.
"""
from __future__ import annotations

from dataclasses import dataclass

from napari_cetpick.errors import CetpickError


@dataclass(frozen=True)
class PointFormat:
    """One coordinate file format.

    Attributes
    ----------
    name : str
        The ``fmt`` of :func:`~napari_cetpick.io.read_points` / ``write_points`` and of
        ``cetpick detect --format``.
    extension : str
        Lower-case file extension with its dot. Several formats may share one; the first
        of them in :data:`POINT_FORMATS` is the one a file with that extension is taken to
        be (``.txt`` -> ``imod``, ``.star`` -> ``star``).
    label : str
        Human name, as the panel's Export list shows it.
    carries_scores : bool
        The writer keeps the pick score (a column or STAR label); otherwise it is dropped.
    carries_classes : bool
        One file can hold several particle classes (STAR ``rlnClassNumber``, a CSV
        ``class`` column, one named ``.mod`` object per class); the others take one file
        per class.
    writable : bool
        Written as one tomogram's picks: ``cetpick detect --format``, the napari writer
        (by extension) and batch output. The cet_pick coordinate list, which holds many
        tomograms, is written by ``cetpick convert`` instead.
    in_export_list : bool
        Offered in the panel's Export section.
    frame_free : bool
        Coordinates are in the thickness-first frame by definition, so reading them needs
        no tomogram layout.
    plain_numbers : bool
        Rows of bare numbers without a header: any text file has the extension, so the
        napari reader accepts such a file only when it parses.
    """

    name: str
    extension: str
    label: str
    carries_scores: bool
    carries_classes: bool
    writable: bool
    in_export_list: bool
    frame_free: bool = False
    plain_numbers: bool = False


POINT_FORMATS: tuple[PointFormat, ...] = (
    PointFormat("imod", ".txt", "IMOD text (.txt)", carries_scores=False, carries_classes=False,
                writable=True, in_export_list=True, plain_numbers=True),
    PointFormat("mod", ".mod", "IMOD model (.mod)", carries_scores=False, carries_classes=True,
                writable=True, in_export_list=True),
    PointFormat("star", ".star", "RELION 4 STAR (.star, pixels)", carries_scores=True,
                carries_classes=True, writable=True, in_export_list=True),
    PointFormat("star5", ".star", "RELION 5 STAR (.star, centred Å)", carries_scores=True,
                carries_classes=True, writable=True, in_export_list=True),
    PointFormat("csv", ".csv", "CSV with scores (.csv)", carries_scores=True, carries_classes=True,
                writable=True, in_export_list=True),
    PointFormat("cetpick", ".coords", "cet_pick detections, x z y score (.coords)", carries_scores=True,
                carries_classes=False, writable=True, in_export_list=False, frame_free=True,
                plain_numbers=True),
    PointFormat("cetpick_list", ".txt", "cet_pick coordinate list (.txt)", carries_scores=False,
                carries_classes=False, writable=False, in_export_list=False, frame_free=True),
)

FORMAT_NAMES: tuple[str, ...] = tuple(f.name for f in POINT_FORMATS)
POINT_EXTENSIONS: tuple[str, ...] = tuple(dict.fromkeys(f.extension for f in POINT_FORMATS))
WRITABLE_FORMATS: tuple[PointFormat, ...] = tuple(f for f in POINT_FORMATS if f.writable)


def point_format(name: str) -> PointFormat:
    """The format called ``name``; CetpickError for an unknown one."""
    for f in POINT_FORMATS:
        if f.name == name:
            return f
    raise CetpickError(f"Unknown coordinate format {name!r}; use one of {', '.join(FORMAT_NAMES)}.")


def format_for_extension(extension: str) -> PointFormat | None:
    """The format a file with this extension (``".txt"``, any case) is taken to be, or None."""
    extension = extension.lower()
    return next((f for f in POINT_FORMATS if f.extension == extension), None)


def export_formats() -> dict[str, PointFormat]:
    """The panel's Export list: label -> format, in table order."""
    return {f.label: f for f in POINT_FORMATS if f.in_export_list}
