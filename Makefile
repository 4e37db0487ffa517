# thinproxy: thinproxyd (host daemon), thinproxy (client), nbdkit-thinproxy-plugin.so.
#
#   make                 build everything into $(BUILD) (default build/)
#   make check           unit tests (Check), the Ceph tests, then the guest integration tests
#   make check SANITIZE=1  the same, built with ASan+UBSan into build/san
#   make check-ceph      the Ceph tests alone (tests/ceph), each on a one-node cluster of its own
#   make check-linkage   no program links librbd or librados (run by check)
#   make demo            the main job, narrated (in the test guest where the host lacks dm-thin)
#   make fuzz            libFuzzer targets (clang) into build/fuzz, each run FUZZ_SECONDS (60)
#   make bench           benchmarks in the test guest and on the host (bench/run; not a test)
#   make deps            install missing Debian packages (run by demo and check)
#   make format          apply .clang-format to every C file, gofmt to the Go tests

.SECONDEXPANSION:
BUILD    ?= build
SANITIZE ?= 0
ifeq ($(SANITIZE),1)
BUILD    := build/san
SANFLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
endif

ifeq ($(origin CC),default)
CC       := gcc
endif
CFLAGS   ?= -O2 -g
WARNINGS := -Wall -Wextra -Werror -Wshadow -Wformat=2 -Wstrict-prototypes \
            -Wmissing-prototypes -Wno-missing-field-initializers -Wvla
CPPFLAGS += -D_GNU_SOURCE -Iinclude -DTP_VERSION=\"0.1\"
ALL_CFLAGS = -std=gnu11 $(WARNINGS) $(CFLAGS) $(SANFLAGS) -fstack-protector-strong -MMD -MP
ALL_LDFLAGS = $(LDFLAGS) $(SANFLAGS)

pc = $(shell pkg-config $(1) $(2) 2>/dev/null)
CHECK_LIBS := $(call pc,--libs,check)

# Protocol buffers: containerd's snapshot API, as .proto files of our own in
# client/snapshotter/proto, and the well-known types they import (libprotobuf-dev's
# copies), compiled by protoc-c into $(BUILD)/proto at build time for the client.
PROTO_PATH := client/snapshotter/proto /usr/include
PROTOS     := containerd/types/mount.proto containerd/services/snapshots/v1/snapshots.proto \
              google/protobuf/empty.proto google/protobuf/field_mask.proto \
              google/protobuf/timestamp.proto
PROTO_SRCS := $(patsubst %.proto,$(BUILD)/proto/%.pb-c.c,$(PROTOS))
PROTO_OBJS := $(PROTO_SRCS:.c=.o)
CPPFLAGS   += -I$(BUILD)/proto
vpath %.proto $(PROTO_PATH)

# Programs: every .c of a program's directory is part of it.
DAEMON      := $(BUILD)/thinproxyd
# ops-client.c is the API process's stand-in for the operations (issue 21): it defines the
# same functions as ops.c and its duties, so it links into the API process's programs only.
# The RBD backend's parts (issue 24: ceph-auth.c, rbd-volumes.c, rbd-meta.c, rbd-change.c
# here, rbd-io.c in the plugin) are built and tested on a cluster (tests/ceph) but linked into
# no program until the backend is wired: linked in, librbd and librados cost every nbdkit
# about 54 ms more to start (12.6 against 66.8 ms for nbdkit --dump-plugin), on every
# first connection to an idle tenant, dm-thin ones included.
RBD_PENDING := %/ceph-auth.o %/rbd-volumes.o %/rbd-meta.o %/rbd-change.o %/rbd-io.o
DAEMON_OBJS := $(filter-out %/ops-client.o $(RBD_PENDING),$(patsubst %.c,$(BUILD)/%.o,$(wildcard daemon/*.c)))
DAEMON_PKGS := devmapper sqlite3 libmicrohttpd json-c
# The API process (issue 21): api.c over ops-client.c, the parent's operations asked for over
# the wire; it has none of the daemon's privileged parts.
API_PROCESS      := $(BUILD)/thinproxyd-api
API_PROCESS_OBJS := $(patsubst %.c,$(BUILD)/%.o,$(wildcard api-process/*.c)) \
                    $(patsubst %,$(BUILD)/daemon/%.o,api ops-client ops-views api-wire api-wire-io log)
API_PROCESS_PKGS := libmicrohttpd json-c
CLIENT      := $(BUILD)/thinproxy
CLIENT_OBJS := $(patsubst %.c,$(BUILD)/%.o,$(wildcard client/*.c client/snapshotter/*.c)) \
               $(PROTO_OBJS)
CLIENT_PKGS := libcurl json-c libnl-genl-3.0 libnghttp2 libprotobuf-c
PLUGIN      := $(BUILD)/nbdkit-thinproxy-plugin.so
PLUGIN_OBJS := $(filter-out $(RBD_PENDING),$(patsubst %.c,$(BUILD)/%.o,$(wildcard nbdkit-plugin/*.c)))
# librbd-dev and librados-dev (Debian 12) ship no .pc files.
RBD_LIBS    := $(or $(call pc,--libs,librbd librados),-lrbd -lrados)
PROGRAMS    := $(if $(DAEMON_OBJS),$(DAEMON) $(API_PROCESS)) $(if $(CLIENT_OBJS),$(CLIENT)) \
               $(if $(PLUGIN_OBJS),$(PLUGIN))
CPPFLAGS    += $(call pc,--cflags,$(DAEMON_PKGS) $(CLIENT_PKGS) nbdkit)

# Guest test programs: tests/vm/NAME.c, linked with OBJS_NAME and LIBS_NAME.
VM_PROGRAMS := $(patsubst tests/vm/%.c,$(BUILD)/tests/vm/%,$(wildcard tests/vm/*.c))

# Unit tests: tests/unit/test-NAME.c, each linked with the objects it tests.
UNIT_TESTS := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(wildcard tests/unit/test-*.c))
# Guest tests: tests/vm/test-*.sh and the attacks of tests/security/test-*.sh, each in a
# fresh guest.
# VM_PENDING: guest tests of what is not built yet, left out of check-vm and run by hand
# until it is (TP_BUILD=$PWD/build tests/check tests/vm/test-X.sh); remove one to enable it.
VM_PENDING :=
VM_TESTS   := $(filter-out $(VM_PENDING),$(sort $(wildcard tests/vm/test-*.sh))) \
              $(sort $(wildcard tests/security/test-*.sh))
# Ceph tests (issue 24), on the host: tests/ceph/test-*.sh, each starting a cluster of its
# own; tests/ceph/test-NAME.c is a program that tests/ceph/test-NAME.sh runs against it,
# linked with tests/ceph/ceph-harness.c, which is no test of its own.
CEPH_PROGRAMS := $(patsubst tests/ceph/%.c,$(BUILD)/tests/ceph/%,$(wildcard tests/ceph/test-*.c))
CEPH_TESTS    := $(sort $(wildcard tests/ceph/test-*.sh))

# containerd's snapshotter conformance suite (tests/snapshotter/conformance_test.go), the
# reference snapshotter it is checked against, a snapshotter latency meter for make
# bench and a one-request client of the Snapshots service for the guest tests, built
# offline by Debian's Go in GOPATH mode on
# golang-github-containerd-containerd-dev (.ci/deps), cache under $(BUILD)/go.
GO         ?= go
GO_ENV     := GO111MODULE=off GOFLAGS= GOPATH=$(abspath $(BUILD))/go/path:/usr/share/gocode \
              GOCACHE=$(abspath $(BUILD))/go/cache
GO_PROGRAMS := $(BUILD)/tests/snapshotter/conformance.test \
               $(BUILD)/tests/snapshotter/reference-snapshotter $(BUILD)/bench/snapshotter-latency \
               $(BUILD)/tests/snapshotter/snapshotter-client
GO_SOURCES := $(wildcard tests/unit/*.go tests/snapshotter/*.go tests/snapshotter/*/*.go bench/*/*.go)

C_SOURCES  := $(wildcard include/*.h daemon/*.[ch] api-process/*.c client/*.[ch] client/snapshotter/*.[ch] \
                nbdkit-plugin/*.[ch] tests/unit/*.[ch] tests/vm/*.c tests/ceph/*.[ch] bench/*.[ch] \
                fuzz/*.[ch])

.PHONY: all check check-unit check-vm check-ceph check-format check-linkage format deps demo clean install fuzz bench
all: $(PROGRAMS) $(UNIT_TESTS) $(VM_PROGRAMS) $(CEPH_PROGRAMS) $(GO_PROGRAMS)

$(DAEMON): $(DAEMON_OBJS)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(call pc,--libs,$(DAEMON_PKGS)) -lpthread

$(API_PROCESS): $(API_PROCESS_OBJS)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(call pc,--libs,$(API_PROCESS_PKGS)) -lpthread

$(CLIENT): $(CLIENT_OBJS)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(call pc,--libs,$(CLIENT_PKGS)) -lpthread

# protoc-c writes NAME.pb-c.c and NAME.pb-c.h; whatever includes them waits for them.
$(BUILD)/proto/%.pb-c.c $(BUILD)/proto/%.pb-c.h: %.proto
	@mkdir -p $(BUILD)/proto
	protoc-c $(addprefix -I,$(PROTO_PATH)) --c_out=$(BUILD)/proto $<

$(BUILD)/proto/%.o: $(BUILD)/proto/%.c
	$(CC) $(CPPFLAGS) $(ALL_CFLAGS) -c -o $@ $<

$(PROTO_OBJS) $(filter $(BUILD)/client/snapshotter/%,$(CLIENT_OBJS)) \
    $(BUILD)/tests/unit/test-grpc.o: | $(PROTO_SRCS:.c=.h)

# The snapshotter's files use the client's headers.
$(BUILD)/client/snapshotter/%.o: CPPFLAGS += -Iclient

$(BUILD)/nbdkit-plugin/%.o: nbdkit-plugin/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(ALL_CFLAGS) -fPIC -c -o $@ $<

$(PLUGIN): $(PLUGIN_OBJS)
	$(CC) $(ALL_LDFLAGS) -shared -o $@ $^

$(BUILD)/tests/vm/%: $(BUILD)/tests/vm/%.o $$(OBJS_$$*)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LIBS_$*)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(ALL_CFLAGS) -c -o $@ $<

# go_build PACKAGE-DIR GO-ARGS: go ... into $@, run in PACKAGE-DIR; without Go, a line
# that says what is not built (the guest tests that need it then fail naming it).
go_build = @mkdir -p $(dir $@); \
	if command -v $(GO) >/dev/null; then \
		echo "go $(2) ($(1))" && cd $(1) && $(GO_ENV) $(GO) $(2) -o $(abspath $@) .; \
	else echo "go is missing (golang-go): $@ not built"; fi
$(BUILD)/tests/snapshotter/conformance.test: tests/snapshotter/conformance_test.go
	$(call go_build,tests/snapshotter,test -c)
$(BUILD)/tests/snapshotter/reference-snapshotter: tests/snapshotter/reference/main.go
	$(call go_build,tests/snapshotter/reference,build)
$(BUILD)/bench/snapshotter-latency: bench/snapshotter-latency/main.go
	$(call go_build,bench/snapshotter-latency,build)
$(BUILD)/tests/snapshotter/snapshotter-client: tests/snapshotter/client/main.go
	$(call go_build,tests/snapshotter/client,build)

# What a unit test or guest test program links beyond itself: OBJS_NAME and LIBS_NAME,
# e.g. OBJS_test-store := $(BUILD)/daemon/store.o, LIBS_test-store := -lsqlite3.
OBJS_test-store := $(BUILD)/daemon/store.o $(BUILD)/daemon/log.o
LIBS_test-store := $(call pc,--libs,sqlite3)
# test-change: the change protocol on a real store and the fake pool.
OBJS_test-change := $(BUILD)/daemon/change.o $(BUILD)/daemon/store.o $(BUILD)/daemon/log.o \
                    $(BUILD)/tests/unit/fake-pool.o
LIBS_test-change := $(call pc,--libs,sqlite3)
# test-ops: the operations' errors on a real store and the fake pool. The operations are
# daemon/ops.c and the files of its duties (daemon/ops-internal.h lists them).
OPS_OBJS := $(patsubst %,$(BUILD)/daemon/%.o,ops access volumes tenants images grants exports \
              metrics monitor ops-views volume-maps thin-map thin-metadata)
OBJS_test-ops := $(OPS_OBJS) $(BUILD)/daemon/change.o $(BUILD)/daemon/store.o \
                 $(BUILD)/daemon/log.o $(BUILD)/tests/unit/fake-pool.o
LIBS_test-ops := $(call pc,--libs,sqlite3) -lpthread
OBJS_test-pool := $(BUILD)/daemon/pool.o $(BUILD)/daemon/thin-metadata.o $(BUILD)/daemon/log.o
LIBS_test-pool := $(call pc,--libs,devmapper check)
LIBS_nbd-map := $(call pc,--libs,libnbd)
# test-thin-metadata: the walker on metadata thin_restore writes, held against thin_dump.
OBJS_test-thin-metadata := $(BUILD)/daemon/thin-metadata.o
OBJS_test-thin-map := $(BUILD)/daemon/thin-map.o $(BUILD)/daemon/thin-metadata.o
OBJS_test-client-output := $(BUILD)/client/output.o
# test-api drives api.c over the fuzz target's fake operations.
OBJS_test-api := $(BUILD)/daemon/api.o $(BUILD)/fuzz/fake-ops.o
LIBS_test-api := $(call pc,--libs,libmicrohttpd json-c)
# test-api-wire: the codec of the wire between the root parent and the API process.
OBJS_test-api-wire := $(BUILD)/daemon/api-wire.o
# test-ops-wire: api.c over the wire (ops-client.c) to ops-server-harness, which serves it
# with the real operations on a store and the fake pool in a directory of its own.
OBJS_test-ops-wire := $(BUILD)/daemon/api.o $(BUILD)/daemon/ops-client.o $(BUILD)/daemon/ops-views.o \
                      $(BUILD)/daemon/api-wire.o $(BUILD)/daemon/api-wire-io.o \
                      $(BUILD)/daemon/log.o
LIBS_test-ops-wire := $(call pc,--libs,libmicrohttpd json-c) -lpthread
$(BUILD)/tests/test-ops-wire: | $(BUILD)/tests/ops-server-harness
$(BUILD)/tests/ops-server-harness: $(BUILD)/tests/unit/ops-server-harness.o \
                                   $(BUILD)/daemon/ops-server.o $(BUILD)/daemon/api-wire.o \
                                   $(BUILD)/daemon/api-wire-io.o $(OBJS_test-ops)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LIBS_test-ops)
# test-api-process: real HTTP to $(API_PROCESS), whose operations ops-server-harness serves.
OBJS_test-api-process := $(BUILD)/daemon/ops-client.o $(BUILD)/daemon/ops-views.o $(BUILD)/daemon/api-wire.o \
                         $(BUILD)/daemon/api-wire-io.o $(BUILD)/daemon/log.o
LIBS_test-api-process := $(call pc,--libs,libcurl json-c) -lpthread
$(BUILD)/tests/test-api-process: | $(API_PROCESS) $(BUILD)/tests/ops-server-harness
OBJS_test-handshake := $(BUILD)/client/handshake.o
OBJS_test-snapshotter := $(BUILD)/client/snapshotter/mapping.o \
                         $(BUILD)/client/snapshotter/filter.o \
                         $(BUILD)/client/snapshotter/sha256.o $(BUILD)/client/http.o \
                         $(BUILD)/client/output.o
LIBS_test-snapshotter := $(call pc,--libs,json-c libcurl)
LIBS_test-client-output := $(call pc,--libs,json-c)
OBJS_test-plugin-broker := $(BUILD)/daemon/broker.o $(BUILD)/daemon/log.o \
                           $(BUILD)/tests/unit/nbdkit-harness.o
LIBS_test-plugin-broker := $(call pc,--libs,libnbd) -lpthread
$(BUILD)/tests/test-plugin-broker: | $(PLUGIN) $(BUILD)/tests/vm/broker-raw
OBJS_test-supervise := $(BUILD)/daemon/supervise.o $(BUILD)/daemon/spawn.o $(BUILD)/daemon/cgroup.o \
                       $(BUILD)/daemon/broker.o $(BUILD)/daemon/log.o \
                       $(BUILD)/tests/unit/nbdkit-harness.o
LIBS_test-supervise := $(call pc,--libs,libnbd) -lpthread
$(BUILD)/tests/test-supervise: | $(PLUGIN)
OBJS_test-spawn := $(BUILD)/daemon/spawn.o
# test-direct-io: the plugin's direct I/O on loop devices (or an O_DIRECT file) of the host.
OBJS_test-direct-io := $(BUILD)/nbdkit-plugin/direct-io.o
LIBS_test-direct-io := -lpthread
# test-relay runs nbdkit's file plugin; the relay logs through keeper_log, which it defines.
OBJS_test-relay := $(BUILD)/client/relay.o $(BUILD)/client/handshake.o
LIBS_test-relay := -lpthread
# test-grpc: the gRPC server against a client of its own, and containerd's own proxy client
# (grpc-proxy-client.go, built from Debian's Go packages in GOPATH mode).
OBJS_test-grpc := $(BUILD)/client/snapshotter/grpc.o $(PROTO_OBJS)
LIBS_test-grpc := $(call pc,--libs,libnghttp2 libprotobuf-c) -lpthread
$(BUILD)/tests/test-grpc: | $(BUILD)/tests/grpc-proxy-client
$(BUILD)/tests/grpc-proxy-client: tests/unit/grpc-proxy-client.go
	@mkdir -p $(dir $@)
	cd tests/unit && $(GO_ENV) $(GO) build -o $(abspath $@) grpc-proxy-client.go
# test-client-cli runs $(BUILD)/thinproxy itself, against throwaway canned-answer servers.
$(BUILD)/tests/test-client-cli: | $(CLIENT)
$(BUILD)/tests/test-%: $(BUILD)/tests/unit/test-%.o $$(OBJS_test-$$*)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(CHECK_LIBS) $(LIBS_test-$*)

# test-rbd-io: the plugin's RBD I/O, run by tests/ceph/test-rbd-io.sh on a cluster.
OBJS_ceph-test-rbd-io := $(BUILD)/nbdkit-plugin/rbd-io.o
LIBS_ceph-test-rbd-io := -lpthread
# test-ceph-auth: the daemon's cephx keys and namespaces, run by tests/ceph/test-ceph-auth.sh.
OBJS_ceph-test-ceph-auth := $(BUILD)/daemon/ceph-auth.o $(BUILD)/daemon/log.o
LIBS_ceph-test-ceph-auth := $(call pc,--libs,json-c)
# test-rbd-volumes: the daemon's volumes as RBD images, run by tests/ceph/test-rbd-volumes.sh.
OBJS_ceph-test-rbd-volumes := $(BUILD)/daemon/rbd-volumes.o $(BUILD)/daemon/log.o
# test-rbd-meta: the shared metadata in RADOS, run by tests/ceph/test-rbd-meta.sh.
OBJS_ceph-test-rbd-meta := $(BUILD)/daemon/rbd-meta.o
LIBS_ceph-test-rbd-meta := -lpthread
# test-rbd-change: the change protocol over both, run by tests/ceph/test-rbd-change.sh.
OBJS_ceph-test-rbd-change := $(BUILD)/daemon/rbd-change.o $(BUILD)/daemon/rbd-volumes.o \
                             $(BUILD)/daemon/rbd-meta.o $(BUILD)/daemon/log.o
LIBS_ceph-test-rbd-change := $(call pc,--libs,json-c)
$(BUILD)/tests/ceph/test-%: $(BUILD)/tests/ceph/test-%.o $(BUILD)/tests/ceph/ceph-harness.o \
                            $$(OBJS_ceph-test-$$*)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(CHECK_LIBS) $(LIBS_ceph-test-$*) $(RBD_LIBS)

# Fuzz targets: fuzz/fuzz-NAME.c, built by clang with libFuzzer, ASan and UBSan and linked
# with the sources FUZZ_SRCS_NAME and libraries FUZZ_LIBS_NAME; `make fuzz` runs each for
# FUZZ_SECONDS on a working copy of its seed corpus fuzz/corpus/NAME (see fuzz/run).
FUZZ_CC      ?= clang-14
FUZZ_SECONDS ?= 60
FUZZ_FLAGS   := -g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined \
                -fno-sanitize-recover=all
FUZZ_TARGETS := $(patsubst fuzz/%.c,build/fuzz/%,$(wildcard fuzz/fuzz-*.c))
FUZZ_SRCS_api-request := daemon/api.c fuzz/fake-ops.c
FUZZ_LIBS_api-request := $(call pc,--libs,libmicrohttpd json-c)
FUZZ_SRCS_handshake   := client/handshake.c
FUZZ_SRCS_api-wire    := daemon/api-wire.c
FUZZ_SRCS_thin-metadata := daemon/thin-metadata.c
FUZZ_SRCS_snapshot-filter := client/snapshotter/filter.c
FUZZ_SRCS_grpc-wire   := client/snapshotter/grpc.c $(PROTO_SRCS)
FUZZ_LIBS_grpc-wire   := $(call pc,--libs,libnghttp2 libprotobuf-c) -lpthread

build/fuzz/fuzz-%: fuzz/fuzz-%.c $$(FUZZ_SRCS_$$*) \
                   $$(wildcard include/*.h fuzz/*.h daemon/*.h client/*.h client/snapshotter/*.h)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(CPPFLAGS) -std=gnu11 $(WARNINGS) $(FUZZ_FLAGS) -o $@ $< $(FUZZ_SRCS_$*) \
		$(FUZZ_LIBS_$*)

fuzz: deps
	@$(MAKE) --no-print-directory $(FUZZ_TARGETS)
	@fuzz/run $(FUZZ_SECONDS) $(FUZZ_TARGETS)

# Benchmark programs: bench/NAME.c, linked with OBJS_NAME and LIBS_NAME; bench/run says
# what runs where (BENCH_RUNS, BENCH_SECONDS, BENCH_VOLUMES, BENCH_RESULTS).
BENCH_PROGRAMS := $(patsubst bench/%.c,$(BUILD)/bench/%,$(wildcard bench/*.c)) \
                  $(BUILD)/bench/bench-thinproxyd
OBJS_bench-meta := $(BUILD)/daemon/pool.o $(BUILD)/daemon/thin-metadata.o $(BUILD)/daemon/log.o
LIBS_bench-meta := $(call pc,--libs,devmapper libnbd)
OBJS_bench-broker := $(BUILD)/daemon/broker.o $(BUILD)/daemon/log.o
LIBS_bench-broker := -lpthread
OBJS_bench-rbd-change := $(BUILD)/daemon/rbd-change.o $(BUILD)/daemon/rbd-volumes.o \
                         $(BUILD)/daemon/rbd-meta.o $(BUILD)/daemon/log.o
LIBS_bench-rbd-change := $(call pc,--libs,json-c) $(RBD_LIBS)
# bench-thinproxyd: the daemon with the unit tests' stand-in for pool.c, so that its API
# runs on a host without dm-thin.
$(BUILD)/bench/bench-thinproxyd: $(filter-out %/pool.o,$(DAEMON_OBJS)) $(BUILD)/tests/unit/fake-pool.o
	@mkdir -p $(dir $@)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(call pc,--libs,$(DAEMON_PKGS)) -lpthread
$(BUILD)/bench/%: $(BUILD)/bench/%.o $$(OBJS_$$*)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LIBS_$*)

bench: deps
	@$(MAKE) --no-print-directory all $(BENCH_PROGRAMS)
	@TP_BUILD=$(abspath $(BUILD)) bench/run

deps:
	@.ci/deps

check: deps
	@$(MAKE) --no-print-directory all check-format check-linkage
	@TP_BUILD=$(abspath $(BUILD)) tests/check $(UNIT_TESTS) $(CEPH_TESTS) $(VM_TESTS)

check-unit: all
	@TP_BUILD=$(abspath $(BUILD)) tests/check $(UNIT_TESTS)

check-vm: all
	@TP_BUILD=$(abspath $(BUILD)) tests/check $(VM_TESTS)

# One cluster at a time: tests/check runs the scripts in turn.
check-ceph: all
	@TP_BUILD=$(abspath $(BUILD)) tests/check $(CEPH_TESTS)

# No program links librbd or librados while the RBD backend is not wired (RBD_PENDING):
# they would cost every tenant's nbdkit start, dm-thin ones included, about 54 ms.
# A program counts if it names either library (NEEDED) or calls into one (an undefined
# rbd_ or rados_ symbol, which a shared object may leave for its loader to find).
check-linkage: $(PROGRAMS)
	@bad=; for p in $(PROGRAMS); do \
		needed=$$(readelf -d $$p) && calls=$$(nm -D --undefined-only $$p) || \
			{ echo "check-linkage: cannot read $$p"; exit 1; }; \
		case $$needed in *'[librbd.'* | *'[librados.'*) bad="$$bad $$p"; continue ;; esac; \
		case $$calls in *' U rbd_'* | *' U rados_'*) bad="$$bad $$p" ;; esac; \
	done; \
	[ -z "$$bad" ] || { echo "check-linkage: linked with librbd or librados:$$bad (a stale build: make clean)"; exit 1; }; \
	echo "check-linkage: no program links librbd or librados"

check-format:
	@clang-format --dry-run -Werror $(C_SOURCES) && echo "clang-format: every file conforms"
	@if command -v gofmt >/dev/null; then \
		bad=$$(gofmt -l $(GO_SOURCES)); [ -z "$$bad" ] || { echo "gofmt: $$bad"; exit 1; }; \
		echo "gofmt: every file conforms"; fi


format:
	clang-format -i $(C_SOURCES)
	gofmt -w $(GO_SOURCES)

demo: deps
	@$(MAKE) --no-print-directory all
	@TP_BUILD=$(abspath $(BUILD)) demo/demo.sh

PREFIX     ?= /usr/local
DESTDIR    ?=
PLUGINDIR  ?= $(call pc,--variable=plugindir,nbdkit)
MAN1       := $(wildcard docs/*.1)
MAN5       := $(wildcard docs/*.5)
MAN8       := $(wildcard docs/*.8)
# udev reads rules from /etc/udev/rules.d and its own directories, never from PREFIX.
UDEVRULESDIR ?= /etc/udev/rules.d

install: all
	install -D -m 0755 $(DAEMON) $(DESTDIR)$(PREFIX)/sbin/thinproxyd
	install -D -m 0755 $(API_PROCESS) $(DESTDIR)$(PREFIX)/sbin/thinproxyd-api
	install -D -m 0755 $(CLIENT) $(DESTDIR)$(PREFIX)/bin/thinproxy
	install -D -m 0755 $(PLUGIN) $(DESTDIR)$(PLUGINDIR)/nbdkit-thinproxy-plugin.so
	install -d $(DESTDIR)$(PREFIX)/share/man/man1 $(DESTDIR)$(PREFIX)/share/man/man5 \
		$(DESTDIR)$(PREFIX)/share/man/man8
	install -m 0644 $(MAN1) $(DESTDIR)$(PREFIX)/share/man/man1/
	install -m 0644 $(MAN5) $(DESTDIR)$(PREFIX)/share/man/man5/
	install -m 0644 $(MAN8) $(DESTDIR)$(PREFIX)/share/man/man8/
	install -D -m 0644 daemon/thinproxyd.service $(DESTDIR)/etc/systemd/system/thinproxyd.service
	install -D -m 0644 daemon/12-thinproxy.rules $(DESTDIR)$(UDEVRULESDIR)/12-thinproxy.rules
	install -D -m 0644 daemon/thinproxy-lvm.conf \
		$(DESTDIR)$(PREFIX)/share/thinproxy/thinproxy-lvm.conf
	install -D -m 0644 client/thinproxy.bash-completion \
		$(DESTDIR)$(PREFIX)/share/bash-completion/completions/thinproxy

clean:
	rm -rf build

.SECONDARY:

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
