"""`accel render --cp-degree 2` in 4 CPU processes (Gloo): 2 prompts at a time, each split over 2 processes.

The processes run the real command line in-process (``accel.cli.render.main``) inside an initialised
Gloo group; diffusers' context parallelism runs as on GPUs except for one patch, the device count
(see tests/processors/test_context_parallel.py).
"""

from __future__ import annotations

import json
from unittest import mock

import numpy as np

from accel.cli import render as command
from accel.render.manifest import MANIFEST_NAME

from ..distributed import run_gloo


def _render(rank: int, world_size: int, argvs: list[list[str]]) -> list[int]:
    import torch

    codes = []
    with mock.patch.object(torch.accelerator, "device_count", return_value=1):
        for argv in argvs:
            try:
                codes.append(command.main(argv))
            except SystemExit as exc:  # argparse's error(): exit status 2
                codes.append(exc.code)
    return codes


def _frames(folder) -> np.ndarray:
    import imageio.v2 as imageio

    return np.stack([imageio.imread(p) for p in sorted(folder.iterdir())])


def test_prompt_groups_of_two_processes_split_each_video(tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("".join(f"prompt number {i}\n" for i in range(4)))
    # 32 x 32 pixels: 2 x 2 tokens per latent frame, 12 video tokens, 6 per process
    common = ["--model", "tiny-wan", "--prompts", str(prompts), "--height", "32", "--width", "32", "--format", "png",
              "--method", "radial", "--seed", "3", "--no-progress"]
    cp_out, single_out = tmp_path / "cp", tmp_path / "single"
    codes = run_gloo(_render, 4, [[*common, "--out", str(tmp_path / "bad"), "--cp-degree", "3"],
                                  [*common, "--out", str(cp_out), "--cp-degree", "2"]], timeout=1200)
    assert codes == [[2, 0]] * 4  # --cp-degree 3 does not divide 4 processes: refused on every rank

    records = [json.loads(line) for line in (cp_out / MANIFEST_NAME).read_text().splitlines()]
    assert [r["name"] for r in records] == [f"{i:04d}-prompt-number-{i}" for i in range(4)]
    assert all(r["status"] == "ok" for r in records)
    # group 0 = ranks 0-1 renders items 0, 2; group 1 = ranks 2-3 renders items 1, 3; the first rank writes
    assert [r["rank"] for r in records] == [0, 2, 0, 2]

    assert command.main([*common, "--out", str(single_out)]) == 0
    for r in records:
        got, want = _frames(cp_out / r["file"]), _frames(single_out / r["file"])
        assert got.shape == (9, 32, 32, 3)
        assert np.abs(got.astype(int) - want.astype(int)).max() <= 1  # float noise may cross a rounding edge
    assert not np.array_equal(_frames(cp_out / records[0]["file"]), _frames(cp_out / records[1]["file"]))
