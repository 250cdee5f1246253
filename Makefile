# rt_safe_rl: two commands for a fresh machine.
#   make demo   set up .venv (if needed) and run the closed loop on the embedded default (DURATION=10 s)
#   make test   set up .venv (if needed) and run the whole test suite
# With a system ROS 2 sourced (ROS_DISTRO set and rclpy importable) the venv sees the system
# packages and no ROS wheels are installed; otherwise pinned ROS 2 Kilted wheels come from PyPI.

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DURATION ?= 10
PYTEST_ARGS ?=
SYSTEM_ROS := $(shell [ -n "$$ROS_DISTRO" ] && $(PYTHON) -c 'import rclpy' >/dev/null 2>&1 && echo 1)
REQS := requirements.txt requirements-dev.txt requirements-fleet.txt $(if $(SYSTEM_ROS),,requirements-ros.txt)
# The real ros2 CLI / launch / launch_ros (wheels in ../shared/ros2-cli; a sourced ROS 2 has its own):
# installed without --with-launch-testing (its pytest plugins break pytest 9). Tests skip without it.
ROS2_CLI := ../shared/ros2-cli
STAMP := $(VENV)/.rt_safe_rl-$(shell cat $(REQS) setup.py | sha256sum | cut -c1-16)$(if $(SYSTEM_ROS),-system-ros,)$(if $(wildcard $(ROS2_CLI)/install.sh),-cli,)

.PHONY: venv demo test lint typecheck colcon train bench clean

venv: $(STAMP)

$(STAMP):
	@if [ ! -x $(PY) ]; then \
	  echo "[setup] creating $(VENV)$(if $(SYSTEM_ROS), with system site-packages (ROS 2 $$ROS_DISTRO),)"; \
	  $(PYTHON) -m venv $(if $(SYSTEM_ROS),--system-site-packages,) $(VENV); \
	fi
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(foreach r,$(REQS),-r $(r))
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	@if [ -z "$(SYSTEM_ROS)" ] && [ -x $(ROS2_CLI)/install.sh ]; then $(ROS2_CLI)/install.sh $(PY); fi
	@rm -f $(VENV)/.rt_safe_rl-* && touch $@
	@echo "[setup] $(VENV) ready"

demo: venv
	$(VENV)/bin/rt-safe-rl demo --duration $(DURATION)

test: venv
	$(PY) -m pytest -q $(PYTEST_ARGS) test

lint: venv
	$(VENV)/bin/ruff check rt_safe_rl test launch
	$(VENV)/bin/ruff format --check rt_safe_rl test launch
	$(VENV)/bin/mypy rt_safe_rl
	$(VENV)/bin/mypy --strict rt_safe_rl/core rt_safe_rl/rt

colcon: venv
	rm -rf build install log && $(VENV)/bin/colcon build --paths . --merge-install

train: venv
	$(VENV)/bin/rt-safe-rl train

clean:
	rm -rf build install log .pytest_cache .mypy_cache .ruff_cache *.egg-info
