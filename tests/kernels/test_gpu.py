"""CUDA-only kernel checks (skipped without a GPU). benchmarks/gpu_check.py is the prepared GPU run; these
tests are the pytest view of the same kernel. Each runs with one forced configuration (no tuning, one
compile per kernel variant: well within the per-test timeout) except the tuning test, whose budget and
candidate list are small."""

import pytest
import torch

from accel.kernels import BlockLayout, EllipsoidPredicate, WindowPredicate, block_sparse_attention
from accel.kernels import triton_tuning as tuning

from .helpers import block_mask_to_token_mask, dense_masked_attention

pytestmark = [pytest.mark.gpu, pytest.mark.timeout(300)]

FAST = "block_m=128,block_n=64,num_warps=4,num_stages=3"


@pytest.fixture(autouse=True)
def _isolated_tuning(tmp_path, monkeypatch):
    monkeypatch.setenv("ACCEL_TUNING_CACHE", str(tmp_path / "tuning.json"))
    monkeypatch.setenv("ACCEL_TRITON_CONFIG", FAST)
    tuning.clear_tuning_cache()


def _band(nb, width, heads=1):
    i = torch.arange(nb)
    return ((i[:, None] - i[None, :]).abs() <= width).view(1, 1, nb, nb).expand(1, heads, nb, nb).contiguous()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("d", [64, 128, 96])
def test_triton_gpu_matches_reference(dtype, d):
    g = torch.Generator(device="cuda").manual_seed(0)
    bsz, heads, s = 2, 4, 1000
    q, k, v = (torch.randn(bsz, s, heads, d, device="cuda", generator=g, dtype=dtype) for _ in range(3))
    mask = torch.rand(bsz, heads, s, s, device="cuda", generator=g) < 0.2
    mask[..., :300, :200] = True
    mask[..., 0] = True
    lay = BlockLayout.from_token_mask(mask, 128, 128)
    want, want_lse = dense_masked_attention(q, k, v, mask, d**-0.5)
    out, lse = block_sparse_attention(q, k, v, lay, backend="triton", return_lse=True)
    torch.testing.assert_close(out.double(), want, atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(lse.double(), want_lse, atol=2e-2, rtol=2e-2)


def _grid(t, h, w):
    tt, yy, xx = torch.meshgrid(torch.arange(t), torch.arange(h), torch.arange(w), indexing="ij")
    return torch.stack([tt, yy, xx], -1).reshape(-1, 3).to(torch.int32)


def _analytic_case(kind):
    c = _grid(4, 12, 20)  # 960 grid tokens + 80 text tokens at the end (ragged: 1040 = 8 * 128 + 16)
    n, text = c.shape[0], 80
    s = n + text
    mask = torch.ones(2, 1, s, s, dtype=torch.bool)
    if kind == "window":
        r = torch.tensor([1, 3, 3], dtype=torch.int32)
        lay = BlockLayout.from_predicate(WindowPredicate(c - r, c + r, c), 128, 128, s, s)
        mask[:, 0, :n, :n] = ((c[:, None] - c[None]).abs() <= r).all(-1)
    else:
        lim = 20
        lay = BlockLayout.from_predicate(EllipsoidPredicate(c, c, (4, 1, 1), lim), 128, 128, s, s)
        d = c[:, None].long() - c[None].long()
        mask[:, 0, :n, :n] = 4 * d[..., 0] ** 2 + d[..., 1] ** 2 + d[..., 2] ** 2 <= lim
    pad = torch.tensor([n + 30, s])
    mask &= (torch.arange(s)[None, :] < pad[:, None])[:, None, None, :]
    return lay.with_key_padding(pad).to("cuda"), mask.cuda(), s


PATHS = [FAST, "block_m=64,block_n=32,num_warps=4,num_stages=2,persistent=1",
         "block_m=128,block_n=128,num_warps=8,num_stages=3,tma=1",
         "block_m=128,block_n=128,num_warps=8,num_stages=2,tma=1,warp_spec=1"]


@pytest.mark.parametrize("config", PATHS)
@pytest.mark.parametrize("kind", ["window", "ellipsoid"])
def test_triton_gpu_analytic_kinds_and_paths(kind, config, monkeypatch):
    feats = tuning.hopper_features(torch.cuda.current_device())
    if ("tma=1" in config and not feats["tma"]) or ("warp_spec=1" in config and not feats["warp_spec"]):
        pytest.skip(f"the installed Triton / GPU offers no {config}")
    monkeypatch.setenv("ACCEL_TRITON_CONFIG", config)
    lay, mask, s = _analytic_case(kind)
    g = torch.Generator(device="cuda").manual_seed(5)
    q, k, v = (torch.randn(2, s, 2, 128, device="cuda", generator=g, dtype=torch.bfloat16) for _ in range(3))
    want, _ = dense_masked_attention(q, k, v, mask, 128**-0.5)
    out = block_sparse_attention(q, k, v, lay, backend="triton")
    torch.testing.assert_close(out.double(), want, atol=2e-2, rtol=2e-2)


def test_triton_gpu_fp32_and_empty_rows():
    g = torch.Generator(device="cuda").manual_seed(1)
    q, k, v = (torch.randn(1, 300, 2, 64, device="cuda", generator=g) for _ in range(3))
    bm = _band(3, 0, 2)
    bm[..., 0, :] = False
    lay = BlockLayout.from_block_mask(bm, 128, 128, 300, 300, allow_empty_rows=True)
    want, _ = dense_masked_attention(q, k, v, block_mask_to_token_mask(bm, 128, 128, 300, 300), 0.125)
    out = block_sparse_attention(q, k, v, lay, backend="triton")
    torch.testing.assert_close(out.double(), want, atol=1e-4, rtol=1e-4)
    assert (out[:, :128] == 0).all()


def test_triton_gpu_compiled_and_flex_agree():
    g = torch.Generator(device="cuda").manual_seed(2)
    q, k, v = (torch.randn(1, 4096, 8, 128, device="cuda", generator=g, dtype=torch.bfloat16) for _ in range(3))
    lay = BlockLayout.from_block_mask(_band(32, 3), 128, 128, 4096, 4096)
    compiled = torch.compile(lambda a, b, c: block_sparse_attention(a, b, c, lay, backend="triton"), fullgraph=True)
    out_t = compiled(q, k, v)
    out_f = block_sparse_attention(q, k, v, lay, backend="flex")
    torch.testing.assert_close(out_t.float(), out_f.float(), atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_triton_gpu_fused_prior_and_affine(dtype):
    g = torch.Generator(device="cuda").manual_seed(2)
    bsz, heads, s, text, d = 2, 4, 1000, 77, 128
    q, k, v = (torch.randn(bsz, s, heads, d, device="cuda", generator=g, dtype=dtype) for _ in range(3))
    kt, vt = (torch.randn(bsz, text, heads, d, device="cuda", generator=g, dtype=dtype) for _ in range(2))
    nb = -(-s // 128)
    bm = torch.rand(bsz, heads, nb, nb, device="cuda", generator=g) < 0.4
    bm[..., 0] = True
    lay = BlockLayout.from_block_mask(bm, 128, 128, s, s)
    a_scale = torch.rand(bsz, heads, nb, device="cuda", generator=g) + 0.5
    a_shift = torch.randn(bsz, heads, nb, d, device="cuda", generator=g)
    prior = block_sparse_attention(q, kt, vt, BlockLayout.full(s, text, device="cuda"), backend="triton", return_lse=True)
    out, lse = block_sparse_attention(q, k, v, lay, backend="triton", return_lse=True, prior=prior, affine=(a_scale, a_shift))
    mask = torch.cat([torch.ones(bsz, heads, s, text, dtype=torch.bool, device="cuda"),
                      block_mask_to_token_mask(bm, 128, 128, s, s)], -1)
    want, want_lse = dense_masked_attention(q, torch.cat([kt, k], 1), torch.cat([vt, v], 1), mask, d**-0.5)
    rows = torch.arange(s, device="cuda") // 128
    want = a_scale.double()[:, :, rows].permute(0, 2, 1)[..., None] * want + a_shift.double()[:, :, rows].permute(0, 2, 1, 3)
    torch.testing.assert_close(out.double(), want, atol=3e-2, rtol=3e-2)
    torch.testing.assert_close(lse.double(), want_lse, atol=2e-2, rtol=2e-2)


def test_triton_gpu_tuning_persists_and_is_reused(monkeypatch, tmp_path):
    """Tuning on a small problem within a small budget: the cache file holds the choice, a second call
    with the memory forgotten reads it instead of tuning again."""
    monkeypatch.delenv("ACCEL_TRITON_CONFIG")
    monkeypatch.setenv("ACCEL_TRITON_TUNE_BUDGET_S", "60")
    g = torch.Generator(device="cuda").manual_seed(3)
    q, k, v = (torch.randn(1, 2048, 4, 128, device="cuda", generator=g, dtype=torch.bfloat16) for _ in range(3))
    lay = BlockLayout.from_block_mask(_band(16, 2), 128, 128, 2048, 2048).to("cuda")
    out = block_sparse_attention(q, k, v, lay, backend="triton")
    (key, entry), = tuning.chosen_configs().items()
    assert entry["how"] == "tuned" and (tmp_path / "tuning.json").exists()
    tuning._TUNER.memory.clear()
    again = block_sparse_attention(q, k, v, lay, backend="triton")
    assert tuning.chosen_configs()[key]["how"] == "cached"
    torch.testing.assert_close(again, out)
