# Quick start: `make run` serves the demo line on SQLite; `make test` runs the whole suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
FLASK := $(BIN)/flask --app app
STAMP := $(VENV)/.installed

export IVR_DATABASE_URL ?= sqlite:///instance/ivr.db
HOST ?= 127.0.0.1
PORT ?= 5000
WORKERS ?= 2

.PHONY: run test bench install clean

$(STAMP): requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -r requirements.txt
	touch $(STAMP)

install: $(STAMP)

# Local development: signatures are not checked unless TWILIO_AUTH_TOKEN is set.
run: $(STAMP)
	@if [ -z "$$TWILIO_AUTH_TOKEN" ]; then \
	  echo "TWILIO_AUTH_TOKEN is not set: serving with IVR_VALIDATE_SIGNATURES=false (local only)"; fi
	IVR_VALIDATE_SIGNATURES=$${IVR_VALIDATE_SIGNATURES:-$$([ -n "$$TWILIO_AUTH_TOKEN" ] && echo true || echo false)} \
	  sh -c '$(FLASK) init-db && $(FLASK) accounts import config/demo-accounts.csv && \
	    ($(FLASK) outbox drain --watch & echo $$! > instance/outbox.pid) && \
	    trap "kill \$$(cat instance/outbox.pid) 2>/dev/null" EXIT INT TERM; \
	    $(BIN)/gunicorn --bind $(HOST):$(PORT) --workers $(WORKERS) --access-logfile - app:app'

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Measurements, not tests (see bench/README.md). BENCH_ARGS, e.g. "--calls 2000 --backends sqlite".
bench: $(STAMP)
	$(BIN)/python bench/run.py $(BENCH_ARGS)
	$(BIN)/python bench/profile_steps.py $(PROFILE_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
