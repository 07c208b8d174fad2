# moat: the two commands that matter are `make run` and `make test` (see README.md).
GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/moatmail/moat/policy.Version=$(VERSION)
CONFIG  ?= moat.example.toml

.PHONY: build run test bench lint clean

## build: compile bin/moat
build:
	$(GO) build -ldflags '$(LDFLAGS)' -o bin/moat ./cmd/moat

## run: run moat on the embedded defaults (moat.example.toml): a unix socket and 127.0.0.1:7357, SQLite state
run: build
	./bin/moat check-config -c $(CONFIG)
	./bin/moat serve -c $(CONFIG)

## test: vet, then every unit, protocol and end-to-end test (the real daemons are started by test/stack)
test:
	$(GO) vet ./...
	$(GO) vet -tags moattest ./...
	$(GO) test -count=1 -timeout 60m ./...

## bench: Go benchmarks, then throughput through a private Postfix (ratios against baselines in the same run)
bench:
	$(GO) test -run '^$$' -bench . -benchmem $$($(GO) list ./... | grep -v /test/bench)
	$(GO) test -run '^$$' -bench . -benchtime 1x -timeout 60m ./test/bench/

## lint: formatting and vet
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags moattest ./...

clean:
	rm -rf bin
