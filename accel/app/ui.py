"""The Gradio page: widgets wired to :mod:`accel.app.logic`, nothing else.

Every handler catches errors and shows them in the page as one readable line (input errors as they
are, anything unexpected as its type and first message line; the traceback goes to the server log
only).
"""

from __future__ import annotations

import dataclasses
import logging

from .logic import METHOD_CHOICES, AppInputError, GenerateSettings, run_generate
from .models import ModelCache
from .outputs import OutputFolder

__all__ = ["build_demo", "error_text", "method_help"]

log = logging.getLogger(__name__)

_LAYOUT_CAPTION = ("Block layout of one sparse call, video × video: query blocks top to bottom, key blocks left "
                   "to right, in the order the method runs the tokens (tiles when it tiles). Dark: computed whole; "
                   "light: computed with a per-token mask; grey: skipped.")


def error_text(exc: BaseException) -> str:
    """The one-line message the page shows for ``exc`` (never a traceback)."""
    if isinstance(exc, AppInputError):
        return f"**Error:** {exc}"
    first = (str(exc).strip().splitlines() or [""])[0][:300]
    return f"**Error:** the request failed ({type(exc).__name__}: {first}); details are in the server log"


def method_help(method: str) -> str:
    """Markdown listing the parameters of a method of :data:`~accel.app.logic.METHOD_CHOICES` and their defaults."""
    import accel
    from accel.generate import METHODS

    cls_name = METHODS.get(method)
    if cls_name is None:
        return "the model's own attention (no accel processor); no parameters"
    cls = getattr(accel, cls_name)
    parts = []
    for field in dataclasses.fields(cls):
        if not field.init:
            continue
        default = field.default if field.default is not dataclasses.MISSING else "required"
        parts.append(f"`{field.name}={default}`")
    return f"`{cls_name}` parameters (type `key=value`, tuples as `3,5,5`): " + ", ".join(parts)


def build_demo(models: ModelCache, outputs: OutputFolder):
    """The demo's ``gradio.Blocks`` (not launched; :mod:`accel.app.server` queues and launches it).

    Args:
        models: the app's model cache (which models are offered, loaded pipelines).
        outputs: the app's output folder (results are written there and served from there).
    """
    import gradio as gr

    names = list(models.models)
    first = models.entry(names[0])

    def describe(entry):
        rule = f"sizes: multiples of {entry.size_multiple} px up to {entry.max_side}"
        if entry.kind == "video":
            rule += f"; frames: 1 + k·{entry.frame_step} up to {entry.max_frames}"
        return f"{entry.description}  \n*{rule}; steps up to {entry.max_steps}*"

    def on_model(name):
        entry = models.entry(name)
        d = entry.defaults
        video = entry.kind == "video"
        return (describe(entry), gr.update(value=d["height"]), gr.update(value=d["width"]),
                gr.update(value=d["frames"], interactive=video), gr.update(value=d["steps"]),
                gr.update(visible=video), gr.update(visible=not video))

    def on_generate(model, prompt, height, width, frames, steps, seed, method, params, dense_steps, dense_layers,
                    dense_last_steps, compare, progress=gr.Progress()):  # noqa: B008 (Gradio injects progress this way)
        empty = (None, None, None, None, None, "")
        try:
            settings = GenerateSettings(
                model=model, prompt=prompt, height=height, width=width, frames=frames, steps=steps, seed=seed,
                method=method, method_params=params or "", dense_steps=dense_steps, dense_layers=dense_layers,
                dense_last_steps=dense_last_steps, compare=bool(compare))
            result = run_generate(settings, models, outputs, progress=lambda f, text: progress(f, desc=text))
        except Exception as exc:  # shown in the page; the traceback only in the log
            if not isinstance(exc, AppInputError):
                log.exception("generate request failed")
            return (error_text(exc), *empty)
        video = result.kind == "video"
        out, dense = str(result.output), (str(result.dense_output) if result.dense_output else None)
        picture = str(result.layout_picture) if result.layout_picture else None
        status = f"done: {result.kind} written to its own folder ({result.output.parent.name})"
        return (status, out if video else None, dense if video else None, None if video else out,
                None if video else dense, picture, result.figures_markdown())

    with gr.Blocks(title="accel: sparse attention demo") as demo:
        gr.Markdown("# accel: sparse attention for diffusion transformers\n"
                    "Generate with a sparse attention method and compare with the model's dense attention "
                    "(same prompt, same seed). Runs offline on the models listed below.")
        with gr.Tab("Generate"):
            with gr.Row():
                with gr.Column(scale=1):
                    model = gr.Dropdown(names, value=names[0], label="model", elem_id="model")
                    model_info = gr.Markdown(describe(first))
                    prompt = gr.Textbox(value="a red circle moving left", label="prompt", elem_id="prompt")
                    with gr.Row():
                        height = gr.Number(value=first.defaults["height"], precision=0, label="height (px)",
                                           elem_id="height")
                        width = gr.Number(value=first.defaults["width"], precision=0, label="width (px)",
                                          elem_id="width")
                    with gr.Row():
                        frames = gr.Number(value=first.defaults["frames"], precision=0, label="frames",
                                           elem_id="frames")
                        steps = gr.Number(value=first.defaults["steps"], precision=0, label="steps", elem_id="steps")
                        seed = gr.Number(value=0, precision=0, label="seed", elem_id="seed")
                    method = gr.Dropdown(list(METHOD_CHOICES), value="radial", label="attention method",
                                         elem_id="method")
                    params = gr.Textbox(value="block_size=16", label="method parameters (key=value ...)",
                                        elem_id="params")
                    params_help = gr.Markdown(method_help("radial"))
                    with gr.Row():
                        dense_steps = gr.Number(value=0, precision=0, label="dense first steps", elem_id="dense_steps")
                        dense_layers = gr.Number(value=0, precision=0, label="dense first layers",
                                                 elem_id="dense_layers")
                        dense_last = gr.Number(value=0, precision=0, label="dense last steps", elem_id="dense_last")
                    compare = gr.Checkbox(value=True, label="compare with dense", elem_id="compare")
                    run = gr.Button("Generate", variant="primary", elem_id="generate")
                with gr.Column(scale=2):
                    status = gr.Markdown("", elem_id="status")
                    with gr.Row(visible=first.kind == "video") as video_row:
                        video = gr.Video(label="method", elem_id="video_method", autoplay=True, loop=True)
                        dense_video = gr.Video(label="dense", elem_id="video_dense", autoplay=True, loop=True)
                    with gr.Row(visible=first.kind == "image") as image_row:
                        image = gr.Image(label="method", elem_id="image_method", type="filepath")
                        dense_image = gr.Image(label="dense", elem_id="image_dense", type="filepath")
                    with gr.Row():
                        figures = gr.Markdown("", elem_id="figures")
                        with gr.Column():
                            layout = gr.Image(label="block layout", elem_id="layout", type="filepath")
                            gr.Markdown(_LAYOUT_CAPTION)
            model.change(on_model, model, [model_info, height, width, frames, steps, video_row, image_row])
            method.change(method_help, method, params_help)
            run.click(on_generate,
                      [model, prompt, height, width, frames, steps, seed, method, params, dense_steps, dense_layers,
                       dense_last, compare],
                      [status, video, dense_video, image, dense_image, layout, figures])
    return demo
