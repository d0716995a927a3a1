# RenderHub: `make serve` runs a hub, `make test` runs every check. Both set themselves up.
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip -q --disable-pip-version-check
ARGS   ?=

.PHONY: serve test lint bench services system-packages clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install -e .
	touch $@

$(VENV)/.dev-installed: $(VENV)/.installed
	$(PIP) install -e '.[dev]'
	touch $@

serve: $(VENV)/.installed
	$(VENV)/bin/renderhub serve $(ARGS)

# Debian packages: EGL with Mesa's llvmpipe (rendering without a GPU), glTF test models, Chromium for
# the viewer's browser tests (never a downloaded browser), NSS tools to trust the hub's CA in its profile.
SYSTEM_PACKAGES := libegl1 libgl1-mesa-dri libegl-mesa0 assimp-testmodels chromium libnss3-tools

system-packages:
	@dpkg -s $(SYSTEM_PACKAGES) >/dev/null 2>&1 || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(SYSTEM_PACKAGES); }

# PostgreSQL runs on 127.0.0.1:5432 on this machine kind; start it if it was stopped.
services: system-packages
	@pg_isready -q -h 127.0.0.1 -p 5432 || pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql) main start

lint: $(VENV)/.dev-installed
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/mypy

test: lint services
	$(VENV)/bin/pytest $(ARGS)

bench: $(VENV)/.dev-installed
	$(PY) bench/api.py $(ARGS)

clean:
	rm -rf $(VENV) .renderhub .pytest_cache .mypy_cache .ruff_cache
