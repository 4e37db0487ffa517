/* The kernel's NBD devices as sysfs shows them: names, whether one is connected, what it
 * is connected to, and whether something uses it. Every function returns 0 or -errno. */
#ifndef TP_CLIENT_NBD_DEVICE_H
#define TP_CLIENT_NBD_DEVICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The highest device number accepted: the kernel's minor numbers have 20 bits, and each
 * device takes 16 of them for partitions. */
#define NBD_DEVICE_INDEX_MAX ((1 << 16) - 1)

/* The device number of "/dev/nbdN" or "nbdN" in *RET_INDEX; -EINVAL if S is neither. */
int nbd_device_parse(const char *s, int *ret_index);

/* Whether /dev/nbdINDEX exists at all. */
bool nbd_device_exists(int index);
/* Whether device INDEX is connected: it has a configuration with a receiving task. */
bool nbd_device_connected(int index);
/* The backend identifier a netlink attach gave device INDEX, into BUF (LEN bytes);
 * -ENOENT if it has none. */
int nbd_device_backend(int index, char *buf, size_t len);
/* Device INDEX's size in bytes and whether it is read-only. */
int nbd_device_size(int index, uint64_t *ret_size);
int nbd_device_read_only(int index, bool *ret_read_only);

/* Whether something holds device INDEX exclusively, as a mount does: a device whose
 * connection is gone but whose file system is still mounted (anywhere) must not be
 * configured for another volume, which that mount would then write to. */
bool nbd_device_claimed(int index);
/* Wait until nothing claims device INDEX, at most MS milliseconds; whether it is free. */
bool nbd_device_wait_unclaimed(int index, long ms);

/* Whether the kernel has the NBD driver here: sysfs shows its module (loaded or built
 * in), or /dev holds an NBD device (a container may be given a device without sysfs). */
bool nbd_driver_present(void);

/* The numbers of all NBD devices, ascending, in a new array *RET_INDICES (the caller
 * frees it) of *RET_N entries. */
int nbd_device_list(int **ret_indices, size_t *ret_n);

/* Whether device INDEX, or one of its partitions, is in use: mounted in this mount
 * namespace (its mount point into BUF, LEN bytes) or held by another block device (a
 * device-mapper map, a RAID array; its name into BUF). -ENOENT if it is not. */
int nbd_device_user(int index, char *buf, size_t len);

#endif
