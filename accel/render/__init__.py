"""``accel render``: batch rendering of prompt files (:mod:`accel.render.command`), its manifest
(:mod:`accel.render.manifest`), data-parallel sharding over ``torch.distributed``
(:mod:`accel.render.distributed`) and the recorded attention density (:mod:`accel.render.density`).
"""

__all__: list[str] = []
