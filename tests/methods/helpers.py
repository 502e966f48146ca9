"""Test-only methods: a random block pattern over video tokens and a masked-dense reference."""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from accel.kernels import BlockLayout
from accel.methods.base import AttentionMethod


@dataclasses.dataclass(frozen=True, eq=False)
class RandomVideoBlocks(AttentionMethod):
    """Video x video attention restricted to a random block mask (diagonal always kept)."""

    seed: int = 0
    density: float = 0.5
    block_size: int = 16
    per_head: bool = False

    def video_block_layout(self, layout, *, batch, heads, device):
        n = layout.num_video_tokens
        nb = -(-n // self.block_size)
        gen = torch.Generator().manual_seed(self.seed)
        h = heads if self.per_head else 1
        mask = torch.rand(1, h, nb, nb, generator=gen) < self.density
        mask |= torch.eye(nb, dtype=torch.bool)
        return BlockLayout.from_block_mask(mask.to(device), self.block_size, self.block_size, n, n)


@dataclasses.dataclass(frozen=True, eq=False)
class MaskedDenseReference(AttentionMethod):
    """Dense SDPA (fp32) with another method's exact token mask: the reference for sparse layouts."""

    of: AttentionMethod = None

    def forward(self, q, k, v, layout, *, scale=None):
        b, _, h, _ = q.shape
        mask = self.of.token_mask(layout, batch=b, heads=h, device=q.device)
        out = F.scaled_dot_product_attention(
            q.transpose(1, 2).double(), k.transpose(1, 2).double(), v.transpose(1, 2).double(), attn_mask=mask,
            scale=scale,
        )
        return out.transpose(1, 2).to(q.dtype)


def tiny_latent_runner(family: str, per_prompt: int):
    """``(pipe, run)`` for pipeline tests of a method: ``pipe`` is the tiny pipeline of ``family``
    (progress bar off) and ``run()`` calls it with the tiny call arguments at a fixed size, latent output
    and ``per_prompt`` samples per prompt, returning the latents."""
    from accel.pipelines.tiny import tiny_call_kwargs, tiny_pipeline

    pipe = tiny_pipeline(family)
    pipe.set_progress_bar_config(disable=True)
    size = {"wan": 64, "hunyuan_video": 32, "flux": 32}[family]

    def run():
        call = tiny_call_kwargs(family, size=size)
        call["output_type"] = "latent"
        if per_prompt > 1:
            call["num_videos_per_prompt" if family != "flux" else "num_images_per_prompt"] = per_prompt
        return pipe(**call)[0]

    return pipe, run
