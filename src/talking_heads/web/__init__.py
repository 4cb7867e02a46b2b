"""The web app (`talking-heads web`): a page to create, animate, download and verify talking heads, built on
the one `TalkingHeadPipeline` (architecture.md principle 7).

- `settings.py`: `WebSettings`, the app's own options and limits (the model's stay in `talking_heads.config`);
- `handlers.py`: what each button does, as plain functions over the pipeline (no Gradio; tested directly);
- `app.py`: the Gradio Blocks layout that wires the handlers to the page, and `serve` (the command).

Gradio is imported only by `app.py`, so `handlers` and `settings` load without it.
"""

from .settings import WebSettings

__all__ = ["WebSettings"]
