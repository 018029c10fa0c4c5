# The two commands of the README, on a fresh machine with Python 3.11:
#   make app    set up and start the app on the shipped checkpoints
#   make test   set up and run the tests (installs Debian's chromium for the browser test)
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: app test chromium

$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

# The browser test drives Debian's chromium; without root it is skipped, saying why.
chromium:
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || echo "chromium not installed: the browser test will be skipped"

app: $(VENV)/.installed
	$(PY) app.py

test: $(VENV)/.installed chromium
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q
