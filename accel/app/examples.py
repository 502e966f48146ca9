"""The Generate tab's examples: settings measured with the page's own logic on the development CPU, each
labelled with what was measured and whether it met the bar.

Each example is a record of ``benchmarks/results/app_examples_cpu.json`` (``python
benchmarks/app_examples.py``). A record is *kept* when its speedup in wall time and in process CPU time
(the page's own timing) are both at least 1.1x, no impossible-speedup warning was given, and PSNR >= 25 dB
and SSIM >= 0.9 against dense. On the 2-core CPU (shared, load 1-8) no candidate was kept: the settings
with good quality were not faster in CPU time, the faster ones (sparse local windows) lost the scene.
The examples are the best measured setting per method, their labels quote the figures and the verdict
(other machines, other loads: other figures). ``tests/app/test_examples.py`` checks every example
against its record.
"""

from __future__ import annotations

import dataclasses

from .logic import GenerateSettings

__all__ = ["Example", "EXAMPLES", "RESULTS_FILE", "example_rows", "examples_table"]

#: the results file the examples come from (relative to the repository root)
RESULTS_FILE = "benchmarks/results/app_examples_cpu.json"


@dataclasses.dataclass(frozen=True)
class Example:
    """One example of the Generate tab.

    Attributes:
        name: the candidate's name in :data:`RESULTS_FILE`.
        settings: the request it loads into the page (compare on).
        measured: the figures measured for it, as quoted in its label (speedups, PSNR, SSIM, load).
        kept: whether the record met the bar (faster at good quality, see the module docstring).
    """

    name: str
    settings: GenerateSettings
    measured: str
    kept: bool = False

    @property
    def label(self) -> str:
        """The example's short label in the page (Gradio shows about 60 characters): method, size, steps."""
        s = self.settings
        schedule = f", {s.dense_steps} dense" if s.dense_steps else ""
        return f"{s.method} {s.width}x{s.height}x{s.frames}, {s.steps} steps{schedule}"

    @property
    def verdict(self) -> str:
        """Whether it met the bar, in words."""
        return "faster at good quality" if self.kept else "not faster at good quality here"


def examples_table(examples=None) -> str:
    """A Markdown table of the examples: label, parameters, the measured figures and the verdict."""
    examples = EXAMPLES if examples is None else examples
    rows = [f"| {e.label} | `{e.settings.method_params or 'defaults'}` | {e.measured} | {e.verdict} |" for e in examples]
    return "\n".join(["| example | parameters | measured (page's timing) | verdict |", "|---|---|---|---|", *rows])


def _settings(method: str, params: str, size: int, frames: int, steps: int, dense_steps: int) -> GenerateSettings:
    return GenerateSettings(model="embedded", prompt="a red circle moving left", height=size, width=size,
                            frames=frames, steps=steps, seed=0, method=method, method_params=params,
                            dense_steps=dense_steps, compare=True)


#: the examples, in the page's order: the best record per method of RESULTS_FILE (figures copied from it)
EXAMPLES: tuple[Example, ...] = (
    Example("radial-wan-256", _settings("radial", "decay=0.2 sink=True", 256, 17, 4, 0),
            "measured 1.14x wall, 1.01x CPU time, 31.1 dB, SSIM 0.966 at load 1-5"),
    Example("radial-wan-b64-128-dense1", _settings("radial", "decay=0.2 sink=True block_size=64", 128, 17, 8, 1),
            "measured 0.82x wall, 1.13x CPU time, 29.8 dB, SSIM 0.949 at load 6"),
    Example("neighborhood-256-dense1", _settings("neighborhood", "window=5,11,11", 256, 17, 4, 1),
            "measured 1.05x wall, 1.06x CPU time, 26.0 dB, SSIM 0.903 at load 3-5"),
)


def example_rows(examples=EXAMPLES) -> list[list]:
    """The examples as rows of the Generate inputs' values, in the page's input order: model, prompt,
    height, width, frames, steps, seed, method, parameters, dense first steps, dense first layers, dense
    last steps, compare."""
    return [[e.settings.model, e.settings.prompt, e.settings.height, e.settings.width, e.settings.frames,
             e.settings.steps, e.settings.seed, e.settings.method, e.settings.method_params, e.settings.dense_steps,
             e.settings.dense_layers, e.settings.dense_last_steps, e.settings.compare] for e in examples]
