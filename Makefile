# Two entry points: `make demo` and `make test`. Both create .venv on first use.
PYTHON_SYS ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.requirements-installed

.PHONY: demo test venv clean figures

venv: $(STAMP)

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON_SYS) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q tests

demo: $(STAMP)
	$(PY) -m src.tools.demo

figures: $(STAMP)
	$(PY) -m src.tools.plot_gradients --out pics/gradients.png

clean:
	rm -rf $(VENV) runs data/toy_coco
