"""The fair-timing rules of accel.eval.timing, on a fake clock whose every tick the test sets by hand."""

import pytest

from accel.eval import timing
from accel.eval.timing import Candidate, compare, speedup_warning, timing_warnings


class FakeClock:
    """A clock that only moves when the test's work says so."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now

    def work(self, seconds):
        def run():
            self.now += seconds
            return seconds
        return run


def test_warmup_and_setup_are_not_timed_and_the_median_is_taken(monkeypatch):
    monkeypatch.setattr(timing, "machine_load", lambda: (0.5, 2))
    clock = FakeClock()
    dense_times, method_times = iter([4.0, 9.0, 5.0]), iter([1.0, 1.5, 30.0])
    calls = []

    def timed(times, name):
        def run():
            calls.append(name)
            t = next(times)
            clock.now += t
            return t
        return run

    cands = {
        "dense": Candidate(timed(dense_times, "dense"), warmup=clock.work(100.0)),
        "method": Candidate(timed(method_times, "method"), setup=clock.work(50.0), teardown=clock.work(70.0),
                            warmup=clock.work(200.0)),
    }
    res = compare(cands, repeats=3, warmup=1, clock=clock)
    assert res.times == {"dense": [4.0, 9.0, 5.0], "method": [1.0, 1.5, 30.0]}  # no warm-up, setup or teardown
    assert res.median("dense") == 5.0 and res.median("method") == 1.5          # medians, not means
    assert res.speedup("dense", "method") == pytest.approx(5.0 / 1.5)
    assert res.order == ["dense", "method", "method", "dense", "dense", "method"]  # alternated, rotated
    assert calls == res.order
    assert res.results == {"dense": 4.0, "method": 1.0}  # the first timed call's result
    assert res.warnings == []


def test_cpu_time_is_taken_around_the_timed_call_only(monkeypatch):
    """The CPU clock (fake: the test moves it) counts the timed call, not the setup, teardown or warm-up."""
    monkeypatch.setattr(timing, "machine_load", lambda: (0.5, 2))
    wall, cpu = FakeClock(), FakeClock()

    def busy(w, c):
        def run():
            wall.now += w
            cpu.now += c
        return run

    cand = Candidate(busy(2.0, 0.5), setup=busy(10.0, 10.0), teardown=busy(20.0, 20.0), warmup=busy(40.0, 40.0))
    res = compare({"a": cand, "b": Candidate(busy(1.0, 1.0))}, repeats=2, warmup=1, clock=wall, cpu_clock=cpu)
    assert res.times == {"a": [2.0, 2.0], "b": [1.0, 1.0]}
    assert res.cpu_times == {"a": [0.5, 0.5], "b": [1.0, 1.0]}


def test_rotation_with_three_candidates():
    clock = FakeClock()
    res = compare({n: Candidate(clock.work(1.0)) for n in "abc"}, repeats=3, warmup=0, clock=clock)
    assert res.order == list("abc" "bca" "cab")


def test_warnings_for_timer_resolution_and_load(monkeypatch):
    assert timing_warnings({"x": [1e-9, 2e-9, 1e-9]}, resolution=1e-9)[0].startswith("x: median 1e-09 s is below 100")
    assert timing_warnings({"x": [1e-6]}, resolution=1e-9) == []
    assert "load average 5.0 on 2 CPUs" in timing_warnings({"x": [1.0]}, load=5.0, cpus=2)[0]
    assert timing_warnings({"x": [1.0]}, load=1.5, cpus=2) == []
    monkeypatch.setattr(timing, "machine_load", lambda: (16.0, 2))
    clock = FakeClock()
    res = compare({"a": Candidate(clock.work(1.0))}, repeats=1, warmup=0, clock=clock)
    assert len(res.warnings) == 1 and "loaded" in res.warnings[0]
    assert "median of 1 timed call(s)" in res.describe() and "load 16.0 / 16.0 (before / after) on 2 CPUs" in res.describe()


def test_speedup_beyond_the_density_bound_is_flagged():
    # the demo's 1.92x at executed density 0.92: at most 1 / 0.92 = 1.09x is possible
    assert "exceeds 1 / executed density" in speedup_warning(1.92, 0.92)
    assert speedup_warning(1.05, 0.92) is None
    assert speedup_warning(3.0, 0.2) is None and speedup_warning(None, 0.2) is None


def test_a_time_budget_stops_starting_rounds(monkeypatch):
    monkeypatch.setattr(timing, "machine_load", lambda: (0.5, 2))
    clock = FakeClock()
    res = compare({"a": Candidate(clock.work(4.0)), "b": Candidate(clock.work(2.0))}, repeats=3, warmup=0,
                  clock=clock, budget_s=5.0)
    assert res.times == {"a": [4.0], "b": [2.0]} and res.repeats == 1
    assert res.warnings == ["only 1 of 3 timed round(s) fitted in the 5 s timing budget: each figure is the median "
                            "of 1 call(s)"]


def test_bad_arguments():
    with pytest.raises(ValueError, match="repeats must be an int >= 1, got 0"):
        compare({"a": Candidate(lambda: None)}, repeats=0)
    with pytest.raises(ValueError, match="at least one"):
        compare({})
