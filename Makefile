# RenderHub: `make serve` runs a hub, `make test` runs every check. Both set themselves up.
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip -q --disable-pip-version-check
ARGS   ?=

.PHONY: serve test test-fast coverage lint bench services render-packages system-packages clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install -e .
	touch $@

$(VENV)/.dev-installed: $(VENV)/.installed
	$(PIP) install -e '.[dev]'
	touch $@

serve: $(VENV)/.installed render-packages
	$(VENV)/bin/renderhub serve $(ARGS)

# Debian packages. Render servers need EGL with Mesa's llvmpipe (rendering without a GPU); the tests also
# need the glTF test models, Chromium for the viewer's browser tests (never a downloaded browser) and
# NSS tools to trust the hub's CA in the browser's profile.
# Render servers draw with EGL (Mesa without a GPU); conversions read FBX, OBJ, DAE, 3DS, STL and PLY with assimp.
RENDER_PACKAGES := libegl1 libgl1-mesa-dri libegl-mesa0 assimp-utils
TEST_PACKAGES   := $(RENDER_PACKAGES) assimp-testmodels chromium libnss3-tools iproute2
define install_packages
	@dpkg -s $(1) >/dev/null 2>&1 || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(1); }
endef

render-packages:
	$(call install_packages,$(RENDER_PACKAGES))

system-packages:
	$(call install_packages,$(TEST_PACKAGES))

# PostgreSQL runs on 127.0.0.1:5432 on this machine kind; start it if it was stopped.
services: system-packages
	@pg_isready -q -h 127.0.0.1 -p 5432 || pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql) main start

# Azurite (Azure Blob storage's emulator) for the conversion tests, from its lock file; Node from the machine.
AZURITE := tools/azurite/node_modules/.bin/azurite-blob
$(AZURITE): tools/azurite/package-lock.json
	npm ci --prefix tools/azurite --no-audit --no-fund
	touch $@

lint: $(VENV)/.dev-installed
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/mypy

# Two workers: most integration tests wait on processes, so they overlap well on two cores. One worker runs
# every test of the one Ray cluster and of the network namespaces (xdist groups, tests/conftest.py).
test: lint services $(AZURITE)
	$(VENV)/bin/pytest -n 2 --dist loadgroup $(ARGS)

# The logic tests alone (no hub or render-server processes, browser, PostgreSQL, Ray or fuzzing): under a minute.
test-fast: $(VENV)/.dev-installed render-packages
	$(VENV)/bin/pytest -m "not integration and not slow" $(ARGS)

# Branch coverage of src/ over the whole suite, hubs and render servers (subprocesses) included.
coverage: $(VENV)/.dev-installed system-packages services $(AZURITE)
	rm -f .coverage .coverage.*
	$(VENV)/bin/coverage run -m pytest $(ARGS)
	$(VENV)/bin/coverage combine -q
	$(VENV)/bin/coverage report

bench: $(VENV)/.dev-installed render-packages services
	$(PY) bench/api.py
	$(PY) bench/stream.py
	$(PY) bench/scale.py

clean:
	rm -rf $(VENV) .renderhub .pytest_cache .mypy_cache .ruff_cache .coverage .coverage.*
