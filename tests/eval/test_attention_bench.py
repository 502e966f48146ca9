"""Attention-level benchmark: deterministic data, row evaluation equal to the methods' own forward,
dense scores zero error, density matching, a complete run directory, clear errors."""

import json
import math
import os

import pytest
import torch

import accel
from accel.eval import attention_bench as ab
from accel.eval.matching import method_at_density
from accel.eval.synthetic import synthetic_qkv

GRID = (3, 8, 12)


def test_synthetic_is_deterministic_and_decays_with_distance():
    a = synthetic_qkv(GRID, heads=2, head_dim=32, seed=3)
    b = synthetic_qkv(GRID, heads=2, head_dim=32, seed=3)
    c = synthetic_qkv(GRID, heads=2, head_dim=32, seed=4)
    for x, y, z in zip(a, b, c, strict=True):
        assert torch.equal(x, y) and not torch.equal(x, z)
    q, k, _ = a
    p = torch.softmax(q[0, :, 0] @ k[0, :, 0].T / 32**0.5, -1)
    coords = torch.stack(torch.meshgrid(*(torch.arange(g) for g in GRID), indexing="ij"), -1).reshape(-1, 3).float()
    dist = torch.cdist(coords, coords)
    near, far = p[dist <= 2].mean(), p[dist >= 6].mean()
    assert near > 5 * far  # attention concentrates on nearby tokens


@pytest.mark.parametrize("name", ["dense", "radial", "clear_local", "neighborhood", "rectified", "agent",
                                  "clear_local_block", "clear_local_tile", "neighborhood_tile"])
def test_row_outputs_equal_the_method_forward(name):
    q, k, v = synthetic_qkv(GRID, heads=2, head_dim=32, seed=0)
    method = method_at_density(name, 0.3, GRID, block_size=16, backend="reference").method
    want = method(q, k, v, accel.TokenLayout(GRID))[0]
    rows = torch.tensor([0, 5, 17, 100, 200, 287])
    res = ab.method_rows(method, q, k, v, GRID, rows)
    torch.testing.assert_close(res["out"], want[rows], atol=2e-5, rtol=1e-4)
    # dense reference rows equal plain softmax attention
    dense = torch.softmax(torch.einsum("rhd,shd->hrs", q[0, rows], k[0]) / 32**0.5, -1)
    torch.testing.assert_close(res["dense"], torch.einsum("hrs,shd->rhd", dense, v[0]), atol=2e-5, rtol=1e-4)


def test_dense_scores_zero_error_full_recall():
    q, k, v = synthetic_qkv(GRID, heads=1, head_dim=16, seed=0)
    res = ab.evaluate_method(accel.Dense(), q, k, v, GRID, torch.arange(GRID[0] * GRID[1] * GRID[2]))
    assert res["rel_l2_error"] == 0.0
    assert res["recall"] == pytest.approx(1.0, abs=1e-6)
    assert res["density"] == 1.0


def test_recall_is_dense_mass_on_the_mask():
    q, k, v = synthetic_qkv(GRID, heads=1, head_dim=16, seed=1)
    method = accel.Neighborhood(window=(2, 3, 3), block_size=16)
    n = q.shape[1]
    res = ab.method_rows(method, q, k, v, GRID, torch.arange(n))
    mask = method.token_mask(accel.TokenLayout(GRID), batch=1, heads=1)[0, 0]
    p = torch.softmax(q[0, :, 0] @ k[0, :, 0].T / 4.0, -1)
    assert res["recall"] == pytest.approx(float((p * mask).sum(-1).mean()), rel=1e-5)


def test_layout_row_mask_matches_dense_mask():
    method = accel.ClearLocal(radius=3, radius_t=1, block_size=16, tiling=False)
    lay = method.video_block_layout(accel.TokenLayout(GRID), batch=1, heads=1, device=torch.device("cpu"))
    rows = torch.arange(0, lay.q_len, 7)
    assert torch.equal(ab.layout_row_mask(lay, rows), lay.to_dense_mask()[0, 0, rows])


#: each static method at its smallest parameter: the lowest density it can have on a grid
_SMALLEST = {"radial": lambda: accel.Radial(decay=1e-3, block_size=16),
             "clear_local": lambda: accel.ClearLocal(radius=0.5, radius_t=0.125, block_size=16),
             "neighborhood": lambda: accel.Neighborhood(window=2, block_size=16)}


@pytest.mark.parametrize("name", ["radial", "clear_local", "neighborhood", "rectified", "agent"])
def test_matching_hits_the_target_density_or_says_it_cannot(name):
    """Every method (no exemption): the density reported for the match is the one its layout executes (brute
    force for the static patterns, counted by hand for the others), and it is within the tolerance of the
    target, unless the method cannot go that low on this grid (brute force at its smallest parameter), in
    which case reached() says so. Radial on 4 frames keeps neighbouring frames dense: at least 62.5%."""
    from accel.eval.matching import reached
    from tests.eval.brute_density import brute_force_density

    grid, target = (4, 16, 16), 0.3
    m = method_at_density(name, target, grid, block_size=16)
    if name in _SMALLEST:
        assert m.density == pytest.approx(brute_force_density(m.method, grid))
        lowest = brute_force_density(_SMALLEST[name](), grid)
    elif name == "rectified":  # top-k share: int((1 - drop) * NB) of the NB = 64 key blocks (the release truncates)
        assert m.density == pytest.approx(int((1 - m.method.drop) * 64) / 64)
        lowest = 1 / 64
    else:  # agent: 2 * agents / N
        assert m.density == pytest.approx(2 * math.prod(m.method.agents) / math.prod(grid))
        lowest = 2 / math.prod(grid)
    if lowest <= target:
        assert reached(target, m.density), f"{name}: {m.density:.3f} for target {target}"
    else:
        assert not reached(target, m.density) and m.density >= lowest
    assert (name == "radial") == (lowest > target)  # the grid makes exactly this case unreachable


@pytest.mark.parametrize("name", ["clear_local_block", "clear_local_tile", "neighborhood_tile"])
def test_tile_variants_hit_the_target_density(name):
    """The tile-aligned variants (their layouts are checked against brute force in tests/patterns/)."""
    from accel.eval.matching import reached

    grid = (4, 16, 16)
    m = method_at_density(name, 0.3, grid, block_size=16)
    assert reached(0.3, m.density) and abs(m.density - 0.3) < 0.08
    assert m.density == pytest.approx(m.method.describe(grid, file=None)["video_density"])
    assert m.method.tile_aligned


def test_block_figures_and_predicted_time():
    """Visited blocks by kind and the H200 cost model's time: full blocks 19.0 ns, partial 45.8 ns per head."""
    grid = (21, 45, 80)
    tile = ab.block_figures(accel.Neighborhood.preset("wan").method, grid)
    assert tile["partial_blocks"] == 0 and tile["full_fraction"] == 1.0
    assert tile["predicted_kernel_ms_per_head"] == pytest.approx((tile["full_blocks"] + tile["counted_blocks"]) * 19e-6)
    exact = ab.block_figures(accel.Neighborhood(window=(12, 24, 24), stride=(4, 8, 8)), grid)
    assert exact["partial_blocks"] > 0 and exact["full_fraction"] < 1
    assert exact["predicted_kernel_ms_per_head"] == pytest.approx(
        exact["full_blocks"] * 19e-6 + exact["partial_blocks"] * 45.8e-6)
    nb = -(-21 * 45 * 80 // 128)
    assert ab.block_figures(accel.Dense(), grid)["predicted_kernel_ms_per_head"] == pytest.approx(nb * nb * 19e-6)
    assert ab.block_figures(accel.Agent(), grid)["full_blocks"] is None


def test_run_writes_a_complete_report(tmp_path):
    out = ab.run(tmp_path / "r", sizes=[(2, 6, 8)], methods=["dense", "neighborhood", "agent"], densities=[0.5],
                 heads=1, head_dim=16, rows=40, progress=False)
    data = json.loads((out / "results.json").read_text())
    assert data["complete"] and len(data["records"]) == 3
    assert data["environment"]["torch"] == torch.__version__
    assert all(r["rows_evaluated"] == 40 and r["rows_sampled"] for r in data["records"])
    md = (out / "report.md").read_text()
    assert "| neighborhood | 50% |" in md and "40 query rows sampled" in md
    assert (out / "density_vs_error.png").stat().st_size > 0
    assert list(out.glob("layout_*neighborhood*.png"))


def test_interrupted_run_leaves_completed_records(tmp_path, monkeypatch):
    real = ab.evaluate_method
    calls = []

    def flaky(*a, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(ab, "evaluate_method", flaky)
    with pytest.raises(KeyboardInterrupt):
        ab.run(tmp_path / "r", sizes=[(2, 6, 8)], methods=["dense", "agent"], densities=[0.5], heads=1,
               head_dim=16, rows=8, progress=False, draw=False)
    data = json.loads((tmp_path / "r" / "results.json").read_text())
    assert not data["complete"] and [r["method"] for r in data["records"]] == ["dense"]


def test_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="unknown method 'sparse'"):
        ab.run(tmp_path / "a", sizes=["small"], methods=["sparse"])
    with pytest.raises(ValueError, match="empty list"):
        ab.run(tmp_path / "a", sizes=["small"], methods=[])
    with pytest.raises(ValueError, match="unknown size 'huge'"):
        ab.run(tmp_path / "a", sizes=["huge"], methods=["dense"])
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        ab.run(blocker, sizes=["small"], methods=["dense"])
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    target = ro / "x" if os.geteuid() != 0 else "/proc/accel_eval_unwritable"  # root ignores permissions
    with pytest.raises(ValueError, match="not writable"):
        ab.run(target, sizes=["small"], methods=["dense"])


def test_cli_commands(tmp_path, capsys):
    from accel.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["eval", "attention", "--sizes", "huge", "--out", str(tmp_path / "x")])
    assert exc.value.code == 2 and "unknown size 'huge'" in capsys.readouterr().err
    assert main(["eval", "attention", "--sizes", "2,6,8", "--method", "dense", "--heads", "1", "--head-dim", "16",
                 "--rows", "0", "--no-plots", "--out", str(tmp_path / "ok")]) == 0
    assert json.loads((tmp_path / "ok" / "results.json").read_text())["complete"]
    with pytest.raises(SystemExit) as exc:  # bare `accel eval` is the end-to-end comparison
        main(["eval", "--model", "sdxl"])
    assert exc.value.code == 2 and "model 'sdxl' is not a preset" in capsys.readouterr().err
