# mlstack. Two commands on a fresh machine: `make up` and `make test`; each sets itself up
# (virtual environment, Python dependencies, and the native runtime's binaries where needed).
# Then `make demo`: first experiments (train, compare, register), on the stack or without one.
#   make up [STACK=all|mlflow|clearml] [RUNTIME=auto|docker|native]
#   make down | make status | make bootstrap-credentials
#   make demo
#   make test | make lint

PYTHON ?= python3
VENV ?= .venv
STACK ?= all
RUNTIME ?= auto
BIN := $(VENV)/bin
MLSTACK := $(BIN)/mlstack
STACK_ARGS := --stack $(STACK) --runtime $(RUNTIME)
# `make test`'s pytest workers (tests/conftest.py: the failover drills run in one, the rest beside them)
TEST_WORKERS ?= 2

.PHONY: help venv init up down status bootstrap-credentials install-tools demo test lint

help:
	@sed -n '1,8p' Makefile

$(BIN)/.installed: pyproject.toml services/mlflow-server/store/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[stack,test]' -e services/mlflow-server/store
	@touch $@

venv: $(BIN)/.installed

init: venv
	$(MLSTACK) init

up: venv
	$(MLSTACK) up $(STACK_ARGS)

down: venv
	$(MLSTACK) down $(STACK_ARGS)

status: venv
	$(MLSTACK) status $(STACK_ARGS)

bootstrap-credentials: venv
	$(MLSTACK) bootstrap

install-tools: venv
	$(MLSTACK) install-tools --compose

demo: venv
	$(MLSTACK) demo

# the tests also need MinIO: the move from a stack made with it, and a second real S3 server;
# then the store plugin's equivalence tests under each other MLflow minor it supports
test: venv
	$(MLSTACK) install-tools --compose --minio --ha --monitoring
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --no-loadscope-reorder --durations 40
	$(BIN)/python -m tests.mlflow_versions

lint: venv
	$(BIN)/ruff check src tests benchmarks services
	$(BIN)/ruff format --check src tests benchmarks services
	$(BIN)/hadolint --config .hadolint.yaml services/*/Dockerfile infra/*/*/Dockerfile
