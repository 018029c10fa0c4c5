"""How fast and how sturdy the app is on this machine: one script per benchmark, each run as
``python -m scripts.benchmarks.NAME`` with its switches (``--help``): ``one_image``, ``the_app``,
``crowd``, ``folder``, ``extras`` and ``hostile``; ``serve`` is the server they start. Not tests:
timings depend on the machine and on whatever else runs on it."""
