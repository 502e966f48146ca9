"""Where does the embedded model lose the prompt's motion? Sample from a partly noised real clip.

For clips of the training distribution (dataset seed 77, not the training seed 0), encode the clip, noise
its latent to the scheduler's first sigma <= ``--start`` (flow matching: ``(1 - s) z + s e``), then run the
remaining sampling steps (same scheduler, guidance and text length as :data:`DEFAULT_GENERATION`) and check
the decoded clip's direction with :func:`accel.embedded.adherence.check_adherence`. If the direction
survives from high noise levels but not from pure noise, the model can carry motion and fails only at
committing to a trajectory at the start of sampling.

Run: ``python benchmarks/embedded_motion_probe.py --clips 8 --starts 0.4 0.6 0.8 0.95 --json out.json``.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from accel.editing.pipeline import encode_input
from accel.embedded.adherence import check_adherence
from accel.embedded.data import render_clip, sample_spec
from accel.embedded.model import embedded, generation_kwargs


@torch.no_grad()
def probe(pipe, start: float, clips: int) -> dict:
    """Direction and colour accuracy when sampling starts from partly noised real clips.

    Args:
        pipe: the embedded :class:`~diffusers.WanPipeline` (its scheduler's state is changed).
        start: sampling begins at the scheduler's first sigma <= ``start`` (0 < start < 1) of the default
            20-step schedule; the clip's latent is noised to exactly that sigma.
        clips: how many clips (``sample_spec(77, 0 .. clips - 1)``), each with noise seed = its index.

    Returns:
        ``{"start_sigma", "clips", "direction_accuracy", "colour_accuracy"}``.
    """
    kw = generation_kwargs()
    vae, sched = pipe.vae, pipe.scheduler
    # encode_input normalises Wan latents by the VAE config's mean/std; decoding undoes it
    mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1)
    direction_ok = colour_ok = 0
    sigma = None
    for i in range(clips):
        spec = sample_spec(77, i)
        z, _ = encode_input(pipe, render_clip(spec))
        sched.set_timesteps(kw["num_inference_steps"])
        first = int((sched.sigmas[:-1] > start).sum())
        sigma = float(sched.sigmas[first])
        sched.set_begin_index(first)
        noise = torch.randn(z.shape, generator=torch.Generator().manual_seed(i))
        latents = (1 - sigma) * z + sigma * noise
        cond, uncond = pipe.encode_prompt(spec.caption, do_classifier_free_guidance=True,
                                          max_sequence_length=kw["max_sequence_length"])
        for t in sched.timesteps[first:]:
            v_c = pipe.transformer(hidden_states=latents, timestep=t.expand(1), encoder_hidden_states=cond,
                                   return_dict=False)[0]
            v_u = pipe.transformer(hidden_states=latents, timestep=t.expand(1), encoder_hidden_states=uncond,
                                   return_dict=False)[0]
            latents = sched.step(v_u + kw["guidance_scale"] * (v_c - v_u), t, latents, return_dict=False)[0]
        video = vae.decode(latents * std + mean, return_dict=False)[0]
        result = check_adherence(((video[0].permute(1, 2, 3, 0) + 1) / 2).clamp(0, 1).numpy(), spec.caption)
        direction_ok += result.direction_ok
        colour_ok += result.colour_ok
    return {"start_sigma": sigma, "clips": clips, "direction_accuracy": direction_ok / clips,
            "colour_accuracy": colour_ok / clips}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--clips", type=int, default=8, help="clips per start level (default 8)")
    p.add_argument("--starts", type=float, nargs="+", default=[0.4, 0.6, 0.8, 0.95],
                   help="start noise levels in (0, 1) (default 0.4 0.6 0.8 0.95)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--json", default=None, help="write the figures to this file")
    args = p.parse_args()
    if args.clips < 1 or not all(0.0 < s < 1.0 for s in args.starts):
        raise SystemExit(f"--clips must be >= 1 and --starts in (0, 1); got {args.clips}, {args.starts}")
    if args.threads:
        torch.set_num_threads(args.threads)
    pipe = embedded()
    pipe.set_progress_bar_config(disable=True)
    t0 = time.time()
    rows = []
    for start in args.starts:
        rows.append(probe(pipe, start, args.clips))
        print(json.dumps(rows[-1]), flush=True)
    out = {"rows": rows, "settings": generation_kwargs(), "seconds": round(time.time() - t0, 1)}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
