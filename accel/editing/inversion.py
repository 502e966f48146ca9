"""Flow-matching inversion: run a pipeline's sampling ODE backwards from a clean latent to noise.

Flow-matching models (FLUX, Wan, HunyuanVideo) predict a velocity ``v = dx/dsigma`` along
``x_sigma = (1 - sigma) * x_0 + sigma * noise``. Sampling integrates from ``sigma_0`` (noise) down to 0;
inversion integrates the same ODE upwards over the same sigma grid, starting at the clean latent:

* ``"euler"``: ``x(sigma_i) = x(sigma_{i+1}) + (sigma_i - sigma_{i+1}) * v(x(sigma_{i+1}), sigma_{i+1})`` (one
  transformer evaluation per step);
* ``"heun"`` (predictor-corrector): an Euler predictor, then the average of the velocities at both ends
  (two evaluations per step);
* ``"uniinv"`` (the inversion ConsistEdit's release uses for real images, UniEdit-Flow's
  ``UniInvEulerScheduler``, read for its rule at github.com/zxYin/ConsistEdit_Code @ 0b73d6a): ``T + 1``
  evaluations on the grid ``0 = s'_0 < s'_1 < ... < s'_T = sigma_0``; the velocity ``v_i`` is evaluated at
  the predicted point ``x~_i`` (``x~_0 = x_0``, the clean latent), then the step is redone with it,
  ``x_i = x_{i-1} + (s'_i - s'_{i-1}) * v_i`` (``i >= 1``), and the next point predicted with the same
  velocity, ``x~_{i+1} = x_i + (s'_{i+1} - s'_i) * v_i`` (``x~_1`` from ``v_0``); the inverted noise is
  ``x_T``.

The inversion runs *through the pipeline itself* (its prompt encoding, latent packing and transformer
call), with its scheduler temporarily replaced by :class:`InversionScheduler`, which presents the
reversed timesteps and takes the upward steps. Only the latent trajectory is stored (one latent per
step; no per-layer features). Classifier-free guidance is switched off for the inversion.
"""

from __future__ import annotations

import dataclasses
import inspect

import torch

__all__ = ["Inversion", "InversionScheduler", "invert", "INVERSION_METHODS"]

INVERSION_METHODS = ("euler", "heun", "uniinv")


@dataclasses.dataclass
class Inversion:
    """The result of :func:`invert`.

    Attributes:
        trajectory: ``trajectory[i]`` is the latent at the start of sampling step ``i`` (``trajectory[0]``:
            the inverted noise, at the pipeline's first sigma), ``T`` tensors in the pipeline's latent layout.
        clean: the clean latent the inversion started from.
        sigmas: the sampling sigmas ``sigma_0 > ... > sigma_{T-1}`` of the trajectory's latents.
        method: ``"euler"``, ``"heun"`` or ``"uniinv"``.
    """

    trajectory: list[torch.Tensor]
    clean: torch.Tensor
    sigmas: list[float]
    method: str

    @property
    def noise(self) -> torch.Tensor:
        """The inverted noise latent (``trajectory[0]``), the starting latent of a replaying pipeline call."""
        return self.trajectory[0]


class InversionScheduler:
    """Stands in for a flow-matching scheduler during :func:`invert` (see the module docstring).

    ``set_timesteps`` asks the wrapped scheduler for the sampling sigmas/timesteps of this call, then
    exposes them reversed (with timestep 0 first); ``step`` moves the sample *up* the sigma grid. Other
    attributes are the wrapped scheduler's.

    Args:
        scheduler: the pipeline's scheduler (``FlowMatchEulerDiscreteScheduler``, or ``UniPCMultistepScheduler``
            with flow sigmas, ...): it must have ``sigmas`` and ``timesteps`` after ``set_timesteps``.
        method: ``"euler"``, ``"heun"`` or ``"uniinv"``.
    """

    order = 1

    def __init__(self, scheduler, method: str = "euler") -> None:
        if method not in INVERSION_METHODS:
            raise ValueError(f"method must be one of {INVERSION_METHODS}, got {method!r}")
        self.inner = scheduler
        self.method = method
        self.timesteps = torch.zeros(0)
        self.trajectory: list[torch.Tensor] = []
        self.sigmas_up: list[float] = []
        self.sigmas = torch.zeros(0)
        self._plan: list[tuple] = []
        self._calls = 0
        self._anchor: torch.Tensor | None = None
        self._v0: torch.Tensor | None = None

    def __getattr__(self, name):
        return getattr(self.__dict__["inner"], name)

    def set_timesteps(self, num_inference_steps=None, device=None, sigmas=None, mu=None, timesteps=None, **kwargs):
        params = inspect.signature(self.inner.set_timesteps).parameters
        call = {"num_inference_steps": num_inference_steps, "device": device}
        for name, value in (("sigmas", sigmas), ("mu", mu), ("timesteps", timesteps)):
            if value is not None and name in params:
                call[name] = value
        call.update({k: v for k, v in kwargs.items() if k in params})
        self.inner.set_timesteps(**call)
        fwd_t = self.inner.timesteps
        fwd_s = [float(s) for s in self.inner.sigmas[: len(fwd_t)]]
        if not fwd_s or any(b >= a for a, b in zip(fwd_s, fwd_s[1:], strict=False)):
            raise ValueError(f"{type(self.inner).__name__} does not give decreasing flow-matching sigmas; inversion "
                             "needs a flow-matching scheduler")
        # upward grid: 0 = sigma_T < sigma_{T-1} < ... < sigma_0, with the matching timesteps
        up_s = [0.0] + fwd_s[::-1]
        up_t = [torch.zeros((), dtype=fwd_t.dtype, device=fwd_t.device)] + list(fwd_t.flip(0))
        self.sigmas_up = up_s
        plan = []  # (timestep to evaluate, kind, sigma_from, sigma_to)
        if self.method == "uniinv":  # T + 1 evaluations, at every point of the upward grid
            plan = [(up_t[i], "uni", up_s[max(i - 1, 0)], up_s[i]) for i in range(len(up_s))]
        for i in range(len(up_s) - 1 if self.method != "uniinv" else 0):
            plan.append((up_t[i], "predict", up_s[i], up_s[i + 1]))
            if self.method == "heun":
                plan.append((up_t[i + 1], "correct", up_s[i], up_s[i + 1]))
        self._plan = plan
        self.timesteps = torch.stack([p[0] for p in plan])
        # the sigma each evaluation sees (pipelines such as Wan's read scheduler.sigmas[i])
        at = [p[2] if p[1] == "predict" else p[3] for p in plan] + [up_s[-1]]
        self._committed = None  # uniinv: x_{i-1}, the last point redone with its end velocity
        self.sigmas = torch.tensor(at, dtype=torch.float32)
        self.trajectory = []
        self._calls = 0

    def set_begin_index(self, begin_index: int = 0) -> None:
        pass

    def scale_model_input(self, sample, *args, **kwargs):
        return sample

    def step(self, model_output, timestep, sample, *args, return_dict: bool = False, **kwargs):
        _, kind, s_from, s_to = self._plan[self._calls]
        self._calls += 1
        v = model_output.to(torch.float32)
        if kind == "uni":
            if self._calls == 1:  # x~_0 = x_0: nothing to redo
                committed = sample.to(torch.float32)
            else:  # redo the step into this point with the velocity evaluated there
                committed = self._committed + (s_to - s_from) * v
                self.trajectory.append(committed.to(sample.dtype))
            self._committed = committed
            if self._calls < len(self._plan):
                new = committed + (self._plan[self._calls][3] - s_to) * v
            else:
                new = committed
            new = new.to(sample.dtype)
            return (new,) if not return_dict else dataclasses.make_dataclass("Out", ["prev_sample"])(new)
        if kind == "predict":
            self._anchor = sample.to(torch.float32)
            self._v0 = v
            new = self._anchor + (s_to - s_from) * v
            if self.method == "euler":
                self.trajectory.append(new.to(sample.dtype))
        else:
            new = self._anchor + (s_to - s_from) * 0.5 * (self._v0 + v)
            self.trajectory.append(new.to(sample.dtype))
        new = new.to(sample.dtype)
        return (new,) if not return_dict else dataclasses.make_dataclass("Out", ["prev_sample"])(new)


def _family(pipe) -> str:
    from accel.processors.families import family_of

    return family_of(pipe.transformer).name


def invert(pipe, latents: torch.Tensor, prompt: str, *, steps: int, method: str = "euler", **pipe_kwargs) -> Inversion:
    """Invert a clean latent to noise along the pipeline's flow-matching ODE.

    Args:
        pipe: a FLUX, Wan or HunyuanVideo diffusers pipeline with a flow-matching scheduler.
        latents: the clean latent, batch 1, in the layout the pipeline's ``latents`` argument takes
            (FLUX: packed ``[1, tokens, 4 * C]``; Wan / HunyuanVideo: ``[1, C, F, H, W]``), e.g. from
            :func:`accel.editing.pipeline.encode_input`.
        prompt: the prompt describing the input (the source prompt).
        steps: number of sampling steps of the later replay (the same sigma grid), an int >= 1.
        method: ``"euler"`` (one evaluation per step), ``"heun"`` (predictor-corrector, two) or ``"uniinv"``
            (ConsistEdit's real-image inversion, ``steps + 1`` evaluations; module docstring).
        **pipe_kwargs: further pipeline arguments (``height``, ``width``, ``num_frames``, ``guidance_scale``
            for FLUX's guidance embedding, ``max_sequence_length``, ``prompt_template``...). Classifier-free
            guidance is switched off (negative prompts and ``true_cfg_scale`` are dropped; Wan runs with
            ``guidance_scale=1``).

    Returns:
        An :class:`Inversion` (latent trajectory, clean latent, sigmas).

    Raises:
        ValueError: bad ``steps``/``method``/``latents``, or a scheduler without flow-matching sigmas.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    if method not in INVERSION_METHODS:
        raise ValueError(f"method must be one of {INVERSION_METHODS}, got {method!r}")
    if not isinstance(latents, torch.Tensor) or latents.shape[0] != 1:
        raise ValueError(f"latents must be a tensor with batch 1, got "
                         f"{tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__}")
    family = _family(pipe)
    kwargs = {k: v for k, v in pipe_kwargs.items() if k not in ("negative_prompt", "true_cfg_scale", "generator")}
    for banned in ("prompt", "latents", "num_inference_steps", "output_type", "callback_on_step_end"):
        if banned in kwargs:
            raise ValueError(f"invert() sets {banned!r} itself; do not pass it")
    if family == "wan":
        kwargs["guidance_scale"] = 1.0
    real = pipe.scheduler
    wrapper = InversionScheduler(real, method)
    pipe.__dict__["scheduler"] = wrapper
    try:
        pipe(prompt=prompt, latents=latents, num_inference_steps=steps, output_type="latent", **kwargs)
    finally:
        pipe.__dict__["scheduler"] = real
    up = wrapper.trajectory  # latents at sigma_{T-1}, ..., sigma_0
    if len(up) != steps:
        raise RuntimeError(f"inversion recorded {len(up)} latents for {steps} steps (the pipeline did not run its loop "
                           "as expected)")
    return Inversion(trajectory=up[::-1], clean=latents.detach().clone(), sigmas=wrapper.sigmas_up[1:][::-1],
                     method=method)
