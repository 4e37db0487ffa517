/* The thin pool over libdevmapper: creating, reattaching or attaching the pool, the pool
 * messages, and activating, resizing and opening thin devices. The only file of
 * thinproxy that includes <libdevmapper.h>. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <linux/fs.h>
#include <linux/loop.h>

#include <libdevmapper.h>

#include "log.h"
#include "pool.h"
#include "thin-metadata.h"
#include "tp-cleanup.h"

#define DEFAULT_DM_NAME       "thinproxy-pool"
#define OWN_POOL_UUID_PREFIX  POOL_UUID_PREFIX "POOL-"
#define DM_NAME_CHARS_MAX     96  /* leaves room for "-<id>" and the UUID prefix */
#define DM_NAME_BUF           128 /* DM_NAME_LEN */
#define DM_UUID_BUF           129 /* DM_UUID_LEN */
#define SECTOR                UINT64_C(512)
#define DEFAULT_BLOCK_SECTORS 128
#define MIN_BLOCK_SECTORS     128     /* dm-thin: 64 KiB .. 1 GiB, multiples of 64 KiB */
#define MAX_BLOCK_SECTORS     2097152 /* 1 GiB */
#define DEFAULT_LOOP_SIZE     (UINT64_C(10) << 30)
/* Metadata of a new embedded pool, by thin_metadata_size's rule: a 4 KiB mapping leaf per
 * 126 data blocks (leaves half full) and a 4 KiB root per thin device, for this many thin
 * devices, times two for snapshots whose writes unshare their mappings. It grows later. */
#define META_BLOCK        UINT64_C(4096)
#define META_LEAF_ENTRIES 126
#define META_THINS        10000
#define META_HEADROOM     2
#define META_MIN          (UINT64_C(2) << 20)
/* dm-thin uses no more of a metadata device than 255 * 2^14 blocks of 4 KiB. */
#define META_MAX (UINT64_C(255) * 16384 * META_BLOCK)

/* error_if_no_space arrived with thin-pool 1.10; everything else we use is older. */
#define THIN_POOL_MIN_MAJOR 1
#define THIN_POOL_MIN_MINOR 10

struct pool {
	char *dm_name;   /* the thin-pool dm device */
	char *thin_base; /* our thin devices are "<thin_base>-<id>" */
	/* The embedded pool's metadata file, which pool_grow_metadata grows; NULL for a pool
	 * on devices or an existing one, whose metadata is the admin's to grow. */
	char *metadata_file;
	uint64_t metadata_max; /* bytes the metadata file may grow to */
	uint32_t major, minor;
	uint32_t block_sectors;
	bool left_suspended;     /* a resume failed: pool_resume_left_suspended has work */
	bool skip_block_zeroing; /* its table says so: new blocks are not zeroed */
	bool own;                /* ours (THINPROXY-POOL-), not an existing pool */
	bool embedded;           /* ours, on loop devices over files */
};

struct thin_names {
	char name[DM_NAME_BUF];
	char uuid[DM_UUID_BUF];
};

static void tp_cleanup_dm_task(struct dm_task **dmt)
{
	if (*dmt != NULL)
		dm_task_destroy(*dmt);
}
#define CLEANUP_DM_TASK __attribute__((cleanup(tp_cleanup_dm_task)))

/* libdevmapper opens /dev/mapper/control without O_CLOEXEC and keeps it open. Releasing
 * the library as every public function returns closes it again, so no program the daemon
 * spawns later inherits it, and flushes pending /dev/mapper node changes. */
static void tp_cleanup_dm_release(int *unused)
{
	(void)unused;
	dm_lib_release();
}
#define DM_RELEASE_ON_RETURN \
	__attribute__((cleanup(tp_cleanup_dm_release), unused)) int dm_release_on_return = 0

/* libdevmapper's log, routed into ours. Its errors come back to our callers as -errno and
 * are logged there with context, so here they are debug detail; its warnings stand alone;
 * its own info lines and ioctl traces are dropped. */
__attribute__((format(printf, 5, 6))) static void log_from_libdevmapper(int level, const char *file,
                                                                        int line,
                                                                        int dm_errno_or_class,
                                                                        const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	int ours;

	(void)file;
	(void)line;
	(void)dm_errno_or_class;
	switch (level & 7) {
	case LOG_WARNING:
		ours = LOG_WARNING;
		break;
	case LOG_INFO:
	case LOG_DEBUG:
		return;
	default:
		ours = LOG_DEBUG;
		break;
	}
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	log_msg(ours, "libdevmapper: %s", msg);
}

/* A task of TYPE about the dm device NAME (NULL: none); NULL when out of memory. */
static struct dm_task *task_new(int type, const char *name)
{
	struct dm_task *dmt = dm_task_create(type);

	if (dmt != NULL && name != NULL && !dm_task_set_name(dmt, name)) {
		dm_task_destroy(dmt);
		return NULL;
	}
	return dmt;
}

/* Run DMT: libdevmapper's 1/0 becomes 0/-errno. */
static int task_run(struct dm_task *dmt)
{
	int e;

	if (dm_task_run(dmt))
		return 0;
	e = dm_task_get_errno(dmt);
	return e > 0 ? -e : -EIO;
}

/* Run DMT, which makes, changes or removes a /dev/mapper node, and wait until the node is
 * right: through udev when it runs (with a cookie), else libdevmapper makes the node itself
 * (it detects a missing udev, or DM_DISABLE_UDEV=1, and then ignores the cookie).
 *
 * Every device we make holds tenant data: the pool maps straight onto the data device,
 * and a thin device holds what its tenant wrote. The cookie's flags keep udev to the
 * /dev/mapper node: no disk rules (blkid, /dev/disk/by-label and by-uuid links from
 * labels a tenant chose), no subsystem rules (LVM's, for LVM's own devices), no other
 * rules (LVM autoactivation of a volume group a tenant wrote, md assembly, bcache).
 * 12-thinproxy.rules does the same for events we do not cause. */
static int task_run_node_op(struct dm_task *dmt)
{
	const uint16_t flags = DM_UDEV_DISABLE_DISK_RULES_FLAG |
	                       DM_UDEV_DISABLE_SUBSYSTEM_RULES_FLAG |
	                       DM_UDEV_DISABLE_OTHER_RULES_FLAG;
	uint32_t cookie = 0;
	int r;

	if (!dm_task_set_cookie(dmt, &cookie, flags))
		return -EIO;
	r = task_run(dmt);
	(void)dm_udev_wait(cookie);
	return r;
}

/* Run a TYPE task (DM_DEVICE_INFO, _STATUS or _TABLE) on NAME and hand it on in *RET_DMT
 * (if not NULL) to read its results. A missing device is no error: RET_INFO->exists is 0.
 * A status is asked without a flush unless FLUSH: to answer one with it, a thin-pool
 * commits its metadata first (writing the superblock and flushing the metadata device),
 * and its counts are right without (they come from the space maps in memory). Every
 * change we make is committed by its own message. */
static int dev_query_flush(int type, const char *name, bool flush, struct dm_task **ret_dmt,
                           struct dm_info *ret_info)
{
	CLEANUP_DM_TASK struct dm_task *dmt = task_new(type, name);
	struct dm_info info;
	int r;

	if (dmt == NULL || (type == DM_DEVICE_STATUS && !flush && !dm_task_no_flush(dmt)))
		return -ENOMEM;
	memset(&info, 0, sizeof info);
	r = task_run(dmt);
	if (r < 0 && r != -ENXIO)
		return r;
	if (r == 0 && !dm_task_get_info(dmt, &info))
		return -EIO;
	*ret_info = info;
	if (ret_dmt != NULL)
		*ret_dmt = TAKE_PTR(dmt);
	return 0;
}

static int dev_query(int type, const char *name, struct dm_task **ret_dmt, struct dm_info *ret_info)
{
	return dev_query_flush(type, name, false, ret_dmt, ret_info);
}

/* The only target of a STATUS or TABLE task: its length in sectors, type and parameters
 * (owned by DMT). -ENODATA if the device has no table or more than one target. */
static int dev_single_target(struct dm_task *dmt, uint64_t *ret_sectors, const char **ret_type,
                             const char **ret_params)
{
	uint64_t start = 0, length = 0;
	char *type = NULL, *params = NULL;

	if (dm_get_next_target(dmt, NULL, &start, &length, &type, &params) != NULL ||
	    type == NULL || start != 0)
		return -ENODATA;
	*ret_sectors = length;
	*ret_type = type;
	*ret_params = params != NULL ? params : "";
	return 0;
}

static int dev_simple(int type, const char *name)
{
	CLEANUP_DM_TASK struct dm_task *dmt = task_new(type, name);

	if (dmt == NULL)
		return -ENOMEM;
	return task_run(dmt);
}

/* Suspend NAME, flushing its I/O and freezing a file system on it. */
static int dev_suspend(const char *name)
{
	return dev_simple(DM_DEVICE_SUSPEND, name);
}

static int dev_resume(const char *name)
{
	CLEANUP_DM_TASK struct dm_task *dmt = task_new(DM_DEVICE_RESUME, name);

	if (dmt == NULL)
		return -ENOMEM;
	return task_run_node_op(dmt);
}

/* Remove NAME, retrying while something (blkid, udev) holds it open for a moment. */
static int dev_remove(const char *name)
{
	CLEANUP_DM_TASK struct dm_task *dmt = task_new(DM_DEVICE_REMOVE, name);

	if (dmt == NULL || !dm_task_retry_remove(dmt))
		return -ENOMEM;
	return task_run_node_op(dmt);
}

/* Create the dm device NAME with UUID and one target, read-only if READ_ONLY. A create
 * is three ioctls (create, load, resume); if a later one fails, the empty map the first
 * left behind is removed again. -EEXIST if NAME or UUID is taken. */
static int dev_create(const char *name, const char *uuid, uint64_t sectors, const char *target,
                      const char *params, bool read_only)
{
	CLEANUP_DM_TASK struct dm_task *create = task_new(DM_DEVICE_CREATE, name);
	CLEANUP_DM_TASK struct dm_task *load = task_new(DM_DEVICE_RELOAD, name);
	CLEANUP_DM_TASK struct dm_task *resume = task_new(DM_DEVICE_RESUME, name);
	int r, rr;

	if (create == NULL || load == NULL || resume == NULL || !dm_task_set_uuid(create, uuid) ||
	    !dm_task_add_target(load, 0, sectors, target, params) ||
	    (read_only && !dm_task_set_ro(load)))
		return -ENOMEM;
	r = task_run(create);
	if (r < 0)
		return r == -EBUSY ? -EEXIST : r;
	r = task_run(load);
	if (r == 0)
		r = task_run_node_op(resume);
	if (r < 0) {
		rr = dev_remove(name);
		if (rr < 0)
			log_errno(LOG_WARNING, rr, "removing the empty dm device %s: %m, ignoring",
			          name);
	}
	return r;
}

/* Parse a whole decimal number: no sign, no blanks, no overflow. */
static int parse_u64(const char *s, uint64_t *ret)
{
	char *end;
	unsigned long long v;

	if (*s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno != 0 || *end != '\0')
		return -EINVAL;
	*ret = v;
	return 0;
}

/* Parse "USED/TOTAL". */
static int parse_fraction(char *s, uint64_t *ret_used, uint64_t *ret_total)
{
	char *slash = strchr(s, '/');
	uint64_t used, total;

	if (slash == NULL)
		return -EINVAL;
	*slash = '\0';
	if (parse_u64(s, &used) < 0 || parse_u64(slash + 1, &total) < 0)
		return -EINVAL;
	*ret_used = used;
	*ret_total = total;
	return 0;
}

/* Split S in place at blanks into at most MAX tokens; returns how many. */
static size_t split(char *s, char **tokens, size_t max)
{
	size_t n = 0;
	char *save = NULL, *tok;

	for (tok = strtok_r(s, " \t\n", &save); tok != NULL && n < max;
	     tok = strtok_r(NULL, " \t\n", &save))
		tokens[n++] = tok;
	return n;
}

/* Names we build dm names from: 1..96 characters from udev's safe set, no leading dot. */
static bool name_ok(const char *name)
{
	size_t len = strlen(name);

	if (len == 0 || len > DM_NAME_CHARS_MAX || name[0] == '.')
		return false;
	return strspn(name,
	              "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789#+-.:=@_") ==
	       len;
}

static void thin_names(const struct pool *pool, uint32_t id, struct thin_names *ret)
{
	snprintf(ret->name, sizeof ret->name, "%s-%" PRIu32, pool->thin_base, id);
	snprintf(ret->uuid, sizeof ret->uuid, "%s%s-%" PRIu32, POOL_UUID_PREFIX, pool->thin_base,
	         id);
}

/* The thin id that the dm name NAME would have as one of our thin devices: the base, a
 * dash, and the id in canonical decimal. */
static int thin_id_from_name(const struct pool *pool, const char *name, uint32_t *ret_id)
{
	size_t len = strlen(pool->thin_base);
	const char *digits = name + len + 1;
	uint64_t id;

	if (strncmp(name, pool->thin_base, len) != 0 || name[len] != '-' ||
	    (digits[0] == '0' && digits[1] != '\0') || parse_u64(digits, &id) < 0 ||
	    id > POOL_THIN_ID_MAX)
		return -EINVAL;
	*ret_id = (uint32_t)id;
	return 0;
}

/* Look up thin ID's dm device with a TYPE task, handed on in *RET_DMT if not NULL.
 * RET_INFO->exists is 0 if it is not active; -EPERM (logged) if the device in its name
 * does not carry its UUID: we never touch a device that is not ours. */
static int thin_query(struct pool *pool, uint32_t id, int type, struct dm_task **ret_dmt,
                      struct dm_info *ret_info)
{
	CLEANUP_DM_TASK struct dm_task *dmt = NULL;
	struct thin_names n;
	struct dm_info info;
	const char *uuid;
	int r;

	thin_names(pool, id, &n);
	r = dev_query(type, n.name, &dmt, &info);
	if (r < 0)
		return r;
	if (info.exists) {
		uuid = dm_task_get_uuid(dmt);
		if (uuid == NULL || strcmp(uuid, n.uuid) != 0) {
			log_warning("refusing to touch dm device %s: its UUID \"%s\" is not %s",
			            n.name, uuid != NULL ? uuid : "", n.uuid);
			return -EPERM;
		}
	}
	*ret_info = info;
	if (ret_dmt != NULL)
		*ret_dmt = TAKE_PTR(dmt);
	return 0;
}

__attribute__((format(printf, 2, 3))) static int pool_message(struct pool *pool, const char *fmt,
                                                              ...)
{
	CLEANUP_DM_TASK struct dm_task *dmt = task_new(DM_DEVICE_TARGET_MSG, pool->dm_name);
	char msg[128];
	va_list ap;
	int r;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	if (dmt == NULL || !dm_task_set_sector(dmt, 0) || !dm_task_set_message(dmt, msg))
		return -ENOMEM;
	r = task_run(dmt);
	log_debug("pool %s: message \"%s\": %s", pool->dm_name, msg, r < 0 ? strerror(-r) : "ok");
	/* dm-thin answers ENODATA for a thin id that is not in its metadata. */
	return r == -ENODATA ? -ENOENT : r;
}

/* Release the pool's metadata snapshot; logged, as nothing else would say it stays. */
static void release_metadata_snap(struct pool *pool)
{
	int r = pool_message(pool, "release_metadata_snap");

	if (r < 0)
		log_errno(LOG_ERR, r, "pool %s: release_metadata_snap: %m", pool->dm_name);
}

/* Find TARGET among the kernel's loaded targets in a LIST_VERSIONS or GET_TARGET_VERSION
 * task's answer. */
static bool versions_find(struct dm_task *dmt, const char *target, uint32_t ret_version[3])
{
	struct dm_versions *v = dm_task_get_versions(dmt), *last;

	if (v == NULL)
		return false;
	do {
		last = v;
		if (strcmp(v->name, target) == 0) {
			memcpy(ret_version, v->version, sizeof v->version);
			return true;
		}
		v = (struct dm_versions *)((char *)v + v->next);
	} while (v != last);
	return false;
}

/* The version of the kernel's dm target TARGET; -ENOENT if the kernel has none. */
static int target_version(const char *target, uint32_t ret_version[3])
{
	CLEANUP_DM_TASK struct dm_task *list = task_new(DM_DEVICE_LIST_VERSIONS, NULL);
	CLEANUP_DM_TASK struct dm_task *get = task_new(DM_DEVICE_GET_TARGET_VERSION, target);
	int r;

	if (list == NULL || get == NULL)
		return -ENOMEM;
	r = task_run(list);
	if (r < 0)
		return r;
	if (versions_find(list, target, ret_version))
		return 0;
	/* Not loaded yet. Asking for this one target makes the kernel load its module
	 * (request_module "dm-<target>"), as loading a table that names it would. */
	if (task_run(get) == 0 && versions_find(get, target, ret_version))
		return 0;
	return -ENOENT;
}

/* Why libdevmapper made no task. It makes one only once it has reached the kernel
 * through its control node, and a kernel without device-mapper would otherwise pass for
 * ENOMEM. It has already tried to load dm-mod (opening the node does, by its fixed
 * minor); the kernel lists the control device once dm-mod is in. */
static int explain_no_task(void)
{
	CLEANUP_CLOSE int fd = -1;
	char path[PATH_MAX];

	if (access("/sys/class/misc/device-mapper", F_OK) < 0) {
		log_error("the kernel has no device-mapper (modprobe dm-mod; CONFIG_BLK_DEV_DM)");
		return -EOPNOTSUPP;
	}
	snprintf(path, sizeof path, "%s/control", dm_dir());
	fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return log_errno(LOG_ERR, -errno,
		                 "cannot reach device-mapper through %s (are we root?): %m", path);
	return -ENOMEM;
}

/* libdevmapper's API (1.02), the kernel's dm ioctl interface (4) and thin-pool. */
static int check_versions(void)
{
	CLEANUP_DM_TASK struct dm_task *dmt = task_new(DM_DEVICE_VERSION, NULL);
	char lib[64], driver[64];
	uint32_t v[3];
	int r;

	if (dmt == NULL)
		return explain_no_task();
	if (!dm_get_library_version(lib, sizeof lib))
		return -EIO;
	if (strncmp(lib, "1.02.", 5) != 0) {
		log_error("libdevmapper %s: thinproxy needs the 1.02 library interface", lib);
		return -EOPNOTSUPP;
	}
	r = task_run(dmt);
	if (r < 0 || !dm_task_get_driver_version(dmt, driver, sizeof driver)) {
		log_errno(LOG_ERR, r < 0 ? r : -EIO,
		          "cannot reach device-mapper through /dev/mapper/control (is dm-mod "
		          "loaded, and are we root?): %m");
		return r < 0 && r != -EIO ? r : -EOPNOTSUPP;
	}
	if (strncmp(driver, "4.", 2) != 0) {
		log_error("device-mapper ioctl interface %s: thinproxy needs version 4", driver);
		return -EOPNOTSUPP;
	}
	r = target_version("thin-pool", v);
	if (r == -ENOENT || (r == 0 && target_version("thin", v) == -ENOENT)) {
		log_error("the kernel has no dm thin-pool target (modprobe dm-thin-pool; "
		          "CONFIG_DM_THIN_PROVISIONING)");
		return -EOPNOTSUPP;
	}
	if (r < 0)
		return log_errno(LOG_ERR, r, "listing device-mapper targets: %m");
	if (v[0] != THIN_POOL_MIN_MAJOR || v[1] < THIN_POOL_MIN_MINOR) {
		log_error("dm thin-pool target %" PRIu32 ".%" PRIu32 ".%" PRIu32
		          ": thinproxy needs %d.x with x >= %d",
		          v[0], v[1], v[2], THIN_POOL_MIN_MAJOR, THIN_POOL_MIN_MINOR);
		return -EOPNOTSUPP;
	}
	log_debug("libdevmapper %s, dm driver %s, thin-pool %" PRIu32 ".%" PRIu32 ".%" PRIu32, lib,
	          driver, v[0], v[1], v[2]);
	return 0;
}

/* Metadata for DATA_BYTES of data in BLOCK_BYTES blocks (see META_THINS), within
 * dm-thin's limits. */
static uint64_t metadata_size(uint64_t data_bytes, uint64_t block_bytes)
{
	uint64_t leaves = (data_bytes / block_bytes + META_LEAF_ENTRIES - 1) / META_LEAF_ENTRIES;
	uint64_t bytes = (leaves + META_THINS) * META_BLOCK * META_HEADROOM;
	uint64_t mib = UINT64_C(1) << 20;

	bytes = (bytes + mib - 1) / mib * mib;
	return bytes > META_MAX ? META_MAX : bytes;
}

/* Open NAME in DIR_FD, creating it as a sparse file, grown to at least SIZE bytes (never
 * shrunk: the pool's data and metadata live in it). */
static int sparse_file(int dir_fd, const char *name, uint64_t size, uint64_t *ret_size, int *ret_fd)
{
	CLEANUP_CLOSE int fd =
	    openat(dir_fd, name, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
	struct stat st;

	if (fd < 0 || fstat(fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode))
		return -EINVAL;
	if ((uint64_t)st.st_size < size) {
		if (st.st_size > 0)
			log_notice("growing %s from %" PRIu64 " to %" PRIu64 " bytes", name,
			           (uint64_t)st.st_size, size);
		if (ftruncate(fd, (off_t)size) < 0)
			return -errno;
		st.st_size = (off_t)size;
	}
	*ret_size = (uint64_t)st.st_size;
	*ret_fd = TAKE_FD(fd);
	return 0;
}

/* Attach FILE_FD to a free loop device that clears itself when its last user (the pool)
 * lets go. Returns the open loop device; its node stays ours only while it is open. */
static int loop_attach(int file_fd, const char *file_name)
{
	CLEANUP_CLOSE int control = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
	struct loop_config config;
	char path[32];
	int attempt, n;

	if (control < 0)
		return -errno;
	memset(&config, 0, sizeof config);
	config.fd = (uint32_t)file_fd;
	config.info.lo_flags = LO_FLAGS_AUTOCLEAR;
	snprintf((char *)config.info.lo_file_name, sizeof config.info.lo_file_name, "%s",
	         file_name);
	for (attempt = 0; attempt < 8; attempt++) {
		CLEANUP_CLOSE int fd = -1;

		n = ioctl(control, LOOP_CTL_GET_FREE);
		if (n < 0)
			return -errno;
		snprintf(path, sizeof path, "/dev/loop%d", n);
		fd = open(path, O_RDWR | O_CLOEXEC);
		if (fd < 0)
			return -errno;
		if (ioctl(fd, LOOP_CONFIGURE, &config) == 0)
			return TAKE_FD(fd);
		/* Someone configured loop N between our GET_FREE and CONFIGURE: ask again. */
		if (errno != EBUSY)
			return -errno;
	}
	return -EBUSY;
}

/* Size and device number of the block device FD. */
static int blockdev_geometry(int fd, uint64_t *ret_bytes, dev_t *ret_devnum)
{
	struct stat st;
	uint64_t bytes;

	if (fstat(fd, &st) < 0)
		return -errno;
	if (!S_ISBLK(st.st_mode))
		return -ENOTBLK;
	if (ioctl(fd, BLKGETSIZE64, &bytes) < 0)
		return -errno;
	*ret_bytes = bytes;
	*ret_devnum = st.st_rdev;
	return 0;
}

/* Create our pool NAME (UUID) on METADATA and DATA of DATA_BYTES. Block zeroing stays on:
 * a tenant must never read blocks another tenant freed. error_if_no_space: writers get
 * ENOSPC at once instead of hanging when the pool is full. */
static int make_pool(struct pool *p, const char *uuid, dev_t metadata, dev_t data,
                     uint64_t data_bytes)
{
	uint64_t blocks = data_bytes / SECTOR / p->block_sectors;
	char params[128];
	int r;

	if (blocks == 0) {
		log_error("pool %s: the data device is smaller than one %" PRIu64 " KiB block",
		          p->dm_name, p->block_sectors * SECTOR / 1024);
		return -EINVAL;
	}
	snprintf(params, sizeof params, "%u:%u %u:%u %" PRIu32 " %" PRIu64 " 1 error_if_no_space",
	         major(metadata), minor(metadata), major(data), minor(data), p->block_sectors,
	         blocks / 10);
	r = dev_create(p->dm_name, uuid, blocks * p->block_sectors, "thin-pool", params, false);
	if (r < 0)
		return log_errno(LOG_ERR, r, "creating thin-pool %s (%s): %m", p->dm_name, params);
	log_notice("pool %s: created, %" PRIu64 " blocks of %" PRIu64 " KiB", p->dm_name, blocks,
	           p->block_sectors * SECTOR / 1024);
	return 0;
}

/* Our pool on the configured data and metadata block devices. */
static int make_pool_on_devices(struct pool *p, const char *uuid, const char *data_path,
                                const char *metadata_path)
{
	CLEANUP_CLOSE int data = open(data_path, O_RDONLY | O_CLOEXEC);
	CLEANUP_CLOSE int metadata = open(metadata_path, O_RDONLY | O_CLOEXEC);
	uint64_t data_bytes, metadata_bytes;
	dev_t data_dev, metadata_dev;
	int r;

	if (data < 0)
		return log_errno(LOG_ERR, -errno, "pool data device %s: %m", data_path);
	if (metadata < 0)
		return log_errno(LOG_ERR, -errno, "pool metadata device %s: %m", metadata_path);
	r = blockdev_geometry(data, &data_bytes, &data_dev);
	if (r < 0)
		return log_errno(LOG_ERR, r, "pool data device %s: %m", data_path);
	r = blockdev_geometry(metadata, &metadata_bytes, &metadata_dev);
	if (r < 0)
		return log_errno(LOG_ERR, r, "pool metadata device %s: %m", metadata_path);
	return make_pool(p, uuid, metadata_dev, data_dev, data_bytes);
}

/* The embedded default: our pool on STATE_DIR/pool/{data,metadata}.img over loop devices
 * that go away with the pool. On a restart after the pool went away (a reboot), the same
 * files come back and dm-thin finds its metadata in them. */
static int make_embedded_pool(struct pool *p, const char *uuid, const char *state_dir,
                              uint64_t loop_size, uint64_t meta_size)
{
	CLEANUP_CLOSE int state = -1, dir = -1, data = -1, metadata = -1;
	CLEANUP_CLOSE int data_loop = -1, metadata_loop = -1;
	uint64_t block_bytes = p->block_sectors * SECTOR, data_bytes, metadata_bytes, unused;
	dev_t data_dev, metadata_dev;
	int r;

	if (loop_size == 0)
		loop_size = DEFAULT_LOOP_SIZE;
	loop_size = loop_size / block_bytes * block_bytes;
	if (loop_size == 0) {
		log_error("pool %s: loop size below one block", p->dm_name);
		return -EINVAL;
	}
	if (mkdir(state_dir, 0700) < 0 && errno != EEXIST)
		return log_errno(LOG_ERR, -errno, "creating state directory %s: %m", state_dir);
	state = open(state_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (state < 0)
		return log_errno(LOG_ERR, -errno, "state directory %s: %m", state_dir);
	if (mkdirat(state, "pool", 0700) < 0 && errno != EEXIST)
		return log_errno(LOG_ERR, -errno, "creating %s/pool: %m", state_dir);
	dir = openat(state, "pool", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (dir < 0)
		return log_errno(LOG_ERR, -errno, "%s/pool: %m", state_dir);

	r = sparse_file(dir, "data.img", loop_size, &data_bytes, &data);
	if (r < 0)
		return log_errno(LOG_ERR, r, "%s/pool/data.img: %m", state_dir);
	r = sparse_file(dir, "metadata.img",
	                meta_size != 0 ? meta_size : metadata_size(data_bytes, block_bytes),
	                &metadata_bytes, &metadata);
	if (r < 0)
		return log_errno(LOG_ERR, r, "%s/pool/metadata.img: %m", state_dir);

	data_loop = loop_attach(data, "thinproxy pool data");
	if (data_loop < 0 && access("/dev/loop-control", F_OK) < 0)
		return log_errno(LOG_ERR, -EOPNOTSUPP,
		                 "the kernel has no loop devices for the embedded pool (no "
		                 "/dev/loop-control; modprobe loop)");
	if (data_loop < 0)
		return log_errno(LOG_ERR, data_loop, "loop device for %s/pool/data.img: %m",
		                 state_dir);
	metadata_loop = loop_attach(metadata, "thinproxy pool metadata");
	if (metadata_loop < 0)
		return log_errno(LOG_ERR, metadata_loop, "loop device for %s/pool/metadata.img: %m",
		                 state_dir);
	r = blockdev_geometry(data_loop, &unused, &data_dev);
	if (r == 0)
		r = blockdev_geometry(metadata_loop, &unused, &metadata_dev);
	if (r < 0)
		return log_errno(LOG_ERR, r, "pool loop devices: %m");
	/* The pool now holds both loop devices; closing ours on return leaves them to it
	 * (or, if the pool could not be made, clears them). */
	return make_pool(p, uuid, metadata_dev, data_dev, data_bytes);
}

/* Our own pool: reattach if it is active, else create it. */
static int open_own_pool(struct pool *p, const struct pool_config *cfg)
{
	CLEANUP_DM_TASK struct dm_task *dmt = NULL;
	char uuid[DM_UUID_BUF];
	struct dm_info info;
	const char *found;
	int r;

	snprintf(uuid, sizeof uuid, "%s%s", OWN_POOL_UUID_PREFIX, p->dm_name);
	r = dev_query(DM_DEVICE_INFO, p->dm_name, &dmt, &info);
	if (r < 0)
		return log_errno(LOG_ERR, r, "looking up dm device %s: %m", p->dm_name);
	if (info.exists) {
		found = dm_task_get_uuid(dmt);
		if (found == NULL || strcmp(found, uuid) != 0) {
			log_error("dm device %s exists but is not our pool (UUID \"%s\", not %s): "
			          "refusing to use it; configure another pool name",
			          p->dm_name, found != NULL ? found : "", uuid);
			return -EEXIST;
		}
		log_info("pool %s: reattached", p->dm_name);
		p->own = true;
		return 0;
	}
	if (cfg->attach_only)
		return -ENODEV;
	p->own = true;
	if (cfg->data_dev != NULL)
		return make_pool_on_devices(p, uuid, cfg->data_dev, cfg->metadata_dev);
	return make_embedded_pool(p, uuid, cfg->state_dir, cfg->loop_size, cfg->metadata_size);
}

/* Read the pool device's number and block size from its live table. */
static int read_pool_table(struct pool *p)
{
	CLEANUP_DM_TASK struct dm_task *dmt = NULL;
	CLEANUP_FREE char *copy = NULL;
	const char *type, *params;
	struct dm_info info;
	uint64_t sectors, block_sectors;
	char *tok[16];
	size_t n, i;
	int r;

	r = dev_query(DM_DEVICE_TABLE, p->dm_name, &dmt, &info);
	if (r < 0)
		return log_errno(LOG_ERR, r, "reading the table of dm device %s: %m", p->dm_name);
	if (!info.exists) {
		log_error("no dm device %s: the configured pool does not exist", p->dm_name);
		return -ENOENT;
	}
	if (dev_single_target(dmt, &sectors, &type, &params) < 0 ||
	    strcmp(type, "thin-pool") != 0) {
		log_error("dm device %s is not a thin-pool", p->dm_name);
		return -EINVAL;
	}
	/* "<metadata dev> <data dev> <block sectors> <low water mark> [<#features>
	 * <feature>...]": the kernel lists at most five features. */
	copy = strdup(params);
	if (copy == NULL)
		return -ENOMEM;
	n = split(copy, tok, 16);
	if (n < 4 || parse_u64(tok[2], &block_sectors) < 0 || block_sectors == 0 ||
	    block_sectors > MAX_BLOCK_SECTORS) {
		log_error("dm device %s: unexpected thin-pool table \"%s\"", p->dm_name, params);
		return -EINVAL;
	}
	p->major = info.major;
	p->minor = info.minor;
	p->block_sectors = (uint32_t)block_sectors;
	p->skip_block_zeroing = false;
	for (i = 5; i < n; i++)
		p->skip_block_zeroing |= strcmp(tok[i], "skip_block_zeroing") == 0;
	return 0;
}

/* pool_for_each_active callback: resume a thin device a crash left suspended. */
static int resume_if_suspended(uint32_t id, void *opaque)
{
	struct pool *pool = opaque;
	struct thin_names n;
	struct dm_info info;
	int r;

	if (thin_query(pool, id, DM_DEVICE_INFO, NULL, &info) < 0 || !info.exists ||
	    !info.suspended)
		return 0;
	thin_names(pool, id, &n);
	r = dev_resume(n.name);
	if (r < 0) {
		log_errno(LOG_WARNING, r, "resuming %s, left suspended: %m; trying again later",
		          n.name);
		pool->left_suspended = true;
	} else {
		log_notice("resumed %s, left suspended", n.name);
	}
	return 0;
}

void pool_close(struct pool *pool)
{
	if (pool == NULL)
		return;
	free(pool->dm_name);
	free(pool->thin_base);
	free(pool->metadata_file);
	free(pool);
}

/* Warn about the loop device DEVNUM (under the embedded pool a moment ago) if it is still
 * attached: it clears itself once the pool lets go of it (LO_FLAGS_AUTOCLEAR), unless
 * something else holds it open. */
static void check_loop_cleared(dev_t devnum)
{
	char path[96];

	snprintf(path, sizeof path, "/sys/dev/block/%u:%u/loop/backing_file", major(devnum),
	         minor(devnum));
	if (access(path, F_OK) == 0)
		log_warning("loop device %u:%u of the pool is still attached: something else "
		            "holds it open; it goes when that lets go",
		            major(devnum), minor(devnum));
}

int pool_remove(struct pool *pool)
{
	DM_RELEASE_ON_RETURN;
	CLEANUP_DM_TASK struct dm_task *dmt = NULL;
	char uuid[DM_UUID_BUF];
	struct dm_info info;
	const char *found, *type, *params;
	unsigned meta_major, meta_minor, data_major, data_minor;
	uint64_t sectors;
	bool loops;
	int r;

	if (!pool->own)
		return -EPERM;
	snprintf(uuid, sizeof uuid, "%s%s", OWN_POOL_UUID_PREFIX, pool->dm_name);
	r = dev_query(DM_DEVICE_TABLE, pool->dm_name, &dmt, &info);
	if (r < 0)
		return r;
	if (!info.exists)
		return 0;
	found = dm_task_get_uuid(dmt);
	if (found == NULL || strcmp(found, uuid) != 0) {
		log_warning("refusing to remove dm device %s: its UUID \"%s\" is not %s",
		            pool->dm_name, found != NULL ? found : "", uuid);
		return -EPERM;
	}
	/* Each active thin device holds the pool open; dm would refuse the remove. */
	if (info.open_count > 0)
		return -EBUSY;
	/* "<metadata dev> <data dev> ...": the embedded pool's loop devices. */
	loops =
	    pool->embedded && dev_single_target(dmt, &sectors, &type, &params) == 0 &&
	    sscanf(params, "%u:%u %u:%u", &meta_major, &meta_minor, &data_major, &data_minor) == 4;
	r = dev_remove(pool->dm_name);
	if (r < 0)
		return r == -ENXIO ? 0 : r;
	if (loops) {
		check_loop_cleared(makedev(meta_major, meta_minor));
		check_loop_cleared(makedev(data_major, data_minor));
	}
	return 0;
}

int pool_open(const struct pool_config *cfg, struct pool **ret_pool)
{
	DM_RELEASE_ON_RETURN;
	struct pool *p = NULL;
	struct pool_status status;
	const char *base;
	int r;

	dm_log_with_errno_init(log_from_libdevmapper);
	if (cfg->existing != NULL && (cfg->data_dev != NULL || cfg->metadata_dev != NULL)) {
		log_error("pool: configure either an existing pool or data and metadata devices");
		return -EINVAL;
	}
	if ((cfg->data_dev == NULL) != (cfg->metadata_dev == NULL)) {
		log_error("pool: a data device needs a metadata device, and the other way round");
		return -EINVAL;
	}
	if (cfg->existing == NULL && cfg->data_dev == NULL && cfg->state_dir == NULL) {
		log_error("pool: no existing pool, devices or state directory configured");
		return -EINVAL;
	}
	base = cfg->dm_name != NULL    ? cfg->dm_name
	       : cfg->existing != NULL ? cfg->existing
	                               : DEFAULT_DM_NAME;
	if (!name_ok(base)) {
		log_error("pool: \"%s\" cannot name thin devices: use at most %d characters from "
		          "A-Z a-z 0-9 #+-.:=@_",
		          base, DM_NAME_CHARS_MAX);
		return -EINVAL;
	}
	if (cfg->existing != NULL &&
	    (cfg->existing[0] == '\0' || strlen(cfg->existing) >= DM_NAME_BUF ||
	     strchr(cfg->existing, '/') != NULL)) {
		log_error("pool: \"%s\" is not a dm device name", cfg->existing);
		return -EINVAL;
	}
	r = check_versions();
	if (r < 0)
		return r;

	p = calloc(1, sizeof *p);
	if (p == NULL)
		return -ENOMEM;
	p->dm_name = strdup(cfg->existing != NULL ? cfg->existing : base);
	p->thin_base = strdup(base);
	p->block_sectors = cfg->block_sectors != 0 ? cfg->block_sectors : DEFAULT_BLOCK_SECTORS;
	p->embedded = cfg->existing == NULL && cfg->data_dev == NULL;
	if (p->dm_name == NULL || p->thin_base == NULL) {
		r = -ENOMEM;
		goto fail;
	}
	if (p->block_sectors < MIN_BLOCK_SECTORS || p->block_sectors > MAX_BLOCK_SECTORS ||
	    p->block_sectors % MIN_BLOCK_SECTORS != 0) {
		log_error("pool: block size of %" PRIu32 " sectors: dm-thin needs a multiple of "
		          "128 sectors (64 KiB) up to 1 GiB",
		          p->block_sectors);
		r = -EINVAL;
		goto fail;
	}

	if (cfg->existing == NULL) {
		r = open_own_pool(p, cfg);
		if (r < 0)
			goto fail;
	}
	if (cfg->existing == NULL && cfg->data_dev == NULL) {
		if (asprintf(&p->metadata_file, "%s/pool/metadata.img", cfg->state_dir) < 0) {
			p->metadata_file = NULL;
			r = -ENOMEM;
			goto fail;
		}
		p->metadata_max = cfg->metadata_max != 0 && cfg->metadata_max < META_MAX
		                      ? cfg->metadata_max
		                      : META_MAX;
	}
	r = read_pool_table(p);
	if (r < 0)
		goto fail;
	/* dm-thin zeroes a block when it first maps it, unless the pool was made with
	 * skip_block_zeroing: then a tenant reads whatever the block held before, which may
	 * be another tenant's data that was freed (a removed volume, a trim). Ours never
	 * are; an existing pool has to be accepted explicitly. */
	if (p->skip_block_zeroing && !cfg->allow_skip_block_zeroing) {
		log_error("pool %s does not zero new blocks (skip_block_zeroing): a tenant would "
		          "read data that other tenants freed; recreate it without "
		          "skip_block_zeroing, or start with --allow-skip-block-zeroing if every "
		          "tenant may read every other's old data",
		          p->dm_name);
		r = -EPERM;
		goto fail;
	}
	if (p->skip_block_zeroing)
		log_warning("pool %s does not zero new blocks (skip_block_zeroing, allowed): "
		            "tenants can read data that other tenants freed",
		            p->dm_name);

	r = pool_get_status(p, &status);
	if (r < 0) {
		log_errno(LOG_ERR, r,
		          "pool %s has failed (%m): check its metadata with thin_check, "
		          "repair it with thin_repair",
		          p->dm_name);
		goto fail;
	}
	if (status.needs_check)
		log_warning("pool %s: its metadata needs checking (thin_check); the pool is "
		            "read-only until then",
		            p->dm_name);
	else if (status.read_only)
		log_warning("pool %s is read-only", p->dm_name);
	if (!status.error_if_no_space)
		log_warning("pool %s queues I/O when it is full (queue_if_no_space): writers will "
		            "hang instead of failing with ENOSPC",
		            p->dm_name);
	log_info("pool %s: %" PRIu64 " of %" PRIu64 " blocks of %" PRIu64
	         " KiB used, transaction id %" PRIu64,
	         p->dm_name, status.data_used, status.data_total, pool_block_size(p) / 1024,
	         status.transaction_id);

	r = pool_for_each_active(p, resume_if_suspended, p);
	if (r < 0)
		log_errno(LOG_WARNING, r, "pool %s: listing thin devices: %m, ignoring",
		          p->dm_name);
	/* A metadata snapshot held in our own pool is one a walk of ours left when the
	 * daemon died: it would hold up every walk to come. In a pool of the admin's it may
	 * be a tool's (thin_dump -m), and stays. */
	if (p->own && status.held_root != 0) {
		log_info("pool %s: releasing the metadata snapshot an earlier run left held",
		         p->dm_name);
		release_metadata_snap(p);
	}
	*ret_pool = p;
	return 0;

fail:
	pool_close(p);
	return r;
}

/* The device number of the pool's metadata device, from its table. */
static int metadata_devnum(struct pool *pool, dev_t *ret_devnum)
{
	CLEANUP_DM_TASK struct dm_task *dmt = NULL;
	const char *type, *params;
	struct dm_info info;
	uint64_t sectors;
	unsigned maj, min;
	int r;

	r = dev_query(DM_DEVICE_TABLE, pool->dm_name, &dmt, &info);
	if (r < 0)
		return r;
	if (!info.exists)
		return -ENODEV;
	r = dev_single_target(dmt, &sectors, &type, &params);
	if (r < 0 || strcmp(type, "thin-pool") != 0 || sscanf(params, "%u:%u ", &maj, &min) != 2)
		return -EINVAL;
	*ret_devnum = makedev(maj, min);
	return 0;
}

/* Open the loop device DEVNUM if the file FILE (open) is what it reads. */
static int open_loop_of(dev_t devnum, int file, int *ret_fd)
{
	char sys[64], link[PATH_MAX], path[NAME_MAX + 8];
	CLEANUP_CLOSE int fd = -1;
	struct loop_info64 li;
	struct stat st, fst;
	const char *name;
	ssize_t n;

	snprintf(sys, sizeof sys, "/sys/dev/block/%u:%u", major(devnum), minor(devnum));
	n = readlink(sys, link, sizeof link - 1);
	if (n < 0)
		return -errno;
	link[n] = '\0';
	name = strrchr(link, '/') ? strrchr(link, '/') + 1 : link;
	if (strlen(name) > NAME_MAX)
		return -ENAMETOOLONG;
	snprintf(path, sizeof path, "/dev/%s", name);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0 || fstat(file, &fst) < 0)
		return -errno;
	if (!S_ISBLK(st.st_mode) || st.st_rdev != devnum)
		return -ENODEV;
	if (ioctl(fd, LOOP_GET_STATUS64, &li) < 0)
		return errno == ENXIO ? -ENODEV : -errno;
	if (li.lo_inode != fst.st_ino || li.lo_device != fst.st_dev)
		return -EPERM;
	*ret_fd = TAKE_FD(fd);
	return 0;
}

int pool_grow_metadata(struct pool *pool, uint64_t *ret_bytes)
{
	DM_RELEASE_ON_RETURN;
	CLEANUP_CLOSE int file = -1;
	CLEANUP_CLOSE int loop = -1;
	uint64_t bytes, mib = UINT64_C(1) << 20;
	struct stat st;
	dev_t devnum;
	int r;

	if (pool->metadata_file == NULL)
		return -EOPNOTSUPP;
	file = open(pool->metadata_file, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
	if (file < 0 || fstat(file, &st) < 0)
		return log_errno(LOG_ERR, -errno, "pool %s: metadata file %s: %m", pool->dm_name,
		                 pool->metadata_file);
	if ((uint64_t)st.st_size >= pool->metadata_max)
		return -ENOSPC;
	bytes = (uint64_t)st.st_size * 2;
	bytes = (bytes + mib - 1) / mib * mib;
	if (bytes > pool->metadata_max)
		bytes = pool->metadata_max;
	/* Only the loop device made of this very file: the check before any change. */
	r = metadata_devnum(pool, &devnum);
	if (r == 0)
		r = open_loop_of(devnum, file, &loop);
	if (r < 0)
		return log_errno(LOG_ERR, r,
		                 "pool %s: its metadata device is not the loop device of %s (%m): "
		                 "not growing it",
		                 pool->dm_name, pool->metadata_file);
	if (ftruncate(file, (off_t)bytes) < 0)
		return log_errno(LOG_ERR, -errno, "pool %s: grow %s to %" PRIu64 " bytes: %m",
		                 pool->dm_name, pool->metadata_file, bytes);
	if (ioctl(loop, LOOP_SET_CAPACITY, 0) < 0)
		return log_errno(LOG_ERR, -errno, "pool %s: LOOP_SET_CAPACITY on its metadata: %m",
		                 pool->dm_name);
	/* dm-thin looks at the metadata device's size when the pool resumes. */
	r = dev_suspend(pool->dm_name);
	if (r < 0)
		return log_errno(LOG_ERR, r, "pool %s: suspend to grow its metadata: %m",
		                 pool->dm_name);
	r = dev_resume(pool->dm_name);
	if (r < 0)
		return log_errno(LOG_ERR, r,
		                 "pool %s: resume after growing its metadata: %m; the pool is "
		                 "left suspended",
		                 pool->dm_name);
	*ret_bytes = bytes;
	return 0;
}

uint64_t pool_metadata_limit(const struct pool *pool)
{
	return pool->metadata_file != NULL ? pool->metadata_max : 0;
}

const char *pool_name(const struct pool *pool)
{
	return pool->dm_name;
}

uint64_t pool_block_size(const struct pool *pool)
{
	return pool->block_sectors * SECTOR;
}

/* The pool's status, asked with a flush if FLUSH (see dev_query_flush). */
static int read_status(struct pool *pool, bool flush, struct pool_status *ret_status)
{
	CLEANUP_DM_TASK struct dm_task *dmt = NULL;
	CLEANUP_FREE char *copy = NULL;
	struct pool_status s;
	const char *type, *params;
	struct dm_info info;
	uint64_t sectors;
	char *tok[9];
	size_t n;
	int r;

	r = dev_query_flush(DM_DEVICE_STATUS, pool->dm_name, flush, &dmt, &info);
	if (r < 0)
		return r;
	if (!info.exists)
		return -ENODEV;
	r = dev_single_target(dmt, &sectors, &type, &params);
	if (r < 0 || strcmp(type, "thin-pool") != 0)
		return -EINVAL;
	copy = strdup(params);
	if (copy == NULL)
		return -ENOMEM;
	/* "<transaction id> <used>/<total metadata blocks> <used>/<total data blocks>
	 * <held root> ro|rw|out_of_data_space [no_]discard_passdown
	 * error|queue_if_no_space needs_check|- [metadata low water mark]", or "Fail". */
	n = split(copy, tok, 9);
	if (n == 1 && (strcmp(tok[0], "Fail") == 0 || strcmp(tok[0], "Error") == 0))
		return -EIO;
	memset(&s, 0, sizeof s);
	if (n < 7 || parse_u64(tok[0], &s.transaction_id) < 0 ||
	    parse_fraction(tok[1], &s.meta_used, &s.meta_total) < 0 ||
	    parse_fraction(tok[2], &s.data_used, &s.data_total) < 0) {
		log_error("pool %s: unexpected status \"%s\"", pool->dm_name, params);
		return -EINVAL;
	}
	s.block_sectors = pool->block_sectors;
	s.read_only = strcmp(tok[4], "ro") == 0;
	s.out_of_data_space = strcmp(tok[4], "out_of_data_space") == 0;
	s.error_if_no_space = strcmp(tok[6], "error_if_no_space") == 0;
	s.needs_check = n > 7 && strcmp(tok[7], "needs_check") == 0;
	if (strcmp(tok[3], "-") != 0 && (parse_u64(tok[3], &s.held_root) < 0 || s.held_root == 0)) {
		log_error("pool %s: unexpected held root in status \"%s\"", pool->dm_name, params);
		return -EINVAL;
	}
	*ret_status = s;
	return 0;
}

int pool_get_status(struct pool *pool, struct pool_status *ret_status)
{
	DM_RELEASE_ON_RETURN;
	int r = read_status(pool, false, ret_status);

	/* A pool out of data space looks for free space again only when it commits, which
	 * it does not do by itself in that mode: blocks a trim freed stay unusable until
	 * something commits (a message does). Asking again with a flush commits. */
	if (r == 0 && ret_status->out_of_data_space)
		r = read_status(pool, true, ret_status);
	return r;
}

int pool_set_transaction_id(struct pool *pool, uint64_t old_id, uint64_t new_id)
{
	DM_RELEASE_ON_RETURN;
	struct pool_status status;
	int r;

	r = pool_message(pool, "set_transaction_id %" PRIu64 " %" PRIu64, old_id, new_id);
	/* dm-thin says EINVAL both for a stale OLD and for a malformed message; the pool's
	 * current id tells them apart. */
	if (r == -EINVAL && pool_get_status(pool, &status) == 0 && status.transaction_id != old_id)
		return -ESTALE;
	return r;
}

int pool_create_thin(struct pool *pool, uint32_t id)
{
	DM_RELEASE_ON_RETURN;

	if (id > POOL_THIN_ID_MAX)
		return -EINVAL;
	return pool_message(pool, "create_thin %" PRIu32, id);
}

int pool_create_snap(struct pool *pool, uint32_t id, uint32_t origin_id)
{
	DM_RELEASE_ON_RETURN;
	struct thin_names origin;
	struct dm_info info;
	bool suspend;
	int r, rr;

	if (id > POOL_THIN_ID_MAX || origin_id > POOL_THIN_ID_MAX)
		return -EINVAL;
	r = thin_query(pool, origin_id, DM_DEVICE_INFO, NULL, &info);
	if (r < 0)
		return r;
	/* dm-thin needs an active origin suspended (its in-flight I/O flushed) while it
	 * shares the origin's mappings with the new snapshot. One that is already suspended
	 * stays as we found it. */
	suspend = info.exists && !info.suspended;
	thin_names(pool, origin_id, &origin);
	if (suspend) {
		r = dev_suspend(origin.name);
		if (r < 0)
			return r;
	}
	r = pool_message(pool, "create_snap %" PRIu32 " %" PRIu32, id, origin_id);
	if (suspend) {
		rr = dev_resume(origin.name);
		if (rr < 0) {
			/* The message's outcome stands either way: the caller's record of the
			 * change must match the pool. The origin is resumed later. */
			log_errno(LOG_ERR, rr,
			          "resuming %s after create_snap %" PRIu32 " from %" PRIu32
			          ": %m; it stays suspended until the next try",
			          origin.name, id, origin_id);
			pool->left_suspended = true;
		}
	}
	return r;
}

int pool_delete_thin(struct pool *pool, uint32_t id)
{
	DM_RELEASE_ON_RETURN;

	if (id > POOL_THIN_ID_MAX)
		return -EINVAL;
	/* dm-thin itself refuses (EBUSY) to delete a thin device that a table uses. */
	return pool_message(pool, "delete %" PRIu32, id);
}

int pool_thin_exists(struct pool *pool, uint32_t id)
{
	DM_RELEASE_ON_RETURN;
	int r;

	if (id > POOL_THIN_ID_MAX)
		return -EINVAL;
	/* dm-thin's create_snap looks up the new id first (taken: EEXIST) and the origin
	 * second (missing: ENODATA), and changes nothing before both are found. With the id
	 * as its own origin, the answer is whether the id exists. */
	r = pool_message(pool, "create_snap %" PRIu32 " %" PRIu32, id, id);
	if (r == -EEXIST)
		return 1;
	if (r == -ENOENT)
		return 0;
	return r == 0 ? -EIO : r;
}

int pool_resume_left_suspended(struct pool *pool)
{
	DM_RELEASE_ON_RETURN;
	int r;

	if (!pool->left_suspended)
		return 0;
	pool->left_suspended = false;
	r = pool_for_each_active(pool, resume_if_suspended, pool);
	return r < 0 ? r : 0;
}

int pool_activate_thin(struct pool *pool, uint32_t id, uint64_t size, bool read_only)
{
	DM_RELEASE_ON_RETURN;
	CLEANUP_DM_TASK struct dm_task *dmt = NULL;
	struct thin_names n;
	struct dm_info info;
	const char *type, *params;
	char want[64];
	uint64_t sectors;
	int r;

	if (id > POOL_THIN_ID_MAX || size == 0 || size % SECTOR != 0)
		return -EINVAL;
	thin_names(pool, id, &n);
	snprintf(want, sizeof want, "%" PRIu32 ":%" PRIu32 " %" PRIu32, pool->major, pool->minor,
	         id);
	r = thin_query(pool, id, DM_DEVICE_TABLE, &dmt, &info);
	if (r < 0)
		return r == -EPERM ? -EEXIST : r;
	if (info.exists && !info.live_table) {
		/* Ours, but empty: a crash between its create and its load. */
		r = dev_remove(n.name);
		if (r < 0)
			return r;
		info.exists = 0;
	}
	if (info.exists) {
		r = dev_single_target(dmt, &sectors, &type, &params);
		if (r == 0 && sectors == size / SECTOR && strcmp(type, "thin") == 0 &&
		    strcmp(params, want) == 0 && !!info.read_only == read_only)
			return 0;
		return -EEXIST;
	}
	r = dev_create(n.name, n.uuid, size / SECTOR, "thin", want, read_only);
	/* The thin target's constructor fails with ENODATA for an id the pool lacks. */
	return r == -ENODATA ? -ENOENT : r;
}

int pool_deactivate_thin(struct pool *pool, uint32_t id)
{
	DM_RELEASE_ON_RETURN;
	struct thin_names n;
	struct dm_info info;
	int r;

	if (id > POOL_THIN_ID_MAX)
		return -EINVAL;
	r = thin_query(pool, id, DM_DEVICE_INFO, NULL, &info);
	if (r < 0)
		return r;
	if (!info.exists)
		return 0;
	if (info.open_count > 0)
		return -EBUSY;
	thin_names(pool, id, &n);
	/* Not open a moment ago; dev_remove retries a while, as lvm2 does, should a scanner
	 * (blkid, udev) have opened it since. */
	r = dev_remove(n.name);
	return r == -ENXIO ? 0 : r;
}

int pool_resize_thin(struct pool *pool, uint32_t id, uint64_t size)
{
	DM_RELEASE_ON_RETURN;
	CLEANUP_DM_TASK struct dm_task *dmt = NULL;
	CLEANUP_DM_TASK struct dm_task *load = NULL;
	struct thin_names n;
	struct dm_info info;
	const char *type, *params;
	uint64_t sectors;
	int r, rr;

	if (id > POOL_THIN_ID_MAX || size == 0 || size % SECTOR != 0)
		return -EINVAL;
	r = thin_query(pool, id, DM_DEVICE_TABLE, &dmt, &info);
	if (r < 0)
		return r;
	if (!info.exists)
		return 0;
	r = dev_single_target(dmt, &sectors, &type, &params);
	if (r < 0 || strcmp(type, "thin") != 0)
		return -EINVAL;
	if (sectors == size / SECTOR)
		return 0;
	thin_names(pool, id, &n);
	load = task_new(DM_DEVICE_RELOAD, n.name);
	if (load == NULL || !dm_task_add_target(load, 0, size / SECTOR, "thin", params) ||
	    (info.read_only && !dm_task_set_ro(load)))
		return -ENOMEM;
	r = task_run(load);
	if (r < 0)
		return r;
	/* The new table is inactive until a resume, which needs a suspend first. */
	r = dev_suspend(n.name);
	if (r < 0) {
		rr = dev_simple(DM_DEVICE_CLEAR, n.name);
		if (rr < 0)
			log_errno(LOG_WARNING, rr,
			          "clearing the inactive table of %s: %m, ignoring", n.name);
		return r;
	}
	r = dev_resume(n.name);
	if (r < 0) {
		log_errno(LOG_ERR, r,
		          "resuming %s after its resize: %m; it stays suspended until the next try",
		          n.name);
		pool->left_suspended = true;
	}
	return r;
}

int pool_thin_status(struct pool *pool, uint32_t id, struct thin_status *ret_status)
{
	DM_RELEASE_ON_RETURN;
	CLEANUP_DM_TASK struct dm_task *dmt = NULL;
	CLEANUP_FREE char *copy = NULL;
	struct thin_status s;
	struct dm_info info;
	const char *type, *params;
	uint64_t sectors, mapped;
	char *tok[2];
	int r;

	if (id > POOL_THIN_ID_MAX)
		return -EINVAL;
	r = thin_query(pool, id, DM_DEVICE_STATUS, &dmt, &info);
	if (r < 0)
		return r;
	memset(&s, 0, sizeof s);
	if (info.exists && info.live_table) {
		r = dev_single_target(dmt, &sectors, &type, &params);
		if (r < 0 || strcmp(type, "thin") != 0)
			return -EINVAL;
		copy = strdup(params);
		if (copy == NULL)
			return -ENOMEM;
		/* "<mapped sectors> <highest mapped sector>|-", or "Fail" with the pool. */
		if (split(copy, tok, 2) < 1 || parse_u64(tok[0], &mapped) < 0)
			return strcmp(params, "Fail") == 0 ? -EIO : -EINVAL;
		s.active = true;
		s.read_only = info.read_only;
		s.open_count = info.open_count > 0 ? (uint32_t)info.open_count : 0;
		s.size = sectors * SECTOR;
		s.mapped_bytes = mapped * SECTOR;
		s.devnum = makedev(info.major, info.minor);
	}
	*ret_status = s;
	return 0;
}

/* Open PATH with FLAGS if it is the block device DEVNUM: checked before the open (so we
 * open nothing else) and after it (so a swap in between is caught). */
static int open_node(const char *path, int flags, dev_t devnum)
{
	CLEANUP_CLOSE int fd = -1;
	struct stat st;

	if (stat(path, &st) < 0)
		return -errno;
	if (!S_ISBLK(st.st_mode) || st.st_rdev != devnum)
		return -ENODEV;
	fd = open(path, flags | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0)
		return -errno;
	if (!S_ISBLK(st.st_mode) || st.st_rdev != devnum)
		return -ENODEV;
	return TAKE_FD(fd);
}

int pool_open_thin(struct pool *pool, uint32_t id, int flags)
{
	DM_RELEASE_ON_RETURN;
	const int allowed = O_ACCMODE | O_DIRECT | O_EXCL | O_NONBLOCK | O_CLOEXEC;
	struct thin_names n;
	struct dm_info info;
	char path[PATH_MAX];
	dev_t devnum;
	int r;

	if (id > POOL_THIN_ID_MAX || (flags & ~allowed) != 0 ||
	    ((flags & O_ACCMODE) != O_RDONLY && (flags & O_ACCMODE) != O_RDWR))
		return -EINVAL;
	r = thin_query(pool, id, DM_DEVICE_INFO, NULL, &info);
	if (r < 0)
		return r;
	if (!info.exists || !info.live_table)
		return -ENXIO;
	devnum = makedev(info.major, info.minor);
	thin_names(pool, id, &n);
	snprintf(path, sizeof path, "%s/%s", dm_dir(), n.name);
	r = open_node(path, flags, devnum);
	if (r == -ENOENT || r == -ENODEV) {
		/* The node is missing or stale (no udev, or someone removed it): have
		 * libdevmapper make it again from the kernel's device number. */
		if (dm_mknodes(n.name))
			dm_task_update_nodes();
		r = open_node(path, flags, devnum);
	}
	if (r == -ENOENT || r == -ENODEV) {
		/* Last resort: the node devtmpfs keeps for every dm device. */
		snprintf(path, sizeof path, "/dev/dm-%" PRIu32, info.minor);
		r = open_node(path, flags, devnum);
	}
	return r;
}

/* Open the block device DEVNUM read-only and O_DIRECT through the node devtmpfs keeps
 * for it, named in sysfs. */
static int open_block_device(dev_t devnum)
{
	char path[PATH_MAX], line[256];
	CLEANUP_FCLOSE FILE *f = NULL;

	snprintf(path, sizeof path, "/sys/dev/block/%u:%u/uevent", major(devnum), minor(devnum));
	f = fopen(path, "re");
	if (f == NULL)
		return -errno;
	while (fgets(line, sizeof line, f) != NULL) {
		if (strncmp(line, "DEVNAME=", 8) != 0)
			continue;
		line[strcspn(line, "\n")] = '\0';
		if (strstr(line, "..") != NULL)
			return -ENODEV;
		snprintf(path, sizeof path, "/dev/%s", line + 8);
		return open_node(path, O_RDONLY | O_DIRECT, devnum);
	}
	return -ENODEV;
}

/* Walk the held snapshot at HELD of the pool's metadata on the device DEVNUM. */
static int walk_held(dev_t devnum, uint64_t held,
                     int (*fn)(struct thin_meta *m, const struct thin_meta_superblock *sb,
                               void *opaque),
                     void *opaque)
{
	CLEANUP_CLOSE int fd = -1;
	struct thin_meta_superblock top, sb;
	struct thin_meta m;
	uint64_t bytes;
	int r;

	fd = open_block_device(devnum);
	if (fd < 0)
		return fd;
	if (ioctl(fd, BLKGETSIZE64, &bytes) < 0)
		return -errno;
	r = thin_meta_init_fd(&m, fd, bytes / THIN_META_BLOCK_SIZE);
	if (r < 0)
		return r;
	r = thin_meta_superblock(&m, THIN_META_SUPERBLOCK, &top);
	if (r == 0)
		r = thin_meta_superblock(&m, held, &sb);
	if (r == 0) {
		/* The kernel wipes a held copy's space map roots: bound its mappings by the
		 * live superblock's data device instead. */
		sb.data_nr_blocks = top.data_nr_blocks;
		r = fn(&m, &sb, opaque);
	}
	thin_meta_done(&m);
	return r;
}

int pool_walk_metadata(struct pool *pool,
                       int (*fn)(struct thin_meta *m, const struct thin_meta_superblock *sb,
                                 void *opaque),
                       void *opaque)
{
	DM_RELEASE_ON_RETURN;
	struct pool_status status;
	dev_t devnum;
	int r;

	r = metadata_devnum(pool, &devnum);
	if (r < 0)
		return r;
	r = pool_message(pool, "reserve_metadata_snap");
	if (r < 0) {
		/* dm-thin refuses a second snapshot (EBUSY), but a refused message may reach
		 * us as EINVAL: the held root in the status tells. */
		if (r == -EINVAL && read_status(pool, false, &status) == 0 && status.held_root != 0)
			return -EBUSY;
		return r;
	}
	r = read_status(pool, false, &status);
	if (r == 0 && status.held_root == 0)
		r = -EIO; /* taken, yet not shown: nothing to read */
	if (r == 0)
		r = walk_held(devnum, status.held_root, fn, opaque);
	release_metadata_snap(pool);
	return r;
}

int pool_for_each_active(struct pool *pool, int (*fn)(uint32_t id, void *opaque), void *opaque)
{
	DM_RELEASE_ON_RETURN;
	CLEANUP_DM_TASK struct dm_task *list = task_new(DM_DEVICE_LIST, NULL);
	CLEANUP_FREE uint32_t *ids = NULL;
	struct dm_names *names;
	size_t n = 0, cap = 0, i;
	unsigned next;
	int r;

	if (list == NULL)
		return -ENOMEM;
	r = task_run(list);
	if (r < 0)
		return r;
	names = dm_task_get_names(list);
	/* An empty list has one entry with no device. */
	if (names != NULL && names->dev != 0) {
		do {
			CLEANUP_DM_TASK struct dm_task *dmt = NULL;
			struct thin_names want;
			struct dm_info info;
			const char *uuid;
			uint32_t id;

			next = names->next;
			if (thin_id_from_name(pool, names->name, &id) == 0 &&
			    dev_query(DM_DEVICE_INFO, names->name, &dmt, &info) == 0 &&
			    info.exists) {
				thin_names(pool, id, &want);
				uuid = dm_task_get_uuid(dmt);
				if (uuid != NULL && strcmp(uuid, want.uuid) == 0) {
					if (n == cap) {
						uint32_t *grown;

						cap = cap != 0 ? 2 * cap : 16;
						grown = reallocarray(ids, cap, sizeof *ids);
						if (grown == NULL)
							return -ENOMEM;
						ids = grown;
					}
					ids[n++] = id;
				}
			}
			names = (struct dm_names *)((char *)names + next);
		} while (next != 0);
	}
	/* FN runs after the walk, so that it may change the device list. */
	for (i = 0; i < n; i++) {
		r = fn(ids[i], opaque);
		if (r < 0)
			return r;
	}
	return (int)n;
}
