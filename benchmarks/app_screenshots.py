"""The README's screenshots of ``accel app``, taken in a real browser, with the figures the page showed.

Starts ``accel app`` on a free loopback port (embedded model), opens it in headless Chromium through
Playwright and

* Generate: loads the first example of the Generate tab (:data:`accel.app.examples.EXAMPLES`; with
  ``--defaults`` or when there is none, the page's defaults), clicks Generate, waits for the figures and
  saves ``docs/app.png``;
* Edit: clicks Edit with the tab's defaults and saves ``docs/app_edit.png``.

Both screenshots show the page as a first-time user sees it. The figures table and status text each page
showed are written as JSON (``--out``), with the 1-minute load average before and after, so the README
can quote them.

Run: ``python benchmarks/app_screenshots.py --out benchmarks/results/app_screenshots.json`` (``--docs DIR``,
``--defaults``, ``--only generate|edit``). Needs Debian's ``chromium`` (``apt-get install -y chromium``) and the
``playwright`` Python package; never downloads a browser.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# the app server and browser set-up the browser tests use (tests/app/serving.py)
from tests.app.serving import CHROMIUM_ARGS, chromium_path, running_app  # noqa: E402


def _table(text: str) -> dict:
    """``figure<TAB>value`` lines of the figures table as a dict; the rest as ``notes``."""
    rows, notes = {}, []
    for line in text.splitlines():
        if "\t" in line:
            name, value = line.split("\t", 1)
            if name != "figure":
                rows[name.strip()] = value.strip()
        elif line.strip():
            notes.append(line.strip())
    return dict(rows=rows, notes=notes)


def shoot_generate(page, base: str, docs: Path, use_example: bool) -> dict:
    from accel.app.examples import EXAMPLES

    page.goto(base + "/")
    page.wait_for_selector("#generate")
    example = EXAMPLES[0] if (use_example and EXAMPLES) else None
    if example is not None:
        page.locator("#examples").get_by_text(example.label).click()
        page.wait_for_function(f"() => document.querySelector('#height input').value == '{example.settings.height}'")
        page.wait_for_timeout(1000)
    page.click("#generate")
    page.locator("#figures").get_by_text("PSNR vs dense").wait_for(timeout=1_800_000)
    page.wait_for_timeout(2000)  # videos and pictures load
    page.screenshot(path=str(docs / "app.png"), full_page=True)
    return dict(example=None if example is None else example.name, settings=_settings(page),
                figures=_table(page.locator("#figures").inner_text()), status=page.locator("#status").inner_text())


def shoot_edit(page, base: str, docs: Path) -> dict:
    page.goto(base + "/")
    page.get_by_role("tab", name="Edit").click()
    page.wait_for_selector("#edit")
    page.click("#edit")
    page.locator("#e_figures").get_by_text("background PSNR vs source").wait_for(timeout=1_800_000)
    page.wait_for_timeout(2000)
    page.screenshot(path=str(docs / "app_edit.png"), full_page=True)
    fields = {name: page.locator(f"#e_{name} input, #e_{name} textarea").first.input_value()
              for name in ("source_prompt", "target_prompt", "words", "height", "width", "frames", "steps")}
    return dict(settings=fields, figures=_table(page.locator("#e_figures").inner_text()),
                status=page.locator("#e_status").inner_text())


def _settings(page) -> dict:
    names = ("height", "width", "frames", "steps", "seed", "dense_steps")
    out = {name: page.locator(f"#{name} input").input_value() for name in names}
    out["prompt"] = page.locator("#prompt textarea").input_value()
    out["method"] = page.locator("#method input").input_value()
    out["params"] = page.locator("#params textarea").input_value()
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True, help="JSON of the figures the pages showed")
    p.add_argument("--docs", type=Path, default=REPO / "docs", help="where the PNG files go")
    p.add_argument("--defaults", action="store_true", help="Generate with the page's defaults, not the first example")
    p.add_argument("--only", choices=("generate", "edit"), help="one of the two screenshots")
    args = p.parse_args(argv)
    exe = chromium_path()
    if exe is None:
        raise SystemExit("no chromium on the PATH: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    from accel.eval.timing import machine_load

    args.docs.mkdir(parents=True, exist_ok=True)
    record = dict(command="python benchmarks/app_screenshots.py " + " ".join(sys.argv[1:] if argv is None else argv))
    with tempfile.TemporaryDirectory() as tmp, \
            running_app(Path(tmp) / "server.log", "--out", str(Path(tmp) / "out"), timeout_s=180) as base, \
            sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1200})
        page.set_default_timeout(120_000)
        for part in ("generate", "edit"):
            if args.only not in (None, part):
                continue
            load_before, cpus = machine_load()
            result = (shoot_generate(page, base, args.docs, not args.defaults) if part == "generate"
                      else shoot_edit(page, base, args.docs))
            name = "app.png" if part == "generate" else "app_edit.png"
            result.update(load_1min=[load_before, machine_load()[0]], cpus=cpus, screenshot=name)
            record[part] = result
            print(part, json.dumps(result["figures"]["rows"]), flush=True)
        browser.close()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
