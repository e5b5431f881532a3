# gust: the two commands a new machine needs are `make up` and `make test`.
GO ?= go
BIN := bin/gust
export CGO_ENABLED := 0

.PHONY: build up python-sdk test test-unit test-integration bench vet runsc-pin

# The binary is static (CGO off) because it is also gust-init inside every container image.
build:
	$(GO) build -o $(BIN) ./cmd/gust

# Start gust: server and a local worker on 127.0.0.1:7420, SQLite under /var/lib/gust.
up: build python-sdk
	$(BIN) up

# Make `import gust` work for this machine's python3 without pip or network: a .pth file in
# site-packages pointing at sdk/python. (`pip install ./sdk/python` works too where pip can
# fetch setuptools and wheel.)
python-sdk:
	@python3 -c 'import site, sys, os; d = site.getsitepackages()[0]; p = os.path.join(d, "gust-sdk.pth"); open(p, "w").write(os.path.abspath("sdk/python") + "\n"); print("python3: import gust ->", os.path.abspath("sdk/python"), "(via", p + ")")'

vet:
	$(GO) vet ./...
	cd sdk/go && $(GO) vet ./...
	@test -z "$$(gofmt -l cmd internal test sdk/go)" || (gofmt -l cmd internal test sdk/go; echo "gofmt needed"; exit 1)

# Everything: unit tests, SDK tests, and the root-only integration tests with real containers.
# `gust install` builds the pinned runsc once per machine (a few minutes on 2 cores).
test: build vet
	$(BIN) install
	$(GO) test -count=1 -timeout 40m ./...
	cd sdk/go && $(GO) test -count=1 ./...
	cd sdk/python && python3 -m unittest discover -s tests -p 'test_unit*.py'

# Fast tests only: no containers, no root.
test-unit:
	$(GO) test -short -count=1 ./...
	cd sdk/go && $(GO) test -count=1 ./...
	cd sdk/python && python3 -m unittest discover -s tests -p 'test_unit*.py'

# The slow, root-only integration tests alone.
test-integration: build
	$(GO) test -count=1 -timeout 40m -v ./test/integration

bench: build
	$(BIN) bench sandbox

# Move the gVisor pin: `make runsc-pin RUNSC_VERSION=v0.0.0-...` rewrites internal/container's
# runsc.mod and runsc.sum (the go.mod and go.sum from which `gust install` builds runsc, static,
# into /usr/local/lib/gust/runsc; `make up` and `make test` run it, and it does nothing when
# that runsc is already the pinned one).
runsc-pin:
	@test -n "$(RUNSC_VERSION)" || (echo "usage: make runsc-pin RUNSC_VERSION=v0.0.0-..."; exit 1)
	d=$$(mktemp -d) && cp internal/container/runsc.mod $$d/go.mod && cp internal/container/runsc.sum $$d/go.sum && \
	printf '//go:build tools\n\npackage pin\n\nimport _ "gvisor.dev/gvisor/runsc"\n' > $$d/tools.go && \
	(cd $$d && GOFLAGS=-mod=mod $(GO) get gvisor.dev/gvisor/runsc@$(RUNSC_VERSION) && $(GO) mod tidy) && \
	cp $$d/go.mod internal/container/runsc.mod && cp $$d/go.sum internal/container/runsc.sum && rm -rf $$d
