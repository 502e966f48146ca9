"""benchmarks/kernel_planted_bugs.py stays applicable: every planted change still finds its one target in the
kernel source and yields a different kernel that Python still parses (the tests' run itself takes minutes
per bug and is a benchmark, not a test)."""

import ast

import pytest

from ..scripts import load_benchmark


def test_every_planted_change_applies_once_and_changes_the_kernel():
    script = load_benchmark("kernel_planted_bugs")
    source = (script.ROOT / script.KERNEL).read_text()
    ids = [bug[0] for bug in script.BUGS]
    assert len(set(ids)) == len(ids)
    for bug_id, _, old, new in script.BUGS:
        planted = script.planted_source(source, old, new)
        assert planted != source, bug_id
        ast.parse(planted)


def test_a_change_whose_text_is_gone_is_refused():
    script = load_benchmark("kernel_planted_bugs")
    with pytest.raises(ValueError, match="occurs 0 times"):
        script.planted_source("x = 1\n", "y = 2", "y = 3")
