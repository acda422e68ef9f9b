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

.PHONY: run sender sender-background stop stop-web stop-sender test bench install clean

$(STAMP): requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -r requirements.txt
	touch $(STAMP)

install: $(STAMP)

# Local development: signatures are not checked unless TWILIO_AUTH_TOKEN is set.
VALIDATE = IVR_VALIDATE_SIGNATURES=$${IVR_VALIDATE_SIGNATURES:-$$([ -n "$$TWILIO_AUTH_TOKEN" ] && echo true || echo false)}

# The web server, and the SMS and spool sender beside it. The sender runs in a session of
# its own (setsid), not under this shell: a crash or restart of the web server never
# stops it. Whatever a crash left behind (pids in instance/gunicorn.pid and
# instance/sender.pid) is stopped first, so `make run` always starts.
run: $(STAMP)
	@if [ -z "$$TWILIO_AUTH_TOKEN" ]; then \
	  echo "TWILIO_AUTH_TOKEN is not set: serving with IVR_VALIDATE_SIGNATURES=false (local only)"; fi
	@$(MAKE) --no-print-directory stop-web
	$(VALIDATE) sh -c '$(FLASK) init-db && $(FLASK) accounts import config/demo-accounts.csv'
	@$(MAKE) --no-print-directory sender-background
	$(VALIDATE) exec $(BIN)/gunicorn --bind $(HOST):$(PORT) --workers $(WORKERS) \
	  --pid instance/gunicorn.pid --access-logfile - app:app

# The sender in the foreground (e.g. under a supervisor); one per host.
sender: $(STAMP)
	@$(MAKE) --no-print-directory stop-sender
	$(VALIDATE) sh -c 'mkdir -p instance && echo $$$$ > instance/sender.pid && exec $(FLASK) outbox drain --watch'

# The sender detached from this shell, logging to instance/sender.log.
sender-background: $(STAMP)
	@$(MAKE) --no-print-directory stop-sender
	@mkdir -p instance
	@$(VALIDATE) setsid sh -c 'echo $$$$ > instance/sender.pid && exec $(FLASK) outbox drain --watch' \
	  >> instance/sender.log 2>&1 < /dev/null &
	@for i in $$(seq 50); do [ -s instance/sender.pid ] && break; sleep 0.1; done  # make stop finds it
	@echo "sender started in the background (instance/sender.pid, log in instance/sender.log)"

stop: stop-web stop-sender

# Stop the process a pidfile names ($(1)), if it is still the one we started (its command
# line holds $(2)); $(3) names it in what is printed.
define stop_pidfile
	@if [ -f $(1) ]; then pid=$$(cat $(1)); \
	  if kill -0 $$pid 2>/dev/null && grep -q "$(2)" /proc/$$pid/cmdline 2>/dev/null; then \
	    echo "stopping $(3) (pid $$pid)"; kill $$pid; \
	    for i in 1 2 3 4 5 6 7 8 9 10; do kill -0 $$pid 2>/dev/null || break; sleep 1; done; \
	  fi; rm -f $(1); fi
endef

stop-web:
	$(call stop_pidfile,instance/gunicorn.pid,gunicorn,the web server)

stop-sender:
	$(call stop_pidfile,instance/sender.pid,outbox,the sender)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Measurements, not tests (see bench/README.md). BENCH_ARGS, e.g. "--calls 2000 --backends sqlite".
bench: $(STAMP)
	$(BIN)/python bench/run.py $(BENCH_ARGS)
	$(BIN)/python bench/profile_steps.py $(PROFILE_ARGS)
	$(BIN)/python bench/profile_steps.py --calls 200 --pause 0.03 $(PROFILE_ARGS)
	$(BIN)/python bench/instructions.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
