"""Schedule: counts, fractions, last steps, layers, errors."""

import pytest

from accel.schedule import Schedule


def test_default_is_never_dense():
    s = Schedule()
    assert s.is_trivial and not s.depends_on_step
    assert not any(s.is_dense(step, layer, None, 10) for step in range(5) for layer in range(10))


def test_counts():
    s = Schedule(dense_steps=2, dense_layers=1, dense_last_steps=1)
    dense = [[s.is_dense(i, j, 5, 3) for j in range(3)] for i in range(5)]
    assert dense == [[True] * 3, [True] * 3, [True, False, False], [True, False, False], [True] * 3]
    assert s.dense_layer_set(2, 5, 3) == frozenset({0})
    assert s.dense_layer_set(4, 5, 3) == frozenset({0, 1, 2})


def test_last_layers():
    # the Rectified SpaAttn release's FLUX warm-up: attention layers 37-56 of 57 dense
    s = Schedule(dense_last_layers=20)
    assert not s.is_trivial and not s.depends_on_step
    assert [j for j in range(57) if s.dense_layer(j, 57)] == list(range(37, 57))
    assert s.dense_layer_set(0, None, 57) == frozenset(range(37, 57))
    both = Schedule(dense_layers=2, dense_last_layers=0.5)
    assert both.dense_layer_set(3, None, 6) == frozenset({0, 1, 3, 4, 5})


def test_fractions_round_half_up_and_int_one_vs_float_one():
    s = Schedule(dense_steps=0.25, dense_layers=0.5)
    assert [s.dense_step(i, 50) for i in (12, 13)] == [True, False]  # 0.25 * 50 = 12.5 -> 13 steps
    assert [s.dense_layer(j, 5) for j in (2, 3)] == [True, False]  # 2.5 -> 3 layers
    assert Schedule(dense_steps=1.0).dense_step(49, 50) and not Schedule(dense_steps=1).dense_step(1, 50)
    assert Schedule(dense_steps=100).dense_step(7, 10)


def test_num_steps_required_only_when_needed():
    assert Schedule(dense_steps=3).dense_step(2)
    assert not Schedule(dense_steps=0).needs_num_steps
    for s in (Schedule(dense_steps=0.5), Schedule(dense_last_steps=2)):
        assert s.needs_num_steps
        with pytest.raises(ValueError, match="needs the number of inference steps"):
            s.dense_step(0)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(dense_steps=-1), ValueError, "dense_steps must be >= 0"),
        (dict(dense_layers=1.5), ValueError, r"dense_layers must lie in \[0, 1\]"),
        (dict(dense_last_steps=True), TypeError, "dense_last_steps must be an int"),
        (dict(dense_steps="2"), TypeError, "dense_steps must be an int"),
        (dict(dense_steps=float("nan")), ValueError, "dense_steps must lie"),
    ],
)
def test_validation(kwargs, error, match):
    with pytest.raises(error, match=match):
        Schedule(**kwargs)


def test_query_validation():
    s = Schedule(dense_steps=1)
    with pytest.raises(ValueError, match="step must be an int >= 0"):
        s.dense_step(-1)
    with pytest.raises(ValueError, match="num_steps must be an int >= 1"):
        s.dense_step(0, 0)
    with pytest.raises(ValueError, match="num_layers must be an int >= 1"):
        s.dense_layer(0, 0)
