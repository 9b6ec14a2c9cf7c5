# The README's two commands: `make demo` runs the whole flow on a built-in model,
# `make test` runs the test suite. Both work on a fresh machine: they create the
# virtual environment and install what they need from this repository's files.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Installed versions are pinned in constraints.txt, so a fresh machine gets the
# versions the suite passed with; pyproject.toml keeps only lower bounds.
PIP_INSTALL := $(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test install install-test system-deps lint proto clean

demo: $(VENV)/.installed
	$(BIN)/mopar demo

# Static checks first (seconds), then the suite: ruff, the layout's import contracts
# (pyproject.toml [tool.importlinter]) and mypy with the project's config.
test: lint system-deps
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

$(VENV)/.created:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	touch $@

$(VENV)/.installed: $(VENV)/.created pyproject.toml constraints.txt
	$(PIP_INSTALL) -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP_INSTALL) -e '.[test]'
	touch $@

# The gRPC descriptor the gateway loads, compiled from its .proto by protoc (Debian's
# protobuf-compiler; a test compiles it again and compares).
PROTO := slice_runtime/gateway/predict_v2.proto
proto: $(VENV)/.installed
	protoc -I $(dir $(PROTO)) --descriptor_set_out=$(VENV)/predict_v2.binpb $(PROTO)
	$(BIN)/python -c 'import sys; from google.protobuf import descriptor_pb2; \
		from slice_runtime.gateway.messages import descriptor_module; \
		files = descriptor_pb2.FileDescriptorSet.FromString(open(sys.argv[1], "rb").read()).file; \
		open(sys.argv[2], "w").write(descriptor_module(files[0].SerializeToString()))' \
		$(VENV)/predict_v2.binpb $(dir $(PROTO))predict_v2_descriptor.py

# Programs the tests run for real: redis-server (transports, artifact store, ACL users),
# openssl (certificates for the TLS transport test), ip and tc (iproute2: the hosts in
# network namespaces and their rate-limited links), protoc (protobuf-compiler: the gRPC
# descriptor is compiled again and compared), prometheus and promtool (the alert rules are
# checked by Prometheus' own tool, and a real Prometheus scrapes real workers, gateways and
# the operator). Packages come without their recommends; Prometheus is only its two
# binaries, unpacked from Debian's package into $(BIN) (the package itself would pull in
# node-exporter, smartmontools, JavaScript libraries and systemd units). The suite runs
# with $(BIN) first on PATH, so it finds them there.
APT_INSTALL := $(SUDO) apt-get install -y -qq --no-install-recommends
system-deps: $(VENV)/.created
	@missing=""; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	{ command -v ip && command -v tc; } >/dev/null 2>&1 || missing="$$missing iproute2"; \
	command -v openssl >/dev/null 2>&1 || missing="$$missing openssl"; \
	command -v protoc >/dev/null 2>&1 || missing="$$missing protobuf-compiler"; \
	export PATH="$(abspath $(BIN)):$$PATH"; \
	{ command -v promtool && command -v prometheus; } >/dev/null 2>&1 || prometheus=yes; \
	if [ -n "$$missing$$prometheus" ]; then $(SUDO) apt-get update -qq; fi; \
	if [ -n "$$missing" ]; then echo "installing$$missing"; $(APT_INSTALL) $$missing; fi; \
	if [ -n "$$prometheus" ]; then \
		echo "unpacking prometheus and promtool into $(BIN)"; \
		work=$$(mktemp -d) && (cd $$work && apt-get download -qq prometheus && \
			dpkg-deb -x prometheus_*.deb root) && \
		cp $$work/root/usr/bin/prometheus $$work/root/usr/bin/promtool $(BIN)/; \
		status=$$?; rm -rf $$work; exit $$status; \
	fi

lint: $(VENV)/.installed-test
	$(BIN)/python -m ruff check mopar slice_runtime tests benchmarks
	$(BIN)/python -m ruff format --check mopar slice_runtime tests benchmarks
	$(BIN)/lint-imports
	$(BIN)/python -m mypy

clean:
	rm -rf $(VENV) mopar-demo .pytest_cache
