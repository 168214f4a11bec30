"""The page's functions for scripts: endpoints `gradio_client` calls by name, registered inside the
page's Blocks by `register_api`. Filled in by issue 26 (scripts, load test)."""


def register_api(service, info) -> None:
    """Register the named endpoints on the Blocks being built (called inside its `with` block)."""
    return None
