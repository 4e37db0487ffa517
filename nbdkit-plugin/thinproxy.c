/* nbdkit-thinproxy-plugin: serves one tenant's thin volumes over NBD.
 *
 * The plugin never opens a device path. For every connection it asks thinproxyd's broker
 * (include/tp-broker.h) for the export the client named and serves the open fd the
 * broker hands back; what the broker does not hand over, it cannot serve. Listing asks
 * the broker too, and shows exactly what it answers. There is no default export.
 *
 * The data path is the block device's: pread/pwrite, fdatasync for flush and FUA,
 * BLKDISCARD for trim (so that dm-thin returns the space to the pool) and BLKZEROOUT for
 * zero. dm-thin unmaps whole pool blocks only, so zero uses a discard only for the
 * block-aligned part of a range that may be trimmed, and fast zero succeeds only where
 * that covers the whole range. A regular file instead of a device (which the daemon
 * never sends, the unit tests do) gets the fallocate equivalents.
 *
 * An export name that begins "direct:" (cache mode none) asks the broker for the device
 * O_DIRECT: reads and writes then bypass the host's page cache, so that what a client
 * caches (the page cache of an attached /dev/nbdN) is not cached twice, and go through
 * direct-io.c, which makes any byte range and any buffer of nbdkit's work on a device that
 * takes whole logical blocks only.
 *
 * The broker client is broker.c; block status (.extents), from the pool's map, is
 * extents.c; direct I/O is direct-io.c. */
#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "broker.h"
#include "direct-io.h"
#include "extents.h"
#include "idle.h"
#include "tp-broker.h"
#include "tp-cleanup.h"
#include "tp-rules.h"

#define THREAD_MODEL NBDKIT_THREAD_MODEL_PARALLEL

/* Block size hints. Any byte range works (I/O goes through the device's page cache, and
 * zero and trim handle sub-sector edges), so the minimum is 1; with direct I/O any byte
 * range still works, at the cost of a read-modify-write, so the minimum is the device's
 * logical block, which well-behaved clients then keep to. The preferred size is the
 * pool's block, which dm-thin provisions and unmaps as a unit; NBD clients split
 * requests beyond 32 MiB. */
#define MIN_BLOCK_SIZE    1
#define MAX_BLOCK_SIZE    (32 * 1024 * 1024)
#define DEFAULT_PREFERRED 4096

/* -D thinproxy.zero=1: log how each zero and trim request is carried out. */
NBDKIT_DLL_PUBLIC int thinproxy_debug_zero;
/* -D thinproxy.direct=1: log each direct export's block and, as it closes, how many
 * requests the process served in place, through bounce buffers and by read-modify-write. */
NBDKIT_DLL_PUBLIC int thinproxy_debug_direct;

static const char *tenant;

/* One client connection: the export the broker opened for it. */
struct handle {
	int fd;
	bool read_only;
	bool is_device; /* else a regular file */
	uint64_t size;
	uint32_t block_size; /* the pool's block size; 0 if the broker did not say */
	bool direct;         /* fd is O_DIRECT: all reads and writes go through dio */
	struct direct_io dio;
	uint32_t sector; /* what BLKZEROOUT and BLKDISCARD take: dio's block, else 512 */
	char state[TP_BROKER_STATE_SIZE];
	struct extents *extents; /* block status; uses fd */
};

/* Was nbdkit asked to exit with its parent: --exit-with-parent, or an abbreviation of it
 * that getopt_long accepts, among its arguments? */
static bool exit_with_parent_requested(void)
{
	static const char opt[] = "--exit-with-parent";
	char buf[16384];
	CLEANUP_CLOSE int fd = open("/proc/self/cmdline", O_RDONLY | O_CLOEXEC);
	ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof buf - 1);

	if (n <= 0)
		return false;
	buf[n] = '\0';
	for (const char *p = buf; p < buf + n; p += strlen(p) + 1)
		if (strlen(p) >= 5 && strncmp(p, opt, strlen(p)) == 0)
			return true;
	return false;
}

/* nbdkit 1.32 sets its parent-death signal (SIGTERM) whether or not --exit-with-parent
 * was given (seen with Debian 12's 1.32.5: prctl(PR_SET_PDEATHSIG, SIGTERM) before it
 * loads the plugin). thinproxyd runs nbdkit in the foreground as its child, so that
 * signal would end every tenant's nbdkit, and break every attached device, whenever the
 * daemon dies or restarts, kill -9 included (tests/vm/test-nbdkit-daemon-restart.sh).
 * Clear it again unless it was asked for. */
static void thinproxy_load(void)
{
	if (!exit_with_parent_requested() && prctl(PR_SET_PDEATHSIG, 0, 0, 0, 0) < 0)
		nbdkit_debug("clear the parent-death signal: %m, ignoring");
}

static int thinproxy_config(const char *key, const char *value)
{
	if (strcmp(key, "tenant") == 0) {
		if (!tp_name_valid(value)) {
			nbdkit_error("tenant=%s: not a valid tenant name", value);
			return -1;
		}
		tenant = value;
	} else if (strcmp(key, "broker") == 0) {
		if (value[0] != '/' || strlen(value) >= sizeof((struct sockaddr_un *)0)->sun_path) {
			nbdkit_error("broker=%s: not an absolute socket path of at most %zu bytes",
			             value, sizeof((struct sockaddr_un *)0)->sun_path - 1);
			return -1;
		}
		broker_path = value;
	} else if (strcmp(key, "idle") == 0) {
		return idle_config(value);
	} else {
		nbdkit_error("unknown parameter '%s'", key);
		return -1;
	}
	return 0;
}

static int thinproxy_config_complete(void)
{
	if (tenant == NULL) {
		nbdkit_error("tenant=NAME is required");
		return -1;
	}
	return 0;
}

#define thinproxy_config_help                                                                  \
	"tenant=NAME       (required) The tenant whose exports this nbdkit serves.\n"          \
	"broker=SOCKET     thinproxyd's broker socket (default " TP_BROKER_PATH_DEFAULT ").\n" \
	"idle=SECONDS      Exit after SECONDS without a connection (default 0: never)."

/* NAME (client input) as a log line may show it, in BUF. */
static const char *printable(const char *name, char *buf, size_t size)
{
	size_t i;

	for (i = 0; name[i] != '\0' && i + 4 < size; i++)
		buf[i] = name[i] >= ' ' && name[i] <= '~' ? name[i] : '?';
	if (name[i] != '\0' && i >= 3)
		memcpy(buf + i - 3, "...", 3);
	buf[i] = '\0';
	return buf;
}

/* Fail the open of NAME the way a name that does not exist fails, whatever the reason
 * was (invalid, not the tenant's, refused): a tenant learns nothing about what lies
 * beyond its reach. */
static void *no_such_export(const char *name)
{
	char buf[80];

	nbdkit_error("export \"%s\": no such export", printable(name, buf, sizeof buf));
	errno = ENOENT;
	return NULL;
}

/* A description of an export for NBD clients: state, size and access. */
static const char *describe(const char *state, uint64_t size, bool read_only)
{
	char human[32];

	return nbdkit_printf_intern("%s, %s (%" PRIu64 " bytes), %s", state,
	                            tp_format_size(size, human, sizeof human), size,
	                            read_only ? "read-only" : "read-write");
}

static int thinproxy_list_exports(int readonly, int is_tls, struct nbdkit_exports *exports)
{
	struct tp_broker_reply rep;
	CLEANUP_CLOSE int sock = -1;
	uint32_t i;

	(void)readonly;
	(void)is_tls;
	sock = broker_list();
	if (sock < 0) {
		nbdkit_error("list exports: thinproxyd's broker %s cannot be reached: %m",
		             broker_path);
		return -1;
	}
	if (broker_list_reply(sock, &rep) < 0) {
		nbdkit_error("list exports: no answer from thinproxyd's broker: %m");
		return -1;
	}
	if (rep.error != 0) {
		errno = (int)rep.error;
		nbdkit_error("list exports: thinproxyd's broker answered: %m");
		return -1;
	}
	for (i = 0; i < rep.count; i++) {
		struct tp_broker_entry e;

		if (broker_list_entry(sock, &e) < 0) {
			nbdkit_error("list exports: entry %" PRIu32 " of %" PRIu32 ": %m", i,
			             rep.count);
			return -1;
		}
		if (nbdkit_add_export(exports, e.ref,
		                      describe(e.state, e.size, e.flags & TP_BROKER_READ_ONLY)) < 0)
			return -1;
	}
	return 0;
}

/* No default export: a client must name what it wants. nbdkit refuses "" when this
 * returns NULL. */
static const char *thinproxy_default_export(int readonly, int is_tls)
{
	(void)readonly;
	(void)is_tls;
	return NULL;
}

/* Check that the device FD the broker sent can serve SIZE bytes; say what it is. */
static int check_device(int fd, uint64_t size, bool *ret_is_device, struct dev_key *ret_key)
{
	struct stat st;
	uint64_t actual;

	if (fstat(fd, &st) < 0)
		return -1;
	if (S_ISBLK(st.st_mode)) {
		if (ioctl(fd, BLKGETSIZE64, &actual) < 0)
			return -1;
		*ret_is_device = true;
		*ret_key = (struct dev_key){st.st_rdev, 0};
	} else if (S_ISREG(st.st_mode)) {
		actual = (uint64_t)st.st_size;
		*ret_is_device = false;
		*ret_key = (struct dev_key){st.st_dev, st.st_ino};
	} else {
		errno = ENOTBLK;
		return -1;
	}
	if (actual < size || size > INT64_MAX) {
		errno = ERANGE;
		return -1;
	}
	return 0;
}

/* The handle that serves the export NAME (REF to the broker) from FD, which the broker
 * opened with the answer REP; the handle keeps FD. NULL with the error logged (FD is
 * still the caller's). */
static struct handle *handle_new(const char *name, const char *ref, bool readonly,
                                 const struct tp_broker_reply *rep, int fd)
{
	struct dev_key key;
	struct handle *h;
	bool is_device;
	int acc;

	if (check_device(fd, rep->size, &is_device, &key) < 0) {
		nbdkit_error("export \"%s\": the broker's fd cannot serve %" PRIu64 " bytes: %m",
		             name, rep->size);
		return NULL;
	}
	acc = fcntl(fd, F_GETFL);
	if (acc < 0) {
		nbdkit_error("export \"%s\": fcntl: %m", name);
		return NULL;
	}
	h = calloc(1, sizeof *h);
	if (h == NULL) {
		nbdkit_error("calloc: %m");
		return NULL;
	}
	h->read_only =
	    readonly || (rep->flags & TP_BROKER_READ_ONLY) || (acc & O_ACCMODE) != O_RDWR;
	h->is_device = is_device;
	/* Direct I/O is what the fd is, whatever was asked: a broker that could not honour
	 * the flag would not have answered at all. */
	h->direct = acc & O_DIRECT;
	h->sector = 512;
	if (h->direct) {
		if (direct_io_init(fd, (uint64_t)key.dev ^ ((uint64_t)key.ino << 20), &h->dio) <
		    0) {
			nbdkit_error("export \"%s\": direct I/O: %m", name);
			free(h);
			return NULL;
		}
		h->sector = h->dio.align;
		if (thinproxy_debug_direct)
			nbdkit_debug("export \"%s\": direct I/O in blocks of %" PRIu32, name,
			             h->dio.align);
	}
	h->size = rep->size;
	/* dm-thin blocks are multiples of 64 KiB up to 1 GiB; anything else, trust
	 * nothing: no unmapping zero, no fast zero. */
	h->block_size = rep->block_size % 512 == 0 && rep->block_size <= (UINT32_C(1) << 30)
	                    ? rep->block_size
	                    : 0;
	memcpy(h->state, rep->state, sizeof h->state);
	/* Only a ready volume is ever written: committed volumes and images are activated
	 * read-only and never change, so their maps need not follow writes. */
	h->extents = extents_open(fd, ref, key, h->size, h->block_size,
	                          !h->read_only || strcmp(h->state, "ready") == 0);
	if (h->extents == NULL) {
		nbdkit_error("calloc: %m");
		free(h);
		return NULL;
	}
	h->fd = fd;
	return h;
}

static void *thinproxy_open(int readonly)
{
	const char *name = nbdkit_export_name(), *ref;
	struct tp_broker_reply rep;
	CLEANUP_CLOSE int fd = -1;
	bool direct, ro_prefix;
	struct handle *h;
	uint32_t flags;

	if (name == NULL)
		return NULL;
	ref = tp_export_parse(name, &direct, &ro_prefix);
	if (ro_prefix)
		readonly = 1;
	if (!tp_broker_ref_valid(ref))
		return no_such_export(name);
	flags = (readonly ? 0 : TP_BROKER_WANT_WRITE) | (direct ? TP_BROKER_WANT_DIRECT : 0);
	if (broker_open(ref, flags, &rep, &fd) < 0)
		goto no_answer;
	/* Read-only to this tenant (committed, an image, a read grant): serve it read-only,
	 * as NBD has no way for the client to ask for that itself. */
	if (rep.error == EROFS && !readonly &&
	    broker_open(ref, flags & ~TP_BROKER_WANT_WRITE, &rep, &fd) < 0)
		goto no_answer;
	if (rep.error != 0)
		return no_such_export(name);
	h = handle_new(name, ref, readonly, &rep, fd);
	if (h != NULL) {
		fd = -1; /* the handle's now */
		idle_opened();
	}
	return h;

no_answer:
	nbdkit_error("export \"%s\": thinproxyd's broker %s did not answer (is thinproxyd "
	             "running?): %m",
	             name, broker_path);
	return NULL;
}

static void thinproxy_close(void *handle)
{
	struct handle *h = handle;

	if (h->direct && thinproxy_debug_direct) {
		struct direct_io_stats s;

		direct_io_get_stats(&s);
		nbdkit_debug("direct I/O so far: %" PRIu64 " requests in place, %" PRIu64
		             " bounced, %" PRIu64 " read-modify-written",
		             s.in_place, s.bounced, s.rmw);
	}
	extents_close(h->extents);
	close(h->fd);
	free(h);
	idle_closed();
}

static const char *thinproxy_export_description(void *handle)
{
	struct handle *h = handle;

	return describe(h->state, h->size, h->read_only);
}

static int64_t thinproxy_get_size(void *handle)
{
	struct handle *h = handle;

	return (int64_t)h->size;
}

/* The largest power of two that divides N, at most MAX_BLOCK_SIZE. */
static uint32_t pow2_divisor(uint32_t n)
{
	uint32_t p = n & -n;

	return p > MAX_BLOCK_SIZE ? MAX_BLOCK_SIZE : p;
}

static int thinproxy_block_size(void *handle, uint32_t *minimum, uint32_t *preferred,
                                uint32_t *maximum)
{
	struct handle *h = handle;
	uint32_t p = h->block_size ? pow2_divisor(h->block_size) : DEFAULT_PREFERRED;

	*minimum = h->direct ? h->dio.align : MIN_BLOCK_SIZE;
	*preferred = p < 512 ? DEFAULT_PREFERRED : p;
	if (*preferred < *minimum)
		*preferred = *minimum;
	*maximum = MAX_BLOCK_SIZE;
	return 0;
}

static int thinproxy_can_write(void *handle)
{
	struct handle *h = handle;

	return !h->read_only;
}

static int thinproxy_can_flush(void *handle)
{
	(void)handle;
	return 1;
}

static int thinproxy_can_fua(void *handle)
{
	(void)handle;
	return NBDKIT_FUA_NATIVE;
}

static int thinproxy_can_trim(void *handle)
{
	struct handle *h = handle;

	return !h->read_only;
}

static int thinproxy_can_zero(void *handle)
{
	struct handle *h = handle;

	return !h->read_only;
}

/* Fast zero is a whole-block discard, so it needs the pool's block size. */
static int thinproxy_can_fast_zero(void *handle)
{
	struct handle *h = handle;

	return !h->read_only && h->block_size != 0;
}

/* Every connection to a volume shares the kernel's one page cache of its device, or with
 * direct I/O writes to the device itself, and a flush (fdatasync) writes it all back and
 * flushes the device's cache: what one connection flushed, every other sees. */
static int thinproxy_can_multi_conn(void *handle)
{
	(void)handle;
	return 1;
}

/* Prefetching into the page cache is what direct I/O avoids. */
static int thinproxy_can_cache(void *handle)
{
	struct handle *h = handle;

	return h->direct ? NBDKIT_CACHE_NONE : NBDKIT_CACHE_NATIVE;
}

/* The pool's map, which the broker gives for any export it opens. */
static int thinproxy_can_extents(void *handle)
{
	(void)handle;
	return 1;
}

static int thinproxy_pread(void *handle, void *buf, uint32_t count, uint64_t offset, uint32_t flags)
{
	struct handle *h = handle;
	char *p = buf;

	(void)flags;
	if (h->direct) {
		if (direct_io_pread(&h->dio, buf, count, offset) < 0) {
			nbdkit_error("pread (direct): %m");
			return -1;
		}
		return 0;
	}
	while (count > 0) {
		ssize_t n = pread(h->fd, p, count, (off_t)offset);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			nbdkit_error("pread: %m");
			return -1;
		}
		if (n == 0) {
			errno = EIO;
			nbdkit_error("pread: unexpected end of device at %" PRIu64, offset);
			return -1;
		}
		p += n;
		count -= (uint32_t)n;
		offset += (uint64_t)n;
	}
	return 0;
}

static int flush_if_fua(struct handle *h, uint32_t flags)
{
	if ((flags & NBDKIT_FLAG_FUA) && fdatasync(h->fd) < 0) {
		nbdkit_error("fdatasync: %m");
		return -1;
	}
	return 0;
}

/* Write COUNT bytes of BUF at OFFSET, all of them. */
static int write_range(struct handle *h, const void *buf, uint32_t count, uint64_t offset,
                       uint32_t flags)
{
	const char *p = buf;

	if (h->direct) {
		if (direct_io_pwrite(&h->dio, buf, count, offset) < 0) {
			nbdkit_error("pwrite (direct): %m");
			return -1;
		}
		return flush_if_fua(h, flags);
	}
	while (count > 0) {
		ssize_t n = pwrite(h->fd, p, count, (off_t)offset);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			nbdkit_error("pwrite: %m");
			return -1;
		}
		if (n == 0) {
			errno = ENOSPC;
			nbdkit_error("pwrite: unexpected end of device at %" PRIu64, offset);
			return -1;
		}
		p += n;
		count -= (uint32_t)n;
		offset += (uint64_t)n;
	}
	return flush_if_fua(h, flags);
}

static int thinproxy_pwrite(void *handle, const void *buf, uint32_t count, uint64_t offset,
                            uint32_t flags)
{
	struct handle *h = handle;
	int r = write_range(h, buf, count, offset, flags);

	/* Even a failed write may have changed part of the range. */
	extents_note_written(h->extents, offset, count);
	return r;
}

static int thinproxy_flush(void *handle, uint32_t flags)
{
	struct handle *h = handle;

	(void)flags;
	if (fdatasync(h->fd) < 0) {
		nbdkit_error("fdatasync: %m");
		return -1;
	}
	return 0;
}

/* Change [OFFSET, OFFSET+LEN) (whole sectors, h->sector) with the ioctl REQUEST on a device
 * or fallocate MODE on a regular file. With direct I/O, no read-modify-write of the same
 * device runs meanwhile, which could write back what it read before. */
static int change_range(struct handle *h, unsigned long request, int mode, uint64_t offset,
                        uint64_t len)
{
	uint64_t range[2] = {offset, len};
	int r;

	if (h->direct)
		direct_io_hold(&h->dio);
	if (h->is_device)
		r = ioctl(h->fd, request, range);
	else
		r = fallocate(h->fd, mode | FALLOC_FL_KEEP_SIZE, (off_t)offset, (off_t)len);
	if (h->direct)
		direct_io_release(&h->dio);
	return r;
}

/* Unmap [OFFSET, OFFSET+LEN) (whole sectors): BLKDISCARD on the device, which dm-thin
 * turns into unmapped blocks that read as zeroes; a hole in a regular file. Returns 0 or
 * -1 with errno set, EOPNOTSUPP if the device cannot discard. */
static int discard(struct handle *h, uint64_t offset, uint64_t len)
{
	if (len == 0)
		return 0;
	if (thinproxy_debug_zero)
		nbdkit_debug("discard %" PRIu64 "+%" PRIu64, offset, len);
	return change_range(h, BLKDISCARD, FALLOC_FL_PUNCH_HOLE, offset, len);
}

/* Write zeroes over [OFFSET, OFFSET+LEN) (whole sectors). Returns 0 or -1 with errno
 * set. */
static int zero_out(struct handle *h, uint64_t offset, uint64_t len)
{
	if (len == 0)
		return 0;
	if (thinproxy_debug_zero)
		nbdkit_debug("zeroout %" PRIu64 "+%" PRIu64, offset, len);
	return change_range(h, BLKZEROOUT, FALLOC_FL_ZERO_RANGE, offset, len);
}

static int trim_range(struct handle *h, uint32_t count, uint64_t offset, uint32_t flags)
{
	uint64_t mask = h->sector - 1;
	uint64_t start = (offset + mask) & ~mask;
	uint64_t end = (offset + count) & ~mask;

	/* A trim is advisory: the sub-sector edges, or a device that cannot discard at all,
	 * keep their data. dm-thin itself unmaps whole pool blocks only. */
	if (start < end && discard(h, start, end - start) < 0) {
		if (errno != EOPNOTSUPP) {
			nbdkit_error("trim %" PRIu64 "+%" PRIu32 ": %m", offset, count);
			return -1;
		}
		if (thinproxy_debug_zero)
			nbdkit_debug("trim: the device cannot discard, ignoring");
	}
	return flush_if_fua(h, flags);
}

/* A trim changes no data a map could have missed, yet it is counted as a write: calling
 * a range data is never wrong. */
static int thinproxy_trim(void *handle, uint32_t count, uint64_t offset, uint32_t flags)
{
	struct handle *h = handle;
	int r = trim_range(h, count, offset, flags);

	extents_note_written(h->extents, offset, count);
	return r;
}

static int zero_range(struct handle *h, uint32_t count, uint64_t offset, uint32_t flags)
{
	uint64_t end = offset + count, bs = h->block_size;
	uint64_t first = bs ? (offset + bs - 1) / bs * bs : end;
	uint64_t last = bs ? end / bs * bs : end;
	bool fast = flags & NBDKIT_FLAG_FAST_ZERO;

	/* Both ioctls take whole sectors only; nbdkit writes zeroes for the rest. */
	if ((offset | count) & (h->sector - 1)) {
		errno = ENOTSUP;
		return -1;
	}
	/* Unmapping the whole pool blocks inside the range leaves them reading as zeroes
	 * and returns their space; the edges are written. Fast only if there are no
	 * edges. */
	if (!(flags & NBDKIT_FLAG_MAY_TRIM) || first >= last) {
		first = last = end;
	}
	if (fast && (first != offset || last != end)) {
		if (thinproxy_debug_zero)
			nbdkit_debug("fast zero %" PRIu64 "+%" PRIu32
			             ": not whole blocks, refusing",
			             offset, count);
		errno = ENOTSUP;
		return -1;
	}
	if (zero_out(h, offset, first - offset) < 0 || zero_out(h, last, end - last) < 0)
		goto fail;
	if (discard(h, first, last - first) < 0) {
		if (errno != EOPNOTSUPP || fast) {
			if (fast)
				errno = ENOTSUP;
			goto fail;
		}
		if (zero_out(h, first, last - first) < 0)
			goto fail;
	}
	return flush_if_fua(h, flags);

fail:
	/* ENOTSUP makes nbdkit write zeroes itself (or, for a fast zero, tell the client
	 * it would not be fast): not worth an error line. */
	if (errno != ENOTSUP && errno != EOPNOTSUPP)
		nbdkit_error("zero %" PRIu64 "+%" PRIu32 ": %m", offset, count);
	return -1;
}

static int thinproxy_zero(void *handle, uint32_t count, uint64_t offset, uint32_t flags)
{
	struct handle *h = handle;
	int r = zero_range(h, count, offset, flags);

	/* ENOTSUP: nothing was done (nbdkit writes the zeroes itself, through pwrite). */
	if (r == 0 || errno != ENOTSUP)
		extents_note_written(h->extents, offset, count);
	return r;
}

static int thinproxy_extents(void *handle, uint32_t count, uint64_t offset, uint32_t flags,
                             struct nbdkit_extents *extents)
{
	struct handle *h = handle;

	return extents_answer(h->extents, count, offset, flags, extents);
}

static int thinproxy_cache(void *handle, uint32_t count, uint64_t offset, uint32_t flags)
{
	struct handle *h = handle;
	int r;

	if (flags != 0) {
		errno = EINVAL;
		nbdkit_error("cache: unknown flags %#" PRIx32 ": %m", flags);
		return -1;
	}
	r = posix_fadvise(h->fd, (off_t)offset, count, POSIX_FADV_WILLNEED);
	if (r != 0) {
		errno = r;
		nbdkit_error("cache: posix_fadvise: %m");
		return -1;
	}
	return 0;
}

static int thinproxy_after_fork(void)
{
	return idle_start();
}

static int thinproxy_preconnect(int readonly)
{
	(void)readonly;
	idle_connection();
	return 0;
}

static void thinproxy_cleanup(void)
{
	idle_stop();
}

static struct nbdkit_plugin plugin = {
    .name = "thinproxy",
    .longname = "thinproxy: a tenant's thin volumes, brokered by thinproxyd",
    .version = TP_VERSION,
    .description = "Serve the thin volumes that thinproxyd's broker opens for one tenant.",
    .load = thinproxy_load,
    .config = thinproxy_config,
    .config_complete = thinproxy_config_complete,
    .config_help = thinproxy_config_help,
    .after_fork = thinproxy_after_fork,
    .preconnect = thinproxy_preconnect,
    .cleanup = thinproxy_cleanup,
    .list_exports = thinproxy_list_exports,
    .default_export = thinproxy_default_export,
    .open = thinproxy_open,
    .close = thinproxy_close,
    .export_description = thinproxy_export_description,
    .get_size = thinproxy_get_size,
    .block_size = thinproxy_block_size,
    .can_write = thinproxy_can_write,
    .can_flush = thinproxy_can_flush,
    .can_fua = thinproxy_can_fua,
    .can_trim = thinproxy_can_trim,
    .can_zero = thinproxy_can_zero,
    .can_fast_zero = thinproxy_can_fast_zero,
    .can_multi_conn = thinproxy_can_multi_conn,
    .can_cache = thinproxy_can_cache,
    .can_extents = thinproxy_can_extents,
    .pread = thinproxy_pread,
    .pwrite = thinproxy_pwrite,
    .flush = thinproxy_flush,
    .trim = thinproxy_trim,
    .zero = thinproxy_zero,
    .cache = thinproxy_cache,
    .extents = thinproxy_extents,
    .errno_is_preserved = 1,
};

NBDKIT_REGISTER_PLUGIN(plugin)
