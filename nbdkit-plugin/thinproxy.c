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
 * Block status comes from the pool: on a connection's first .extents the plugin flushes
 * the device, then asks the broker for the ranges the pool has mapped (MAP) and keeps
 * that map; the rest are holes that read as zeroes. The map is taken from the pool's
 * metadata, which knows nothing of what this nbdkit writes later, so every write, trim
 * and zero of this process, on any connection, is added as data to every map of the same
 * device that it may already have missed (a process-wide list of live maps, under one
 * lock, looked at only while there is one). Committed volumes and images never change
 * and their maps follow nothing. */
#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "tp-broker.h"
#include "tp-cleanup.h"
#include "tp-rules.h"

#define THREAD_MODEL NBDKIT_THREAD_MODEL_PARALLEL

/* How long to wait for the broker's answer: the daemon answers from a single-threaded
 * loop that may be busy for a while. */
#define BROKER_TIMEOUT_SEC 30
/* Block size hints. Any byte range works (I/O goes through the device's page cache, and
 * zero and trim handle sub-sector edges), so the minimum is 1; the preferred size is the
 * pool's block, which dm-thin provisions and unmaps as a unit; NBD clients split
 * requests beyond 32 MiB. */
#define MIN_BLOCK_SIZE    1
#define MAX_BLOCK_SIZE    (32 * 1024 * 1024)
#define DEFAULT_PREFERRED 4096
/* Most ranges a map holds (4 MiB) before the closest are joined down to what the wire
 * carries: what a client's scattered writes can make the plugin allocate. */
#define MAP_RANGES_MAX (4 * TP_BROKER_MAP_MAX)

/* -D thinproxy.broker=1: log every broker exchange. */
NBDKIT_DLL_PUBLIC int thinproxy_debug_broker;
/* -D thinproxy.zero=1: log how each zero and trim request is carried out. */
NBDKIT_DLL_PUBLIC int thinproxy_debug_zero;

static const char *tenant;
static const char *broker_path = TP_BROKER_PATH_DEFAULT;

/* What names a device across handles: a block device's number, or a regular file's
 * filesystem and inode (the unit tests' stand-in for a device). */
struct dev_key {
	dev_t dev;
	ino_t ino;
};

/* Which ranges of one device hold data: the pool's mapped blocks as the broker said,
 * and whatever this process wrote since it asked. In order, neither overlapping nor
 * touching; the rest reads as zeroes. */
struct map {
	struct map *next; /* in live_maps, while it follows writes */
	struct dev_key key;
	uint64_t size;
	uint32_t granule; /* writes are rounded out to it (the pool's block); 0: unknown */
	struct tp_broker_range *r;
	size_t n, cap; /* cap >= 1 */
};

/* One client connection: the export the broker opened for it. */
struct handle {
	int fd;
	bool read_only;
	bool is_device; /* else a regular file */
	bool tracked;   /* may change, so that its map follows this process's writes */
	uint64_t size;
	uint32_t block_size; /* the pool's block size; 0 if the broker did not say */
	char state[TP_BROKER_STATE_SIZE];
	char ref[TP_BROKER_REF_SIZE]; /* what the broker opened, asked again for the map */
	struct dev_key key;
	pthread_mutex_t map_lock; /* one fetch of the map at a time */
	struct map *map;          /* NULL until the first .extents */
	bool no_map;              /* the broker cannot map it: everything is data */
};

/* The maps that this process's writes must reach, under maps_lock, and how many there are:
 * a write reads the count first, without the lock, and is done if it is 0. */
static pthread_mutex_t maps_lock = PTHREAD_MUTEX_INITIALIZER;
static struct map *live_maps;
static atomic_uint n_live_maps;

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

#define thinproxy_config_help                                                         \
	"tenant=NAME       (required) The tenant whose exports this nbdkit serves.\n" \
	"broker=SOCKET     thinproxyd's broker socket (default " TP_BROKER_PATH_DEFAULT ")."

/* Connect to the broker and send REQ. Returns the socket, or -1 with errno set. */
static int broker_send(const struct tp_broker_request *req)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	struct timeval tv = {.tv_sec = BROKER_TIMEOUT_SEC};
	CLEANUP_CLOSE int sock = -1;
	ssize_t n;

	memcpy(sa.sun_path, broker_path, strlen(broker_path) + 1);
	sock = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (sock < 0)
		return -1;
	if (setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) < 0 ||
	    setsockopt(sock, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) < 0)
		return -1;
	if (connect(sock, (struct sockaddr *)&sa, sizeof sa) < 0)
		return -1;
	n = send(sock, req, sizeof *req, MSG_NOSIGNAL);
	if (n < 0)
		return -1;
	if ((size_t)n != sizeof *req) {
		errno = EIO;
		return -1;
	}
	return TAKE_FD(sock);
}

/* Receive one packet from the broker into BUF, which has room for one byte more than
 * the largest packet expected, and the fd it may carry into *RET_FD (-1 if none; NULL:
 * none allowed). Returns the packet's length, or -1 with errno set. */
static ssize_t broker_receive(int sock, void *buf, size_t size, int *ret_fd)
{
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(4 * sizeof(int))];
	} control;
	struct iovec iov = {.iov_base = buf, .iov_len = size};
	struct msghdr msg = {.msg_iov = &iov,
	                     .msg_iovlen = 1,
	                     .msg_control = control.buf,
	                     .msg_controllen = sizeof control.buf};
	int fds[4], nfds = 0, i;
	struct cmsghdr *c;
	ssize_t n;

	do
		n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
	while (n < 0 && errno == EINTR);
	if (n < 0) {
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			errno = ETIMEDOUT;
		return -1;
	}
	for (c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
		size_t k;

		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		for (k = 0; k < (c->cmsg_len - CMSG_LEN(0)) / sizeof(int) && nfds < 4; k++)
			memcpy(&fds[nfds++], CMSG_DATA(c) + k * sizeof(int), sizeof(int));
	}
	if (n == 0 || (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) || nfds > 1 ||
	    (nfds == 1 && ret_fd == NULL)) {
		for (i = 0; i < nfds; i++)
			close(fds[i]);
		errno = n == 0 ? ECONNRESET : EBADMSG;
		return -1;
	}
	if (ret_fd != NULL)
		*ret_fd = nfds == 1 ? fds[0] : -1;
	return n;
}

/* Ask the broker to open REF. Returns 0 with the answer in *RET_REPLY (a refusal if its
 * error is set, else the device in *RET_FD), or -1 with errno set if there was no
 * well-formed answer. */
static int broker_open(const char *ref, bool want_write, struct tp_broker_reply *ret_reply,
                       int *ret_fd)
{
	char buf[sizeof(struct tp_broker_reply) + 1];
	struct tp_broker_request req;
	CLEANUP_CLOSE int sock = -1;
	CLEANUP_CLOSE int fd = -1;
	ssize_t n;
	int r;

	r = tp_broker_encode_open(ref, want_write, &req);
	if (r < 0) {
		errno = -r;
		return -1;
	}
	sock = broker_send(&req);
	if (sock < 0)
		return -1;
	n = broker_receive(sock, buf, sizeof buf, &fd);
	if (n < 0)
		return -1;
	r = tp_broker_decode_reply(buf, (size_t)n, TP_BROKER_OPENED, ret_reply);
	if (r < 0) {
		errno = -r;
		return -1;
	}
	if ((ret_reply->error == 0) != (fd >= 0)) {
		errno = EBADMSG;
		return -1;
	}
	if (thinproxy_debug_broker)
		nbdkit_debug("broker: open %s %s: error %" PRIu32 ", fd %d, size %" PRIu64
		             ", block size %" PRIu32 ", flags %#" PRIx32 ", state %s",
		             ref, want_write ? "rw" : "ro", ret_reply->error, fd, ret_reply->size,
		             ret_reply->block_size, ret_reply->flags, ret_reply->state);
	*ret_fd = TAKE_FD(fd);
	return 0;
}

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
	char buf[sizeof(struct tp_broker_entry) + 1];
	struct tp_broker_request req;
	struct tp_broker_reply rep;
	CLEANUP_CLOSE int sock = -1;
	ssize_t n;
	uint32_t i;
	int r;

	(void)readonly;
	(void)is_tls;
	tp_broker_encode_list(&req);
	sock = broker_send(&req);
	if (sock < 0) {
		nbdkit_error("list exports: thinproxyd's broker %s cannot be reached: %m",
		             broker_path);
		return -1;
	}
	n = broker_receive(sock, buf, sizeof buf, NULL);
	if (n < 0) {
		nbdkit_error("list exports: no answer from thinproxyd's broker: %m");
		return -1;
	}
	r = tp_broker_decode_reply(buf, (size_t)n, TP_BROKER_LISTED, &rep);
	if (r < 0 || rep.error != 0) {
		errno = r < 0 ? -r : (int)rep.error;
		nbdkit_error("list exports: thinproxyd's broker answered: %m");
		return -1;
	}
	if (thinproxy_debug_broker)
		nbdkit_debug("broker: list: %" PRIu32 " exports", rep.count);
	for (i = 0; i < rep.count; i++) {
		struct tp_broker_entry e;

		n = broker_receive(sock, buf, sizeof buf, NULL);
		if (n < 0) {
			nbdkit_error("list exports: entry %" PRIu32 " of %" PRIu32 ": %m", i,
			             rep.count);
			return -1;
		}
		r = tp_broker_decode_entry(buf, (size_t)n, &e);
		if (r < 0) {
			errno = -r;
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

static void *thinproxy_open(int readonly)
{
	const char *name = nbdkit_export_name(), *ref = name;
	struct tp_broker_reply rep;
	CLEANUP_CLOSE int fd = -1;
	struct dev_key key;
	struct handle *h;
	bool is_device;
	int acc;

	if (name == NULL)
		return NULL;
	if (strncmp(name, TP_EXPORT_READ_ONLY_PREFIX, strlen(TP_EXPORT_READ_ONLY_PREFIX)) == 0) {
		ref = name + strlen(TP_EXPORT_READ_ONLY_PREFIX);
		readonly = 1;
	}
	if (!tp_broker_ref_valid(ref))
		return no_such_export(name);
	if (broker_open(ref, !readonly, &rep, &fd) < 0)
		goto no_answer;
	/* Read-only to this tenant (committed, an image, a read grant): serve it read-only,
	 * as NBD has no way for the client to ask for that itself. */
	if (rep.error == EROFS && !readonly && broker_open(ref, false, &rep, &fd) < 0)
		goto no_answer;
	if (rep.error != 0)
		return no_such_export(name);

	if (check_device(fd, rep.size, &is_device, &key) < 0) {
		nbdkit_error("export \"%s\": the broker's fd cannot serve %" PRIu64 " bytes: %m",
		             name, rep.size);
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
	h->read_only = readonly || (rep.flags & TP_BROKER_READ_ONLY) || (acc & O_ACCMODE) != O_RDWR;
	h->is_device = is_device;
	h->size = rep.size;
	/* dm-thin blocks are multiples of 64 KiB up to 1 GiB; anything else, trust
	 * nothing: no unmapping zero, no fast zero. */
	h->block_size =
	    rep.block_size % 512 == 0 && rep.block_size <= (UINT32_C(1) << 30) ? rep.block_size : 0;
	memcpy(h->state, rep.state, sizeof h->state);
	/* Only a ready volume is ever written: committed volumes and images are activated
	 * read-only and never change. */
	h->tracked = !h->read_only || strcmp(h->state, "ready") == 0;
	memcpy(h->ref, ref, strlen(ref) + 1);
	h->key = key;
	pthread_mutex_init(&h->map_lock, NULL);
	h->fd = TAKE_FD(fd);
	return h;

no_answer:
	nbdkit_error("export \"%s\": thinproxyd's broker %s did not answer (is thinproxyd "
	             "running?): %m",
	             name, broker_path);
	return NULL;
}

/* Maps: what the pool holds, and what this process wrote since. */

/* An empty map of H's device. NULL with errno set if there is no memory. */
static struct map *map_new(const struct handle *h)
{
	struct map *m = calloc(1, sizeof *m);

	if (m == NULL)
		return NULL;
	m->r = calloc(1, sizeof *m->r);
	if (m->r == NULL) {
		free(m);
		return NULL;
	}
	m->cap = 1;
	m->key = h->key;
	m->size = h->size;
	m->granule = h->block_size;
	return m;
}

/* Let M follow this process's writes from now on. */
static void maps_register(struct map *m)
{
	LOCK_SCOPE(&maps_lock);
	m->next = live_maps;
	live_maps = m;
	/* A sequentially consistent increment, the other half of note_written's fence. */
	atomic_fetch_add(&n_live_maps, 1);
}

/* Forget M, registered or not. Keeps errno. */
static void map_free(struct map *m, bool registered)
{
	struct map **pm;

	if (m == NULL)
		return;
	if (registered) {
		LOCK_SCOPE(&maps_lock);

		for (pm = &live_maps; *pm != m; pm = &(*pm)->next)
			;
		*pm = m->next;
		atomic_fetch_sub(&n_live_maps, 1);
	}
	free(m->r);
	free(m);
}

/* Call all of M data: what a map that cannot grow any more says. */
static void map_fill(struct map *m)
{
	m->r[0] = (struct tp_broker_range){0, m->size};
	m->n = m->size > 0;
}

/* The first of M's ranges that ends at or after OFFSET (M->n if none). */
static size_t map_find(const struct map *m, uint64_t offset)
{
	size_t lo = 0, hi = m->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (m->r[mid].offset + m->r[mid].length < offset)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* Make [OFFSET, END) data in M, joined with the ranges it overlaps or touches. Returns 0,
 * or -1 with errno set if there is no memory for another range. */
static int map_add(struct map *m, uint64_t offset, uint64_t end)
{
	size_t lo = map_find(m, offset), hi = lo;

	while (hi < m->n && m->r[hi].offset <= end)
		hi++;
	if (lo == hi) {
		if (m->n == m->cap) {
			struct tp_broker_range *r = reallocarray(m->r, 2 * m->cap, sizeof *r);

			if (r == NULL)
				return -1;
			m->r = r;
			m->cap *= 2;
		}
		memmove(&m->r[lo + 1], &m->r[lo], (m->n - lo) * sizeof *m->r);
		m->r[lo] = (struct tp_broker_range){offset, end - offset};
		m->n++;
	} else {
		uint64_t start = offset < m->r[lo].offset ? offset : m->r[lo].offset;
		uint64_t last = m->r[hi - 1].offset + m->r[hi - 1].length;

		m->r[lo] = (struct tp_broker_range){start, (end > last ? end : last) - start};
		memmove(&m->r[lo + 1], &m->r[hi], (m->n - hi) * sizeof *m->r);
		m->n -= hi - lo - 1;
	}
	if (m->n > MAP_RANGES_MAX)
		m->n = tp_broker_coalesce(m->r, m->n, TP_BROKER_MAP_MAX);
	return 0;
}

/* Make the bytes [OFFSET, OFFSET+LEN) that this process wrote data in M, rounded out to
 * whole pool blocks: a write provisions the whole block, whose rest need not read as
 * zeroes (a pool may skip zeroing new blocks). Without the block size, all of M. */
static void map_note(struct map *m, uint64_t offset, uint64_t len)
{
	uint64_t g = m->granule, start = 0, end = m->size;

	if (g != 0) {
		start = offset / g * g;
		end = (offset + len + g - 1) / g * g;
		if (end > m->size)
			end = m->size;
	}
	if (len > 0 && start < end && map_add(m, start, end) < 0)
		map_fill(m);
}

/* Make the N ranges R (in the wire's order, room for at least one) the broker answered
 * the base of M, with what M noted while the answer was on its way. M takes R. */
static void map_take(struct map *m, struct tp_broker_range *r, size_t n)
{
	struct tp_broker_range *noted = m->r;
	size_t n_noted = m->n;

	m->r = r;
	m->n = n;
	m->cap = n ? n : 1;
	for (size_t i = 0; i < n_noted; i++)
		if (map_add(m, noted[i].offset, noted[i].offset + noted[i].length) < 0) {
			map_fill(m);
			break;
		}
	free(noted);
}

/* Make [OFFSET, OFFSET+LEN), which this process just wrote, trimmed or zeroed on H's
 * device, data in every map of that device that follows writes. Keeps errno. */
static void note_written(const struct handle *h, uint64_t offset, uint64_t len)
{
	int saved = errno;

	/* The other half is maps_register's increment, before fetch_map's flush: either
	 * this sees the map there, or the write was done before the map was registered
	 * and the flush takes it to the device before the daemon looks. */
	atomic_thread_fence(memory_order_seq_cst);
	if (atomic_load_explicit(&n_live_maps, memory_order_relaxed) > 0) {
		LOCK_SCOPE(&maps_lock);

		for (struct map *m = live_maps; m != NULL; m = m->next)
			if (m->key.dev == h->key.dev && m->key.ino == h->key.ino)
				map_note(m, offset, len);
	}
	errno = saved;
}

/* Receive the next RANGES packet of CURSOR's answer on SOCK into its place in RANGES.
 * Returns 0, or -1 with errno set. */
static int receive_ranges(int sock, struct tp_broker_map_cursor *cursor,
                          struct tp_broker_range *ranges)
{
	char buf[sizeof(struct tp_broker_ranges) + 1];
	struct tp_broker_ranges p;
	uint32_t done = cursor->done;
	ssize_t n;
	int r;

	n = broker_receive(sock, buf, sizeof buf, NULL);
	if (n < 0)
		return -1;
	r = tp_broker_decode_ranges(buf, (size_t)n, cursor, &p);
	if (r < 0) {
		errno = -r;
		return -1;
	}
	memcpy(ranges + done, p.range, p.count * sizeof *ranges);
	return 0;
}

/* Ask the broker for the map of REF. Returns 0 with the answer in *RET_REPLY (a refusal if
 * its error is set, else its ranges in *RET_RANGES, malloc'ed with room for at least
 * one), or -1 with errno set if there was no well-formed answer. */
static int broker_map(const char *ref, struct tp_broker_reply *ret_reply,
                      struct tp_broker_range **ret_ranges)
{
	char buf[sizeof(struct tp_broker_reply) + 1];
	CLEANUP_FREE struct tp_broker_range *ranges = NULL;
	struct tp_broker_map_cursor cursor;
	struct tp_broker_request req;
	struct tp_broker_reply rep;
	CLEANUP_CLOSE int sock = -1;
	ssize_t n;
	int r;

	r = tp_broker_encode_map(ref, &req);
	if (r < 0) {
		errno = -r;
		return -1;
	}
	sock = broker_send(&req);
	if (sock < 0)
		return -1;
	n = broker_receive(sock, buf, sizeof buf, NULL);
	if (n < 0)
		return -1;
	r = tp_broker_decode_reply(buf, (size_t)n, TP_BROKER_MAPPED, &rep);
	if (r < 0) {
		errno = -r;
		return -1;
	}
	ranges = calloc(rep.count ? rep.count : 1, sizeof *ranges);
	if (ranges == NULL)
		return -1;
	tp_broker_map_start(&rep, &cursor);
	while (rep.error == 0 && tp_broker_ranges_due(&cursor) > 0)
		if (receive_ranges(sock, &cursor, ranges) < 0)
			return -1;
	if (thinproxy_debug_broker)
		nbdkit_debug("broker: map %s: error %" PRIu32 ", size %" PRIu64
		             ", block size %" PRIu32 ", %" PRIu32 " ranges",
		             ref, rep.error, rep.size, rep.block_size, rep.count);
	*ret_reply = rep;
	*ret_ranges = TAKE_PTR(ranges);
	return 0;
}

/* Did a MAP that got no well-formed answer meet a daemon that predates MAP: one that
 * read the request and hung up, or answered what no MAP is answered with? */
static bool map_unknown(int err)
{
	return err == ECONNRESET || err == EBADMSG || err == EPROTO || err == EOPNOTSUPP;
}

/* Fetch H's map from the broker. Returns 0 (h->map set), 1 if there is none to be had
 * now, so that everything is reported as data, or -1 with the error logged. Called with
 * h->map_lock held. */
static int fetch_map(struct handle *h)
{
	CLEANUP_FREE struct tp_broker_range *ranges = NULL;
	struct tp_broker_reply rep;
	struct map *m = map_new(h);

	if (m == NULL) {
		nbdkit_error("extents: calloc: %m");
		return -1;
	}
	/* Registered before the flush and the request, so that no write of this process
	 * escapes both: one that does not find the map (note_written) was done before,
	 * and the flush takes it to the thin device before the daemon reads the pool's
	 * metadata. */
	if (h->tracked)
		maps_register(m);
	if (fdatasync(h->fd) < 0) {
		nbdkit_error("extents: fdatasync: %m");
		map_free(m, h->tracked);
		return -1;
	}
	if (broker_map(h->ref, &rep, &ranges) < 0) {
		/* An old daemon stays old; one that is down may be back next time. */
		h->no_map = map_unknown(errno);
		nbdkit_debug("extents: no map of %s from thinproxyd's broker (%m), "
		             "reporting everything as data",
		             h->ref);
		map_free(m, h->tracked);
		return 1;
	}
	if (rep.error == EOPNOTSUPP || (rep.error == 0 && rep.size != h->size)) {
		/* The pool cannot tell, or the volume changed size under us. */
		h->no_map = true;
		nbdkit_debug("extents: thinproxyd cannot map %s (error %" PRIu32 ", size %" PRIu64
		             "), reporting everything as data",
		             h->ref, rep.error, rep.size);
		map_free(m, h->tracked);
		return 1;
	}
	if (rep.error == EBUSY) {
		/* Another tool holds the pool's metadata snapshot: everything is data this
		 * time (never wrong), and the next request asks again. A copier would stop
		 * at a failed block status. */
		nbdkit_debug("extents: the pool's metadata is busy, reporting %s as data this time",
		             h->ref);
		map_free(m, h->tracked);
		return 1;
	}
	if (rep.error != 0) {
		errno = (int)rep.error;
		nbdkit_error("extents: thinproxyd's broker cannot map %s: %m", h->ref);
		map_free(m, h->tracked);
		return -1;
	}
	pthread_mutex_lock(&maps_lock);
	map_take(m, TAKE_PTR(ranges), rep.count);
	pthread_mutex_unlock(&maps_lock);
	h->map = m;
	return 0;
}

/* H's map, fetched on first use: 0, 1 if there is none (everything is data), or -1. */
static int get_map(struct handle *h)
{
	LOCK_SCOPE(&h->map_lock);

	if (h->map != NULL)
		return 0;
	if (h->no_map)
		return 1;
	return fetch_map(h);
}

static void thinproxy_close(void *handle)
{
	struct handle *h = handle;

	map_free(h->map, h->tracked);
	pthread_mutex_destroy(&h->map_lock);
	close(h->fd);
	free(h);
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

	*minimum = MIN_BLOCK_SIZE;
	*preferred = p < 512 ? DEFAULT_PREFERRED : p;
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

/* Every connection to a volume shares the kernel's one page cache of its device, and a
 * flush (fdatasync) writes it all back: what one connection flushed, every other sees. */
static int thinproxy_can_multi_conn(void *handle)
{
	(void)handle;
	return 1;
}

static int thinproxy_can_cache(void *handle)
{
	(void)handle;
	return NBDKIT_CACHE_NATIVE;
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
	note_written(h, offset, count);
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

/* Unmap [OFFSET, OFFSET+LEN) (512-byte aligned): BLKDISCARD on the device, which dm-thin
 * turns into unmapped blocks that read as zeroes; a hole in a regular file. Returns 0 or
 * -1 with errno set, EOPNOTSUPP if the device cannot discard. */
static int discard(struct handle *h, uint64_t offset, uint64_t len)
{
	uint64_t range[2] = {offset, len};

	if (len == 0)
		return 0;
	if (thinproxy_debug_zero)
		nbdkit_debug("discard %" PRIu64 "+%" PRIu64, offset, len);
	if (h->is_device)
		return ioctl(h->fd, BLKDISCARD, range);
	return fallocate(h->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)offset,
	                 (off_t)len);
}

/* Write zeroes over [OFFSET, OFFSET+LEN) (512-byte aligned). Returns 0 or -1 with errno
 * set. */
static int zero_out(struct handle *h, uint64_t offset, uint64_t len)
{
	uint64_t range[2] = {offset, len};

	if (len == 0)
		return 0;
	if (thinproxy_debug_zero)
		nbdkit_debug("zeroout %" PRIu64 "+%" PRIu64, offset, len);
	if (h->is_device)
		return ioctl(h->fd, BLKZEROOUT, range);
	return fallocate(h->fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, (off_t)offset,
	                 (off_t)len);
}

static int trim_range(struct handle *h, uint32_t count, uint64_t offset, uint32_t flags)
{
	uint64_t start = (offset + 511) & ~UINT64_C(511);
	uint64_t end = (offset + count) & ~UINT64_C(511);

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

	note_written(h, offset, count);
	return r;
}

static int zero_range(struct handle *h, uint32_t count, uint64_t offset, uint32_t flags)
{
	uint64_t end = offset + count, bs = h->block_size;
	uint64_t first = bs ? (offset + bs - 1) / bs * bs : end;
	uint64_t last = bs ? end / bs * bs : end;
	bool fast = flags & NBDKIT_FLAG_FAST_ZERO;

	/* Both ioctls take whole sectors only; nbdkit writes zeroes for the rest. */
	if ((offset | count) & 511) {
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
		note_written(h, offset, count);
	return r;
}

/* Tell nbdkit what M says of [OFFSET, OFFSET+COUNT): its ranges data, the rest holes that
 * read as zeroes; only the first extent for NBDKIT_FLAG_REQ_ONE. */
static int add_extents(const struct map *m, uint32_t count, uint64_t offset, uint32_t flags,
                       struct nbdkit_extents *extents)
{
	uint64_t pos = offset, end = offset + count;
	size_t i = map_find(m, offset + 1);

	while (pos < end) {
		uint64_t next = i < m->n ? m->r[i].offset : m->size;
		uint32_t type = NBDKIT_EXTENT_HOLE | NBDKIT_EXTENT_ZERO;

		if (next <= pos) {
			next = m->r[i].offset + m->r[i].length;
			type = 0;
			i++;
		}
		if (nbdkit_add_extent(extents, pos, next - pos, type) < 0)
			return -1;
		if (flags & NBDKIT_FLAG_REQ_ONE)
			break;
		pos = next;
	}
	return 0;
}

static int thinproxy_extents(void *handle, uint32_t count, uint64_t offset, uint32_t flags,
                             struct nbdkit_extents *extents)
{
	struct handle *h = handle;
	int r = get_map(h);

	if (r < 0)
		return -1;
	if (r > 0)
		return nbdkit_add_extent(extents, offset, count, 0);
	LOCK_SCOPE(&maps_lock);
	return add_extents(h->map, count, offset, flags, extents);
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

static struct nbdkit_plugin plugin = {
    .name = "thinproxy",
    .longname = "thinproxy: a tenant's thin volumes, brokered by thinproxyd",
    .version = TP_VERSION,
    .description = "Serve the thin volumes that thinproxyd's broker opens for one tenant.",
    .load = thinproxy_load,
    .config = thinproxy_config,
    .config_complete = thinproxy_config_complete,
    .config_help = thinproxy_config_help,
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
