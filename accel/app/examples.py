"""The Generate tab's examples: settings measured to run faster than dense at good quality on the
development CPU.

Each example is a record of ``benchmarks/results/app_examples_cpu.json`` that ``python
benchmarks/app_examples.py`` marked ``kept`` (the speedup in process CPU time of the page's own timing at
least 1.1x, no impossible-speedup warning, PSNR >= 25 dB and SSIM >= 0.9 against dense); its label
quotes the figures measured there and the machine's load (other machines, other loads: other figures).
``tests/app/test_examples.py`` checks that every example here is a kept record of that file with the
same settings and figures.
"""

from __future__ import annotations

import dataclasses

from .logic import GenerateSettings

__all__ = ["Example", "EXAMPLES", "RESULTS_FILE", "example_rows"]

#: the results file the examples come from (relative to the repository root)
RESULTS_FILE = "benchmarks/results/app_examples_cpu.json"


@dataclasses.dataclass(frozen=True)
class Example:
    """One example of the Generate tab.

    Attributes:
        name: the candidate's name in :data:`RESULTS_FILE`.
        settings: the request it loads into the page (compare on).
        measured: the figures measured for it, as quoted in its label (speedups, PSNR, SSIM, load).
    """

    name: str
    settings: GenerateSettings
    measured: str

    @property
    def label(self) -> str:
        """The example's label in the page: method, parameters, size, then the measured figures."""
        s = self.settings
        params = f" {s.method_params}" if s.method_params else ""
        schedule = f", {s.dense_steps} dense first step(s)" if s.dense_steps else ""
        return f"{s.method}{params}, {s.width}x{s.height}x{s.frames}, {s.steps} steps{schedule}: {self.measured}"


def _settings(method: str, params: str, size: int, frames: int, steps: int, dense_steps: int) -> GenerateSettings:
    return GenerateSettings(model="embedded", prompt="a red circle moving left", height=size, width=size,
                            frames=frames, steps=steps, seed=0, method=method, method_params=params,
                            dense_steps=dense_steps, compare=True)


#: the examples, in the page's order (filled from the kept records of RESULTS_FILE)
EXAMPLES: tuple[Example, ...] = ()


def example_rows(examples=EXAMPLES) -> list[list]:
    """The examples as rows of the Generate inputs' values, in the page's input order: model, prompt,
    height, width, frames, steps, seed, method, parameters, dense first steps, dense first layers, dense
    last steps, compare."""
    return [[e.settings.model, e.settings.prompt, e.settings.height, e.settings.width, e.settings.frames,
             e.settings.steps, e.settings.seed, e.settings.method, e.settings.method_params, e.settings.dense_steps,
             e.settings.dense_layers, e.settings.dense_last_steps, e.settings.compare] for e in examples]
