"""Shared helpers for the benchmark scripts: BLAS thread pinning, interleaved timing, tables.

This module imports neither NumPy nor PyTorch at import time, so a script can
pin the BLAS thread pools (environment variables read once, when the BLAS
library loads) before anything loads NumPy:

    from _common import pin_blas_threads
    pin_blas_threads(1)          # before the first ``import numpy``
    import numpy as np

Timing is interleaved: every repetition runs each candidate once, in an order
rotated by one position per repetition, so slow drifts of the machine (clock
changes, a noisy neighbour) hit every candidate alike, and no candidate always
runs right after the same other one. Results are medians; the spread is the
interquartile range.
"""
from __future__ import annotations

import contextlib
import datetime
import gc
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Thread-count variables of the BLAS / OpenMP runtimes NumPy and PyTorch may load.
THREAD_ENV = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
              "NUMEXPR_NUM_THREADS", "BLIS_NUM_THREADS")
# Set on some machines to keep old OpenBLAS builds on a safe kernel; they can slow newer builds down.
OPENBLAS_TUNING_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")

_limits = []   # keeps a threadpoolctl limit alive for the life of the process


def add_repo_to_path():
    """Make ``import minigrad`` work when a script is run as ``python benchmarks/<name>.py``."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


def add_pinning_args(parser):
    """The command-line options every benchmark shares (threads, OpenBLAS tuning variables, PyTorch)."""
    parser.add_argument("--threads", type=int, default=1,
                        help="BLAS / OpenMP threads for NumPy and PyTorch")
    parser.add_argument("--clear-openblas-env", action="store_true",
                        help="unset OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE before NumPy loads. Some machines "
                             "set them to keep old OpenBLAS builds on a safe kernel; with a current OpenBLAS "
                             "they can make NumPy slower. Kept by default, and printed in the header.")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch columns even if it is installed")
    return parser


def pin_blas_threads(n=1, clear_openblas_env=False):
    """Limit BLAS / OpenMP pools to ``n`` threads. Call it before NumPy or PyTorch is imported.

    Sets the thread-count environment variables (read when the libraries load),
    then, if ``threadpoolctl`` is installed, also limits the pools it finds at
    run time. Returns a list of notes saying what was done.
    """
    notes = []
    late = [m for m in ("numpy", "torch") if m in sys.modules]
    if late:
        notes.append(f"warning: {', '.join(late)} imported before pinning; environment variables may be ignored")
    for var in THREAD_ENV:
        os.environ[var] = str(n)
    notes.append(f"{', '.join(THREAD_ENV)} = {n}, set before NumPy loads")
    if clear_openblas_env:
        gone = [f"{v}={os.environ.pop(v)}" for v in OPENBLAS_TUNING_ENV if v in os.environ]
        notes.append(f"unset {', '.join(gone)}" if gone else "no OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE to unset")
    try:
        import threadpoolctl  # noqa: PLC0415
    except ImportError:
        notes.append("threadpoolctl not installed: relying on the environment variables")
    else:
        import numpy  # noqa: F401, PLC0415  (load the BLAS so threadpoolctl can see it)
        _limits.append(threadpoolctl.threadpool_limits(n))
        notes.append(f"threadpoolctl {threadpoolctl.__version__}: limits set to {n}")
    return notes


def import_torch(threads=1, disabled=False):
    """PyTorch pinned to ``threads`` threads, or None when it is not installed (or ``disabled``)."""
    if disabled:
        return None
    try:
        import torch  # noqa: PLC0415
    except ImportError:
        return None
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(threads)
    except RuntimeError:
        pass   # already set, or parallel work already started
    return torch


def start(args, torch_part):
    """What a benchmark does first, in this order: pin the BLAS threads (before NumPy loads), make
    the repository importable, then import PyTorch pinned alike. Returns (notes, torch or None);
    ``torch_part`` names what is skipped without PyTorch ("its rows", "its column")."""
    notes = pin_blas_threads(args.threads, args.clear_openblas_env)
    add_repo_to_path()
    torch = import_torch(args.threads, args.no_torch)
    if torch is None:
        notes.append(f"PyTorch not importable or --no-torch: {torch_part} skipped")
    return notes, torch


@contextlib.contextmanager
def quiet_stderr():
    """Silence file descriptor 2 inside the block (PyTorch's profiler logs each start and stop from C++)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


# --------------------------------------------------------------------------- what machine this ran on


def _cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _openblas_info():
    """(threads, core name, config) of the OpenBLAS NumPy loaded, found via threadpoolctl or ctypes."""
    try:
        import threadpoolctl  # noqa: PLC0415
        for pool in threadpoolctl.threadpool_info():
            if pool.get("internal_api") == "openblas":
                return pool.get("num_threads"), pool.get("architecture"), pool.get("version")
    except ImportError:
        pass
    import ctypes  # noqa: PLC0415
    try:
        maps = Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return None
    paths = sorted({ln.split()[-1] for ln in maps if "openblas" in ln.lower() and "/" in ln})
    for path in paths:
        lib = ctypes.CDLL(path)
        for prefix, suffix in (("scipy_openblas", "64_"), ("openblas", "64_"), ("openblas", ""),
                               ("scipy_openblas", "")):
            threads = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
            if threads is None:
                continue
            core = getattr(lib, f"{prefix}_get_corename{suffix}", None)
            config = getattr(lib, f"{prefix}_get_config{suffix}", None)
            for f in (core, config):
                if f is not None:
                    f.restype = ctypes.c_char_p
            return (threads(), core().decode() if core else "?",
                    config().decode().split()[1] if config else "?")
    return None


def machine_report(torch=None, notes=()):
    """Lines describing the run: date, CPU, versions, BLAS threads and tuning variables."""
    import numpy as np  # noqa: PLC0415
    lines = [f"date     : {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M:%S %Z}",
             f"machine  : {_cpu_model()}, nproc={os.cpu_count()}, {platform.system()} {platform.release()}",
             f"python   : {platform.python_version()}   numpy {np.__version__}"
             + (f"   torch {torch.__version__}" if torch is not None else "   torch not used")]
    ob = _openblas_info()
    if ob is not None:
        lines.append(f"numpy    : OpenBLAS {ob[2]}, core {ob[1]}, {ob[0]} thread(s)")
    if torch is not None:
        blas = "MKL" if torch.backends.mkl.is_available() else "non-MKL BLAS"
        lines.append(f"torch    : {blas}, {torch.get_num_threads()} intra-op thread(s), "
                     f"{torch.get_num_interop_threads()} inter-op")
    tuning = [f"{v}={os.environ[v]}" for v in OPENBLAS_TUNING_ENV if v in os.environ]
    lines.append(f"env      : {' '.join(tuning) if tuning else 'OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE not set'}")
    try:
        load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
        lines.append(f"load avg : {load} (1, 5, 15 min) at start; other work on the machine shows up here")
    except OSError:
        pass
    lines.extend(f"pinning  : {n}" for n in notes)
    return lines


# --------------------------------------------------------------------------- timing


def interleaved(fns, rounds, warmup, cpu=None):
    """Time each of ``fns`` (name -> zero-argument callable) ``rounds`` times, round-robin.

    ``warmup`` untimed rounds come first. Each round runs every function once,
    starting one position later than the round before. The garbage collector
    runs between calls and is off while a call is timed, so a collection
    triggered by one library is not charged to another (objects alive at the
    start are frozen out of collection, so this costs little). Returns
    name -> list of seconds; given a dict ``cpu``, fills it with name -> the
    process CPU seconds of each call (which other work on a shared machine
    changes less).
    """
    names = list(fns)
    times = {k: [] for k in names}
    was_enabled = gc.isenabled()
    gc.collect()
    gc.freeze()   # what exists now (modules, models) is never scanned again: collections between calls stay cheap
    try:
        for r in range(warmup + rounds):
            shift = r % len(names)
            for name in names[shift:] + names[:shift]:
                gc.collect()
                gc.disable()
                c0, t0 = time.process_time(), time.perf_counter()
                fns[name]()
                t1, c1 = time.perf_counter(), time.process_time()
                gc.enable()
                if r >= warmup:
                    times[name].append(t1 - t0)
                    if cpu is not None:
                        cpu.setdefault(name, []).append(c1 - c0)
    finally:
        gc.unfreeze()
        if was_enabled:
            gc.enable()
    return times


def median(xs):
    return statistics.median(xs)


def quartiles(xs):
    """(25th, 75th) percentiles."""
    if len(xs) < 2:
        return xs[0], xs[0]
    q = statistics.quantiles(xs, n=4, method="inclusive")
    return q[0], q[2]


def paired_ratio(num, den):
    """Median over rounds of num[i] / den[i]: the ratio of two candidates timed side by side."""
    return statistics.median(a / b for a, b in zip(num, den))


def ms(seconds):
    """Milliseconds as text: two decimals, three below 1 ms."""
    v = seconds * 1e3
    return f"{v:.3f}" if v < 1 else f"{v:.2f}"


def spread(xs):
    lo, hi = quartiles(xs)
    return f"{ms(lo)}-{ms(hi)}"


def table(headers, rows, right=None):
    """A plain-text table; columns whose index is in ``right`` are right-aligned (default: all but the first)."""
    right = set(range(1, len(headers))) if right is None else set(right)
    cells = [list(map(str, headers))] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[c]) for r in cells) for c in range(len(headers))]

    def fmt(row):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths)))

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([fmt(cells[0]), rule] + [fmt(r) for r in cells[1:]])


def verdict(ok):
    return "met" if ok else "MISSED"
