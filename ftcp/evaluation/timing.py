"""Wall time, CPU time and peak resident memory of a block of code.

Peak memory is read from the kernel, not from Python allocators: numpy/BLAS and torch
allocate outside ``tracemalloc``'s view.  On Linux the process high-water mark (VmHWM in
``/proc/self/status``) is reset at the start of each measured block by writing ``5`` to
``/proc/self/clear_refs``; where that is not allowed, a background thread samples VmRSS
every few milliseconds (it can miss very short spikes: ``method`` says which was used).
Nested blocks work: an inner block's peak is passed on to the blocks around it.

Pages of memory-mapped files (the FTCP store is read through ``np.load(mmap_mode="r")``)
count in the resident set while mapped, although the kernel can drop them at any time.
So a second figure, ``peak_anon_mb``, samples the anonymous part (RssAnon: what the
process really has to hold) every few milliseconds; memory budgets refer to that one.
"""
from __future__ import annotations

import resource
import threading
import time
from contextlib import contextmanager

_STATUS = "/proc/self/status"
_CLEAR_REFS = "/proc/self/clear_refs"
_active: list[dict] = []   # measures in progress, outermost first


def _status_kb(field: str) -> int | None:
    try:
        with open(_STATUS) as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def anon_mb() -> float | None:
    """Current anonymous resident memory (MB), or None where /proc is unavailable."""
    kb = _status_kb("RssAnon")
    return None if kb is None else kb / 1024.0


def rss_mb() -> float:
    """Current resident set size of this process (MB)."""
    kb = _status_kb("VmRSS")
    if kb is None:  # not Linux: ru_maxrss is the best available (KB on Linux, bytes on macOS)
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return kb / 1024.0


def _reset_peak() -> bool:
    try:
        with open(_CLEAR_REFS, "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


class _Sampler(threading.Thread):
    """Samples VmRSS and RssAnon every ``interval`` seconds, keeping the maxima."""

    def __init__(self, interval: float = 0.005):
        super().__init__(daemon=True)
        self.interval, self._stop_evt = interval, threading.Event()
        self.peak, self.peak_anon = rss_mb(), anon_mb() or 0.0

    def _sample(self):
        self.peak = max(self.peak, rss_mb())
        a = anon_mb()
        if a is not None:
            self.peak_anon = max(self.peak_anon, a)

    def run(self):
        while not self._stop_evt.wait(self.interval):
            self._sample()

    def stop(self) -> tuple[float, float]:
        self._stop_evt.set()
        self.join()
        self._sample()
        return self.peak, self.peak_anon


@contextmanager
def measure(label: str = ""):
    """``with measure("fit") as m: ...`` then ``m`` holds wall_s, cpu_s, peak_rss_mb, ...

    ``peak_rss_mb`` is the process's peak resident memory during the block (everything the
    process holds, including data loaded before); ``peak_rss_delta_mb`` is that peak minus
    the resident memory at the start of the block (what the block itself added at most).
    """
    rec = {"label": label}
    start_rss = rss_mb()
    for outer in _active:   # the reset below erases the outer blocks' peak so far: keep it
        outer["_peak"] = max(outer["_peak"], _current_peak(outer))
    hwm = _reset_peak() and _status_kb("VmHWM") is not None
    sampler = _Sampler()
    sampler.start()
    rec.update(_peak=start_rss, _hwm=hwm, _sampler=sampler, _peak_anon=anon_mb() or 0.0)
    _active.append(rec)
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        yield rec
    finally:
        rec["wall_s"] = time.perf_counter() - t0
        rec["cpu_s"] = time.process_time() - c0
        _active.remove(rec)
        peak = max(rec.pop("_peak"), _current_peak(rec))
        s_peak, s_anon = sampler.stop()
        peak = max(peak, s_peak)
        peak_anon = max(rec.pop("_peak_anon"), s_anon)
        rec.pop("_sampler"), rec.pop("_hwm")
        rec["rss_start_mb"] = start_rss
        rec["peak_rss_mb"] = peak
        rec["peak_rss_delta_mb"] = max(0.0, peak - start_rss)
        rec["peak_anon_mb"] = peak_anon
        rec["memory_method"] = ("VmHWM reset via clear_refs" if hwm else "VmRSS sampled every 5 ms") + \
            "; RssAnon sampled every 5 ms"
        for outer in _active:
            outer["_peak"] = max(outer["_peak"], peak)
            outer["_peak_anon"] = max(outer["_peak_anon"], peak_anon)


def _current_peak(rec) -> float:
    if rec.get("_hwm"):
        kb = _status_kb("VmHWM")
        return kb / 1024.0 if kb is not None else rss_mb()
    return max(rec["_sampler"].peak, rss_mb())


def combine(*records: dict) -> dict:
    """Total of sequential measured phases: times add, peaks take the maximum."""
    recs = [r for r in records if r]
    return {
        "wall_s": sum(r["wall_s"] for r in recs),
        "cpu_s": sum(r["cpu_s"] for r in recs),
        "peak_rss_mb": max((r["peak_rss_mb"] for r in recs), default=0.0),
        "peak_rss_delta_mb": max((r["peak_rss_delta_mb"] for r in recs), default=0.0),
        "peak_anon_mb": max((r.get("peak_anon_mb", 0.0) for r in recs), default=0.0),
        "phases": [r.get("label", "") for r in recs],
    }


