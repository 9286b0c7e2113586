"""A tiny volume with dark spheres planted at known places (shared by engine tests)."""
import numpy as np
from scipy import ndimage


def planted_volume(shape=(32, 96, 96), n=24, radius=5.0, noise=0.5, seed=0, min_gap=13.0):
    rng = np.random.default_rng(seed)
    pts = []
    lo = np.array([radius + 2, radius + 4, radius + 4])
    hi = np.array(shape) - lo
    tries = 0
    while len(pts) < n and tries < 10000:
        tries += 1
        p = rng.uniform(lo, hi)
        if all(np.linalg.norm(p - q) > min_gap for q in pts):
            pts.append(p)
    pts = np.array(pts)
    zz, yy, xx = np.indices(shape, dtype=np.float32)
    v = np.zeros(shape, np.float32)
    for p in pts:
        v -= (((zz - p[0]) ** 2 + (yy - p[1]) ** 2 + (xx - p[2]) ** 2) < radius**2).astype(np.float32)
    v = ndimage.gaussian_filter(v, 1.0) + rng.normal(0, noise, shape).astype(np.float32)
    return v.astype(np.float32), pts
