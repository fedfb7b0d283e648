# MultiStack for Linux — top-level build.
# `make demo` and `make test` are the two commands of the README; every target is idempotent.

SHELL   := /bin/bash
BUILD   := $(CURDIR)/build
VENV    := $(CURDIR)/.venv
PY      := $(VENV)/bin/python
PYTHON  ?= python3
PYTEST_ARGS ?=

export MSTACK_BUILD_DIR := $(BUILD)

.PHONY: all deps build bpf utcp shim benchtools httpd test test-full test-unit demo bench lint clean

all: build

## deps: Debian packages and the project's venv (editable install + test extras).
deps: $(VENV)/.installed
	@scripts/install-deps.sh --check-only || scripts/install-deps.sh

$(VENV)/.installed: pyproject.toml
	@scripts/install-deps.sh
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $@

## build: C parts with -Wall -Wextra -Werror, plus the ASan/UBSan variant under build/asan.
build: bpf utcp shim benchtools httpd
	$(MAKE) -C compat_tests compat BUILD=$(BUILD)
	$(MAKE) -C tests/system/c BUILD=$(BUILD)
	$(MAKE) -C tests/system/c BUILD=$(BUILD)/asan SAN=1

bpf:
	$(MAKE) -C daemon/bpf BUILD=$(BUILD)/bpf

utcp:
	$(MAKE) -C utcp_c BUILD=$(BUILD)
	$(MAKE) -C utcp_c BUILD=$(BUILD)/asan SAN=1
	$(MAKE) -C utcp_c/port BUILD=$(BUILD)
	$(MAKE) -C utcp_c/port BUILD=$(BUILD)/asan SAN=1
	$(MAKE) -C utcp_c/ctl BUILD=$(BUILD)
	$(MAKE) -C utcp_c/ctl BUILD=$(BUILD)/asan SAN=1
	$(MAKE) -C utcp_c/tools BUILD=$(BUILD)
	$(MAKE) -C utcp_c/tools BUILD=$(BUILD)/asan SAN=1
	$(MAKE) -C utcp_c/stats BUILD=$(BUILD)
	$(MAKE) -C utcp_c/stats BUILD=$(BUILD)/asan SAN=1
	$(MAKE) -C utcp_c/xdp BUILD=$(BUILD)
	$(MAKE) -C utcp_c/xdp BUILD=$(BUILD)/asan SAN=1

httpd: utcp
	$(MAKE) -C httpd BUILD=$(BUILD)
	$(MAKE) -C httpd BUILD=$(BUILD)/asan SAN=1

benchtools: utcp
	$(MAKE) -C bench/c BUILD=$(BUILD)
	$(MAKE) -C bench/c BUILD=$(BUILD)/asan SAN=1

shim: utcp
	$(MAKE) -C shim BUILD=$(BUILD)
	$(MAKE) -C shim BUILD=$(BUILD)/asan SAN=1

## fuzz: UTCP's libFuzzer targets (clang); tests/unit/test_fuzz.py builds and runs them too.
.PHONY: fuzz
fuzz:
	$(MAKE) -C utcp_c/fuzz BUILD=$(BUILD)

## test: everything pytest drives (C tests, Python unit tests, system tests on the test bed).
## Long runs use their reduced form; `make test-full` runs their full form.
test: deps build
	$(PY) -m pytest $(PYTEST_ARGS)

test-full: deps build
	MSTACK_FULL=1 $(PY) -m pytest $(PYTEST_ARGS)

test-unit: deps build
	$(PY) -m pytest -m unit $(PYTEST_ARGS)

lint: deps
	$(PY) -m ruff check pymgmt daemon tests bench scripts
	$(PY) -m ruff format --check pymgmt daemon tests bench scripts

## demo: the main job for a newcomer; builds, sets up a test bed, shows the result, cleans up.
demo: deps build
	$(PY) scripts/demo.py

## bench: reserved for the benchmark (issue: mstack-httpd and the benchmark).
bench: deps build
	$(PY) -m bench

## deb, wheel, deb-check: packaging (docs/packaging.md). deb-check installs the .deb into a
## fresh Debian 12 root (debootstrap, cached in /var/cache/multistack) and runs the demo there,
## then under a running systemd in a container (systemd-nspawn).
.PHONY: deb wheel deb-check
deb: deps build
	packaging/build-deb.sh $(BUILD)/deb $(PY)

wheel: deps
	$(PY) -m pip wheel -q --no-deps -w $(BUILD)/dist .

deb-check: deb
	PYTHON=$(PY) packaging/test-deb.sh $(BUILD)/deb/multistack_*.deb
	packaging/test-systemd.sh $(BUILD)/deb/multistack_*.deb

clean:
	$(MAKE) -C daemon/bpf clean BUILD=$(BUILD)/bpf
	$(MAKE) -C utcp_c clean BUILD=$(BUILD)
	$(MAKE) -C utcp_c/port clean BUILD=$(BUILD)
	$(MAKE) -C utcp_c/ctl clean BUILD=$(BUILD)
	$(MAKE) -C utcp_c/tools clean BUILD=$(BUILD)
	$(MAKE) -C utcp_c/stats clean BUILD=$(BUILD)
	$(MAKE) -C utcp_c/xdp clean BUILD=$(BUILD)
	$(MAKE) -C bench/c clean BUILD=$(BUILD)
	$(MAKE) -C httpd clean BUILD=$(BUILD)
	$(MAKE) -C shim clean BUILD=$(BUILD)
	rm -rf $(BUILD)
