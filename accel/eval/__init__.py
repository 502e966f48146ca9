"""Evaluation: fidelity and speed of the attention methods.

- :mod:`accel.eval.metrics`: MSE, PSNR, SSIM (Gaussian 11 / 1.5 window), per-frame video averages, LPIPS
  only from local weights.
- :mod:`accel.eval.e2e`: ``accel eval e2e`` -- dense vs methods on a pipeline (embedded or tiny models):
  PSNR/SSIM/adherence, pipeline and transformer latency, executed density, FLOPs, memory; a report directory.
- :mod:`accel.eval.attention_bench`: ``accel eval attention`` -- methods at matched densities on synthetic
  structured Q/K/V at real sizes (error vs dense, attention-mass recall).
- :mod:`accel.eval.recorder`: executed density per (step, layer) from the kernel calls of a model.
- :mod:`accel.eval.matching`: a method's parameter for a target density, from layouts alone.
- :mod:`accel.eval.kernel_bench`: ``accel eval kernels`` / ``accel bench kernels``.
- :mod:`accel.eval.report`, :mod:`accel.eval.rundir`: report.md, PNG plots, atomic results.json.
"""
