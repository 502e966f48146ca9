"""``accel generate``: render prompts given on the command line (``accel render`` without a prompt file).

::

    accel generate --prompt "a yellow square moving right" --method neighborhood --method-arg window=3,9,9
    accel generate --prompt "a red circle moving left" --prompt "a blue square moving up" --strip --out renders

It is ``accel render`` with the prompts of ``--prompt`` (repeatable) instead of ``--prompts FILE``: the same
options (``--model`` default the offline embedded model, ``--method``, ``--method-arg``, ``--schedule``,
``--steps``, ``--frames``, ``--height``, ``--width``, ``--seed`` of the first prompt, +1 per prompt, ...), the
same files (``NNNN-<slug of the prompt>.mp4``, written under a temporary name and renamed when complete),
the same ``manifest.jsonl`` and resume; ``--out`` defaults to ``renders``. ``--strip`` also writes
``NNNN-<slug>.png``: every 4th frame side by side, read back from the MP4.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

__all__ = ["main"]


def _write_strips(out: Path, names: list[str]) -> None:
    import imageio.v2 as imageio
    import numpy as np

    from accel.render.manifest import latest_records
    from accel.render.media import write_strip

    records = latest_records(out)
    for name in names:
        record = records.get(name)
        if record is None or record.get("status") != "ok" or not str(record.get("file", "")).endswith(".mp4"):
            continue
        video = out / record["file"]
        frames = np.stack(imageio.mimread(video, format="FFMPEG", memtest=False)).astype(np.float32) / 255.0
        write_strip(frames, video.with_suffix(".png"))
        print(f"strip: {video.with_suffix('.png')}")


def main(argv=None) -> int:
    """Command line of ``accel generate`` (see ``--help``); returns the exit status (as ``accel render``'s)."""
    from accel.cli.render import parser, render_parsed
    from accel.render.prompts import read_prompt_file

    p = parser("accel generate", prompt_file=False)
    p.description = __doc__.splitlines()[0]
    p.add_argument("--prompt", action="append", required=True, metavar="TEXT",
                   help='a prompt, e.g. "a red circle moving left" (repeat for several clips)')
    p.add_argument("--strip", action="store_true", help="also write a PNG strip of every 4th frame of each video")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="accel-generate-") as tmp:
        args.prompts = Path(tmp) / "prompts.jsonl"
        args.prompts.write_text("".join(json.dumps({"prompt": text}) + "\n" for text in args.prompt), encoding="utf-8")
        status = render_parsed(p, args)
        names = [item.name for item in read_prompt_file(args.prompts, base_seed=args.seed)]
    if args.strip:
        _write_strips(args.out, names)
    return status


if __name__ == "__main__":
    sys.exit(main())
