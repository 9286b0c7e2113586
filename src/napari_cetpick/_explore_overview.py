"""The exploration's overview page: the 2D map coloured by cluster beside each cluster's average.

One self-contained HTML file (an SVG scatter plot, PNG thumbnails inlined as data URIs) that
any browser opens; numpy and the standard library only.
"""
from __future__ import annotations

import base64
import html
import struct
import zlib

import numpy as np

#: Cluster colours (colour-blind-safe first, then more); grey for candidates in no cluster.
PALETTE = ("#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#f0e442", "#332288",
           "#882255", "#44aa99", "#999933", "#aa4499", "#117733", "#88ccee", "#ddcc77", "#661100")
NOISE_COLOUR = "#bbbbbb"


def cluster_colour(c: int) -> str:
    return NOISE_COLOUR if c < 0 else PALETTE[c % len(PALETTE)]


def png_gray(image: np.ndarray, scale: int = 3) -> bytes:
    """An 8-bit greyscale PNG of a 2D array (contrast: ±2.5 standard deviations), enlarged ``scale``×."""
    a = np.asarray(image, float)
    sd = a.std() or 1.0
    a = np.clip((a - a.mean()) / (2.5 * sd) * 127.5 + 127.5, 0, 255).astype(np.uint8)
    a = np.kron(a, np.ones((scale, scale), np.uint8))
    h, w = a.shape
    raw = b"".join(b"\x00" + a[i].tobytes() for i in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def overview_html(result, size: int = 560, tomogram=None, folder=None) -> str:
    """The overview page of an :class:`~napari_cetpick.explore.ExploreResult` (``tomogram``,
    ``folder``: named in the title and in the command that trains from a cluster)."""
    from .explore import LIKELY_NOISE

    xy = np.asarray(result.map_xy, float)
    lo, hi = (xy.min(0), xy.max(0)) if len(xy) else (np.zeros(2), np.ones(2))
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    pix = (xy - lo) / span * (size - 20) + 10
    dots = []
    # the unclustered first, so the clusters are drawn on top
    for i in np.argsort(result.cluster >= 0, kind="stable"):
        c = int(result.cluster[i])
        dots.append(f'<circle cx="{pix[i, 0]:.1f}" cy="{size - pix[i, 1]:.1f}" r="2.2" fill="{cluster_colour(c)}">'
                    f'<title>cluster {c}, {result.diameter_vox[i] * result.voxel_size_a:.0f} Å</title></circle>')
    for c in result.cluster_ids:  # each cluster's number at its members' middle
        mid = np.median(pix[result.cluster == c], axis=0)
        dots.append(f'<text x="{mid[0]:.1f}" y="{size - mid[1] - 6:.1f}" font-size="13" font-weight="bold" '
                    f'fill="{cluster_colour(c)}" stroke="white" stroke-width="0.6">{c}</text>')
    rows = []
    info = result.info.get("clusters", {})
    for c in result.cluster_ids:
        png = base64.b64encode(png_gray(result.averages[c])).decode()
        d = info.get(str(c), {})
        rows.append(f'<tr><td><span style="color:{cluster_colour(c)};font-size:1.5em">●</span> {c}</td>'
                    f'<td>{d.get("members", int((result.cluster == c).sum()))}</td>'
                    f'<td>{d.get("median_diameter_a", "")}</td><td>{d.get("median_score", "")}</td>'
                    f'<td><img src="data:image/png;base64,{png}" alt="average of cluster {c}"></td>'
                    f'<td>{html.escape(LIKELY_NOISE) if d.get("likely_noise") else ""}</td></tr>')
    n_none = int((result.cluster < 0).sum())
    lo, hi = result.info.get("config", {}).get("diameter_range_a", (0, 0))
    title = html.escape(f"cetpick explore{' of ' + str(tomogram) if tomogram else ''}: {len(result.zyx)} candidates "
                        f"of {lo:g}–{hi:g} Å, {len(result.cluster_ids)} clusters")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title></head>"
            f"<body style='font-family:sans-serif'><h2>{title}</h2>"
            f"<p>Each dot is a candidate placed by t-SNE of its embedding; colour = cluster, grey = in no "
            f"cluster ({n_none}). The table shows each cluster's mean central xy slice.</p>"
            f"<div style='display:flex;gap:24px;align-items:flex-start'>"
            f"<svg width='{size}' height='{size}' style='border:1px solid #ccc'>{''.join(dots)}</svg>"
            f"<table cellpadding='4'><tr><th>cluster</th><th>members</th><th>median size (Å)</th>"
            f"<th>median blob score</th><th>class average</th><th></th></tr>{''.join(rows)}</table></div>"
            f"<p>{html.escape(_next_step(tomogram, folder))}</p></body></html>")


def _next_step(tomogram, folder) -> str:
    """The line that says how a cluster becomes labels."""
    where = f"{folder}:N" if folder is not None else "DIR:N"
    return (f"Next: cetpick train --tomogram {tomogram or 'T.mrc'} --labels-from-cluster {where} --out model.ckpt "
            f"(N: a cluster above; several classes: NAME={where}, repeated), or in napari: Explore › choose the "
            "cluster › Use as labels, then Train.")
