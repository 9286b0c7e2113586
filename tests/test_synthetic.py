"""Tests of the tomogram simulator: tiny volumes, 20 Å voxels keep every class in 32-64 voxels."""

import numpy as np
import pytest

from napari_cetpick.errors import CetpickError
from napari_cetpick.synthetic import (
    CLASS_DIAMETERS_A,
    SyntheticTomogram,
    particle_atoms,
    save_synthetic,
    simulate_tomogram,
    write_large_noise_tomogram,
)

SMALL = dict(shape=(32, 64, 64), voxel_size_a=20.0)


@pytest.fixture(scope="module")
def sim() -> SyntheticTomogram:
    return simulate_tomogram(**SMALL, snr=1.0, seed=3, return_density=True)


def _ball_means(volume, centres, radius):
    grids = np.ogrid[tuple(slice(0, n) for n in volume.shape)]
    out = []
    for c in centres:
        mask = sum((g - v) ** 2 for g, v in zip(grids, c)) <= radius**2
        out.append(volume[mask].mean())
    return np.array(out)


def test_same_seed_same_volume_and_truth():
    a = simulate_tomogram(**SMALL, seed=7)
    b = simulate_tomogram(**SMALL, seed=7)
    c = simulate_tomogram(**SMALL, seed=8)
    np.testing.assert_array_equal(a.volume, b.volume)
    np.testing.assert_array_equal(a.labels, b.labels)
    for name in a.particles:
        np.testing.assert_array_equal(a.particles[name], b.particles[name])
    assert not np.array_equal(a.volume, c.volume)


def test_shapes_dtype_and_truth(sim):
    assert sim.volume.shape == SMALL["shape"]
    assert sim.volume.dtype == np.float32
    assert np.all(np.isfinite(sim.volume))
    assert abs(float(sim.volume.mean())) < 1e-3 and abs(float(sim.volume.std()) - 1) < 1e-3
    assert sim.voxel_size_a == 20.0
    assert set(sim.particles) == set(CLASS_DIAMETERS_A) == set(sim.diameters_a)
    upper = np.array(sim.shape) - 1
    for name, zyx in sim.particles.items():
        assert zyx.ndim == 2 and zyx.shape[1] == 3 and len(zyx) > 0, name
        assert np.all((zyx >= 0) & (zyx <= upper)), name
    assert sim.diameters_px["ribosome"] == pytest.approx(250.0 / 20.0)
    assert sim.density.shape == sim.volume.shape


def test_particle_models_match_nominal_diameters():
    for name, diameter_a in CLASS_DIAMETERS_A.items():
        zyx_a, weights = particle_atoms(name, voxel_size_a=20.0)
        assert len(zyx_a) > 20 and np.all(weights > 0)
        com = (zyx_a * weights[:, None]).sum(0) / weights.sum()
        np.testing.assert_allclose(com, 0.0, atol=1e-6)
        # Largest extent along the three axes of the model frame, as a cheap diameter.
        extent = (zyx_a.max(0) - zyx_a.min(0)).max()
        assert 0.8 * diameter_a < extent < 1.2 * diameter_a, (name, extent)


def test_particles_do_not_overlap(sim):
    radius_px = {
        name: np.linalg.norm(particle_atoms(name, sim.voxel_size_a)[0], axis=1).max()
        / sim.voxel_size_a
        for name in sim.particles
    }
    centres = np.vstack(list(sim.particles.values()))
    radii = np.concatenate([np.full(len(v), radius_px[k]) for k, v in sim.particles.items()])
    gold = sim.distractors["gold"]
    centres = np.vstack([centres, gold])
    radii = np.concatenate([radii, np.full(len(gold), 50.0 / sim.voxel_size_a)])
    d = centres[:, None, :] - centres[None, :, :]
    period_x = sim.shape[2]  # the simulated sample is periodic along x
    d[..., 2] -= period_x * np.round(d[..., 2] / period_x)
    dist = np.linalg.norm(d, axis=-1)
    np.fill_diagonal(dist, np.inf)
    assert np.all(dist >= radii[:, None] + radii[None, :])


def test_crowded_at_default_concentration():
    sim = simulate_tomogram((48, 128, 128), voxel_size_a=20.0, snr=1.0, seed=1)
    # Hundreds of particles in a 256 nm x 256 nm field, as in a crowded cytosol.
    assert sum(len(v) for v in sim.particles.values()) > 200
    ice_volume = 128 * 128 * sim.info["ice_thickness_a"] / sim.voxel_size_a
    occupied = sum(
        len(zyx) * 4 / 3 * np.pi * (sim.diameters_px[name] / 2) ** 3
        for name, zyx in sim.particles.items()
    )
    assert occupied / ice_volume > 0.1


def test_proteins_are_dark(sim):
    # The reconstruction anti-correlates with the true potential (proteins dark).
    corr = np.corrcoef(sim.volume.ravel(), sim.density.ravel())[0, 1]
    assert corr < -0.1
    rng = np.random.default_rng(0)
    random_zyx = rng.uniform(0, 1, (200, 3)) * (np.array(sim.shape) - 1)
    background = _ball_means(sim.volume, random_zyx, 2.0).mean()
    for name in ("ribosome", "proteasome", "globular"):  # the shell is hollow
        inside = _ball_means(sim.volume, sim.particles[name], sim.diameters_px[name] / 4)
        assert inside.mean() < background - 0.5, name


def test_missing_wedge_is_real():
    sim = simulate_tomogram((64, 64, 64), voxel_size_a=10.0, snr=0.5, seed=3)
    power = np.abs(np.fft.fftn(sim.volume)) ** 2
    kz, ky, kx = np.meshgrid(*[np.fft.fftfreq(n) for n in sim.shape], indexing="ij")
    k = np.sqrt(kz**2 + ky**2 + kx**2)
    band = (k > 0.08) & (k < 0.4) & (np.abs(ky) < 0.1)
    angle_from_kz = np.degrees(np.arctan2(np.abs(kx), np.abs(kz)))
    # Tilts of ±60° leave a 30° cone around kz unmeasured.
    near_kz = power[band & (angle_from_kz < 20)].mean()
    measured = power[band & (angle_from_kz > 45)].mean()
    assert near_kz < 0.1 * measured


def test_snr_controls_noise():
    clean = simulate_tomogram(**SMALL, snr=10.0, seed=5, return_density=True)
    noisy = simulate_tomogram(**SMALL, snr=0.05, seed=5, return_density=True)
    def corr(s):
        return abs(np.corrcoef(s.volume.ravel(), s.density.ravel())[0, 1])
    assert corr(clean) > 2 * corr(noisy)


def test_nothing_wraps_along_y():
    # The CTF is applied over the detector (u, y): without padding along y the two y faces
    # were coupled (low-passed, their slices correlated at -0.68 on average over these seeds,
    # -0.11 to -0.96). Apart, two slices' correlation scatters about 0.15 at this size.
    from scipy.ndimage import gaussian_filter

    r = []
    for seed in range(6):
        v = gaussian_filter(simulate_tomogram((32, 96, 96), voxel_size_a=10.0, snr=1.0, seed=seed).volume, 2)
        r.append(np.corrcoef(v[:, 0].ravel(), v[:, -1].ravel())[0, 1])
    assert np.mean(r) > -0.3, r


def test_phase_flip_changes_volume():
    # 10 Å voxels: the first CTF zero (about 1/25 Å^-1 at 3 µm) lies below Nyquist.
    small = dict(shape=(32, 64, 64), voxel_size_a=10.0)
    raw = simulate_tomogram(**small, seed=2)
    flipped = simulate_tomogram(**small, seed=2, phase_flip=True)
    assert flipped.info["phase_flip"] and not raw.info["phase_flip"]
    assert not np.allclose(raw.volume, flipped.volume)


def test_labels_are_subset_of_one_class_in_region(sim):
    truth = sim.particles[sim.label_class]
    z0, y0, x0, z1, y1, x1 = sim.label_region
    assert sim.label_region == (0, 0, 0, 32, 32, 32)
    in_region = np.all((truth >= [z0, y0, x0]) & (truth < [z1, y1, x1]), axis=1)
    assert len(sim.labels) == max(1, round(0.3 * in_region.sum()))
    for p in sim.labels:
        match = np.all(truth == p, axis=1)
        assert match.sum() == 1 and in_region[match][0]


def test_labels_custom_class_region_fraction_and_noise():
    region = (0, 0, 0, 32, 64, 40)
    sim = simulate_tomogram(
        **SMALL, seed=4, label_class="globular", label_fraction=0.5,
        label_region=region, label_noise_px=1.0,
    )
    truth = sim.particles["globular"]
    in_region = np.all((truth >= region[:3]) & (truth < region[3:]), axis=1)
    assert sim.label_class == "globular" and sim.label_region == region
    assert len(sim.labels) == round(0.5 * in_region.sum()) > 0
    picked = truth[sim.info["label_indices"]]
    err = np.linalg.norm(sim.labels - picked, axis=1)
    assert 0 < err.mean() < 4.0


def test_bad_arguments_are_refused():
    # user errors: CetpickError (one line in the CLI), plain numbers
    with pytest.raises(CetpickError, match="snr"):
        simulate_tomogram(**SMALL, snr=0.0)
    with pytest.raises(CetpickError, match="label_fraction"):
        simulate_tomogram(**SMALL, label_fraction=1.5)
    with pytest.raises(CetpickError, match="Unknown particle class"):
        simulate_tomogram(**SMALL, classes=["ribosome", "virus"])
    with pytest.raises(CetpickError, match="label_class"):
        simulate_tomogram(**SMALL, classes=["globular"], label_class="ribosome")
    with pytest.raises(CetpickError, match=r"voxel size must be a positive number of Å, not 0\."):
        simulate_tomogram(**{**SMALL, "voxel_size_a": 0.0})
    with pytest.raises(CetpickError, match=r"at least 8 voxels a side, not \(4, 64, 64\)"):
        simulate_tomogram(**{**SMALL, "shape": (np.int64(4), 64, 64)})


def test_save_synthetic_round_trip(sim, tmp_path):
    import mrcfile

    from napari_cetpick.io import open_tomogram, read_points

    paths = save_synthetic(sim, tmp_path, stem="syn")
    assert paths["tomogram"].name == "syn.mrc"
    with mrcfile.open(paths["tomogram"], permissive=True) as mrc:
        assert float(mrc.voxel_size.x) == pytest.approx(20.0)
        assert mrc.data.shape == sim.shape
        np.testing.assert_allclose(mrc.data, sim.volume)
    tomo = open_tomogram(paths["tomogram"])
    assert tomo.voxel_size_a == pytest.approx(20.0)
    for name, zyx in sim.particles.items():
        back = read_points(paths[f"truth:{name}"], fmt="imod")
        np.testing.assert_allclose(back.zyx, zyx, atol=1e-2)
    labels = read_points(paths["labels"], fmt="imod")
    np.testing.assert_allclose(labels.zyx, sim.labels, atol=1e-2)
    assert paths["info"].exists()


def test_write_large_noise_tomogram(tmp_path):
    import mrcfile

    path = write_large_noise_tomogram(tmp_path / "big.mrc", (20, 48, 40), voxel_size_a=12.5,
                                      seed=1, slab=8)
    with mrcfile.open(path, permissive=True) as mrc:
        assert mrc.data.shape == (20, 48, 40) and mrc.data.dtype == np.float32
        assert float(mrc.voxel_size.x) == pytest.approx(12.5)
        assert float(mrc.header.dmean) == pytest.approx(float(mrc.data.mean()), abs=1e-4)
        assert float(mrc.header.rms) == pytest.approx(float(mrc.data.std()), rel=1e-4)
        assert 0.9 < float(mrc.data.std()) < 1.1


def test_classes_that_do_not_fit_the_ice_are_left_out():
    # 10 Å voxels, 32 slices: a 25 nm ribosome cannot fit in 21 nm of ice.
    sim = simulate_tomogram((32, 64, 64), voxel_size_a=10.0, seed=0)
    assert sim.particles["ribosome"].shape == (0, 3)
    assert sim.labels.shape == (0, 3)
    assert len(sim.particles["globular"]) > 0
