"""A small 3D encoder trained on a tomogram's own candidates, without labels (exploration).

Each candidate's cube (1.2 × the largest diameter of the range, pooled to ``CUBE`` voxels a
side) is seen twice per step under different augmentations that keep what a particle is
and change what it is not: a rotation by a multiple of 90° about z and flips (the missing
wedge is symmetric about z, so it stays where it is), a shift of up to ``SHIFT`` voxels
(candidates sit a little off-centre), a contrast scale and added noise. The encoder learns
to give the two views of one candidate the same embedding and other candidates' views other
embeddings (the normalised-temperature cross-entropy of contrastive learning), so what is
left in the embedding is what the augmentations do not change: shape and size.

Core module (torch, numpy; no Qt). :func:`train_encoder` is a generator yielding
``(step, total)`` and returning the embeddings of every candidate.
"""
from __future__ import annotations

import math

import numpy as np

#: Side of a candidate's pooled cube, of the crop the encoder sees, and the largest shift.
CUBE = 20
CROP = 16
SHIFT = (CUBE - CROP) // 2
#: Embedding size, temperature of the contrastive loss, views per step.
EMBED = 32
TEMPERATURE = 0.2
BATCH = 96


def candidate_cubes(volume, zyx, largest_vox: float) -> np.ndarray:
    """(n, CUBE, CUBE, CUBE) float32 cubes around each candidate, mean-pooled, in noise units."""
    from .data import compute_norm_stats, make_geometry

    stats = compute_norm_stats(volume, make_geometry(1, False))
    pool = max(1, int(math.ceil(1.2 * largest_vox / CUBE)))
    side = CUBE * pool
    shape = np.asarray(np.shape(volume))
    out = np.zeros((len(zyx), CUBE, CUBE, CUBE), np.float32)
    for i, c in enumerate(np.rint(np.asarray(zyx, float)).astype(int)):
        lo = c - side // 2
        src_lo, src_hi = np.maximum(lo, 0), np.minimum(lo + side, shape)
        cube = np.zeros((side,) * 3, np.float32)  # outside the tomogram: its mean (0 after z-scoring)
        part = np.asarray(volume[src_lo[0]:src_hi[0], src_lo[1]:src_hi[1], src_lo[2]:src_hi[2]], np.float32)
        a = src_lo - lo
        cube[a[0]:a[0] + part.shape[0], a[1]:a[1] + part.shape[1], a[2]:a[2] + part.shape[2]] = (
            (part - stats.mean1) / stats.std1)
        out[i] = cube.reshape(CUBE, pool, CUBE, pool, CUBE, pool).mean(axis=(1, 3, 5))
    np.clip(out, -4.0, 4.0, out=out)
    return out


def _network():
    import torch.nn as nn

    def block(i, o):
        return [nn.Conv3d(i, o, 3, padding=1, bias=False), nn.BatchNorm3d(o), nn.ReLU(inplace=True)]

    backbone = nn.Sequential(*block(1, 16), nn.MaxPool3d(2), *block(16, 32), nn.MaxPool3d(2), *block(32, 64),
                             nn.AdaptiveAvgPool3d(1), nn.Flatten())
    head = nn.Sequential(nn.Linear(64, 64), nn.ReLU(inplace=True), nn.Linear(64, EMBED))
    return backbone, head


def _views(cubes, idx, rng):
    """One augmented view (B, 1, CROP, CROP, CROP) of the cubes ``idx``."""
    out = np.empty((len(idx), 1, CROP, CROP, CROP), np.float32)
    for j, i in enumerate(idx):
        o = rng.integers(0, 2 * SHIFT + 1, 3)
        v = cubes[i, o[0]:o[0] + CROP, o[1]:o[1] + CROP, o[2]:o[2] + CROP]
        v = np.rot90(v, int(rng.integers(4)), axes=(1, 2))
        for ax in range(3):
            if rng.random() < 0.5:
                v = np.flip(v, ax)
        out[j, 0] = v * rng.uniform(0.8, 1.25) + rng.normal(0, 0.3, v.shape)
    return out


def _nt_xent(z1, z2, temperature: float):
    import torch
    import torch.nn.functional as F

    z = F.normalize(torch.cat([z1, z2]), dim=1)
    sim = z @ z.T / temperature
    n = len(z1)
    sim.fill_diagonal_(float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
    return F.cross_entropy(sim, target)


def train_encoder(volume, zyx, largest_vox: float, steps: int = 300, seed: int = 0):
    """Train the encoder on the candidates ``zyx`` and embed them (module doc).

    Yields ``(step, total)``; returns (n, 64) float32 embeddings (the encoder's pooled
    features, L2-normalised) and the encoder (:func:`encoder_file_content`: its weights and
    what it was trained on). Deterministic for a seed on one CPU.
    """
    import torch

    from .device import configure_threads

    configure_threads()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    cubes = candidate_cubes(volume, zyx, largest_vox)
    backbone, head = _network()
    params = list(backbone.parameters()) + list(head.parameters())
    opt = torch.optim.Adam(params, lr=1e-3)
    n = len(cubes)
    batch = min(BATCH, n)
    backbone.train()
    head.train()
    for step in range(1, steps + 1):
        idx = rng.choice(n, size=batch, replace=False)
        a = torch.from_numpy(_views(cubes, idx, rng))
        b = torch.from_numpy(_views(cubes, idx, rng))
        loss = _nt_xent(head(backbone(a)), head(backbone(b)), TEMPERATURE)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        yield step, steps
    backbone.eval()
    c0 = SHIFT
    feats = []
    with torch.no_grad():
        for s in range(0, n, 256):
            x = torch.from_numpy(np.ascontiguousarray(cubes[s:s + 256, None, c0:c0 + CROP, c0:c0 + CROP, c0:c0 + CROP]))
            feats.append(torch.nn.functional.normalize(backbone(x), dim=1).numpy())
    meta = {"cube": CUBE, "crop": CROP, "embed": EMBED, "temperature": TEMPERATURE, "batch": BATCH,
            "steps": int(steps), "seed": int(seed), "largest_vox": float(largest_vox), "n_candidates": int(n),
            "last_loss": float(loss.detach()) if steps else None}
    return np.concatenate(feats).astype(np.float32), encoder_file_content(backbone, head, meta)


def encoder_file_content(backbone, head, meta: dict) -> dict:
    """What ``encoder.pt`` holds: the weights (tensors) and plain metadata, so that
    ``torch.load(path, weights_only=True)`` reads it, as the model files."""
    from . import __version__
    from .checkpoint import plain_types

    state = {f"backbone.{k}": v.detach().cpu().clone() for k, v in backbone.state_dict().items()}
    state.update({f"head.{k}": v.detach().cpu().clone() for k, v in head.state_dict().items()})
    return {"state_dict": state, "meta": plain_types({"kind": "napari-cetpick explore encoder",
                                                      "package_version": __version__, **meta})}


def load_encoder(path):
    """The encoder of an ``encoder.pt`` (eval mode) and its metadata; CetpickError for another file."""
    import pickle

    import torch

    from .errors import CetpickError

    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        meta, state = blob["meta"], blob["state_dict"]
        if meta.get("kind") != "napari-cetpick explore encoder":
            raise KeyError("kind")
        backbone, head = _network()
        backbone.load_state_dict({k[9:]: v for k, v in state.items() if k.startswith("backbone.")})
        head.load_state_dict({k[5:]: v for k, v in state.items() if k.startswith("head.")})
    except (pickle.UnpicklingError, RuntimeError, KeyError, TypeError, EOFError, ValueError, AttributeError) as exc:
        raise CetpickError(f"{path}: not an exploration encoder file ({type(exc).__name__}).") from None
    except OSError as exc:
        raise CetpickError(f"{path}: cannot read the encoder file ({exc.strerror or exc}).") from None
    return backbone.eval(), head.eval(), meta
