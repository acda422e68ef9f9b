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

.PHONY: run sender stop stop-web stop-sender test bench install clean

$(STAMP): requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -r requirements.txt
	touch $(STAMP)

install: $(STAMP)

# Local development: signatures are not checked unless TWILIO_AUTH_TOKEN is set.
# The web server only: the SMS and spool sender is its own process (`make sender`), so a
# crash or restart of one never stops the other. A server left behind by a crash (its
# pid in instance/gunicorn.pid) is stopped first, so `make run` always starts.
run: $(STAMP)
	@if [ -z "$$TWILIO_AUTH_TOKEN" ]; then \
	  echo "TWILIO_AUTH_TOKEN is not set: serving with IVR_VALIDATE_SIGNATURES=false (local only)"; fi
	@$(MAKE) --no-print-directory stop-web
	@echo "Run 'make sender' in another terminal to send text messages and replay the spool."
	IVR_VALIDATE_SIGNATURES=$${IVR_VALIDATE_SIGNATURES:-$$([ -n "$$TWILIO_AUTH_TOKEN" ] && echo true || echo false)} \
	  sh -c '$(FLASK) init-db && $(FLASK) accounts import config/demo-accounts.csv && \
	    exec $(BIN)/gunicorn --bind $(HOST):$(PORT) --workers $(WORKERS) \
	      --pid instance/gunicorn.pid --access-logfile - app:app'

# The sender (SMS and spool replay), restart-safe the same way; one per host.
sender: $(STAMP)
	@$(MAKE) --no-print-directory stop-sender
	IVR_VALIDATE_SIGNATURES=$${IVR_VALIDATE_SIGNATURES:-$$([ -n "$$TWILIO_AUTH_TOKEN" ] && echo true || echo false)} \
	  sh -c 'mkdir -p instance && echo $$$$ > instance/sender.pid && exec $(FLASK) outbox drain --watch'

stop: stop-web stop-sender

# Stop the process a pidfile names, if it is still the one we started.
define stop_pidfile
	@if [ -f $(1) ]; then pid=$$(cat $(1)); \
	  if kill -0 $$pid 2>/dev/null && grep -q "$(2)" /proc/$$pid/cmdline 2>/dev/null; then \
	    echo "stopping $(2) (pid $$pid)"; kill $$pid; \
	    for i in 1 2 3 4 5 6 7 8 9 10; do kill -0 $$pid 2>/dev/null || break; sleep 1; done; \
	  fi; rm -f $(1); fi
endef

stop-web:
	$(call stop_pidfile,instance/gunicorn.pid,gunicorn)

stop-sender:
	$(call stop_pidfile,instance/sender.pid,outbox)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Measurements, not tests (see bench/README.md). BENCH_ARGS, e.g. "--calls 2000 --backends sqlite".
bench: $(STAMP)
	$(BIN)/python bench/run.py $(BENCH_ARGS)
	$(BIN)/python bench/profile_steps.py $(PROFILE_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
