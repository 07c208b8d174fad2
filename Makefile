# moat: the two commands that matter are `make run` and `make test` (see README.md).
GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/moatmail/moat/policy.Version=$(VERSION)
CONFIG  ?= moat.example.toml

.PHONY: build run test bench lint clean deb

## build: compile bin/moat
build:
	$(GO) build -ldflags '$(LDFLAGS)' -o bin/moat ./cmd/moat

## run: run moat with moat.example.toml as it is: a unix socket and 127.0.0.1:7357, SQLite state
run: build
	./bin/moat check-config -c $(CONFIG)
	./bin/moat serve -c $(CONFIG)

## test: vet, then every unit, protocol and end-to-end test (the real daemons are started by test/stack); a
## missing mail stack is installed first (.ci/ensure-stack runs .ci/run's install step, as root or with sudo)
test:
	@bash .ci/ensure-stack
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
	@echo "== 1,000 idle milter sessions: moat's RSS, and the message rate with them as a ratio to without"
	$(GO) test -p 1 -run '^$$' -bench IdleSessions -benchtime 1x -timeout 30m ./test/throughput/
	$(GO) test -p 1 -run '^$$' -bench PostfixDNSChecks -benchtime 1x -timeout 60m ./test/dnsauth/
	@echo "== spamd: moat's added cost over spamc alone; moat's RSS while a 50 MB message passes"
	$(GO) test -p 1 -run '^$$' -bench . -benchtime 1x -timeout 60m ./test/scanning/
	@echo "== metrics: messages/s through the engine with metrics on, as a ratio to metrics off (target >= 0.98)"
	$(GO) test -p 1 -run '^$$' -bench ThroughputRatio -benchtime 5x ./metrics/
	@echo "== attachments: the check's cost on a mixed corpus against no check (in process and through Postfix); RSS on a 50 MB message of 1,000 parts"
	$(GO) test -p 1 -run '^$$' -bench . -benchtime 20x ./rules/attachments/
	$(GO) test -p 1 -run '^$$' -bench . -benchtime 1x -timeout 30m ./test/attachments/
	@echo "== correspondents: outbound recording against no check (engine; Postfix with smtp-source)"
	$(GO) test -p 1 -run '^$$' -bench . -benchtime 10x ./rules/correspondents/
	$(GO) test -p 1 -run '^$$' -bench . -benchtime 1x -timeout 30m ./test/correspondents/

## deb: the Debian package (dist/nfpm.yaml) in $(DEB_DIR); nfpm runs as a tool, it is not a dependency of moat
NFPM        ?= $(GO) run github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.48.0
DEB_DIR     ?= dist/build
DEB_ARCH    ?= $(shell $(GO) env GOARCH)
# A Debian version must start with a digit: the release number, then the commit.
DEB_VERSION ?= $(shell sed -n 's/^var Version = "\([0-9.]*\).*"/\1/p' policy/build.go)~git$(shell git rev-parse --short HEAD 2>/dev/null || echo 0)
deb:
	mkdir -p $(DEB_DIR)
	CGO_ENABLED=0 GOARCH=$(DEB_ARCH) $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o dist/build/moat ./cmd/moat
	VERSION='$(DEB_VERSION)' ARCH='$(DEB_ARCH)' $(NFPM) package --config dist/nfpm.yaml --packager deb --target $(DEB_DIR)/moat_$(DEB_VERSION)_$(DEB_ARCH).deb
	@echo "built $(DEB_DIR)/moat_$(DEB_VERSION)_$(DEB_ARCH).deb"

## lint: formatting and vet
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags moattest ./...

clean:
	rm -rf bin dist/build
