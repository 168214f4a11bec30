"""The web page (`python -m svd_ms.app`): `uploads` checks what visitors send, `service` runs one
generation at a time on the device with a queue, `ui` is the Gradio page. Importing this package
imports neither Gradio nor the model."""
