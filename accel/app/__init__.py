"""The Gradio demo (``accel app``): generate with a sparse attention method, side by side with dense.

* :mod:`accel.app.logic` - the work as plain functions (validate, run, write files, figures)
* :mod:`accel.app.models` - the offered models (all offline) and the app's pipeline cache
* :mod:`accel.app.layout_view` - executed density and the block-layout picture
* :mod:`accel.app.outputs` - the output folder, the only place the app writes and serves
* :mod:`accel.app.uploads` - reading uploaded media (images, videos), checked before use
* :mod:`accel.app.upload_store` - the upload folder: admission of media only, quota, age limit
* :mod:`accel.app.http_guard` - the HTTP rules in front of Gradio (origin, uploads, file inputs, served types)
* :mod:`accel.app.ui` - the Gradio page, a thin layer over :mod:`accel.app.logic`
* :mod:`accel.app.server` - the command line (``accel app``): bind address, queue, limits
"""
