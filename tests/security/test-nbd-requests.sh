#!/usr/bin/env bash
# Bad NBD requests from a tenant touch nothing but what the protocol lets them touch.
# Over alice's nbd.sock, with nbd-raw (which sends what libnbd refuses to), against her
# volume a1: requests past the end, wrapping around 2^64, of length zero, larger than the
# advertised maximum and than nbdkit's own limits, of unknown types or with unknown flags,
# and a write that announces more data than it sends before hanging up. Each gets the
# exact NBD error measured for nbdkit 1.32 (22 EINVAL, 28 ENOSPC, 12 ENOMEM, 95 ENOTSUP),
# and the connection goes on serving, or is closed where nbdkit closes it. Unaligned
# requests (the minimum block size is 1) work byte for byte, across pool block
# boundaries. Throughout, a1 holds exactly what a model file predicts, alice's other
# volume, bob's volume and their raw thin devices keep their checksums, the pool's
# transaction id and both tenants' volume lists do not change, and both nbdkits keep
# running. Last, the kernel client: a write past the end of /dev/nbdN fails with ENOSPC.
. "$(dirname "$0")/../vm/functions.sh"
requires curl jq nbdcopy qemu-io sha256sum od cmp dd blockdev
raw=$TP_BUILD/tests/vm/nbd-raw
[ -x "$raw" ] || fail "$raw is missing (make all)"

cleanup "cp $daemon_log $TP_RESULTS/"
start_daemon
M=$((1 << 20))
S=$((100 * M))

step "alice with a1 (the target, 100M) and a2, bob with b1; a1 mirrored by a model file"
admin_api POST /v1/tenants '{"name":"alice","uid":1000,"gid":1000}'
expect 201
admin_api POST /v1/tenants '{"name":"bob","uid":1001,"gid":1001}'
expect 201
tenant_api alice POST /v1/volumes "{\"name\":\"a1\",\"size\":$S}"
expect 201
for t in alice:a2 bob:b1; do
	tenant_api "${t%:*}" POST /v1/volumes "{\"name\":\"${t#*:}\",\"size\":$((8 * M))}"
	expect 201
done
admin_api GET /v1/pool
B=$(field .block_size)
[ "$B" -ge 4096 ] || fail "pool block size $B"
asock=$run_dir/tenants/alice/nbd.sock
bsock=$run_dir/tenants/bob/nbd.sock
model=$scratch/a1.model
# Random data at the start and at the end of a1, zeroes between: a request that lands
# off target or wraps around shows as changed bytes.
# (Written with qemu-io, so that the zeroes between stay unprovisioned and quick to read.)
head -c $((4 * M)) /dev/urandom >"$scratch/head"
head -c $M /dev/urandom >"$scratch/tail"
truncate -s $S "$model"
dd if="$scratch/head" of="$model" conv=notrunc status=none
dd if="$scratch/tail" of="$model" bs=$M seek=$(((S - M) / M)) conv=notrunc status=none
qemu-io -f raw -c "write -s $scratch/head 0 $((4 * M))" -c "write -s $scratch/tail $((S - M)) $M" \
	"nbd+unix:///a1?socket=$asock" >/dev/null
head -c $((8 * M)) /dev/urandom >"$scratch/a2.raw"
nbdcopy "$scratch/a2.raw" "nbd+unix:///a2?socket=$asock"
head -c $((8 * M)) /dev/urandom >"$scratch/b1.raw"
nbdcopy "$scratch/b1.raw" "nbd+unix:///b1?socket=$bsock"
apid=$(cat "$run_dir/tenants/alice/nbdkit.pid")
bpid=$(cat "$run_dir/tenants/bob/nbdkit.pid")

# thin_dev VOLUME OWNER: the dm device of a volume (active: it has been opened).
thin_dev() {
	local id devs
	admin_api GET "/v1/tenants/$2/volumes/$1"
	expect 200
	id=$(field .thin_id)
	devs=(/dev/mapper/*-"$id")
	[ ${#devs[@]} = 1 ] && [ -b "${devs[0]}" ] || fail "no single dm device for $2/$1: ${devs[*]}"
	echo "${devs[0]}"
}
a2_dev=$(thin_dev a2 alice)
b1_dev=$(thin_dev b1 bob)

# others: what no request on a1 may change: a2 and b1 through their tenants' nbdkits,
# their raw thin devices (read only), the pool's transaction id, both volume lists
# (a1's used bytes aside), and that both nbdkits still run.
others() {
	nbdcopy "nbd+unix:///a2?socket=$asock" - | sha256sum
	nbdcopy "nbd+unix:///b1?socket=$bsock" - | sha256sum
	sha256sum <"$a2_dev"
	sha256sum <"$b1_dev"
	admin_api GET /v1/pool
	field .transaction_id
	for t in alice bob; do
		admin_api GET "/v1/tenants/$t/volumes"
		field '.volumes[] | [.name, .size, .state, .writable, (select(.name != "a1") | .used)] | @text'
	done
	kill -0 "$apid" && kill -0 "$bpid" && echo "nbdkits $apid $bpid run"
}
others >"$scratch/others.before"
sha256sum "$scratch/a2.raw" "$scratch/b1.raw" | awk '{print $1 "  -"}' >"$scratch/want"
head -2 "$scratch/others.before" | cmp -s - "$scratch/want" || fail "a2 or b1 do not hold what was copied in"

# unchanged: the other volumes and devices are as before, and a1 is its model, byte for
# byte.
unchanged() {
	others >"$scratch/others.now"
	diff "$scratch/others.before" "$scratch/others.now" >&2 || fail "$1: something else changed"
	nbdcopy "nbd+unix:///a1?socket=$asock" "$scratch/a1.now"
	cmp "$model" "$scratch/a1.now" >&2 || fail "$1: a1 differs from its model"
	rm -f "$scratch/a1.now"
}
# model_write OFF LEN / model_zero OFF LEN: what nbd-raw's write (bytes 0xa5) and a zero
# do, applied to the model.
model_write() {
	head -c "$2" /dev/zero | tr '\0' '\245' |
		dd of="$model" bs=$M seek="$1" oflag=seek_bytes conv=notrunc iflag=fullblock status=none
}
model_zero() {
	head -c "$2" /dev/zero |
		dd of="$model" bs=$M seek="$1" oflag=seek_bytes conv=notrunc iflag=fullblock status=none
}
# hex OFF LEN: the model's bytes there, as nbd-raw's dump prints them.
hex() { od -An -tx1 -v -j "$1" -N "$2" "$model" | tr -d ' \n'; }
# talk WANT REQUEST...: one connection to a1 doing REQUEST...; its answers (after the
# handshake's) are exactly the lines of WANT.
talk() {
	local want=$1 got
	shift
	got=$("$raw" "$asock" a1 "$@") || fail "nbd-raw $*: $got"
	case $(head -n1 <<<"$got") in
	"go: ack size=$S flags="*" min=1 preferred=$B max=$((32 * M)) "*) ;;
	*) fail "a1's handshake: $(head -n1 <<<"$got")" ;;
	esac
	[ "$(tail -n +2 <<<"$got")" = "$want" ] || fail "nbd-raw $*:
$(tail -n +2 <<<"$got")
expected:
$want"
}

step "past the end: reads and trims EINVAL (22), writes and zeroes ENOSPC (28); the connection serves on"
# Straddling the end, wholly beyond it, and with offsets whose end wraps around 2^64 to
# land on a1's first bytes.
W=0xffffffffffffff00 W0=0xfffffffffffffe00
talk "read: error 22
read: error 22
read: error 22
write: error 28
write: error 28
write: error 28
trim: error 22
trim: error 22
zero: error 28
zero: error 28
fastzero: error 28
read: ok" \
	read $S 1 read $((S - 1)) 2 read $((S + 4096)) 512 \
	write $((S - 1)) 2 write $S 512 write $((S + M)) 4096 \
	trim $((S - 512)) 1024 trim $((S + 512)) 512 zero $((S - 512)) 1024 zero $S 512 \
	fastzero $((S - B)) $((2 * B)) read 0 1
talk "write: error 28
write: error 28
read: error 22
read: error 22
trim: error 22
zero: error 28
dump: ok $(hex 0 16)" \
	write $W 512 write $W0 512 read $W 512 read $W0 512 trim $W 512 zero $W 512 dump 0 16

step "zero-length requests, anywhere: reads and trims EINVAL (22), writes and zeroes ENOSPC (28)"
talk "read: error 22
write: error 28
trim: error 22
zero: error 28
fastzero: error 28
read: error 22
write: error 28
trim: error 22
zero: error 28
read: error 22
write: error 28
read: ok" \
	read 0 0 write 0 0 trim 0 0 zero 0 0 fastzero 0 0 \
	read $S 0 write $S 0 trim $S 0 zero $S 0 read $((S + M)) 0 write $((S + M)) 0 read 0 1
unchanged "requests past the end and of length zero"

step "unaligned requests work byte for byte, across pool block boundaries"
# Each write or zero, then a dump a little wider than it, compared with the model.
# A trim is advisory (dm-thin unmaps whole blocks only): the bytes it covers are
# written afterwards, so that only its neighbours are compared.
want= args=()
for op in write:1:1 write:4095:3 write:$((B - 3)):7 write:$((3 * B - 1)):$((B + 2)) \
	zero:$((5 * B - 5)):10 zero:7:1 zero:$((7 * B + 512)):$((2 * B)) \
	trim:$((2 * B + 1)):100 write:$((2 * B + 1)):100 write:$((S - 3)):2; do
	IFS=: read -r kind off len <<<"$op"
	case $kind in
	write) model_write "$off" "$len" ;;
	zero) model_zero "$off" "$len" ;;
	esac
	from=$((off < 4 ? 0 : off - 4))
	to=$((off + len + 4 > S ? S : off + len + 4))
	args+=("$kind" "$off" "$len" dump $from $((to - from)))
	want+="$kind: ok
dump: ok $(hex $from $((to - from)))
"
done
# A fast zero of a partial block cannot be fast (it must write): ENOTSUP (95).
talk "${want}fastzero: error 95
fastzero: error 95
dump: ok $(hex 0 $((B + 16)))
dump: ok $(hex $((B - 1)) 2)" \
	"${args[@]}" fastzero 7 1 fastzero $((B + 512)) $B dump 0 $((B + 16)) dump $((B - 1)) 2
unchanged "unaligned requests"

step "larger than advertised (32M): served up to nbdkit's 64M; beyond ENOMEM (12); beyond 128M the connection closes"
# nbdkit 1.32 enforces its own 64M limit, not the plugin's advertised maximum: a 32M+1
# write is served as any other.
model_write $((64 * M)) $((32 * M + 1))
talk "read: ok
write: ok
read: ok
read: error 12
write: error 12
zero: error 28
trim: error 22
read: ok" \
	read $((64 * M)) $((32 * M + 1)) write $((64 * M)) $((32 * M + 1)) read 0 $((64 * M)) \
	read 0 $((64 * M + 1)) write 0 $((64 * M + 1)) zero 0 0xffffffff trim 0 0xffffffff read 0 1
# nbdkit will not read a write payload over 128M to skip it: it hangs up (whether or
# not the range fits, which for a1 it cannot).
talk "write: closed" write 0 $((128 * M + 1)) read 0 1
talk "cmd: closed" cmd 1 0 0 0xffffffff read 0 1
unchanged "oversized requests"

step "unknown command types and flags: EINVAL (22), the connection serves on"
# Types 7 (block status: no meta context was negotiated), 8, 99, 0xffff; flags 0x8000
# on read and write, DF (4) without structured replies, FAST_ZERO (0x10) on a flush,
# REQ_ONE (8) on a zero, NO_HOLE (2) on a read and on a trim. A cache (5) is allowed.
talk "cmd: error 22
cmd: error 22
cmd: error 22
cmd: error 22
cmd: error 22
cmd: error 22
cmd: error 22
cmd: error 22
cmd: error 22
cmd: error 22
cmd: error 22
cmd: ok
dump: ok $(hex 0 16)" \
	cmd 7 0 0 512 cmd 8 0 0 512 cmd 99 0 0 512 cmd 0xffff 0 0 0 cmd 0 0x8000 0 512 \
	cmd 1 0x8000 0 512 cmd 0 4 0 512 cmd 3 0x10 0 0 cmd 6 8 0 512 cmd 0 2 0 512 \
	cmd 4 2 0 512 cmd 5 0 0 512 dump 0 16

step "a write announcing more than it sends, then a hang-up: nothing is written"
talk "short: sent" short $M 4096 100
talk "short: sent" short $((2 * M + 7)) $((8 * M)) $((M + 3))
talk "short: sent" short 0 512 0
talk "dump: ok $(hex $M 8)" dump $M 8
unchanged "unknown commands and flags, short writes"

step "the kernel client: past the end of /dev/nbdN a write fails with ENOSPC, a read finds nothing"
dev=$("$TP_BUILD/thinproxy" --dir "$run_dir" --admin --tenant alice attach a1)
cleanup "$TP_BUILD/thinproxy --dir $run_dir detach $dev"
[ "$(blockdev --getsize64 "$dev")" = $S ] || fail "$dev: $(blockdev --getsize64 "$dev") bytes"
# In units of the device's logical block size, which O_DIRECT requires.
bs=$(blockdev --getss "$dev")
if dd if=/dev/zero of="$dev" bs="$bs" seek=$((S / bs)) count=1 oflag=direct 2>"$scratch/dd"; then
	fail "dd wrote past the end of $dev"
fi
grep -q 'No space left on device' "$scratch/dd" || fail "dd past the end: $(cat "$scratch/dd")"
dd if="$dev" of="$scratch/past" bs="$bs" skip=$((S / bs)) count=1 iflag=direct 2>"$scratch/dd" ||
	fail "dd reading past the end: $(cat "$scratch/dd")"
[ ! -s "$scratch/past" ] || fail "read $(stat -c %s "$scratch/past") bytes past the end of $dev"
"$TP_BUILD/thinproxy" --dir "$run_dir" detach "$dev"
unchanged "the kernel client"

[ "$(cat "$run_dir/tenants/alice/nbdkit.pid")" = "$apid" ] || fail "alice's nbdkit was restarted"
stop_daemon
! grep -E 'Sanitizer|runtime error' "$daemon_log" || fail "sanitizer reports in the daemon's log"
echo "$test_name: PASS"
