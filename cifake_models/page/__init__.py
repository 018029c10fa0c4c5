"""What the app's page shows, made without Gradio: ``app.py`` lays it out and wires the events.

Rooms: :mod:`.state` (loaded once), :mod:`.analysis` (files in, results out), :mod:`.cards`,
:mod:`.tables`, :mod:`.figures`, :mod:`.texts`, :mod:`.words`. None of them imports gradio.
"""
