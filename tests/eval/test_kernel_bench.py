"""The kernel benchmark's layouts, alternating timer and JSON (never its speed)."""

import json

import pytest
import torch

from accel.eval import kernel_bench as kb


def _expected_band(s, block, density, partial_fraction):
    """Brute force: row i visits (i + o) mod nb for o in a centred window; the |o|-largest are partial
    (right side first at equal distance) with a lower-triangular tile."""
    nb = -(-s // block)
    count = max(1, min(nb, round(density * nb)))
    offsets = [o - count // 2 for o in range(count)]
    n_part = round(partial_fraction * count)
    partial = sorted(offsets, key=lambda o: (-abs(o), -o))[:n_part]
    mask = torch.zeros(s, s, dtype=torch.bool)
    tril = torch.ones(block, block, dtype=torch.bool).tril()
    for i in range(nb):
        for o in offsets:
            j = (i + o) % nb
            rows, cols = slice(i * block, (i + 1) * block), slice(j * block, (j + 1) * block)
            if o in partial:
                mask[rows, cols] = tril[: min(block, s - i * block), : min(block, s - j * block)]
            else:
                mask[rows, cols] = True
    return mask


@pytest.mark.parametrize("s,density,pf", [(256, 0.3, 0.0), (256, 0.5, 0.5), (200, 0.4, 1.0), (256, 1.0, 0.25)])
def test_band_layout_matches_brute_force(s, density, pf):
    lay = kb.band_layout(s, 32, density, "cpu", partial_fraction=pf)
    assert torch.equal(lay.to_dense_mask()[0, 0], _expected_band(s, 32, density, pf))


def test_band_layout_rejects_bad_fractions():
    with pytest.raises(ValueError, match="partial_fraction"):
        kb.band_layout(256, 32, 0.5, "cpu", partial_fraction=1.5)
    with pytest.raises(ValueError, match="density"):
        kb.band_layout(256, 32, 0.0, "cpu")


def test_time_alternating_rotates_and_takes_medians():
    """On fake clocks whose ticks the test sets: each call of a function advances the wall clock by its next
    scripted time and the CPU clock by half of it; the figures are the hand-computed medians."""
    calls = []
    fake = {"a": [0.010, 0.030, 0.020], "b": [0.005, 0.005, 0.040]}   # seconds, in each function's call order
    now = {"wall": 0.0, "cpu": 0.0}

    def fn(name):
        def run():
            t = fake[name][sum(c == name for c in calls)]
            calls.append(name)
            now["wall"] += t
            now["cpu"] += t / 2
        return run

    out = kb.time_alternating({"a": fn("a"), "b": fn("b")}, 3, baseline="a", clock=lambda: now["wall"],
                              cpu_clock=lambda: now["cpu"])
    assert calls == ["a", "b", "b", "a", "a", "b"]  # the order rotates every round
    assert out["ms"] == pytest.approx({"a": 20.0, "b": 5.0})
    assert out["cpu_ms"] == pytest.approx({"a": 10.0, "b": 2.5})
    assert out["speedup"]["b"] == pytest.approx(2.0)  # median of 10/5, 30/5, 20/40 (each round's pair)
    assert out["speedup"]["a"] == pytest.approx(1.0)
    assert all("ticks of the timer" not in w for w in out["warnings"])


def test_targets_use_the_auto_rule():
    from accel.kernels.attention import cpu_auto_backend

    rec = {"device": "cpu", "seq_len": 16384, "head_dim": 64, "dtype": "bfloat16", "partial_block_fraction": 0.0,
           "density": 0.1016, "ms": {"dense": 2000.0, "gather": 300.0, "flex": 500.0},
           "fraction_of_ideal": {"gather": 0.68}}
    t = kb._targets([rec])
    assert t["cpu_gather_fraction_of_ideal_S16k_d64_bf16_10pct_band"]["met"]
    chosen = cpu_auto_backend(16384, 16384)
    assert t["cpu_auto_time_over_flex"]["worst"] == pytest.approx(rec["ms"][chosen] / 500.0)


def test_cli_writes_records(tmp_path):
    out = tmp_path / "k.json"
    assert kb.main(["--device", "cpu", "--seq-lens", "256", "--head-dims", "16", "--densities", "0.5",
                    "--partial-fractions", "0", "1", "--backends", "gather", "reference", "--reps", "1",
                    "--heads", "2", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["command"].startswith("accel bench kernels --device cpu")
    recs = result["records"]
    assert [r["partial_block_fraction"] > 0 for r in recs] == [False, True]
    for r in recs:
        assert set(r["ms"]) == {"dense", "gather", "reference"}
        assert r["speedup_vs_dense"]["dense"] == 1.0
        assert len(r["load_1min"]) == 2
        assert r["fraction_of_ideal"]["gather"] == pytest.approx(r["speedup_vs_dense"]["gather"] * r["density"])


def test_random_layout_matches_its_definition():
    """Every (head, query block) visits its diagonal block and round(density * NKV) blocks in all, the
    draws differ between heads, and the blocks are full."""
    lay = kb.random_layout(600, 64, 0.3, 3, "cpu", seed=1)
    dense = lay.to_dense_mask()[0]  # [H, S, S]
    nb = 10
    blocks = dense[:, ::64, ::64]  # one token per block pair: full blocks are all-or-nothing
    assert torch.equal(dense, blocks.repeat_interleave(64, 1).repeat_interleave(64, 2)[:, :600, :600])
    assert (blocks.sum(-1) == 3).all() and blocks[:, torch.arange(nb), torch.arange(nb)].all()
    assert not torch.equal(blocks[0], blocks[1])


def test_cold_backends_rebuild_and_keep_the_warm_cache():
    """A ``-cold`` backend rebuilds the layout's derived data in every call, on its own copy of the
    layout: the warm backend timed in turn keeps its cached plan (the same object after the cold runs)."""
    from accel.kernels import gather as gather_mod

    lay = kb.band_layout(256, 32, 0.5, "cpu")
    q, k, v = (torch.randn(1, 256, 2, 16) for _ in range(3))
    fns = kb._cpu_backend_fns(q, k, v, lay, ["gather", "gather-cold"], 2)
    fns["gather"]()
    plan = lay.cached(("gather_plan", 1), lambda: None)
    assert isinstance(plan, gather_mod._Plan)
    for _ in range(2):
        torch.testing.assert_close(fns["gather-cold"](), fns["gather"]())
    assert lay.cached(("gather_plan", 1), lambda: None) is plan
