"""Batch rendering behind ``accel render`` (:mod:`accel.cli.render`): the batch itself
(:mod:`accel.render.batch`), its manifest (:mod:`accel.render.manifest`), data-parallel sharding over
``torch.distributed`` (:mod:`accel.render.distributed`), the recorded attention density
(:mod:`accel.render.density`), prompt files (:mod:`accel.render.prompts`) and writing MP4/PNG files
(:mod:`accel.render.media`).
"""

__all__: list[str] = []
