"""A server for the benchmarks: ``python -m scripts.benchmarks.serve MODE``, MODE one of

* ``app``: the app as ``python app.py`` serves it (detectors side by side, one thread each);
* ``one-after-another``: the app with the detectors of each pass run one after another, each on
  all of torch's threads (``load_state(together=False)``);
* ``instant``: a Gradio app with the app's ``/predict`` (same typing, queue, concurrency and fair
  sharing) that answers at once without reading the file: what Gradio and the clients cost by themselves.
"""

from __future__ import annotations

import argparse

import gradio as gr  # at module level: gr.api reads the hint gr.FileData from this module's names


def serve_instant() -> None:
    import app
    from cifake_models import list_detectors
    from cifake_models.fair import launch

    answer = {name: {"REAL": 0.5, "FAKE": 0.5} for name in list_detectors()}

    def predict(image: gr.FileData) -> dict[str, dict[str, float]]:
        return answer

    with gr.Blocks(analytics_enabled=False) as demo:
        gr.api(predict, api_name="predict", concurrency_limit=app.PREDICT_CONCURRENCY)
    demo.queue(max_size=64)
    launch(demo, max_file_size=app.SERVER_MAX_FILE_SIZE)


def serve_app(together: bool) -> None:
    import app
    from cifake_models.fair import launch
    from cifake_models.page.state import load_state

    launch(app.build_demo(load_state(together=together)), max_file_size=app.SERVER_MAX_FILE_SIZE)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=("app", "one-after-another", "instant"))
    mode = parser.parse_args(argv).mode
    if mode == "instant":
        serve_instant()
    else:
        serve_app(together=mode == "app")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
