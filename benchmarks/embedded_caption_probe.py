"""How much does the embedded model rely on each caption word? Denoising error with altered captions.

For clips of the training distribution (dataset seed 77, not the training seed 0), encode each clip, noise
its latent to sigma ``s`` (flow matching: ``x_s = (1 - s) z + s e``, one fixed noise per clip) and measure the
transformer's velocity error ``|v - (e - z)|^2`` given the clip's own caption and given the caption with one
word changed: the opposite direction (left <-> right, up <-> down), a perpendicular direction, another colour
(red <-> cyan, yellow <-> blue, green <-> magenta), or no caption at all (the empty prompt, as classifier-free
guidance uses it). The error is reported over all latent cells and over the object's cells
(:func:`accel.embedded.train.object_mask`).

A word the model reads raises the error when it is changed; how much, at the high noise levels where a
sampler has to commit to an object and a trajectory, tells whether the caption can steer that commitment.
With the weights shipped on 2026-11-29 (``--clips 32``, benchmarks/results/embedded_caption_probe.json), at
sigma 0.97 the object-cell error is 2.14 with the true caption, 2.33 with the opposite direction, 2.29 with a
perpendicular one, 2.61 with no caption and 5.71 with another colour: a wrong colour word costs far more than
no caption (the model commits to the colour it reads), a wrong direction word costs less than half of what
the whole caption gains over no caption.

Run: ``python benchmarks/embedded_caption_probe.py --clips 32 --json out.json`` (about 2 minutes on 2 threads).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from accel.editing.pipeline import encode_input
from accel.embedded.data import caption_for, render_clip, sample_spec
from accel.embedded.model import MAX_SEQUENCE_LENGTH, embedded
from accel.embedded.train import object_mask

OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up"}
PERPENDICULAR = {"left": "up", "right": "down", "up": "right", "down": "left"}
OTHER_COLOUR = {"red": "cyan", "cyan": "red", "yellow": "blue", "blue": "yellow", "green": "magenta",
                "magenta": "green"}


def caption_variants(spec) -> dict[str, str]:
    """The clip's caption and its altered versions, keyed ``true``, ``opposite_direction``,
    ``perpendicular_direction``, ``other_colour``, ``empty``."""
    background = spec.background if spec.mention_background else None
    return {
        "true": caption_for(spec.colour, spec.shape, spec.direction, background),
        "opposite_direction": caption_for(spec.colour, spec.shape, OPPOSITE[spec.direction], background),
        "perpendicular_direction": caption_for(spec.colour, spec.shape, PERPENDICULAR[spec.direction], background),
        "other_colour": caption_for(OTHER_COLOUR[spec.colour], spec.shape, spec.direction, background),
        "empty": "",
    }


@torch.no_grad()
def probe(pipe, sigmas: list[float], clips: int, batch: int = 8) -> list[dict]:
    """Velocity error per noise level and caption variant.

    Args:
        pipe: the embedded :class:`~diffusers.WanPipeline`.
        sigmas: noise levels in (0, 1]; each is used with the same clips and noise.
        clips: how many clips (``sample_spec(77, 0 .. clips - 1)``); clip ``i``'s noise has seed ``i``.
        batch: clips per transformer call (>= 1).

    Returns:
        One dict per sigma: ``{"sigma", "clips", "error": {variant: mean over all cells},
        "object_error": {variant: mean over the object's cells}}``.
    """
    specs = [sample_spec(77, i) for i in range(clips)]
    frames = [render_clip(s) for s in specs]
    z = torch.cat([encode_input(pipe, f)[0] for f in frames])  # normalised latents [N, C, T, H, W]
    mask = torch.stack([object_mask(f) for f in frames]).unsqueeze(1).float()  # [N, 1, T, H, W]
    noise = torch.cat([torch.randn(z.shape[1:], generator=torch.Generator().manual_seed(i))[None]
                       for i in range(clips)])
    variants = [caption_variants(s) for s in specs]
    names = list(variants[0])
    embeds = {}
    for name in names:
        embeds[name], _ = pipe.encode_prompt([v[name] for v in variants], do_classifier_free_guidance=False,
                                             max_sequence_length=MAX_SEQUENCE_LENGTH)
    target = noise - z  # the flow-matching velocity, the same at every sigma
    rows = []
    for sigma in sigmas:
        xt = (1.0 - sigma) * z + sigma * noise
        error, object_error = {}, {}
        for name in names:
            sq = []
            for b in range(0, clips, batch):
                t = torch.full((len(xt[b:b + batch]),), sigma * 1000.0)
                v = pipe.transformer(hidden_states=xt[b:b + batch], timestep=t,
                                     encoder_hidden_states=embeds[name][b:b + batch], return_dict=False)[0]
                sq.append((v - target[b:b + batch]).square())
            sq = torch.cat(sq)
            error[name] = round(float(sq.mean()), 4)
            object_error[name] = round(float((sq * mask).sum() / (mask.sum() * sq.shape[1])), 4)
        rows.append({"sigma": sigma, "clips": clips, "error": error, "object_error": object_error})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--clips", type=int, default=32, help="clips (default 32)")
    p.add_argument("--sigmas", type=float, nargs="+", default=[0.99, 0.97, 0.94, 0.9, 0.8, 0.6, 0.4],
                   help="noise levels in (0, 1] (default 0.99 0.97 0.94 0.9 0.8 0.6 0.4)")
    p.add_argument("--weights", default=None, help="an exported pipeline folder instead of the packaged weights")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--json", default=None, help="write the figures to this file")
    args = p.parse_args()
    if args.clips < 1 or not all(0.0 < s <= 1.0 for s in args.sigmas):
        raise SystemExit(f"--clips must be >= 1 and --sigmas in (0, 1]; got {args.clips}, {args.sigmas}")
    if args.threads:
        torch.set_num_threads(args.threads)
    pipe = embedded(weights=args.weights)
    t0 = time.time()
    rows = probe(pipe, args.sigmas, args.clips)
    for row in rows:
        print(json.dumps(row), flush=True)
    out = {"rows": rows, "weights": args.weights or "packaged", "seconds": round(time.time() - t0, 1)}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
