# unionfs: build, test, demo. `make help` lists the targets.
GO       ?= go
BIN      := bin/unionfs
VERSION  := $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -X main.version=$(VERSION)
PREFIX   ?= /usr/local
SBINDIR  ?= /sbin

.PHONY: all build test test-short bench install uninstall demo clean help

all: build

build: ## build bin/unionfs
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/unionfs

URING    := /sys/module/fuse/parameters/enable_uring

test: ## run every test: unit, end-to-end mounts, conformance, kernel-overlayfs oracle
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 20m ./...
	@# Mounts use FUSE over io_uring where the kernel offers it: run the
	@# end-to-end suite once more on /dev/fuse.
	if grep -qx Y $(URING) 2>/dev/null; then UNIONFS_TEST_NOIOURING=1 $(GO) test -count=1 -timeout 20m ./test/; fi

test-short: ## the tests that need no mount and no root (quick, for a laptop)
	$(GO) test -count=1 -short ./...

bench: build ## side-by-side benchmark against kernel overlayfs and fuse-overlayfs (root; BENCHFLAGS=-quick for ~1 min)
	$(GO) build -o bin/unionbench ./cmd/unionbench
	./bin/unionbench -unionfs $(BIN) $(BENCHFLAGS)

install: build ## install to $(PREFIX)/bin and link $(SBINDIR)/mount.fuse.unionfs for mount -t fuse.unionfs
	install -D -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/unionfs
	install -d $(DESTDIR)$(SBINDIR)
	ln -sf $(PREFIX)/bin/unionfs $(DESTDIR)$(SBINDIR)/mount.fuse.unionfs

uninstall: ## remove what install put in place
	rm -f $(DESTDIR)$(PREFIX)/bin/unionfs $(DESTDIR)$(SBINDIR)/mount.fuse.unionfs

demo: build ## build, make example layers, mount them, show the union, unmount
	./demo.sh $(BIN)

clean: ## remove build output and demo data
	rm -rf bin demo-data

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'
