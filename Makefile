# Two entry points: `make demo` and `make test`. Both create .venv on first use.
PYTHON_SYS ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.requirements-installed

.PHONY: demo test venv clean figures gpu-check gpu-carry

venv: $(STAMP)

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON_SYS) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q tests

demo: $(STAMP)
	$(PY) -m src.experiments.demo

figures: $(STAMP)
	$(PY) -m src.tools.plot_gradients --out pics/gradients.png

clean:
	rm -rf $(VENV) runs data/toy_coco

# The prepared GPU check (docs/performance.md): `make gpu-check OUT=dir` on a GPU machine, which runs its own
# python3 (no .venv there); `make gpu-check DEVICE=cpu` rehearses it at toy size; AUGMENT=fused (or per-op, masked)
# runs its sync and bench steps with that form of the batched augmentation. `make gpu-carry` fills the one
# git-ignored folder a GPU run carries, .carry: the pycocotools wheel for python 3.12, which those machines lack.
DEVICE ?= cuda
OUT ?= runs/gpu-check
CARRY := .carry
GPU_PY := $(if $(wildcard $(PY)),$(PY),python3)
WHEEL_FLAGS := --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64

gpu-check:
	$(GPU_PY) -m benchmarks.gpu_check --device $(DEVICE) --out $(OUT) --wheels $(CARRY) \
		$(if $(AUGMENT),--augment-form $(AUGMENT))

gpu-carry: $(STAMP)
	mkdir -p $(CARRY)
	$(PY) -m pip download --quiet $(WHEEL_FLAGS) -d $(CARRY) pycocotools==2.0.11
