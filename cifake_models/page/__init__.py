"""What the app's page shows, made without Gradio: ``app.py`` lays it out and wires the events.

* :mod:`.state`: what the page loads once, at start-up (every detector, its report, the examples).
* :mod:`.analysis`: uploaded files in, one typed :class:`~cifake_models.results.ImageResult` each out.
* :mod:`.cards`: the Detect tab's result cards (HTML) and their stylesheet, ``cards.css``.
* :mod:`.tables`: the results table, its CSV download, and the Compare tab's table.
* :mod:`.figures`: every plotly figure of the Evaluation tab, the threshold explorer among them.
* :mod:`.texts`: the page's markdown: header, detectors table, notes, threshold summary.

Scripts and tests import these directly; none of them imports gradio.
"""
