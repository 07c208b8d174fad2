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

## bench: benchmarks, each a ratio against a baseline measured in the same run (the machine is shared and noisy)
bench:
	@echo "== moat's own cost of one message over the milter protocol, no checks (client and server in one process)"
	$(GO) test -p 1 -run '^$$' -bench . -benchmem ./milter/
	@echo "== barring: 10,000 addresses through a 1,000-line list; linear matching on pathological patterns"
	$(GO) test -p 1 -run '^$$' -bench . -benchmem ./internal/wildcard/
	@echo "== greylist decisions/s and p99 at 16 concurrent sessions, SQLite and Redis"
	$(GO) test -p 1 -run '^$$' -bench . -benchtime 20000x ./store/ ./rules/greylist/
	@echo "== DNS checks per message with a warm cache, against no checks"
	$(GO) test -p 1 -run '^$$' -bench DNSChecksWarm -benchtime 3s ./test/dnsauth/
	@echo "== throughput through a private Postfix (smtp-source), ratios to Postfix alone and to moat with no checks"
	$(GO) test -p 1 -run '^$$' -bench Throughput -benchtime 1x -timeout 60m ./test/throughput/ ./test/envelope/
	$(GO) test -p 1 -run '^$$' -bench PostfixDNSChecks -benchtime 1x -timeout 60m ./test/dnsauth/
	@echo "== spamd: moat's added cost over spamc alone; moat's RSS while a 50 MB message passes"
	$(GO) test -p 1 -run '^$$' -bench . -benchtime 1x -timeout 60m ./test/scanning/
	@echo "== attachments: the check's cost on a mixed corpus against no check (in process and through Postfix); RSS on a 50 MB message of 1,000 parts"
	$(GO) test -p 1 -run '^$$' -bench . -benchtime 20x ./rules/attachments/
	$(GO) test -p 1 -run '^$$' -bench . -benchtime 1x -timeout 30m ./test/attachments/

## lint: formatting and vet
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags moattest ./...

clean:
	rm -rf bin
