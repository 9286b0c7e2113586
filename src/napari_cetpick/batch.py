"""Batch detection: one isolated job per tomogram, in this process or on a Dask cluster.

A job detects in one tomogram (an MRC file, or a run of a copick project) and writes its
outputs; whatever goes wrong inside it becomes a failed :class:`JobResult` with a one-line
reason, and the other jobs go on. :func:`run_batch` is a generator like ``detect``: it
yields :class:`BatchProgress` records (a finished job, or tile progress of running ones)
and returns the results in job order.

On Dask (``dask.distributed``, an optional dependency imported only here and only when
asked for) every worker process loads the model once, reads its tomogram itself by path
and writes the same files as a local run; paths must therefore be visible to the workers.

A model of several classes detects them all in one pass per tomogram. Its picks go into one
file per tomogram when the format holds classes (CSV ``class`` column, STAR class number and
name, ``.mod`` named objects), else into one file per class (``{tomogram}_{class}_picks``);
heatmaps are one per class; copick jobs write one picks set per class, under the copick
object of the class's name.

Output files are written atomically (a hidden temporary name in the output folder, then a
rename), so a run killed mid-way never leaves a half-written file that ``skip_existing``
would take for a finished one.
"""
from __future__ import annotations

import glob
import os
import threading
import time
import uuid
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Generator, Iterable

from .config import DetectConfig
from .errors import CetpickError
from .io.formats import WRITABLE_FORMATS, point_format

PICK_FORMATS = {f.name: f.extension for f in WRITABLE_FORMATS}  # picks format -> file extension
DASK_INSTALL_HINT = "pip install 'napari-cetpick[dask]'"
TILE_TOPIC = "cetpick-tiles"


# ----------------------------------------------------------------------------- records
@dataclass(frozen=True)
class DetectJob:
    """One tomogram to detect in.

    Attributes
    ----------
    name : str
        Output stem (files) or the copick run name.
    path : str or None
        Absolute path of a tomogram file.
    run : str or None
        copick run name (the project is :attr:`BatchOptions.copick_config`).
    mask : str or None
        Ignore mask of this tomogram: an MRC of its shape in the same file layout, nonzero
        = keep; picks in zero regions are dropped.
    """

    name: str
    path: str | None = None
    run: str | None = None
    mask: str | None = None

    @property
    def source(self) -> str:
        return self.path if self.path is not None else f"copick run {self.run}"


@dataclass(frozen=True)
class BatchOptions:
    """Everything a job needs besides its tomogram; plain values, so it travels to Dask workers.

    Paths are absolute. ``out_dir`` is used for file jobs; the ``copick_*``/``object_name``/
    ``voxel_spacing_a``/``tomo_type``/``out_*`` fields for copick jobs (a model of several
    classes writes each class under the copick object of its name; ``object_name`` is then
    not used). ``threshold`` is one for every class, or a dict ``{class name: threshold}``
    (classes left out choose theirs as ``threshold_from`` says).
    """

    model: str
    out_dir: str | None = None
    fmt: str = "imod"
    heatmap: bool = True
    threshold: float | dict | None = None
    threshold_from: str = "tomogram"
    views: int = DetectConfig.views
    profile_weight: float = DetectConfig.profile_weight
    profile_contrast: bool = DetectConfig.profile_contrast
    flatten: float = DetectConfig.flatten
    precision: str = "auto"
    K: int | None = None
    min_distance_vox: float | None = None
    margin_z: int = 0
    margin_xy: int = 0
    tile_xy: int = 256
    device: str = "auto"
    thickness_axis: int | None = None
    voxel_size_a: float | None = None
    copick_config: str | None = None
    object_name: str | None = None
    voxel_spacing_a: float | None = None
    tomo_type: str | None = None
    out_user_id: str = "cetpick"
    out_session_id: str = "0"


@dataclass
class JobResult:
    """What happened to one tomogram. ``status`` is ``ok``, ``skipped`` or ``failed``.

    With a model of several classes ``picks`` and ``expected`` are totals over the classes,
    ``threshold``/``threshold_source`` are None, and ``classes`` holds each class's
    ``{"picks", "threshold", "threshold_source", "expected", "profile_moved", "profile_raised",
    "profile_gain"}`` (absent from
    :meth:`to_dict` for a model of one class).
    """

    name: str
    source: str
    status: str
    picks: int | None = None
    threshold: float | None = None
    threshold_source: str | None = None  # how the threshold was chosen (detect.choose_threshold)
    expected: float | None = None  # particles the model's labels imply for this tomogram
    profile_moved: int | None = None  # candidates the profile check moved below the threshold (None: no check)
    profile_raised: int | None = None  # candidates it raised from below the threshold to above it
    profile_gain: float | None = None  # the class's contrast the check read there, × the labels' (None: no check)
    classes: dict | None = None  # several classes: class name -> its figures
    seconds: float = 0.0
    outputs: dict = field(default_factory=dict)
    error: str | None = None
    warnings: list = field(default_factory=list)
    device: str = ""
    worker: str = ""

    def to_dict(self) -> dict:
        d = asdict(self)
        if d["classes"] is None:
            del d["classes"]
        return {"tomogram": d.pop("name"), **d}


@dataclass
class BatchProgress:
    """A batch's state: ``result`` is set when a job has just finished (or was skipped).

    ``running`` maps the name of each tomogram being detected to ``(tile, n_tiles)``.
    """

    done: int
    total: int
    failed: int
    elapsed_s: float
    eta_s: float | None
    running: dict
    result: JobResult | None = None


@dataclass
class TileProgress:
    name: str
    tile: int
    n_tiles: int


# ----------------------------------------------------------------------------- planning
def _is_glob(text: str) -> bool:
    return glob.has_magic(text)


def _expand(pattern: str, base: Path | None = None) -> list[Path]:
    p = Path(pattern).expanduser()
    if base is not None and not p.is_absolute():
        p = base / p
    if _is_glob(str(p)):
        hits = sorted(Path(h) for h in glob.glob(str(p), recursive=True) if Path(h).is_file())
        if not hits:
            raise CetpickError(f"{pattern}: no file matches this pattern.")
        return hits
    return [p]


def read_tomogram_list(path) -> list[Path]:
    """Paths (or patterns) of a ``--tomogram-list`` file, one a line; ``#`` starts a comment.

    Relative paths are taken from the list's folder.
    """
    path = Path(path)
    if not path.is_file():
        raise CetpickError(f"{path}: tomogram list not found.")
    out = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            out += _expand(line, path.parent)
    return out


def plan_file_jobs(tomograms: Iterable[str] = (), lists: Iterable[str] = (), image_lists: Iterable[str] = ()) \
        -> list[DetectJob]:
    """One job per tomogram from paths/globs, ``--tomogram-list`` files and the original's image lists.

    Raises
    ------
    CetpickError
        Nothing to do, a pattern matching nothing, or two tomograms with the same output name.
    """
    from .io import read_image_list

    named: list[tuple[str, Path]] = []
    for il in image_lists:
        named += [(name, Path(p)) for name, p in read_image_list(il).items()]
    for lst in lists:
        named += [(p.stem, p) for p in read_tomogram_list(lst)]
    for t in tomograms:
        named += [(p.stem, p) for p in _expand(t)]
    if not named:
        raise CetpickError("Give --tomogram (a path or a quoted pattern such as 'dir/*.mrc'), --tomogram-list "
                           "or --test_img_txt.")
    jobs, seen = [], {}
    for name, p in named:
        ap = str(p.resolve())
        if name in seen:
            if seen[name] == ap:
                continue  # the same file listed twice: one job
            raise CetpickError(f"Two tomograms would write outputs named {name!r}: {seen[name]} and {ap}; "
                               "rename one or detect them into different --out-dir folders.")
        seen[name] = ap
        jobs.append(DetectJob(name=name, path=ap))
    return jobs


def plan_copick_jobs(config_path, runs: Iterable[str] = (), voxel_spacing_a: float | None = None,
                     tomo_type: str | None = None) -> list[DetectJob]:
    """One job per copick run: the runs named, else every run that has that tomogram."""
    from .io.copick_project import copick_run_names, open_copick

    root = open_copick(config_path)
    names = list(dict.fromkeys(runs))
    if names:
        return [DetectJob(name=r, run=r) for r in names]
    jobs = []
    for r in copick_run_names(root):
        run = root.get_run(r)
        vs = run.get_voxel_spacing(float(voxel_spacing_a)) if run is not None else None
        if vs is not None and vs.get_tomograms(tomo_type):
            jobs.append(DetectJob(name=r, run=r))
    if not jobs:
        raise CetpickError(f"{Path(config_path).name}: no run has a {tomo_type!r} tomogram at "
                           f"{float(voxel_spacing_a):g} Å.")
    return jobs


def several_classes(ckpt) -> list[str] | None:
    """The class names of a model of several classes; None for a model of one."""
    return list(ckpt.class_names) if ckpt.n_classes > 1 else None


def output_paths(out_dir, stem: str, fmt: str, heatmap: bool = True, class_names=None) -> dict[str, Path]:
    """The files of one tomogram's detection, picks first (the order they are reported in).

    One class: ``picks`` (``{stem}_picks{ext}``) and ``heatmap`` (``{stem}_heatmap.mrc``).
    Several (``class_names``): ``picks`` holding every class when the format carries classes,
    else ``picks:{class}`` (``{stem}_{class}_picks{ext}``); ``heatmap:{class}``
    (``{stem}_{class}_heatmap.mrc``). Class names hold no ``:`` (``config.check_class_name``).
    """
    out = Path(out_dir)
    ext = PICK_FORMATS[fmt]
    if not class_names:
        paths = {"picks": out / f"{stem}_picks{ext}"}
        if heatmap:
            paths["heatmap"] = out / f"{stem}_heatmap.mrc"
        return paths
    if point_format(fmt).carries_classes:
        paths = {"picks": out / f"{stem}_picks{ext}"}
    else:
        paths = {f"picks:{c}": out / f"{stem}_{c}_picks{ext}" for c in class_names}
    if heatmap:
        paths.update({f"heatmap:{c}": out / f"{stem}_{c}_heatmap.mrc" for c in class_names})
    return paths


def expected_outputs(job: DetectJob, opts: BatchOptions, ckpt=None) -> dict[str, Path]:
    """Files a finished file job leaves in ``out_dir`` (empty for copick jobs).

    ``ckpt`` is the model (default: loaded from ``opts.model``); its classes decide the files.
    """
    if job.path is None:
        return {}
    ckpt = ckpt if ckpt is not None else load_model(opts.model)
    return output_paths(opts.out_dir, job.name, opts.fmt, opts.heatmap, several_classes(ckpt))


def copick_objects(opts: BatchOptions, ckpt=None) -> list[str]:
    """The copick objects a copick job writes picks of: the model's class names when it has
    several (default model: ``opts.model``), else ``opts.object_name``."""
    ckpt = ckpt if ckpt is not None else load_model(opts.model)
    return several_classes(ckpt) or [opts.object_name]


def is_done(job: DetectJob, opts: BatchOptions, copick_root=None, ckpt=None) -> bool:
    """True when every output of the job is already there (for ``skip_existing``)."""
    if job.path is None:
        from .io.copick_project import copick_picks_complete, open_copick

        root = copick_root or open_copick(opts.copick_config)
        return all(copick_picks_complete(root, job.run, obj, opts.out_user_id, opts.out_session_id)
                   for obj in copick_objects(opts, ckpt))
    return all(p.is_file() for p in expected_outputs(job, opts, ckpt).values())


# ----------------------------------------------------------------------------- per-process caches
_CACHE_LOCK = threading.Lock()
_MODELS: dict = {}
_COPICK_ROOTS: dict = {}


def load_model(path):
    """The checkpoint at ``path``, loaded once per process (reloaded when the file changes)."""
    from .checkpoint import Checkpoint

    p = Path(path)
    try:
        st = p.stat()
        key = (str(p.resolve()), st.st_mtime_ns, st.st_size)
    except OSError:
        key = (str(p), None, None)
    with _CACHE_LOCK:
        ckpt = _MODELS.get(key)
        if ckpt is None:
            ckpt = Checkpoint.load(p)
            _MODELS.clear()  # one model per process is all a batch needs
            _MODELS[key] = ckpt
    return ckpt


def _copick_root(config_path):
    from .io.copick_project import open_copick

    key = str(Path(config_path).resolve())
    with _CACHE_LOCK:
        root = _COPICK_ROOTS.get(key)
        if root is None:
            root = _COPICK_ROOTS[key] = open_copick(config_path)
    return root


# ----------------------------------------------------------------------------- writing
def _tmp_name(final: Path) -> Path:
    return final.with_name(f".{final.stem}.part-{os.getpid()}-{uuid.uuid4().hex[:8]}{final.suffix}")


def atomic_write(final, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` on a hidden temporary name beside ``final``, then rename it to ``final``.

    The rename is atomic on one filesystem: readers see the old file or the whole new one.
    The temporary file is removed if writing fails or is interrupted.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(final)
    try:
        write(tmp)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()
    return final


def _remove_stale_parts(outputs: dict[str, Path]) -> None:
    """Temporary files a killed run left for these outputs (no other job writes to those names)."""
    for final in outputs.values():
        if final.parent.is_dir():
            for stale in final.parent.glob(f".{glob.escape(final.stem)}.part-*{glob.escape(final.suffix)}"):
                try:
                    stale.unlink()
                except OSError:
                    pass


def write_outputs(res, tomo, out_dir, stem: str, fmt: str, heatmap: bool = True,
                  class_colours: dict | None = None) -> dict[str, Path]:
    """Write picks (with scores where the format has a column) and the heatmap MRC of one tomogram.

    ``res`` is a ``DetectResult`` (one class) or a ``ClassDetections`` (several): then the
    files are those of :func:`output_paths`, and ``class_colours`` (``{class: "#rrggbb"}``)
    colours the objects of a ``.mod``. Each file is written atomically; the picks last, so
    their presence means the heatmaps are complete too.
    """
    from .io import write_heatmap, write_points

    if fmt not in PICK_FORMATS:
        raise CetpickError(f"Unknown picks format {fmt!r}; choose one of {', '.join(PICK_FORMATS)}.")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    class_names = list(res.names) if hasattr(res, "names") else None
    paths = output_paths(out_dir, stem, fmt, heatmap, class_names)
    frame = dict(layout=tomo.layout, voxel_size_a=tomo.voxel_size_a)

    def heat(key, r):
        atomic_write(paths[key], lambda p: write_heatmap(p, r.heatmap, r.scale, r.translate, **frame,
                                                          origin_a=getattr(tomo, "origin_a", None)))

    def picks(key, zyx, feats, **kw):
        atomic_write(paths[key], lambda p: write_points(p, zyx, features=feats, fmt=fmt, tomogram_name=stem,
                                                         shape_zyx=tomo.shape_zyx, **frame, **kw))

    if class_names is None:
        if heatmap:
            heat("heatmap", res)
        picks("picks", res.zyx, res.features)  # score, margin to the threshold (and view agreement)
        return paths
    if heatmap:
        for name in class_names:
            heat(f"heatmap:{name}", res[name])
    if "picks" in paths:  # one file holds every class
        table = res.table()
        picks("picks", table[["z", "y", "x"]].to_numpy(float), table.drop(columns=["z", "y", "x"]),
              class_names=class_names, class_colours=class_colours if fmt == "mod" else None)
    else:
        for name in class_names:
            picks(f"picks:{name}", res[name].zyx, res[name].features)
    return paths


# ----------------------------------------------------------------------------- one job
def _reason(exc: BaseException, job: DetectJob) -> str:
    """One line: the error's message, without repeating the file name the caller prints."""
    if isinstance(exc, CetpickError):
        text = str(exc)
    elif isinstance(exc, MemoryError):
        text = "out of memory"
    else:
        text = f"{type(exc).__name__}: {exc}"
    text = " ".join(text.split()) or type(exc).__name__
    if job.path is not None:
        prefix = Path(job.path).name + ": "
        if text.startswith(prefix):
            text = text[len(prefix):]
    return text[:500]


def _detect_config(opts: BatchOptions):
    return DetectConfig(threshold=opts.threshold, threshold_from=opts.threshold_from, views=opts.views, K=opts.K,
                        profile_weight=opts.profile_weight, profile_contrast=opts.profile_contrast,
                        flatten=opts.flatten, precision=opts.precision,
                        min_distance_vox=opts.min_distance_vox,
                        margin_z=opts.margin_z, margin_xy=opts.margin_xy, tile_xy=opts.tile_xy)


def detect_job(job: DetectJob, opts: BatchOptions, device: str | None = None, worker: str = "local") \
        -> Generator[TileProgress, None, JobResult]:
    """Detect in one tomogram and write its outputs; never raises for a problem of this tomogram.

    Yields :class:`TileProgress` per tile and returns a :class:`JobResult` (``failed`` with a
    one-line reason when anything goes wrong; ``KeyboardInterrupt`` still stops it).
    """
    from .detect import detect, detect_classes

    t0 = time.perf_counter()
    res_rec = JobResult(name=job.name, source=job.source, status="failed", worker=worker)
    notes: list[str] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ckpt = load_model(opts.model)
            names = several_classes(ckpt)
            if job.path is not None:
                from .io import open_tomogram

                if opts.out_dir is None:
                    raise CetpickError("No output folder given.")
                _remove_stale_parts(expected_outputs(job, opts, ckpt))
                tomo = open_tomogram(job.path, thickness_axis=opts.thickness_axis, voxel_size_a=opts.voxel_size_a)
            else:
                from .io.copick_project import check_copick_objects, open_copick_tomogram

                root = _copick_root(opts.copick_config)
                if names:
                    check_copick_objects(root, names)
                tomo = open_copick_tomogram(root, job.run, opts.voxel_spacing_a, opts.tomo_type)
            notes += list(tomo.notes)
            mask = None
            if job.mask is not None:
                from .io import open_mask

                mask = open_mask(job.mask, tomo)
            gen = (detect_classes if names else detect)(ckpt, tomo.data, _detect_config(opts),
                                                        voxel_size_a=tomo.voxel_size_a,
                                                        device=device or opts.device, mask=mask)
            while True:
                try:
                    pr = next(gen)
                except StopIteration as stop:
                    res = stop.value
                    break
                res_rec.device = pr.device.split(" — ")[0]
                yield TileProgress(job.name, pr.tile, pr.n_tiles)
            if job.path is not None:
                colours = _mod_colours(ckpt, notes) if names and opts.fmt == "mod" else None
                paths = write_outputs(res, tomo, opts.out_dir, job.name, opts.fmt, heatmap=opts.heatmap,
                                      class_colours=colours)
                res_rec.outputs = {k: str(v) for k, v in paths.items()}
            else:
                from .io.copick_project import write_copick_picks

                per_object = {f"picks:{n}": (n, res[n]) for n in names} if names else {"picks": (opts.object_name, res)}
                res_rec.outputs = {
                    key: write_copick_picks(root, job.run, obj, r.zyx, r.scores, opts.voxel_spacing_a,
                                            user_id=opts.out_user_id, session_id=opts.out_session_id)
                    for key, (obj, r) in per_object.items()}
        results = list(res) if names else [res]
        notes += [str(w.message) for w in caught] + [str(w) for r in results for w in getattr(r, "warnings", [])]
        res_rec.status = "ok"
        if names:
            res_rec.classes = {r.class_name: _figures(r) for r in results}
            res_rec.picks = sum(c["picks"] for c in res_rec.classes.values())
            expected = [c["expected"] for c in res_rec.classes.values()]
            res_rec.expected = None if None in expected else round(float(sum(expected)), 1)
        else:
            fig = _figures(res)
            res_rec.picks, res_rec.threshold, res_rec.threshold_source = (fig["picks"], fig["threshold"],
                                                                          fig["threshold_source"])
            res_rec.profile_moved, res_rec.profile_raised = fig["profile_moved"], fig["profile_raised"]
            res_rec.profile_gain = fig["profile_gain"]
            if fig["expected"] is not None:
                res_rec.expected = fig["expected"]
    except Exception as exc:  # isolation: one bad tomogram never stops the others
        res_rec.error = _reason(exc, job)
    res_rec.warnings = list(dict.fromkeys(notes))
    res_rec.seconds = time.perf_counter() - t0
    return res_rec


def _figures(res) -> dict:
    """Picks, threshold (and how it was chosen) and expected count of one class's detection."""
    expected = res.expected_particles
    return {"picks": int(len(res.zyx)), "threshold": float(res.threshold), "threshold_source": res.threshold_source,
            "expected": None if expected is None else round(float(expected), 1),
            "profile_moved": getattr(res, "profile_moved", None),
            "profile_raised": getattr(res, "profile_raised", None),
            "profile_gain": None if getattr(res, "profile_gain", None) is None else round(float(res.profile_gain), 3)}


def _mod_colours(ckpt, notes: list) -> dict:
    """``{class: "#rrggbb"}`` of the model's classes; a colour IMOD cannot take becomes a note."""
    from .io.points import hex_to_rgb

    colours = {}
    for c in ckpt.classes:
        if not c.colour:
            continue
        try:
            hex_to_rgb(c.colour)
        except CetpickError as exc:
            notes.append(f"class {c.name!r}: {exc} Its .mod object keeps IMOD's default colour.")
            continue
        colours[c.name] = c.colour
    return colours


def run_job(job: DetectJob, opts: BatchOptions, on_tile: Callable[[TileProgress], None] | None = None,
            device: str | None = None, worker: str = "local") -> JobResult:
    """Drive :func:`detect_job` to its end (what a Dask worker runs)."""
    from .utils import run_generator

    return run_generator(detect_job(job, opts, device=device, worker=worker), on_tile)


# ----------------------------------------------------------------------------- Dask
def _import_distributed():
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise CetpickError(f"--dask needs dask.distributed: {DASK_INSTALL_HINT}.") from None
    return distributed


def connect_dask(spec: str):
    """``(client, cluster)`` for ``local:N`` (a new LocalCluster of N worker processes) or an address.

    ``cluster`` is None when connecting to an existing scheduler.
    """
    distributed = _import_distributed()
    spec = spec.strip()
    if spec.startswith("local"):
        _, _, n = spec.partition(":")
        try:
            n_workers = int(n) if n else max(1, (os.cpu_count() or 1))
        except ValueError:
            n_workers = 0
        if n_workers < 1:
            raise CetpickError(f"--dask {spec}: give local:N with N ≥ 1 worker processes.")
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        threads = str(max(1, cores // n_workers))
        import logging

        cluster = distributed.LocalCluster(
            n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None,
            silence_logs=logging.ERROR,
            env={"CETPICK_NUM_THREADS": threads, "OMP_WAIT_POLICY": "PASSIVE",
                 **{k: os.environ[k] for k in ("CETPICK_DEVICE", "CUDA_VISIBLE_DEVICES") if k in os.environ}})
        try:
            return distributed.Client(cluster), cluster
        except Exception:
            cluster.close()
            raise
    try:
        return distributed.Client(spec, timeout="20s"), None
    except Exception as exc:
        raise CetpickError(f"--dask {spec}: cannot reach the scheduler ({type(exc).__name__}: "
                           f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}).") from None


def _worker_device(requested: str, worker) -> str:
    """``auto`` on a worker of a multi-GPU machine: one GPU per worker, by worker number."""
    if (requested or "auto") != "auto":
        return requested
    import torch

    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if n <= 1:
        return requested
    name = str(getattr(worker, "name", ""))
    k = int(name) if name.isdigit() else sum(map(ord, str(getattr(worker, "address", ""))))
    return f"cuda:{k % n}"


def _run_on_worker(job: DetectJob, opts: BatchOptions) -> JobResult:
    """Task body on a Dask worker: run the job, reporting tile progress as worker events."""
    from distributed import get_worker

    worker = get_worker()
    last = [0.0]

    def on_tile(p: TileProgress) -> None:
        now = time.monotonic()
        if now - last[0] >= 0.5 or p.tile == p.n_tiles:
            last[0] = now
            try:
                worker.log_event(TILE_TOPIC, {"job": p.name, "tile": p.tile, "n": p.n_tiles})
            except Exception:  # progress is best effort
                pass

    return run_job(job, opts, on_tile=on_tile, device=_worker_device(opts.device, worker),
                   worker=str(worker.name))


# ----------------------------------------------------------------------------- the batch
def _progress(results, total, t0, running, result=None) -> BatchProgress:
    done = len(results)
    frac = done + sum(t / max(n, 1) for t, n in running.values())
    el = time.perf_counter() - t0
    eta = el * (total - frac) / frac if frac > 0 else None
    failed = sum(r.status == "failed" for r in results)
    return BatchProgress(done, total, failed, el, eta, dict(running), result)  # a copy: events may change it


def run_batch(jobs: list[DetectJob], opts: BatchOptions, skip_existing: bool = False, dask: str | None = None) \
        -> Generator[BatchProgress, None, list[JobResult]]:
    """Run every job, isolated from the others; yields progress, returns results in job order.

    Parameters
    ----------
    jobs : list of DetectJob
    opts : BatchOptions
    skip_existing : bool
        Jobs whose outputs all exist are reported as ``skipped`` and not run.
    dask : str, optional
        ``local:N`` or a scheduler address (``tcp://host:8786``); None runs here, one after another.
    """
    t0 = time.perf_counter()
    total = len(jobs)
    results: dict[int, JobResult] = {}
    todo = []
    root = ckpt = None
    copick_jobs = any(j.path is None for j in jobs)
    if skip_existing or copick_jobs:
        ckpt = load_model(opts.model)
    if copick_jobs and (skip_existing or several_classes(ckpt)):
        from .io.copick_project import check_copick_objects, open_copick

        root = open_copick(opts.copick_config)
        if several_classes(ckpt):  # one clear error before any work, not one failed job per run
            check_copick_objects(root, copick_objects(opts, ckpt))
    for i, job in enumerate(jobs):
        if skip_existing and is_done(job, opts, root, ckpt):
            r = JobResult(name=job.name, source=job.source, status="skipped",
                          outputs={k: str(v) for k, v in expected_outputs(job, opts, ckpt).items()})
            results[i] = r
            yield _progress(list(results.values()), total, t0, {}, r)
        else:
            todo.append((i, job))
    if dask is None:
        for i, job in todo:
            gen = detect_job(job, opts)
            while True:
                try:
                    tp = next(gen)
                except StopIteration as stop:
                    results[i] = stop.value
                    break
                yield _progress(list(results.values()), total, t0, {job.name: (tp.tile, tp.n_tiles)})
            yield _progress(list(results.values()), total, t0, {}, results[i])
    elif todo:
        yield from _run_batch_dask(todo, opts, dask, results, total, t0)
    return [results[i] for i in range(total)]


def _run_batch_dask(todo, opts, spec, results, total, t0):
    distributed = _import_distributed()
    client, cluster = connect_dask(spec)
    running: dict[str, tuple[int, int]] = {}
    finished: set[str] = set()

    def on_event(event):  # runs in the client's thread; events may arrive after their job's result
        try:
            msg = event[1]
            if msg["job"] not in finished:
                running[msg["job"]] = (int(msg["tile"]), int(msg["n"]))
        except Exception:
            pass

    try:
        client.subscribe_topic(TILE_TOPIC, on_event)
        futures, submitted = {}, []
        for i, job in todo:
            fut = client.submit(_run_on_worker, job, opts, key=f"cetpick-detect-{i}-{uuid.uuid4().hex[:8]}",
                                pure=False, retries=0)
            futures[fut.key] = (i, job)
            submitted.append(fut)
        ac = distributed.as_completed(submitted)
        del submitted
        last_tick = 0.0
        while not ac.is_empty():
            batch = ac.next_batch(block=False) if ac.has_ready() else []
            for fut in batch:
                i, job = futures[fut.key]
                try:
                    r = fut.result()
                except Exception as exc:  # the worker died, the task could not run, ...
                    r = JobResult(name=job.name, source=job.source, status="failed", error=_reason(exc, job))
                fut.release()
                results[i] = r
                finished.add(job.name)
                running.pop(job.name, None)
                yield _progress(list(results.values()), total, t0, running, r)
            if not batch:
                now = time.monotonic()
                if now - last_tick >= 0.5:
                    last_tick = now
                    yield _progress(list(results.values()), total, t0, running)
                time.sleep(0.1)
    finally:
        try:
            client.unsubscribe_topic(TILE_TOPIC)
        except Exception:
            pass
        client.close()
        if cluster is not None:
            cluster.close()

