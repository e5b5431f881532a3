# gust: the two commands a new machine needs are `make up` and `make test`.
GO ?= go
BIN := bin/gust
export CGO_ENABLED := 0

.PHONY: build up python-sdk test test-unit test-integration bench vet

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
