#!/usr/bin/env bash
# tests/vm/guide.sh GUIDE.md: run a guide's shell blocks in the test guest, in order, as
# one script with `set -e -o pipefail`, so that a guide that drifts from the code fails.
#
# What runs: every fenced block that opens with ```sh. Other fences (```console for
# sample output, ```text, ```ini) are only read. An HTML comment on the line right
# above a block (invisible on a rendered page) changes how it runs:
#
#   <!-- guide: skip REASON -->        not run, and the run says so with REASON (for
#                                      docker, or booting a whole VM: not in the guest)
#   <!-- guide: container TENANT -->   run as in TENANT's container: THINPROXY_DIR is
#                                      /run/thinproxy/tenants/TENANT, and the block's
#                                      /run/thinproxy/control.sock and nbd.sock stand for
#                                      that directory's sockets (the paths a bind mount
#                                      gives the container)
#
# A marker not followed by a ```sh block is an error, and so is a guide with nothing to
# run. Blocks are sourced one after the other, so variables carry from one to the next.
#
# The preamble, before the first block, installs the build as `make install` would but
# without copying: thinproxyd and thinproxy as symlinks in /usr/local, the plugin (and,
# for a SANITIZE=1 build, an nbdkit that preloads the sanitizer runtimes) named in
# /etc/thinproxy/thinproxyd.conf. The guides then start `thinproxyd` with its defaults:
# /var/lib/thinproxy and /run/thinproxy, both throwaway in the guest. The working
# directory is an empty /root/guide. Guest only: it writes into /etc and /usr/local.
set -euo pipefail

guide=$(realpath -e "$1")
name=$(basename "$guide")
[ -n "${TP_GUEST:-}" ] || { echo "guide.sh: runs in the test guest only (tests/vm/run)" >&2; exit 2; }
: "${TP_BUILD:?}"

work=$(mktemp -d /run/guide.XXXXXX)
driver=$work/driver.sh

# The driver: for each block, a header line, then the block sourced (with the container
# mapping around it), or the skip notice.
awk -v work="$work" -v guide="$name" '
function fatal(msg) { printf "guide.sh: %s:%d: %s\n", guide, NR, msg > "/dev/stderr"; bad = 1; exit 1 }
BEGIN { fence = 0; blocks = 0; run = 0 }
fence == 0 && /^<!-- guide: .* -->$/ {
	if (marker != "") fatal("two markers in a row")
	marker = $0; sub(/^<!-- guide: /, "", marker); sub(/ -->$/, "", marker); next
}
fence == 0 && /^```sh$/ {
	fence = 1; blocks++; start = NR + 1
	file = work "/block-" blocks ".sh"; printf "" > file; next
}
fence == 0 && /^```/ {
	if (marker != "") fatal("a marker above a block that is not ```sh")
	fence = 2; next
}
fence == 0 && marker != "" && $0 != "" { fatal("a marker not directly above a ```sh block") }
fence != 0 && /^```$/ {
	if (fence == 1) {
		close(file)
		if (marker ~ /^skip /) {
			reason = substr(marker, 6)
			printf "__guide_skip %d %d %s\n", blocks, start, file > (work "/driver.sh")
			printf "# %s\n", reason > (work "/reason-" blocks)
			close(work "/reason-" blocks)
		} else if (marker ~ /^container [a-z0-9][a-z0-9._-]*$/) {
			tenant = substr(marker, 11); run++
			printf "__guide_block %d %d %s %s\n", blocks, start, file, tenant > (work "/driver.sh")
			printf "export THINPROXY_DIR=/run/thinproxy/tenants/%s\n", tenant > (work "/driver.sh")
			printf ". %s\n", file > (work "/driver.sh")
			print "unset THINPROXY_DIR" > (work "/driver.sh")
		} else if (marker == "") {
			run++
			printf "__guide_block %d %d %s\n", blocks, start, file > (work "/driver.sh")
			printf ". %s\n", file > (work "/driver.sh")
		} else {
			fatal("unknown marker: " marker)
		}
	}
	fence = 0; marker = ""; next
}
fence == 1 {
	line = $0
	if (marker ~ /^container /) {
		gsub(/\/run\/thinproxy\/control\.sock/, "/run/thinproxy/tenants/" substr(marker, 11) "/control.sock", line)
		gsub(/\/run\/thinproxy\/nbd\.sock/, "/run/thinproxy/tenants/" substr(marker, 11) "/nbd.sock", line)
	}
	print line > file; next
}
END {
	if (bad) exit 1
	if (fence != 0) fatal("a fence that never closes")
	if (marker != "") fatal("a marker at the end")
	if (run == 0) fatal("nothing to run")
	printf "__guide_end %d %d\n", blocks, run > (work "/driver.sh")
}' "$guide"

# The preamble.
ln -sf "$TP_BUILD/thinproxyd" /usr/local/sbin/thinproxyd
ln -sf "$TP_BUILD/thinproxy" /usr/local/bin/thinproxy
mkdir -p /etc/thinproxy
{
	echo "plugin = $TP_BUILD/nbdkit-thinproxy-plugin.so"
	if [[ $TP_BUILD == */san ]]; then
		libs=$(ldd "$TP_BUILD/nbdkit-thinproxy-plugin.so" | awk '/lib(a|ub)san\.so/ { printf "%s ", $3 }')
		printf '#!/bin/sh\nLD_PRELOAD="%s" ASAN_OPTIONS=detect_leaks=0 exec nbdkit "$@"\n' \
			"${libs% }" >/usr/local/bin/nbdkit-sanitized
		chmod 0755 /usr/local/bin/nbdkit-sanitized
		echo "nbdkit = /usr/local/bin/nbdkit-sanitized"
	fi
} >/etc/thinproxy/thinproxyd.conf
# No udev in the guest: libdevmapper makes its own /dev/mapper nodes.
export DM_DISABLE_UDEV=1
mkdir -p /root/guide
cd /root/guide

__guide_show() { sed 's/^/    /' "$1"; }
__guide_block() {
	local where=
	[ -z "${4:-}" ] || where=", in the container of $4"
	echo "== $name: block $1 (line $2$where)"
	__guide_show "$3"
}
__guide_skip() {
	echo "== $name: block $1 (line $2) SKIPPED: $(sed 's/^# //' "${3%/block-*}/reason-$1")"
	__guide_show "$3"
}
__guide_end() { echo "== $name: $2 of $1 blocks run, $(($1 - $2)) skipped as marked"; }

set +u
set -e -o pipefail
. "$driver"
