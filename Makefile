# pld_robot developer entry points. Every target that runs code bootstraps first; the bootstrap is
# a ~1 s no-op when nothing changed (scripts/bootstrap.sh).
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV := .venv
PY := $(VENV)/bin/python
# MuJoCo renders offscreen on the CPU through OSMesa unless the caller chose another backend.
export MUJOCO_GL ?= osmesa
# ROS 2 discovery (tests, the sim graph) stays on this machine unless the caller says otherwise.
export ROS_AUTOMATIC_DISCOVERY_RANGE ?= LOCALHOST

# Extra arguments: make test PYTEST_ARGS='-m "not slow"', make sim SIM_ARGS='--help'
PYTEST_ARGS ?=
SIM_ARGS ?=

.PHONY: help bootstrap sim test bench clean distclean

help:
	@echo "make bootstrap  set up .venv (Debian libs, pinned Python deps, ROS 2 wheels if no system ROS)"
	@echo "make sim        run the simulated robot stack (pld-robot sim)"
	@echo "make test       run the test suite (as CI does: bash .ci/run)"
	@echo "make bench      run bench/*.py, one JSON object each, into bench/out/"
	@echo "make clean      remove build products (ros2_ws build/install/log, caches)"
	@echo "make distclean  clean, and remove .venv"

bootstrap:
	@bash scripts/bootstrap.sh

sim: bootstrap
	$(VENV)/bin/pld-robot sim $(SIM_ARGS)

test: bootstrap
	$(PY) -m pytest -q $(PYTEST_ARGS)

bench: bootstrap
	@mkdir -p bench/out
	@set -e; found=0; for f in bench/*.py; do \
	  [ -e "$$f" ] || continue; case $$(basename "$$f") in _*) continue;; esac; \
	  found=1; name=$$(basename "$$f" .py); echo "== $$name"; \
	  $(PY) "$$f" | tee "bench/out/$$name.json"; \
	done; [ $$found = 1 ] || echo "no bench/*.py scripts yet"

clean:
	rm -rf ros2_ws/build ros2_ws/install ros2_ws/log build dist .pytest_cache *.egg-info
	find . -path ./$(VENV) -prune -o -path ./ros2_ws -prune -o -name __pycache__ -type d -print0 | xargs -0 rm -rf

distclean: clean
	rm -rf $(VENV)
