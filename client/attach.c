/* The kernel NBD commands: attach a volume as /dev/nbdN, detach it, and list what is
 * attached (ls --attached). attach negotiates with the tenant's nbdkit on DIR/nbd.sock
 * (DIR/tenants/T/nbd.sock for a host-side attach with --admin --tenant T) and leaves a
 * keeper behind (keeper.h); detach stops the keeper and disconnects the device. */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <linux/nbd.h>

#include "tp-backoff.h"
#include "tp-cleanup.h"
#include "tp-rules.h"
#include "attach.h"
#include "client.h"
#include "handshake.h"
#include "keeper.h"
#include "nbd-device.h"
#include "nbd-ioctl.h"
#include "nbd-netlink.h"
#include "output.h"
#include "registry.h"

#define WHAT_MAX    160
#define TIMEOUT_MAX 86400
/* How long detach waits for a keeper to end, and for the device to let go. */
#define KEEPER_STOP_MS 15000
#define RELEASE_MS     5000
/* How long detach waits for a claim on the device (a mount going away) to end. */
#define CLAIM_MS 10000

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

/* --cache MODE S: none (direct I/O in the server) or writeback, into *RET_DIRECT. */
static int parse_cache(const char *what, const char *s, bool *ret_direct)
{
	if (strcmp(s, "none") != 0 && strcmp(s, "writeback") != 0)
		return error_line(-EINVAL, what, "invalid --cache '%s': expected none or writeback",
		                  s);
	*ret_direct = strcmp(s, "none") == 0;
	return 0;
}

/* "/dev/nbdN" or "nbdN" from operand S into *RET_INDEX. */
static int parse_device(const char *what, const char *s, int *ret_index)
{
	if (nbd_device_parse(s, ret_index) < 0)
		return error_line(-EINVAL, what, "invalid device '%s': expected /dev/nbdN", s);
	return 0;
}

static int set_reason(int r, char *reason, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Write the reason for failure R to REASON and return R. */
static int set_reason(int r, char *reason, size_t len, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(reason, len, fmt, ap);
	va_end(ap);
	return r;
}

/* The reason for a kernel without the NBD driver, which would otherwise show as a
 * missing netlink family or a missing device. */
static int no_nbd_driver(char *reason, size_t len)
{
	return set_reason(-ENODEV, reason, len,
	                  "the kernel's nbd module is not loaded (no /dev/nbd* and no nbd netlink "
	                  "family): modprobe nbd, on the host for a container");
}

/* Which kernel interface to use: netlink where the nbd family is visible, else the
 * ioctl interface. $THINPROXY_NBD_INTERFACE=ioctl or =netlink forces one (for tests of
 * the fallback). *RET_NL is NULL for the ioctl interface. */
static int open_interface(struct nbd_nl **ret_nl, char *reason, size_t len)
{
	const char *force = getenv("THINPROXY_NBD_INTERFACE");
	struct nbd_nl *nl = NULL;
	int r;

	if (force != NULL && strcmp(force, "ioctl") == 0) {
		if (!nbd_driver_present())
			return no_nbd_driver(reason, len);
		*ret_nl = NULL;
		return 0;
	}
	r = nbd_nl_open(&nl);
	if (r == -ENOENT && !nbd_driver_present())
		return no_nbd_driver(reason, len);
	if (r == -ENOENT && (force == NULL || strcmp(force, "netlink") != 0)) {
		/* Not loaded, or out of sight from this network namespace. */
		*ret_nl = NULL;
		return 0;
	}
	if (r < 0)
		return set_reason(r, reason, len, "the kernel's nbd netlink family: %s",
		                  strerror(-r));
	*ret_nl = nl;
	return 0;
}

/* How the daemon says the tenant's nbdkit is ("running", "failed", ...; see
 * supervise_status), asked quietly: NULL if it does not say. */
static const char *nbd_state(const struct attach_request *req, char *buf, size_t size)
{
	CLEANUP_JSON struct json_object *answer = NULL;
	struct json_object *v;
	char path[WHAT_MAX];
	int r;

	if (req->http == NULL)
		return NULL;
	if (req->tenant != NULL)
		snprintf(path, sizeof path, "/v1/tenants/%s/usage", req->tenant);
	else
		snprintf(path, sizeof path, "/v1/usage");
	error_lines_mute(true);
	r = http_json(req->http, NULL, "GET", path, NULL, &answer);
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
static int connect_first(const struct attach_request *req, const struct keeper_config *cfg,
                         int *ret_fd, struct nbd_export *ret_export, char *reason, size_t len)
{
	char state[32];
	int r;

	for (int tries = 1;; tries++) {
		r = keeper_connect(cfg->socket_path, cfg->volume, cfg->read_only, cfg->direct,
		                   KEEPER_HANDSHAKE_MS, ret_fd, ret_export, reason, len);
		if ((r != -ECONNRESET && r != -ETIMEDOUT) ||
		    nbd_state(req, state, sizeof state) == NULL)
			return r;
		if (strcmp(state, "failed") == 0) {
			snprintf(
			    reason, len,
			    "the tenant's NBD server is not running: its nbdkit does not start "
			    "(the host's thinproxyd log says why)");
			return r;
		}
		/* An idle tenant's nbdkit starts for this connection, or exits just as it
		 * comes: another try. */
		if (strcmp(state, "running") != 0 && strcmp(state, "idle") != 0) {
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

struct attach_request attach_defaults(const char *volume, const char *dir, const char *tenant)
{
	return (struct attach_request){.volume = volume,
	                               .dir = dir,
	                               .tenant = tenant,
	                               .index = -1,
	                               .connections = 1,
	                               .timeout = ATTACH_DEFAULT_TIMEOUT,
	                               .io_timeout = ATTACH_DEFAULT_IO_TIMEOUT};
}

int attach_socket_path(const char *dir, const char *tenant, char *buf, size_t len)
{
	int n;

	if (tenant != NULL)
		n = snprintf(buf, len, "%s/tenants/%s/nbd.sock", dir, tenant);
	else
		n = snprintf(buf, len, "%s/nbd.sock", dir);
	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

int attach_volume(const struct attach_request *req, struct attach_result *ret, char *reason,
                  size_t reason_len)
{
	struct keeper_config cfg = {.volume = req->volume,
	                            .tenant = req->tenant,
	                            .index = req->index,
	                            .connections = req->connections,
	                            .timeout = req->timeout,
	                            .io_timeout = req->io_timeout,
	                            .read_only = req->read_only,
	                            .direct = req->direct};
	char socket_path[sizeof((struct sockaddr_un *)0)->sun_path];
	struct nbd_nl *nl = NULL;
	int fds[ATTACH_CONNECTIONS_MAX], index, r;
	unsigned i;

	if (cfg.connections < 1 || cfg.connections > ATTACH_CONNECTIONS_MAX)
		return set_reason(-EINVAL, reason, reason_len, "%u connections: 1 to %d",
		                  cfg.connections, ATTACH_CONNECTIONS_MAX);
	if (attach_socket_path(req->dir, req->tenant, socket_path, sizeof socket_path) < 0)
		return set_reason(-ENAMETOOLONG, reason, reason_len,
		                  "socket path under %s too long", req->dir);
	cfg.socket_path = socket_path;

	/* One connection per socket the kernel gets, each with its own handshake. */
	for (i = 0; i < cfg.connections; i++) {
		struct nbd_export e;

		if (i == 0)
			r = connect_first(req, &cfg, &fds[i], &e, reason, reason_len);
		else
			r = keeper_connect(socket_path, cfg.volume, cfg.read_only, cfg.direct,
			                   KEEPER_HANDSHAKE_MS, &fds[i], &e, reason, reason_len);
		if (r == 0 && i > 0 && (e.size != cfg.export.size || e.flags != cfg.export.flags)) {
			close(fds[i]);
			r = set_reason(
			    -EPROTO, reason, reason_len,
			    "the server describes the volume differently on connection %u", i + 1);
		}
		if (r < 0) {
			while (i-- > 0)
				close(fds[i]);
			return r;
		}
		if (i == 0)
			cfg.export = e;
	}
	r = 0;
	if (cfg.connections > 1 && !(cfg.export.flags & NBD_FLAG_CAN_MULTI_CONN))
		r = set_reason(-EOPNOTSUPP, reason, reason_len,
		               "the server allows one connection, not %u", cfg.connections);
	cfg.block_size = nbd_kernel_block_size(&cfg.export);
	if (r == 0 && cfg.block_size == 0)
		r = set_reason(-EOPNOTSUPP, reason, reason_len,
		               "the volume needs blocks of %u bytes, the kernel at most 4096",
		               cfg.export.min_block);
	if (r == 0 && cfg.export.size < cfg.block_size)
		r = set_reason(-EOPNOTSUPP, reason, reason_len,
		               "the volume is smaller than one block");
	cfg.flags = cfg.export.flags | (cfg.read_only ? NBD_FLAG_READ_ONLY : 0);
	if (r == 0)
		r = open_interface(&nl, reason, reason_len);
	if (r < 0) {
		for (i = 0; i < cfg.connections; i++)
			close(fds[i]);
		return r;
	}

	r = keeper_attach(&cfg, nl, fds, &index, reason, reason_len);
	nbd_nl_close(nl);
	if (r < 0) {
		size_t n = strlen(reason);

		snprintf(reason + n, reason_len - n, "%s", privilege_hint(r));
		return r;
	}
	*ret = (struct attach_result){.index = index,
	                              .size = cfg.export.size,
	                              .read_only = cfg.flags & NBD_FLAG_READ_ONLY,
	                              .netlink = nl != NULL};
	return 0;
}

static int print_attached(const struct ctx *c, const struct attach_request *req,
                          const struct attach_result *res)
{
	CLEANUP_JSON struct json_object *o = NULL;
	char device[32];

	snprintf(device, sizeof device, "/dev/nbd%d", res->index);
	if (!c->json) {
		printf("%s\n", device);
		return 0;
	}
	o = json_object_new_object();
	if (o == NULL || json_add_string(o, "device", device) < 0 ||
	    json_add_string(o, "volume", req->volume) < 0 ||
	    json_add_string(o, "tenant", req->tenant) < 0 ||
	    json_add_int(o, "size", (int64_t)res->size) < 0 ||
	    json_add_bool(o, "read_only", res->read_only) < 0 ||
	    json_add_int(o, "connections", req->connections) < 0 ||
	    json_add_string(o, "cache", req->direct ? "none" : "writeback") < 0 ||
	    json_add_string(o, "interface", res->netlink ? "netlink" : "ioctl") < 0)
		return -ENOMEM;
	return print_json(stdout, o);
}

int cmd_attach(struct ctx *c, const struct args *a)
{
	struct attach_request req =
	    attach_defaults(a->operand[0], c->dir, c->admin ? c->tenant : NULL);
	struct attach_result res;
	char what[WHAT_MAX], reason[HANDSHAKE_REASON_MAX + 256];
	int r;

	req.http = c->http;
	req.read_only = a->readonly;
	snprintf(what, sizeof what, "attach %s", req.volume);
	r = check_ref(what, req.volume);
	if (r == 0 && a->operand[1] != NULL)
		r = parse_device(what, a->operand[1], &req.index);
	if (r == 0 && a->connections != NULL)
		r = parse_count(what, "--connections", a->connections, 1, ATTACH_CONNECTIONS_MAX,
		                &req.connections);
	if (r == 0 && a->timeout != NULL)
		r = parse_count(what, "--timeout", a->timeout, 0, TIMEOUT_MAX, &req.timeout);
	if (r == 0 && a->io_timeout != NULL)
		r = parse_count(what, "--io-timeout", a->io_timeout, 0, TIMEOUT_MAX,
		                &req.io_timeout);
	if (r == 0 && a->cache != NULL)
		r = parse_cache(what, a->cache, &req.direct);
	if (r < 0)
		return r;
	r = attach_volume(&req, &res, reason, sizeof reason);
	if (r < 0)
		return error_line(r, what, "%s", reason);
	return print_attached(c, &req, &res);
}

/* Wait until PID is no longer a keeper, at most MS milliseconds. */
static bool wait_keeper(const struct attachment *rec, long ms)
{
	for (long waited = 0, step = 1; waited < ms; waited += tp_backoff(&step))
		if (!registry_keeper_alive(rec))
			return true;
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

int detach_device(int index, bool mounted_ok, char *reason, size_t reason_len)
{
	char user[4200];
	struct attachment rec;
	bool have_record, alive;
	int r;

	if (!nbd_device_exists(index))
		return set_reason(-ENODEV, reason, reason_len, "no such device");
	have_record = registry_read(index, &rec) == 0;
	alive = have_record && registry_keeper_alive(&rec);
	if (!nbd_device_connected(index) && !alive) {
		registry_remove(index, 0);
		return set_reason(-ENXIO, reason, reason_len, "not attached");
	}
	/* Pulling a mounted file system's device out from under it loses its data. A
	 * mount in another mount namespace is not in ours to read, but it claims the
	 * device as ours does. */
	if (!mounted_ok && nbd_device_user(index, user, sizeof user) == 0)
		return set_reason(-EBUSY, reason, reason_len, "busy: %s", user);
	/* A lazy unmount (MNT_DETACH, as containerd's tests unmount) ends the file system
	 * only once nothing uses it, which writes what it still holds: that claim is worth
	 * waiting for, a while. */
	if (!mounted_ok && !nbd_device_wait_unclaimed(index, CLAIM_MS))
		return set_reason(-EBUSY, reason, reason_len,
		                  "busy: in use (mounted in another mount namespace?)");

	if (alive) {
		/* Stopped first, so that it does not reconnect what is being disconnected; an
		 * ioctl keeper disconnects its device itself. */
		if (kill(rec.pid, SIGTERM) < 0 && errno != ESRCH)
			return set_reason(-errno, reason, reason_len,
			                  "cannot stop its keeper (pid %d): %s", (int)rec.pid,
			                  strerror(errno));
		if (!wait_keeper(&rec, KEEPER_STOP_MS))
			return set_reason(-ETIMEDOUT, reason, reason_len,
			                  "its keeper (pid %d) does not stop", (int)rec.pid);
	}
	if (nbd_device_connected(index)) {
		r = disconnect(index);
		if (r < 0)
			return set_reason(r, reason, reason_len, "%s%s", strerror(-r),
			                  privilege_hint(r));
	}
	/* A mount keeps the device's configuration (and so its sysfs "pid") until it is
	 * unmounted, connection or not: nothing to wait for then. */
	for (long waited = 0, step = 1;
	     !mounted_ok && waited < RELEASE_MS && nbd_device_connected(index);
	     waited += tp_backoff(&step))
		;
	registry_remove(index, 0);
	return 0;
}

int cmd_detach(struct ctx *c, const struct args *a)
{
	char what[WHAT_MAX], reason[4400];
	int index, r;

	(void)c;
	snprintf(what, sizeof what, "detach %s", a->operand[0]);
	r = parse_device(what, a->operand[0], &index);
	if (r < 0)
		return r;
	r = detach_device(index, false, reason, sizeof reason);
	if (r < 0)
		return error_line(r, what, "%s", reason);
	return 0;
}

int attach_find(const char *socket_path, const char *volume, int *ret_index)
{
	CLEANUP_FREE int *indices = NULL;
	size_t n = 0;
	int r;

	r = nbd_device_list(&indices, &n);
	if (r < 0)
		return r;
	for (size_t i = 0; i < n; i++) {
		struct attachment rec;
		char backend[128];

		if (registry_read(indices[i], &rec) < 0 || strcmp(rec.socket, socket_path) != 0 ||
		    strcmp(rec.volume, volume) != 0 || !nbd_device_connected(indices[i]))
			continue;
		/* A record left by a keeper that died, for a device someone attached since
		 * over netlink, names the old volume; the device names the new one. */
		if (nbd_device_backend(indices[i], backend, sizeof backend) == 0 &&
		    strcmp(backend, volume) != 0)
			continue;
		*ret_index = indices[i];
		return 0;
	}
	return -ENOENT;
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
