"""The Gradio page: widgets wired to :mod:`accel.app.logic`, nothing else.

Every handler catches errors and shows them as one readable line of plain text right under the button
that caused them, and in a Gradio popup (input errors as they are, anything unexpected as its type and
first message line; the traceback goes to the server log only). The page's event handlers are not
offered as API endpoints (``api_visibility="private"``).
"""

from __future__ import annotations

import dataclasses
import html
import logging

from .compare_view import frame_pictures, scale_note
from .editing import DEFAULT_MAX_UPLOAD_BYTES, SOURCES, EditSettings, run_edit
from .examples import EXAMPLES, example_rows, examples_table
from .logic import METHOD_CHOICES, AppInputError, GenerateSettings, run_generate
from .models import ModelCache
from .outputs import OutputFolder
from .uploads import IMAGE_SUFFIXES, VIDEO_SUFFIXES

__all__ = ["build_demo", "error_text", "method_help", "drawn_mask"]

log = logging.getLogger(__name__)

#: the page's event handlers are internal: not listed in the API page, not callable as named endpoints
_PRIVATE = "private"

_LAYOUT_CAPTION = ("Block layout of one sparse call, video × video: query blocks top to bottom, key blocks left "
                   "to right, in the order the method runs the tokens (tiles when it tiles). Dark blue: computed whole; "
                   "light blue: computed with a per-token mask; near-white: skipped. Rectified and Agent choose per call: "
                   "shown is the first sparse call's first kernel layout (batch 0, head 0).")


def error_text(exc: BaseException) -> str:
    """The one-line plain-text message the page shows for ``exc`` (never a traceback)."""
    if isinstance(exc, AppInputError):
        return f"Error: {exc}"
    first = (str(exc).strip().splitlines() or [""])[0][:300]
    return f"Error: the request failed ({type(exc).__name__}: {first}); details are in the server log"


def message_html(text: str) -> str:
    """``text`` as the HTML of the message line under a button: escaped, so it shows as plain text."""
    return f'<p class="accel-message">{html.escape(text)}</p>' if text else ""


def method_help(method: str) -> str:
    """Markdown listing the parameters of a method of :data:`~accel.app.logic.METHOD_CHOICES` and their defaults."""
    from accel.methods.registry import method_class

    cls = method_class(method)
    if cls is None:
        return "the model's own attention (no accel processor); no parameters"
    parts = []
    for field in dataclasses.fields(cls):
        if not field.init:
            continue
        default = field.default if field.default is not dataclasses.MISSING else "required"
        parts.append(f"`{field.name}={default}`")
    return f"`{cls.__name__}` parameters (type `key=value`, tuples as `3,5,5`): " + ", ".join(parts)


def drawn_mask(value):
    """The drawn mask of a ``gradio.Sketchpad`` value as ``[H, W]`` alpha (nonzero = drawn), or ``None``.

    Accepts the editor's dict (``layers`` of RGBA arrays; the strokes are the layers' opaque pixels),
    a bare array, or ``None``.
    """
    import numpy as np

    if value is None:
        return None
    if isinstance(value, dict):
        layers = [np.asarray(layer) for layer in (value.get("layers") or []) if layer is not None]
        if not layers:
            return None
        alpha = [layer[..., 3] if layer.ndim == 3 and layer.shape[-1] == 4 else layer.max(-1) if layer.ndim == 3
                 else layer for layer in layers]
        return np.max(np.stack(alpha), axis=0)
    return np.asarray(value)


def _size_inputs(gr, first, prefix: str):
    """Number fields height, width, frames, steps, seed (element ids ``prefix + name``)."""
    d = first.defaults
    with gr.Row():
        height = gr.Number(value=d["height"], precision=0, label="height (px)", elem_id=f"{prefix}height")
        width = gr.Number(value=d["width"], precision=0, label="width (px)", elem_id=f"{prefix}width")
    with gr.Row():
        frames = gr.Number(value=d["frames"], precision=0, label="frames", elem_id=f"{prefix}frames")
        steps = gr.Number(value=d["steps"], precision=0, label="steps", elem_id=f"{prefix}steps")
        seed = gr.Number(value=0, precision=0, label="seed", elem_id=f"{prefix}seed")
    return height, width, frames, steps, seed


def _message_line(gr, prefix: str):
    """The plain-text message line under a button (element id ``prefix + "status"``)."""
    return gr.HTML("", elem_id=f"{prefix}status")


def _result_pane(gr, first, prefix: str, labels: tuple[str, str], picture: tuple[str, str], caption: str):
    """A pair of videos and a pair of images (one pair visible per model kind), figures and a larger picture
    with its caption. Returns ``(rows, media, figures, picture)``; element ids are ``prefix`` +
    ``video_<label>`` / ``image_<label>`` / ``figures`` / the picture's id."""
    media = []
    rows = []
    for kind, component in (("video", gr.Video), ("image", gr.Image)):
        with gr.Row(visible=first.kind == kind) as row:
            for label in labels:
                extra = dict(autoplay=True, loop=True) if kind == "video" else dict(type="filepath")
                media.append(component(label=label, elem_id=f"{prefix}{kind}_{label}", **extra))
        rows.append(row)
    with gr.Row():
        figures = gr.Markdown("", elem_id=f"{prefix}figures")
        with gr.Column():
            image = gr.Image(label=picture[1], elem_id=f"{prefix}{picture[0]}", type="filepath", height=420)
            gr.Markdown(caption)
    return rows, media, figures, image


def _shown(kind: str, first, second, picture, figures: str, status: str) -> tuple:
    """Output values of a result pane: the two files as videos or as images, the picture, the figures."""
    video = kind == "video"
    return (message_html(status), first if video else None, second if video else None, None if video else first,
            None if video else second, picture, figures)


def _failed(exc: Exception, what: str) -> tuple:
    """Output values of a result pane for a failed request: the message, everything else cleared; the
    message also pops up (``gradio.Warning``)."""
    import gradio as gr

    if not isinstance(exc, AppInputError):
        log.exception("%s request failed", what)
    text = error_text(exc)
    gr.Warning(text)
    return (message_html(text), None, None, None, None, None, "")


def _frame_view(gr, frames: int):
    """The Generate tab's frame-by-frame comparison: one clip ``method | dense | difference`` that plays the
    three in step, a frame slider and frame i of each as pictures (element ids ``video_side_by_side``,
    ``frame``, ``frame_method``, ``frame_dense``, ``frame_diff``). Returns ``(clip, slider, pictures)``."""
    with gr.Accordion("frame by frame: method, dense and their difference", open=True):
        clip = gr.Video(label="method | dense | difference, one clip (the three always show the same frame)",
                        elem_id="video_side_by_side", autoplay=True, loop=True)
        slider = gr.Slider(0, max(1, frames - 1), value=0, step=1, label="frame", elem_id="frame", interactive=True)
        with gr.Row():
            pictures = [gr.Image(label=label, type="numpy", elem_id=f"frame_{name}", height=280, format="png")
                        for name, label in (("method", "method, frame i"), ("dense", "dense, frame i"),
                                            ("diff", "difference, frame i"))]
        gr.Markdown(scale_note() + ".")
    return clip, slider, pictures


def _frame_outputs(gr, frames, dense) -> tuple:
    """Values of the frame view after a Generate: the slider over the frames (at 0) and frame 0's pictures;
    cleared when there is no dense result to compare with."""
    if frames is None or dense is None:
        return (gr.update(value=0), None, None, None)
    # a slider needs maximum > minimum: an image (one frame) gets 0..1, and frame 1 shows frame 0 (on_frame)
    return (gr.update(value=0, maximum=max(1, len(frames) - 1)), *frame_pictures(frames, dense, 0))


def build_demo(models: ModelCache, outputs: OutputFolder, *, upload_root=None,
               max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES):
    """The demo's ``gradio.Blocks`` (not launched; :mod:`accel.app.server` queues and launches it).

    Args:
        models: the app's model cache (which models are offered, loaded pipelines).
        outputs: the app's output folder (results are written there and served from there).
        upload_root: the folder the server keeps uploads in (the Edit tab reads uploads only from
            there); ``None``: the output folder.
        max_upload_bytes: size limit the Edit tab applies to uploaded media and masks (the server
            also refuses larger uploads).
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
        try:
            settings = GenerateSettings(
                model=model, prompt=prompt, height=height, width=width, frames=frames, steps=steps, seed=seed,
                method=method, method_params=params or "", dense_steps=dense_steps, dense_layers=dense_layers,
                dense_last_steps=dense_last_steps, compare=bool(compare))
            r = run_generate(settings, models, outputs, progress=lambda f, text: progress(f, desc=text))
        except Exception as exc:  # shown in the page; the traceback only in the log
            return (*_failed(exc, "generate"), gr.update(), None, *_frame_outputs(gr, None, None), None)
        out = str(r.output)
        pair = (r.frames, r.dense_frames) if r.dense_frames is not None else None
        return (*_shown(r.kind, out, str(r.dense_output) if r.dense_output else None,
                        str(r.layout_picture) if r.layout_picture else None, r.figures_markdown(),
                        f"done: {r.kind} written to its own folder ({r.output.parent.name})"), out,
                str(r.side_by_side) if r.side_by_side else None, *_frame_outputs(gr, r.frames, r.dense_frames),
                pair)

    def on_frame(index, pair):
        if pair is None:
            return None, None, None
        index = int(index or 0)
        return frame_pictures(*pair, index if index < len(pair[0]) else 0)  # past the end: an image's 0..1 slider

    def on_edit(model, source, upload, source_prompt, target_prompt, words, mask_file, drawn, alpha, steps, seed,
                height, width, frames, last, progress=gr.Progress()):  # noqa: B008 (Gradio injects progress this way)
        try:
            settings = EditSettings(
                model=model, source=source, source_prompt=source_prompt, target_prompt=target_prompt,
                edit_words=words or "", alpha=alpha, steps=steps, seed=seed, height=height, width=width,
                frames=frames, upload=upload, mask_file=mask_file, drawn_mask=drawn_mask(drawn))
            r = run_edit(settings, models, outputs, last_output=last, upload_root=upload_root,
                         max_upload_bytes=max_upload_bytes,
                         progress=lambda f, text: progress(f, desc=text))
        except Exception as exc:  # shown in the page; the traceback only in the log
            return _failed(exc, "edit")
        return _shown(r.kind, str(r.source_output), str(r.edited_output),
                      str(r.mask_picture) if r.mask_picture else None, r.figures_markdown(),
                      f"done: {r.kind} edited ({r.edited_output.parent.name})")

    with gr.Blocks(title="accel: sparse attention demo") as demo:
        last_output = gr.State(None)
        compared = gr.State(None)  # (method frames, dense frames) of the last Generate, for the frame slider
        gr.Markdown("# accel: sparse attention for diffusion transformers\nRuns offline on the models listed "
                    "below.")
        with gr.Tab("Generate"):
            gr.Markdown("Generate with a sparse attention method and compare with the model's dense attention "
                        "(same prompt, same seed).", elem_id="subtitle")
            with gr.Row():
                with gr.Column(scale=1):
                    model = gr.Dropdown(names, value=names[0], label="model", elem_id="model")
                    model_info = gr.Markdown(describe(first))
                    prompt = gr.Textbox(value="a red circle moving left", label="prompt", elem_id="prompt")
                    height, width, frames, steps, seed = _size_inputs(gr, first, "")
                    method = gr.Dropdown(list(METHOD_CHOICES), value="radial", label="attention method",
                                         elem_id="method")
                    params = gr.Textbox(value="", label="method parameters (key=value ...; empty: the method's "
                                        "defaults)",
                                        elem_id="params")
                    params_help = gr.Markdown(method_help("radial"))
                    with gr.Row():
                        dense_steps = gr.Number(value=0, precision=0, label="dense first steps", elem_id="dense_steps")
                        dense_layers = gr.Number(value=0, precision=0, label="dense first layers",
                                                 elem_id="dense_layers")
                        dense_last = gr.Number(value=0, precision=0, label="dense last steps", elem_id="dense_last")
                    compare = gr.Checkbox(value=True, label="compare with dense", elem_id="compare")
                    run = gr.Button("Generate", variant="primary", elem_id="generate")
                    status = _message_line(gr, "")
                    inputs = [model, prompt, height, width, frames, steps, seed, method, params, dense_steps,
                              dense_layers, dense_last, compare]
                    if EXAMPLES:
                        gr.Examples(example_rows(), inputs, label="Examples, measured on a 2-core CPU (shared) with "
                                    "this page's timing (figures below)",
                                    example_labels=[e.label for e in EXAMPLES], elem_id="examples",
                                    api_visibility=_PRIVATE)
                        gr.Markdown(examples_table(), elem_id="examples_table")
                with gr.Column(scale=2):
                    (video_row, image_row), media, figures, layout = _result_pane(
                        gr, first, "", ("method", "dense"), ("layout", "block layout"), _LAYOUT_CAPTION)
                    side_clip, frame, frame_pictures_ = _frame_view(gr, first.defaults["frames"])
            # .input (the user's own choice), not .change: an example sets model, sizes, method and parameters
            # at once, and must not have them reset to the model's defaults / emptied afterwards
            model.input(on_model, model, [model_info, height, width, frames, steps, video_row, image_row],
                         api_visibility=_PRIVATE)
            # the help follows every change (an example's too); only the user's own choice empties the parameters
            method.change(method_help, method, params_help, api_visibility=_PRIVATE)
            method.input(lambda name: "", method, params, api_visibility=_PRIVATE)
            run.click(on_generate, inputs,
                      [status, *media, layout, figures, last_output, side_clip, frame, *frame_pictures_, compared],
                      api_visibility=_PRIVATE,
                      show_progress_on=[status])  # one progress bar, under the button, not one per output
            frame.change(on_frame, [frame, compared], frame_pictures_, api_visibility=_PRIVATE, show_progress="hidden")
        with gr.Tab("Edit"):
            gr.Markdown("Edit a clip by attention control (ConsistEdit): the source and its edit come from the same "
                        "noise; only the edit region may change.", elem_id="e_subtitle")
            with gr.Row():
                with gr.Column(scale=1):
                    e_model = gr.Dropdown(names, value=names[0], label="model", elem_id="e_model")
                    e_model_info = gr.Markdown(describe(first))
                    e_source = gr.Radio(list(SOURCES), value="generate", label="source", elem_id="e_source",
                                        info="generate: from the source prompt; upload: your image/video; "
                                             "last: the Generate tab's last result")
                    e_upload = gr.File(label="image or video to edit", type="filepath", height=120, visible=False,
                                       file_types=[*IMAGE_SUFFIXES, *VIDEO_SUFFIXES], elem_id="e_upload")
                    e_src_prompt = gr.Textbox(value="a red circle moving left", label="source prompt",
                                              elem_id="e_source_prompt")
                    e_tgt_prompt = gr.Textbox(value="a blue circle moving left", label="target prompt",
                                              elem_id="e_target_prompt")
                    e_words = gr.Textbox(value="red", label="edit words (from the source prompt, comma-separated)",
                                         elem_id="e_words")
                    with gr.Accordion("edit mask (optional; overrides the edit words)", open=False):
                        e_mask_file = gr.Image(label="mask image (white = edit)", type="filepath",
                                               elem_id="e_mask_file")
                        e_drawn = gr.Sketchpad(label="or draw the edit region", type="numpy", elem_id="e_drawn",
                                               canvas_size=(256, 256))
                    e_alpha = gr.Slider(0.0, 1.0, value=1.0, step=0.05, label="alpha (consistency strength)",
                                        info="1: colour/material edits; 0.3: shape edits; 0.1: real inputs",
                                        elem_id="e_alpha")
                    e_height, e_width, e_frames, e_steps, e_seed = _size_inputs(gr, first, "e_")
                    e_run = gr.Button("Edit", variant="primary", elem_id="edit")
                    e_status = _message_line(gr, "e_")
                with gr.Column(scale=2):
                    (e_video_row, e_image_row), e_media, e_figures, e_mask_picture = _result_pane(
                        gr, first, "e_", ("source", "edited"), ("mask", "edit mask used"),
                        "The edit mask on the token grid, latent frames left to right; white tokens may change, "
                        "black ones are kept from the source.")
            e_model.change(on_model, e_model, [e_model_info, e_height, e_width, e_frames, e_steps,
                                               e_video_row, e_image_row], api_visibility=_PRIVATE)
            e_source.change(lambda source: gr.update(visible=source == "upload"), e_source, e_upload,
                            api_visibility=_PRIVATE)
            e_run.click(on_edit,
                        [e_model, e_source, e_upload, e_src_prompt, e_tgt_prompt, e_words, e_mask_file, e_drawn,
                         e_alpha, e_steps, e_seed, e_height, e_width, e_frames, last_output],
                        [e_status, *e_media, e_mask_picture, e_figures], api_visibility=_PRIVATE,
                        show_progress_on=[e_status])
    return demo
