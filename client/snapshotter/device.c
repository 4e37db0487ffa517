/* A snapshot's NBD device (see device.h). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <linux/fs.h>

#include "tp-cleanup.h"
#include "attach.h"
#include "device.h"
#include "nbd-device.h"

/* Where mkfs and debugfs are looked for after $PATH: an agent started with a short
 * PATH (a container's entry point) still finds them. */
#define SBIN_PATH  "/usr/sbin:/sbin:/usr/bin:/bin"
#define OUTPUT_MAX 2048

int device_target_init(struct device_target *t, const char *dir, const char *tenant)
{
	t->dir = dir;
	t->tenant = tenant;
	return attach_socket_path(dir, tenant, t->nbd_socket, sizeof t->nbd_socket);
}

int device_find(const struct device_target *t, const char *volume, int *ret_index)
{
	return attach_find(t->nbd_socket, volume, ret_index);
}

int device_attach(const struct device_target *t, const char *volume, bool read_only, int *ret_index,
                  char *reason, size_t len)
{
	struct attach_request req = attach_defaults(volume, t->dir, t->tenant);
	struct attach_result res;
	int r;

	req.read_only = read_only;
	r = attach_volume(&req, &res, reason, len);
	if (r < 0)
		return r;
	*ret_index = res.index;
	return 0;
}

/* The first mount point of device INDEX in this mount namespace, into BUF (LEN bytes);
 * -ENOENT if it is not mounted here. */
static int find_mount(int index, char *buf, size_t len)
{
	CLEANUP_FCLOSE FILE *f = NULL;
	CLEANUP_FREE char *line = NULL;
	char dev[32], path[64];
	size_t size = 0;

	snprintf(path, sizeof path, "/sys/block/nbd%d/dev", index);
	f = fopen(path, "re");
	if (f == NULL || fgets(dev, sizeof dev, f) == NULL)
		return -ENOENT;
	dev[strcspn(dev, "\n")] = '\0';
	fclose(f);
	f = fopen("/proc/self/mountinfo", "re");
	if (f == NULL)
		return -errno;
	while (getline(&line, &size, f) > 0) {
		char mdev[32], mount_point[4096], *out, *in;

		/* "ID PARENT MAJOR:MINOR ROOT MOUNT-POINT ..."; the mount point with octal
		 * escapes for blanks and backslashes. */
		if (sscanf(line, "%*s %*s %31s %*s %4095s", mdev, mount_point) != 2 ||
		    strcmp(mdev, dev) != 0)
			continue;
		for (in = out = mount_point; *in != '\0'; in++) {
			if (in[0] == '\\' && in[1] >= '0' && in[1] <= '3' && in[2] >= '0' &&
			    in[2] <= '7' && in[3] >= '0' && in[3] <= '7') {
				*out++ =
				    (char)((in[1] - '0') * 64 + (in[2] - '0') * 8 + (in[3] - '0'));
				in += 3;
			} else {
				*out++ = *in;
			}
		}
		*out = '\0';
		snprintf(buf, len, "%s", mount_point);
		return 0;
	}
	return -ENOENT;
}

/* Whether another block device (a device-mapper map, an array) holds device INDEX. */
static bool held(int index)
{
	char path[64];
	DIR *d;
	struct dirent *e;
	bool any = false;

	snprintf(path, sizeof path, "/sys/block/nbd%d/holders", index);
	d = opendir(path);
	while (d != NULL && !any && (e = readdir(d)) != NULL)
		any = e->d_name[0] != '.';
	if (d != NULL)
		closedir(d);
	return any;
}

int device_detach(int index, bool freeze, char *reason, size_t len)
{
	char mount_point[4096];
	CLEANUP_CLOSE int fd = -1;
	int r;

	if (!freeze || held(index) || find_mount(index, mount_point, sizeof mount_point) < 0)
		return detach_device(index, false, reason, len);
	/* Frozen, the file system has written everything, its journal included, and
	 * writes nothing more: what the device holds is whole, and stays so while it is
	 * taken away. Thawed after, the mount finds no device and fails its I/O. */
	fd = open(mount_point, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || ioctl(fd, FIFREEZE, 0) < 0) {
		r = -errno;
		snprintf(reason, len, "cannot freeze the file system mounted on %s: %s",
		         mount_point, strerror(-r));
		return r == -EBUSY ? -EIO : r;
	}
	r = detach_device(index, true, reason, len);
	ioctl(fd, FITHAW, 0);
	return r;
}

/* The executable NAME in $PATH or SBIN_PATH, into BUF. */
static int find_program(const char *name, char *buf, size_t len)
{
	const char *env = getenv("PATH");
	CLEANUP_FREE char *path = NULL;
	char *dir, *save = NULL;

	if (asprintf(&path, "%s:%s", env != NULL ? env : "", SBIN_PATH) < 0) {
		path = NULL;
		return -ENOMEM;
	}
	for (dir = strtok_r(path, ":", &save); dir != NULL; dir = strtok_r(NULL, ":", &save)) {
		if (dir[0] != '/')
			continue;
		snprintf(buf, len, "%s/%s", dir, name);
		if (access(buf, X_OK) == 0)
			return 0;
	}
	return -ENOENT;
}

/* Run ARGV, its output (both streams, the first OUTPUT_MAX bytes) into OUTPUT. Returns
 * its exit status, or -errno if it could not run. It dies with the thread that runs it
 * (a killed agent leaves no mkfs writing to a device that Cleanup will detach). */
static int run(char *const argv[], char *output, size_t output_len)
{
	char program[4096];
	size_t got = 0;
	int out[2], status, r;
	pid_t pid;

	output[0] = '\0';
	r = find_program(argv[0], program, sizeof program);
	if (r < 0)
		return r;
	if (pipe2(out, O_CLOEXEC) < 0)
		return -errno;
	pid = fork();
	if (pid < 0) {
		r = -errno;
		close(out[0]);
		close(out[1]);
		return r;
	}
	if (pid == 0) {
		int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
		sigset_t none;

		/* A handler thread blocks every signal, and the mask outlives exec. */
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (null_fd >= 0)
			dup2(null_fd, STDIN_FILENO);
		dup2(out[1], STDOUT_FILENO);
		dup2(out[1], STDERR_FILENO);
		close_range(STDERR_FILENO + 1, ~0u, 0);
		signal(SIGPIPE, SIG_DFL);
		execv(program, argv);
		_exit(127);
	}
	close(out[1]);
	for (;;) {
		char buf[512];
		ssize_t n = read(out[0], buf, sizeof buf);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		if (got + 1 < output_len) {
			size_t take =
			    (size_t)n < output_len - 1 - got ? (size_t)n : output_len - 1 - got;

			memcpy(output + got, buf, take);
			got += take;
			output[got] = '\0';
		}
	}
	close(out[0]);
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -errno;
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return WEXITSTATUS(status);
}

/* OUTPUT on one line, for a reason. */
static const char *one_line(char *output)
{
	size_t n = strlen(output);

	while (n > 0 && (output[n - 1] == '\n' || output[n - 1] == ' '))
		output[--n] = '\0';
	for (char *p = output; *p != '\0'; p++)
		if (*p == '\n' || *p == '\t')
			*p = ' ';
	return output;
}

/* Whether mke2fs knows assume_storage_prezeroed (e2fsprogs 1.47): -1 not yet known. */
static atomic_int prezeroed_known = -1;

/* ext4 on DEVICE, as fast as a thin device allows. */
static int mkfs_ext4(const char *device, char *reason, size_t len)
{
	char output[OUTPUT_MAX];
	int status;

	/* A new thin volume reads as zeroes: nothing needs discarding, and the inode tables
	 * and journal are zero already (assume_storage_prezeroed marks them so, which also
	 * keeps the kernel's lazy init from writing them later, block by block). */
	if (atomic_load(&prezeroed_known) != 0) {
		char *const argv[] = {
		    "mkfs.ext4",    "-q", "-F", "-E", "assume_storage_prezeroed=1,nodiscard",
		    (char *)device, NULL};

		status = run(argv, output, sizeof output);
		if (status == 0) {
			atomic_store(&prezeroed_known, 1);
			return 0;
		}
		if (status < 0 || strstr(output, "assume_storage_prezeroed") == NULL)
			goto fail;
		atomic_store(&prezeroed_known, 0);
	}
	{
		char *const argv[] = {"mkfs.ext4",
		                      "-q",
		                      "-F",
		                      "-E",
		                      "lazy_itable_init=1,lazy_journal_init=1,nodiscard",
		                      (char *)device,
		                      NULL};

		status = run(argv, output, sizeof output);
		if (status == 0)
			return 0;
	}
fail:
	if (status < 0)
		snprintf(reason, len, "mkfs.ext4: %s", strerror(-status));
	else
		snprintf(reason, len, "mkfs.ext4 %s failed (status %d): %s", device, status,
		         one_line(output));
	return -EIO;
}

/* How long the file system mounted to remove lost+found may take to let go of its
 * device once its mount is closed. */
#define RELEASE_MS 10000

/* An empty snapshot is an empty directory: containerd compares trees, and a first
 * layer's diff would carry lost+found (e2fsck makes it again should it need one). Remove
 * it from the ext4 just made on device INDEX, mounted with the kernel's mount API where
 * nothing else sees it: a mount attached to no directory, in no namespace, which ends
 * when its descriptor is closed (so also when the agent is killed). -ENOSYS where the
 * kernel, or a seccomp filter, has no such API. */
static int remove_lost_found(int index, char *reason, size_t len)
{
	CLEANUP_CLOSE int context = -1, mount_fd = -1, root = -1;
	char device[32];
	const char *step;

	snprintf(device, sizeof device, "/dev/nbd%d", index);
	step = "fsopen ext4";
	context = fsopen("ext4", FSOPEN_CLOEXEC);
	if (context < 0) {
		if (errno == ENOSYS || errno == EPERM)
			return -ENOSYS;
		goto fail;
	}
	/* noinit_itable: no lazy zeroing of inode tables for a mount this short. */
	step = "mount";
	if (fsconfig(context, FSCONFIG_SET_STRING, "source", device, 0) < 0 ||
	    fsconfig(context, FSCONFIG_SET_FLAG, "noinit_itable", NULL, 0) < 0 ||
	    fsconfig(context, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0)
		goto fail;
	mount_fd = fsmount(context, FSMOUNT_CLOEXEC, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV);
	if (mount_fd < 0)
		goto fail;
	step = "rmdir lost+found";
	if (unlinkat(mount_fd, "lost+found", AT_REMOVEDIR) < 0)
		goto fail;
	/* Written now, so that an error is ours to report, not lost at the unmount. A mount
	 * descriptor is a path only: syncfs takes its root opened. */
	step = "syncfs";
	root = openat(mount_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (root < 0 || syncfs(root) < 0)
		goto fail;
	close(root);
	root = -1;
	close(mount_fd);
	mount_fd = -1;
	close(context);
	context = -1;
	/* The last reference to the file system goes as the descriptors close; a device
	 * still claimed after that is not ours to hand out. */
	if (!nbd_device_wait_unclaimed(index, RELEASE_MS)) {
		snprintf(reason, len, "%s: still in use after its file system was unmounted",
		         device);
		return -EBUSY;
	}
	return 0;
fail:
	snprintf(reason, len, "%s: cannot remove lost+found: %s: %s", device, step,
	         strerror(errno));
	return -EIO;
}

/* remove_lost_found with debugfs, where the kernel has no mount API to do it in-process. */
static int remove_lost_found_debugfs(const char *device, char *reason, size_t len)
{
	char *const argv[] = {"debugfs", "-w", "-R", "rmdir lost+found", (char *)device, NULL};
	char output[OUTPUT_MAX];
	const char *said;
	int status;

	/* debugfs exits 0 whatever its request did, and says so beneath its banner line
	 * ("debugfs 1.47.0 (5-Feb-2023)"). */
	status = run(argv, output, sizeof output);
	said = strncmp(output, "debugfs ", 8) == 0 ? output + strcspn(output, "\n") : output;
	said += strspn(said, "\n");
	if (status == 0 && said[0] == '\0')
		return 0;
	snprintf(reason, len, "debugfs %s: cannot remove lost+found: %s", device,
	         status < 0 ? strerror(-status) : one_line((char *)said));
	return -EIO;
}

int device_mkfs(int index, enum snap_fs fs, char *reason, size_t len)
{
	char device[32], output[OUTPUT_MAX];
	int status, r;

	snprintf(device, sizeof device, "/dev/nbd%d", index);
	if (fs == SNAP_FS_XFS) {
		/* -K: nothing to discard on a new thin volume. */
		char *const argv[] = {"mkfs.xfs", "-q", "-K", device, NULL};

		status = run(argv, output, sizeof output);
		if (status == 0)
			return 0;
		if (status < 0)
			snprintf(reason, len, "mkfs.xfs: %s", strerror(-status));
		else
			snprintf(reason, len, "mkfs.xfs %s failed (status %d): %s", device, status,
			         one_line(output));
		return -EIO;
	}
	r = mkfs_ext4(device, reason, len);
	if (r < 0)
		return r;
	r = remove_lost_found(index, reason, len);
	if (r != -ENOSYS)
		return r;
	return remove_lost_found_debugfs(device, reason, len);
}

int device_inodes(int index, int64_t *ret_inodes)
{
	char mount_point[4096];
	struct statfs sfs;
	int r;

	r = find_mount(index, mount_point, sizeof mount_point);
	if (r < 0)
		return r;
	if (statfs(mount_point, &sfs) < 0)
		return -errno;
	*ret_inodes = (int64_t)(sfs.f_files - sfs.f_ffree);
	return 0;
}
