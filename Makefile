# Two entry points for a fresh machine: `make demo` and `make test`. Both create or refresh .venv,
# install the kit, every first-party plugin package and the system packages they need, then run.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
HPT := $(VENV)/bin/hpt-kit
PACKAGES := $(sort $(dir $(wildcard embodiments/*/pyproject.toml plugins/*/pyproject.toml)))
export MUJOCO_GL ?= osmesa
export PYOPENGL_PLATFORM ?= osmesa
export HPT_KIT_DATA ?= $(CURDIR)/data

.PHONY: setup system venv demo test lint clean

setup: system venv

# Headless MuJoCo rendering needs OSMesa.
system:
	@if ! ldconfig -p | grep -q libOSMesa.so; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq libosmesa6 >/dev/null; \
	fi

# setuptools reports every editable install as a warning ("Editable installation."): information,
# not a problem, so it is filtered; any other build warning still shows.
venv:
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	PYTHONWARNINGS='ignore:Editable installation' $(PY) -m pip install -q -c constraints.txt -e '.[dev,experiment,vision,serve,video,track,lora,cluster,openvino]' $(addprefix -e ,$(PACKAGES))

# Pre-train the small trunk on mujoco-arm3, attach the held-out mujoco-arm4 with the trunk frozen,
# and evaluate it next to the scripted expert. Re-running resumes the finished runs.
demo: setup
	$(HPT) list
	$(HPT) pretrain recipes/demo.toml --out runs/demo/pretrain --resume
	$(HPT) transfer recipes/transfer-arm4.toml --trunk runs/demo/pretrain --freeze-trunk --out runs/demo/transfer-arm4 --resume
	$(HPT) eval runs/demo/transfer-arm4 --episodes 100 --expert

test: setup
	$(PY) -m pytest -q tests $(addsuffix tests,$(PACKAGES))

lint: venv
	$(VENV)/bin/ruff check hpt_kit tests embodiments plugins

clean:
	rm -rf runs data .pytest_cache
