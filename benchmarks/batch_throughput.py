"""Batch detection throughput: tomograms per hour, one process vs ``--dask local:N``.

Protocol (docs/benchmark.md, "Batch throughput"): simulate one tomogram (default
512×512×160 at 10 Å, ribosomes), copy it to N files (throughput does not depend on the
content), train a model for a few dozen steps (accuracy does not matter here), then run
``cetpick detect`` over all N files once in one process and once on a local Dask cluster.
Each configuration runs as its own ``cetpick`` process; wall time includes start-up, model
loading, the cluster's start-up and writing picks and heatmaps. Prints one JSON line per
configuration with the median over ``--repeat`` runs (``--out`` appends them to a file).

    python benchmarks/batch_throughput.py                        # 8 × 512×512×160, one process vs local:2
    python benchmarks/batch_throughput.py --n 4 --shape 64 256 256 --workers 2 4
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from run_benchmark import machine  # noqa: E402  (one description of the machine for both benchmarks)


def prepare(work: Path, shape, n: int, steps: int, voxel_size_a: float, seed: int) -> tuple[Path, Path]:
    """N copies of one simulated tomogram and a quickly trained model (cached in ``work``)."""
    from napari_cetpick.io import write_points, write_tomogram
    from napari_cetpick.synthetic import simulate_tomogram

    tomo_dir = work / "tomograms"
    model = work / f"model_{steps}steps.ckpt"
    first = tomo_dir / "tomo_00.mrc"
    if not first.is_file():
        tomo_dir.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        sim = simulate_tomogram(shape=tuple(shape), voxel_size_a=voxel_size_a, snr=0.3, seed=seed,
                                label_class="ribosome")
        write_tomogram(first, sim.volume, voxel_size_a=voxel_size_a)
        labels = sim.labels if len(sim.labels) else sim.particles["ribosome"][:5]  # tiny test volumes
        write_points(work / "labels.txt", labels)
        print(f"simulated {tuple(shape)} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    for i in range(1, n):
        copy = tomo_dir / f"tomo_{i:02d}.mrc"
        if not copy.is_file():
            shutil.copyfile(first, copy)
    for extra in sorted(tomo_dir.glob("tomo_*.mrc"))[n:]:
        extra.unlink()
    if not model.is_file():
        subprocess.run([sys.executable, "-m", "napari_cetpick.cli", "train", "--tomogram", str(first), "--labels",
                        str(work / "labels.txt"), "--diameter-a", "250", "--max-steps", str(steps),
                        "--out", str(model), "--quiet"], check=True)
    return tomo_dir, model


def run_case(label: str, tomo_dir: Path, model: Path, out_dir: Path, extra: list[str]) -> dict:
    shutil.rmtree(out_dir, ignore_errors=True)
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "napari_cetpick.cli", "detect", "--model", str(model),
                           "--tomogram", str(tomo_dir / "*.mrc"), "--out-dir", str(out_dir), "--json", "--quiet",
                           *extra], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{label} failed:\n{proc.stderr}")
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    secs = [r["seconds"] for r in rows]
    return {
        "case": label, "tomograms": len(rows), "wall_s": round(wall, 1),
        "tomograms_per_hour": round(3600 * len(rows) / wall, 1),
        "median_s_per_tomogram": round(statistics.median(secs), 1),
        "min_s": round(min(secs), 1), "max_s": round(max(secs), 1),
        "device": rows[0]["device"] if rows else "", "loadavg_1min_before": round(load_before, 2),
        "loadavg_1min_after": round(os.getloadavg()[0], 2),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=8, help="number of tomograms")
    p.add_argument("--shape", type=int, nargs=3, default=(160, 512, 512), metavar=("Z", "Y", "X"))
    p.add_argument("--voxel-size", type=float, default=10.0)
    p.add_argument("--workers", type=int, nargs="+", default=[2], help="Dask local worker counts to compare")
    p.add_argument("--steps", type=int, default=40, help="training steps of the throwaway model")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--repeat", type=int, default=3, help="runs of each case; medians are reported")
    p.add_argument("--work", default=str(HERE / "cache" / "batch"), help="folder for tomograms, model, outputs")
    p.add_argument("--out", help="append the JSON lines to this file")
    args = p.parse_args(argv)

    work = Path(args.work)
    tomo_dir, model = prepare(work, args.shape, args.n, args.steps, args.voxel_size, args.seed)
    info = {"machine": machine(), "shape_zyx": list(args.shape), "n": args.n}
    cases = [("one process", [])] + [(f"dask local:{w}", ["--dask", f"local:{w}"]) for w in args.workers]
    runs: dict = {label: [] for label, _ in cases}
    for rep in range(args.repeat):  # interleaved, so slow phases of a shared machine hit every case
        for label, extra in cases:
            res = run_case(label, tomo_dir, model, work / "out", extra)
            print(json.dumps({**info, "repeat": rep, **res}), file=sys.stderr, flush=True)
            runs[label].append(res)
    lines = []
    for label, rs in runs.items():
        walls = [r["wall_s"] for r in rs]
        med = statistics.median(walls)
        res = {**info, "case": label, "repeats": len(rs), "median_wall_s": round(med, 1), "wall_s": walls,
               "tomograms_per_hour": round(3600 * args.n / med, 1),
               "median_s_per_tomogram": statistics.median(r["median_s_per_tomogram"] for r in rs),
               "device": rs[0]["device"],
               "loadavg_1min": [r["loadavg_1min_before"] for r in rs] + [rs[-1]["loadavg_1min_after"]]}
        print(json.dumps(res), flush=True)
        lines.append(res)
    if args.out:
        with open(args.out, "a") as f:
            for res in lines:
                f.write(json.dumps(res) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
