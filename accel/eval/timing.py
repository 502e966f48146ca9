"""Fair wall-clock comparisons: the timing rules of ``accel eval`` and the demo's "compare with dense".

:func:`compare` runs two or more *candidates* (e.g. dense attention and a sparse method on the same
pipeline call) under the same rules:

* **warm-up excluded**: every candidate first runs ``warmup`` times untimed (its own cheaper warm-up
  call when it has one), so compilation, layout caches, first-call allocations and lazy imports are
  not counted;
* **alternated**: each round runs every candidate once, the order rotated by one per round
  (``A B C``, ``B C A``, ``C A B``, ...), so a drift of the machine's speed hits them alike;
* **repeats, median**: ``repeats`` rounds; a candidate's figure is the median of its timed calls;
* **setup outside the clock**: a candidate's ``setup``/``teardown`` (e.g. installing and removing an
  attention method) run untimed around each call; CUDA is synchronised before and after each timed call
  when a ``sync`` function is given.

It warns (:attr:`Comparison.warnings`, and :func:`timing_warnings` for any list of times) when a median
is below 100 timer ticks (``time.get_clock_info("perf_counter").resolution``) and when the machine was
loaded: the 1-minute load average (``os.getloadavg``) above the number of CPUs this process may run on,
before or after the calls. :func:`speedup_warning` flags a speedup larger than the attention density
allows (``speedup > 1 / density``: the skipped attention is at most all of the time).
"""

from __future__ import annotations

import dataclasses
import math
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

__all__ = ["Candidate", "Comparison", "compare", "machine_load", "timing_warnings", "speedup_warning",
           "TIMER_RESOLUTION_S", "MIN_TICKS"]

#: the resolution of ``time.perf_counter`` on this machine, in seconds
TIMER_RESOLUTION_S = time.get_clock_info("perf_counter").resolution
#: a median below this many timer ticks is flagged as below the timer's resolution
MIN_TICKS = 100


@dataclasses.dataclass
class Candidate:
    """One way to run the work being timed.

    Attributes:
        run: the call to time; its return value of the first timed call is kept (:attr:`Comparison.results`).
        setup: called untimed before each call (warm-up included), e.g. installing an attention method.
        teardown: called untimed after each call, also when it raised.
        warmup: the untimed warm-up call (default: ``run``), e.g. the same pipeline call with one step.
    """

    run: Callable[[], Any]
    setup: Callable[[], Any] | None = None
    teardown: Callable[[], Any] | None = None
    warmup: Callable[[], Any] | None = None


@dataclasses.dataclass
class Comparison:
    """What :func:`compare` measured.

    Attributes:
        times: ``{name: [seconds of each timed call, in the order they ran]}`` (round ``r``'s call is
            ``times[name][r]``).
        order: the names in the order the timed calls ran.
        results: ``{name: return value of its first timed call}``.
        warnings: human-readable warnings (timer resolution, machine load); empty when none applies.
        load_before, load_after: 1-minute load averages (``None`` where unavailable).
        cpus: the CPUs this process may run on.
        warmup: warm-up calls per candidate; repeats: timed calls per candidate (rounds that ran).
        cpu_times: ``{name: [process CPU seconds of each timed call]}`` (``cpu_clock``), aligned with ``times``;
            on a shared machine the wall time also counts waiting for a core, the CPU time does not.
    """

    times: dict[str, list[float]]
    order: list[str]
    results: dict[str, Any]
    warnings: list[str]
    load_before: float | None
    load_after: float | None
    cpus: int
    warmup: int
    repeats: int
    cpu_times: dict[str, list[float]] = dataclasses.field(default_factory=dict)

    def median(self, name: str) -> float:
        """The median of ``name``'s timed calls (seconds)."""
        return statistics.median(self.times[name])

    def speedup(self, reference: str, name: str) -> float:
        """``median(reference) / median(name)``: how many times faster ``name`` ran than ``reference``."""
        return self.median(reference) / self.median(name)

    def describe(self) -> str:
        """One line saying how the figures were measured (for reports and the demo)."""
        load = "n/a" if self.load_before is None else f"{self.load_before:.1f} / {self.load_after:.1f}"
        return (f"median of {self.repeats} timed call(s) each, alternated, after {self.warmup} untimed warm-up "
                f"call(s); load {load} (before / after) on {self.cpus} CPUs")


def machine_load() -> tuple[float | None, int]:
    """``(1-minute load average or None where the platform has none, CPUs this process may run on)``."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cpus = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # Windows
        load = None
    return load, cpus


def _load_warning(load: float | None, cpus: int) -> str | None:
    if load is not None and load > cpus:
        return (f"the machine was loaded (1-minute load average {load:.1f} on {cpus} CPUs): other work shared the "
                f"CPUs, so the times are not figures of an idle machine")
    return None


def timing_warnings(times: dict[str, list[float]], *, load: float | None = None, cpus: int | None = None,
                    resolution: float = TIMER_RESOLUTION_S) -> list[str]:
    """Warnings for a set of timings: a median below :data:`MIN_TICKS` ticks of ``resolution`` seconds, and
    a 1-minute ``load`` above ``cpus`` (both optional)."""
    out = []
    for name, values in times.items():
        if values and statistics.median(values) < MIN_TICKS * resolution:
            out.append(f"{name}: median {statistics.median(values):.3g} s is below {MIN_TICKS} ticks of the timer "
                       f"({resolution:.3g} s): not a measurement")
    if cpus is not None:
        warning = _load_warning(load, cpus)
        if warning:
            out.append(warning)
    return out


def speedup_warning(speedup: float | None, density: float | None) -> str | None:
    """A warning when ``speedup`` exceeds ``1 / density`` (by more than 10%): skipping attention pairs cannot
    make a call faster than that, so the figure is noise (or the reference paid a cost the method did not)."""
    if speedup is None or density is None or density <= 0 or not math.isfinite(speedup):
        return None
    if speedup > 1.1 / density:
        return (f"speedup {speedup:.2f}x exceeds 1 / executed density ({1 / density:.2f}x), the most that skipping "
                f"attention pairs can give: timing noise, not a measurement")
    return None


def compare(candidates: dict[str, Candidate], *, repeats: int = 3, warmup: int = 1,
            sync: Callable[[], Any] | None = None, clock: Callable[[], float] = time.perf_counter,
            cpu_clock: Callable[[], float] = time.process_time, budget_s: float | None = None) -> Comparison:
    """Time ``candidates`` fairly (the rules are in the module docstring).

    Args:
        candidates: ``{name: Candidate}``, at least one; names are the keys of the result.
        repeats: timed calls per candidate (rounds), an int >= 1; fewer when ``budget_s`` runs out.
        warmup: untimed warm-up calls per candidate before the first round, an int >= 0.
        sync: called right before starting and right after stopping the clock (e.g.
            ``torch.cuda.synchronize``); ``None``: nothing.
        clock: the clock (seconds); tests pass a fake one.
        cpu_clock: the process CPU clock (seconds) read around each timed call, outside ``clock``'s interval
            (:attr:`Comparison.cpu_times`); tests pass a fake one.
        budget_s: no new round starts once the timed calls have taken this many seconds (at least one round
            runs; a warning says how many did); ``None``: always ``repeats`` rounds.

    Returns:
        a :class:`Comparison`.

    Raises:
        ValueError: no candidates, or ``repeats``/``warmup`` out of range.
    """
    if not candidates:
        raise ValueError("candidates must name at least one candidate")
    for name, value, low in (("repeats", repeats, 1), ("warmup", warmup, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    load_before, cpus = machine_load()
    names = list(candidates)

    def call(name: str, fn: Callable[[], Any], timed: bool):
        cand = candidates[name]
        if cand.setup is not None:
            cand.setup()
        try:
            if sync is not None:
                sync()
            c0 = cpu_clock()
            t0 = clock()
            result = fn()
            if sync is not None:
                sync()
            seconds = clock() - t0
            cpu = cpu_clock() - c0
        finally:
            if cand.teardown is not None:
                cand.teardown()
        return (seconds, cpu, result) if timed else None

    for _ in range(warmup):
        for name in names:
            call(name, candidates[name].warmup or candidates[name].run, False)
    times = {name: [] for name in names}
    cpu_times = {name: [] for name in names}
    results, order = {}, []
    rounds = 0
    for r in range(repeats):
        if budget_s is not None and r > 0 and sum(map(sum, times.values())) >= budget_s:
            break
        for name in names[r % len(names):] + names[: r % len(names)]:
            seconds, cpu, result = call(name, candidates[name].run, True)
            times[name].append(seconds)
            cpu_times[name].append(cpu)
            order.append(name)
            results.setdefault(name, result)
        rounds += 1
    load_after, _ = machine_load()
    warnings = timing_warnings(times)
    if rounds < repeats:
        warnings.append(f"only {rounds} of {repeats} timed round(s) fitted in the {budget_s:g} s timing budget: "
                        f"each figure is the median of {rounds} call(s)")
    for load in (load_before, load_after):
        warning = _load_warning(load, cpus)
        if warning:
            warnings.append(warning)
            break
    return Comparison(times, order, results, warnings, load_before, load_after, cpus, warmup, rounds, cpu_times)
