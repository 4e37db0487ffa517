/* The kernel NBD commands: attach a volume as /dev/nbdN, detach it, and list what is
 * attached (ls --attached). attach negotiates with the tenant's nbdkit on DIR/nbd.sock
 * (DIR/tenants/T/nbd.sock for a host-side attach with --admin --tenant T) and leaves a
 * keeper behind (keeper.h); detach stops the keeper and disconnects the device. */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <linux/nbd.h>

#include "tp-cleanup.h"
#include "tp-rules.h"
#include "client.h"
#include "handshake.h"
#include "keeper.h"
#include "nbd-device.h"
#include "nbd-ioctl.h"
#include "nbd-netlink.h"
#include "output.h"
#include "registry.h"

#define WHAT_MAX           160
#define CONNECTIONS_MAX    16
#define TIMEOUT_MAX        86400
#define DEFAULT_TIMEOUT    60
#define DEFAULT_IO_TIMEOUT 30
/* How long detach waits for a keeper to end, and for the device to let go. */
#define KEEPER_STOP_MS 15000
#define RELEASE_MS     5000

/* Sleep MS milliseconds. */
static void nap(long ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* A whole number of seconds or connections within MIN..MAX from option OPTION's value S. */
static int parse_count(const char *what, const char *option, const char *s, unsigned min,
                       unsigned max, unsigned *ret_value)
{
	unsigned long v;
	char *end;

	if (s[0] < '0' || s[0] > '9')
		return error_line(-EINVAL, what, "invalid %s '%s': expected a number from %u to %u",
		                  option, s, min, max);
	errno = 0;
	v = strtoul(s, &end, 10);
	if (*end != '\0')
		return error_line(-EINVAL, what, "invalid %s '%s': expected a number from %u to %u",
		                  option, s, min, max);
	if (errno == ERANGE || v < min || v > max)
		return error_line(-ERANGE, what, "%s '%s' out of range: %u to %u", option, s, min,
		                  max);
	*ret_value = (unsigned)v;
	return 0;
}

/* "/dev/nbdN" or "nbdN" from operand S into *RET_INDEX. */
static int parse_device(const char *what, const char *s, int *ret_index)
{
	if (nbd_device_parse(s, ret_index) < 0)
		return error_line(-EINVAL, what, "invalid device '%s': expected /dev/nbdN", s);
	return 0;
}

/* The error for a kernel without the NBD driver, which would otherwise show as a
 * missing netlink family or a missing device. */
static int no_nbd_driver(const char *what)
{
	return error_line(-ENODEV, what,
	                  "the kernel's nbd module is not loaded (no /dev/nbd* and no nbd netlink "
	                  "family): modprobe nbd, on the host for a container");
}

/* Which kernel interface to use: netlink where the nbd family is visible, else the
 * ioctl interface. $THINPROXY_NBD_INTERFACE=ioctl or =netlink forces one (for tests of
 * the fallback). *RET_NL is NULL for the ioctl interface. */
static int open_interface(const char *what, struct nbd_nl **ret_nl)
{
	const char *force = getenv("THINPROXY_NBD_INTERFACE");
	struct nbd_nl *nl = NULL;
	int r;

	if (force != NULL && strcmp(force, "ioctl") == 0) {
		if (!nbd_driver_present())
			return no_nbd_driver(what);
		*ret_nl = NULL;
		return 0;
	}
	r = nbd_nl_open(&nl);
	if (r == -ENOENT && !nbd_driver_present())
		return no_nbd_driver(what);
	if (r == -ENOENT && (force == NULL || strcmp(force, "netlink") != 0)) {
		/* Not loaded, or out of sight from this network namespace. */
		*ret_nl = NULL;
		return 0;
	}
	if (r < 0)
		return error_line(r, what, "the kernel's nbd netlink family: %s", strerror(-r));
	*ret_nl = nl;
	return 0;
}

/* How the daemon says the tenant's nbdkit is ("running", "failed", ...; see
 * supervise_status), asked quietly: NULL if it does not say. */
static const char *nbd_state(struct ctx *c, char *buf, size_t size)
{
	CLEANUP_JSON struct json_object *answer = NULL;
	struct json_object *v;
	char path[WHAT_MAX];
	int r;

	if (c->admin)
		snprintf(path, sizeof path, "/v1/tenants/%s/usage", c->tenant);
	else
		snprintf(path, sizeof path, "/v1/usage");
	error_lines_mute(true);
	r = http_json(c->http, NULL, "GET", path, NULL, &answer);
	error_lines_mute(false);
	if (r < 0 || !json_object_object_get_ex(answer, "nbd", &v) ||
	    !json_object_is_type(v, json_type_string))
		return NULL;
	snprintf(buf, size, "%s", json_object_get_string(v));
	return buf;
}

/* The first connection: keeper_connect, and when no greeting comes (the server closed
 * the connection, or said nothing in time), ask the daemon why. While the tenant's
 * nbdkit cannot start, the daemon closes every connection at once and says "failed":
 * that is the answer then, in a few seconds instead of a wait. An nbdkit that was
 * starting meanwhile ("running") gets another try, as may one that failed for some
 * other reason. */
static int connect_first(struct ctx *c, const struct keeper_config *cfg, int *ret_fd,
                         struct nbd_export *ret_export, char *reason, size_t len)
{
	char state[32];
	int r;

	for (int tries = 1;; tries++) {
		r = keeper_connect(cfg->socket_path, cfg->volume, cfg->read_only,
		                   KEEPER_HANDSHAKE_MS, ret_fd, ret_export, reason, len);
		if ((r != -ECONNRESET && r != -ETIMEDOUT) ||
		    nbd_state(c, state, sizeof state) == NULL)
			return r;
		if (strcmp(state, "failed") == 0) {
			snprintf(
			    reason, len,
			    "the tenant's NBD server is not running: its nbdkit does not start "
			    "(the host's thinproxyd log says why)");
			return r;
		}
		if (strcmp(state, "running") != 0) {
			snprintf(reason, len,
			         "the tenant's NBD server is not running (its nbdkit is %s)",
			         state);
			return r;
		}
		if (r == -ETIMEDOUT || tries == 3)
			return r;
	}
}

/* A hint for failures of privilege. */
static const char *privilege_hint(int r)
{
	if (r == -EPERM || r == -EACCES)
		return " (attaching needs CAP_SYS_ADMIN; for an unprivileged container, root on "
		       "the host can attach with 'thinproxy --admin --tenant T attach')";
	return "";
}

static int print_attached(const struct ctx *c, int index, const struct keeper_config *cfg,
                          bool netlink)
{
	CLEANUP_JSON struct json_object *o = NULL;
	char device[32];

	snprintf(device, sizeof device, "/dev/nbd%d", index);
	if (!c->json) {
		printf("%s\n", device);
		return 0;
	}
	o = json_object_new_object();
	if (o == NULL || json_add_string(o, "device", device) < 0 ||
	    json_add_string(o, "volume", cfg->volume) < 0 ||
	    json_add_string(o, "tenant", cfg->tenant) < 0 ||
	    json_add_int(o, "size", (int64_t)cfg->export.size) < 0 ||
	    json_add_bool(o, "read_only", cfg->flags & NBD_FLAG_READ_ONLY) < 0 ||
	    json_add_int(o, "connections", cfg->connections) < 0 ||
	    json_add_string(o, "interface", netlink ? "netlink" : "ioctl") < 0)
		return -ENOMEM;
	return print_json(stdout, o);
}

int cmd_attach(struct ctx *c, const struct args *a)
{
	struct keeper_config cfg = {.volume = a->operand[0],
	                            .tenant = c->admin ? c->tenant : NULL,
	                            .index = -1,
	                            .connections = 1,
	                            .timeout = DEFAULT_TIMEOUT,
	                            .io_timeout = DEFAULT_IO_TIMEOUT,
	                            .read_only = a->readonly};
	char what[WHAT_MAX], reason[HANDSHAKE_REASON_MAX];
	char socket_path[sizeof((struct sockaddr_un *)0)->sun_path];
	struct nbd_nl *nl = NULL;
	int fds[CONNECTIONS_MAX], index, n, r;
	unsigned i;

	snprintf(what, sizeof what, "attach %s", cfg.volume);
	r = check_ref(what, cfg.volume);
	if (r == 0 && a->operand[1] != NULL)
		r = parse_device(what, a->operand[1], &cfg.index);
	if (r == 0 && a->connections != NULL)
		r = parse_count(what, "--connections", a->connections, 1, CONNECTIONS_MAX,
		                &cfg.connections);
	if (r == 0 && a->timeout != NULL)
		r = parse_count(what, "--timeout", a->timeout, 0, TIMEOUT_MAX, &cfg.timeout);
	if (r == 0 && a->io_timeout != NULL)
		r = parse_count(what, "--io-timeout", a->io_timeout, 0, TIMEOUT_MAX,
		                &cfg.io_timeout);
	if (r < 0)
		return r;
	if (c->admin)
		n = snprintf(socket_path, sizeof socket_path, "%s/tenants/%s/nbd.sock", c->dir,
		             c->tenant);
	else
		n = snprintf(socket_path, sizeof socket_path, "%s/nbd.sock", c->dir);
	if (n < 0 || (size_t)n >= sizeof socket_path)
		return error_line(-ENAMETOOLONG, what, "socket path under %s too long", c->dir);
	cfg.socket_path = socket_path;

	/* One connection per socket the kernel gets, each with its own handshake. */
	for (i = 0; i < cfg.connections; i++) {
		struct nbd_export e;

		if (i == 0)
			r = connect_first(c, &cfg, &fds[i], &e, reason, sizeof reason);
		else
			r = keeper_connect(socket_path, cfg.volume, cfg.read_only,
			                   KEEPER_HANDSHAKE_MS, &fds[i], &e, reason, sizeof reason);
		if (r == 0 && i > 0 && (e.size != cfg.export.size || e.flags != cfg.export.flags)) {
			close(fds[i]);
			r = -EPROTO;
			snprintf(reason, sizeof reason,
			         "the server describes the volume differently on connection %u",
			         i + 1);
		}
		if (r < 0) {
			while (i-- > 0)
				close(fds[i]);
			return error_line(r, what, "%s", reason);
		}
		if (i == 0)
			cfg.export = e;
	}
	if (cfg.connections > 1 && !(cfg.export.flags & NBD_FLAG_CAN_MULTI_CONN))
		r = error_line(-EOPNOTSUPP, what, "the server allows one connection, not %u",
		               cfg.connections);
	cfg.block_size = nbd_kernel_block_size(&cfg.export);
	if (r == 0 && cfg.block_size == 0)
		r = error_line(-EOPNOTSUPP, what,
		               "the volume needs blocks of %u bytes, the kernel at most 4096",
		               cfg.export.min_block);
	if (r == 0 && cfg.export.size < cfg.block_size)
		r = error_line(-EOPNOTSUPP, what, "the volume is smaller than one block");
	cfg.flags = cfg.export.flags | (cfg.read_only ? NBD_FLAG_READ_ONLY : 0);
	if (r == 0)
		r = open_interface(what, &nl);
	if (r < 0) {
		for (i = 0; i < cfg.connections; i++)
			close(fds[i]);
		return r;
	}

	r = keeper_attach(&cfg, nl, fds, &index, reason, sizeof reason);
	nbd_nl_close(nl);
	if (r < 0)
		return error_line(r, what, "%s%s", reason, privilege_hint(r));
	return print_attached(c, index, &cfg, nl != NULL);
}

/* Wait until PID is no longer a keeper, at most MS milliseconds. */
static bool wait_keeper(const struct attachment *rec, long ms)
{
	for (long waited = 0; waited < ms; waited += 20) {
		if (!registry_keeper_alive(rec))
			return true;
		nap(20);
	}
	return !registry_keeper_alive(rec);
}

/* Disconnect device INDEX through whichever interface is there. */
static int disconnect(int index)
{
	struct nbd_nl *nl = NULL;
	CLEANUP_CLOSE int fd = -1;
	int r;

	r = nbd_nl_open(&nl);
	if (r == 0) {
		r = nbd_nl_disconnect(nl, index);
		nbd_nl_close(nl);
		return r;
	}
	if (r != -ENOENT)
		return r;
	r = nbd_ioctl_open(index, &fd);
	if (r == 0)
		r = nbd_ioctl_disconnect(fd);
	if (r == 0)
		r = nbd_ioctl_clear(fd);
	return r;
}

int cmd_detach(struct ctx *c, const struct args *a)
{
	char what[WHAT_MAX], user[4200];
	struct attachment rec;
	bool have_record, alive;
	int index, r;

	(void)c;
	snprintf(what, sizeof what, "detach %s", a->operand[0]);
	r = parse_device(what, a->operand[0], &index);
	if (r < 0)
		return r;
	if (!nbd_device_exists(index))
		return error_line(-ENODEV, what, "no such device");
	have_record = registry_read(index, &rec) == 0;
	alive = have_record && registry_keeper_alive(&rec);
	if (!nbd_device_connected(index) && !alive) {
		registry_remove(index, 0);
		return error_line(-ENXIO, what, "not attached");
	}
	/* Pulling a mounted file system's device out from under it loses its data. */
	if (nbd_device_user(index, user, sizeof user) == 0)
		return error_line(-EBUSY, what, "busy: %s", user);

	if (alive) {
		/* Stopped first, so that it does not reconnect what is being disconnected; an
		 * ioctl keeper disconnects its device itself. */
		if (kill(rec.pid, SIGTERM) < 0 && errno != ESRCH)
			return error_line(-errno, what, "cannot stop its keeper (pid %d): %s",
			                  (int)rec.pid, strerror(errno));
		if (!wait_keeper(&rec, KEEPER_STOP_MS))
			return error_line(-ETIMEDOUT, what, "its keeper (pid %d) does not stop",
			                  (int)rec.pid);
	}
	if (nbd_device_connected(index)) {
		r = disconnect(index);
		if (r < 0)
			return error_line(r, what, "%s%s", strerror(-r), privilege_hint(r));
	}
	for (long waited = 0; waited < RELEASE_MS && nbd_device_connected(index); waited += 20)
		nap(20);
	registry_remove(index, 0);
	return 0;
}

/* One attached device, as ls --attached shows it. */
struct attached {
	char device[32];
	char volume[128];
	char tenant[64];
	char interface[8];
	uint64_t size;
	bool read_only;
	pid_t keeper; /* 0: none */
	unsigned connections;
};

/* Describe connected device INDEX into *RET. */
static void describe(int index, struct attached *ret)
{
	struct attachment rec;
	bool alive;

	memset(ret, 0, sizeof *ret);
	snprintf(ret->device, sizeof ret->device, "/dev/nbd%d", index);
	alive = registry_read(index, &rec) == 0 && registry_keeper_alive(&rec);
	if (nbd_device_backend(index, ret->volume, sizeof ret->volume) == 0)
		snprintf(ret->interface, sizeof ret->interface, "netlink");
	if (alive) {
		if (ret->volume[0] == '\0')
			snprintf(ret->volume, sizeof ret->volume, "%s", rec.volume);
		snprintf(ret->tenant, sizeof ret->tenant, "%s", rec.tenant);
		snprintf(ret->interface, sizeof ret->interface, "%s", rec.interface);
		ret->keeper = rec.pid;
		ret->connections = rec.connections;
	}
	nbd_device_size(index, &ret->size);
	nbd_device_read_only(index, &ret->read_only);
}

static int list_json(const struct attached *list, size_t n)
{
	CLEANUP_JSON struct json_object *array = json_object_new_array();

	if (array == NULL)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		const struct attached *d = &list[i];
		struct json_object *o = json_object_new_object();

		if (o == NULL || json_object_array_add(array, o) < 0) {
			json_object_put(o);
			return -ENOMEM;
		}
		if (json_add_string(o, "device", d->device) < 0 ||
		    json_add_string(o, "volume", d->volume[0] ? d->volume : NULL) < 0 ||
		    json_add_string(o, "tenant", d->tenant[0] ? d->tenant : NULL) < 0 ||
		    json_add_int(o, "size", (int64_t)d->size) < 0 ||
		    json_add_bool(o, "read_only", d->read_only) < 0 ||
		    json_add_string(o, "interface", d->interface[0] ? d->interface : NULL) < 0 ||
		    json_add_value(o, "keeper", d->keeper ? json_object_new_int(d->keeper) : NULL) <
		        0 ||
		    json_add_value(o, "connections",
		                   d->connections ? json_object_new_int((int)d->connections)
		                                  : NULL) < 0)
			return -ENOMEM;
	}
	return print_json(stdout, array);
}

static int list_table(const struct attached *list, size_t n, bool quiet)
{
	static const struct column columns[] = {
	    {"DEVICE", ALIGN_LEFT}, {"VOLUME", ALIGN_LEFT}, {"TENANT", ALIGN_LEFT},
	    {"SIZE", ALIGN_RIGHT},  {"ACCESS", ALIGN_LEFT}, {"KEEPER", ALIGN_RIGHT},
	};
	CLEANUP_TABLE struct table *t = NULL;
	int r;

	if (quiet) {
		for (size_t i = 0; i < n; i++)
			printf("%s\n", list[i].device);
		return ferror(stdout) ? -EIO : 0;
	}
	t = table_new(columns, ARRAY_SIZE(columns), true);
	if (t == NULL)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		const struct attached *d = &list[i];
		char size[32], keeper[16];
		const char *cells[ARRAY_SIZE(columns)] = {
		    d->device,
		    d->volume[0] ? d->volume : NULL,
		    d->tenant[0] ? d->tenant : NULL,
		    tp_format_size(d->size, size, sizeof size),
		    d->read_only ? "ro" : "rw",
		    NULL,
		};

		if (d->keeper) {
			snprintf(keeper, sizeof keeper, "%d", (int)d->keeper);
			cells[5] = keeper;
		}
		r = table_add_row(t, cells);
		if (r < 0)
			return r;
	}
	return table_print(t, stdout);
}

int attach_list(struct ctx *c, bool quiet)
{
	CLEANUP_FREE struct attached *list = NULL;
	CLEANUP_FREE int *indices = NULL;
	size_t n = 0, count = 0;
	int r;

	r = nbd_device_list(&indices, &n);
	if (r < 0)
		return error_line(r, "ls --attached", "cannot list /sys/block: %s", strerror(-r));
	list = calloc(n ? n : 1, sizeof *list);
	if (list == NULL)
		return error_line(-ENOMEM, "ls --attached", "%s", strerror(ENOMEM));
	for (size_t i = 0; i < n; i++)
		if (nbd_device_connected(indices[i]))
			describe(indices[i], &list[count++]);
	r = c->json ? list_json(list, count) : list_table(list, count, quiet);
	if (r < 0)
		return error_line(r, "ls --attached", "%s", strerror(-r));
	return 0;
}
