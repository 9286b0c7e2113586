"""Tomogram and coordinate input/output.

The only place that converts between the package's napari ``zyx`` voxel frame and file
axis orders or format conventions. Imports no napari or Qt.
"""
from napari_cetpick.io.points import (
    FORMATS,
    PointSet,
    check_inside,
    guess_format,
    imod_text_to_coordinate_list,
    imod_to_zyx,
    list_tomogram_names,
    read_coordinate_list,
    read_image_list,
    read_imod_text,
    read_points,
    relion5_to_zyx,
    write_coordinate_list,
    write_image_list,
    write_points,
    zyx_to_imod,
    zyx_to_relion5,
)
from napari_cetpick.io.tomogram import (
    TOMOGRAM_EXTENSIONS,
    FileLayout,
    Tomogram,
    guess_thickness_axis,
    open_tomogram,
    plausible_voxel_size,
    sample_voxels,
    write_heatmap,
    write_tomogram,
)

__all__ = [
    "FORMATS",
    "TOMOGRAM_EXTENSIONS",
    "FileLayout",
    "PointSet",
    "Tomogram",
    "check_inside",
    "guess_format",
    "guess_thickness_axis",
    "imod_text_to_coordinate_list",
    "imod_to_zyx",
    "list_tomogram_names",
    "open_tomogram",
    "plausible_voxel_size",
    "read_coordinate_list",
    "read_image_list",
    "read_imod_text",
    "read_points",
    "relion5_to_zyx",
    "sample_voxels",
    "write_coordinate_list",
    "write_image_list",
    "write_points",
    "write_heatmap",
    "write_tomogram",
    "zyx_to_imod",
    "zyx_to_relion5",
]
