"""``accel eval e2e --model`` on a model that is neither the embedded nor a tiny one: a folder saved with
``save_pretrained`` runs with its pipeline's own defaults, overridden by --steps/--height/--width/--frames."""

import json
import math

from accel.cli import main
from accel.eval import e2e
from accel.pipelines.tiny import tiny_pipeline


def test_eval_runs_on_a_model_folder(tmp_path):
    folder = tmp_path / "my-wan"
    tiny_pipeline("wan").save_pretrained(folder)
    pipe, kwargs = e2e.load_pipeline(str(folder))
    assert type(pipe).__name__ == "WanPipeline"
    assert (kwargs["height"], kwargs["width"], kwargs["num_frames"]) == (480, 832, 81)  # WanPipeline.__call__'s
    out = tmp_path / "run"
    assert main(["eval", "e2e", "--model", str(folder), "--method", "dense", "--prompt", "a cat", "--steps", "1",
                 "--height", "32", "--width", "32", "--frames", "5", "--no-plots", "--out", str(out)]) == 0
    data = json.loads((out / "results.json").read_text())
    assert data["pipeline"] == str(folder) and data["complete"]
    assert data["call_kwargs"]["height"] == 32 and data["call_kwargs"]["num_frames"] == 5
    assert data["call_kwargs"]["num_inference_steps"] == 1
    dense, accel_dense = data["records"]
    assert accel_dense["config"] == "dense@100%"
    assert math.isinf(float(accel_dense["psnr_db"]))  # accel's Dense reproduces upstream attention exactly on Wan
