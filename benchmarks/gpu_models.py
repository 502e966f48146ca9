"""Transformer step time of the real model architectures on one GPU: dense vs each method's preset.

Full-size random-weight HunyuanVideo 720p/129 frames, Wan 2.1 14B 720p, Wan 2.1 1.3B 480p and
FLUX.1-dev 1024^2 transformers, a few blocks of each built directly on the GPU in bf16, timed and
scaled to the real block count; one JSON line per measurement (see accel/eval/model_bench.py for what
is measured and how). ``--tiny`` runs the same code on the CPU at toy widths (the test does).

    python3 benchmarks/gpu_models.py --out $OUT/models.jsonl --budget-s 360     # GPU
    python3 benchmarks/gpu_models.py --tiny --out /tmp/models.jsonl              # CPU, toy sizes
    python3 benchmarks/gpu_models.py --summarize $OUT/models.jsonl               # the table again

The whole GPU loan (kernel check, then this) is one command: ``bash benchmarks/gpu_run.sh``.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # accel from this source tree

from accel.eval.model_bench import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(bare_diffusers=True))  # peft / transformers / accelerate hidden: the run needs none of them
