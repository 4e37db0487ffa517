/* I/O on a Ceph RBD image for the plugin (issue 24): connect to a cluster as one cephx
 * client, open one image in one RADOS namespace, and read, write, zero, trim, flush and
 * map it through librbd's asynchronous API.
 *
 * Every request is one rbd_aio_* call with a completion of its own, which the calling
 * thread waits for: nbdkit serves a connection's requests on parallel threads, so that
 * many are in flight at once, each waiting for its own. Offsets and lengths are bytes,
 * any of them; librbd splits them over the image's objects.
 *
 * A request that does not lie wholly inside the image fails as nbdkit itself answers
 * one: ENOSPC for writes and zeroes, EINVAL for anything else. The size is the image's
 * current one (a resize by another client counts), not the one at open.
 *
 * Each function returns 0, or -1 with errno set, and logs nothing: the caller says what
 * failed. */
#ifndef THINPROXY_PLUGIN_RBD_IO_H
#define THINPROXY_PLUGIN_RBD_IO_H

#include <stdbool.h>
#include <stdint.h>

#include <rados/librados.h>
#include <rbd/librbd.h>

/* Internal to the plugin: the .so exports only what nbdkit looks up in it (plugin_init,
 * the debug flags). */
#pragma GCC visibility push(hidden)

/* Where an image is and who opens it. */
struct rbd_io_target {
	const char *conf;      /* ceph.conf: mon_host and the like */
	const char *client;    /* the cephx name, "client.ID" */
	const char *keyring;   /* a keyring file holding that client's key */
	const char *pool;      /* the RBD pool */
	const char *namespace; /* the RADOS namespace in it; "" is the pool's default */
	const char *image;     /* the image's name in that namespace */
	unsigned lock_wait;    /* seconds a read-write open asks again for a live holder's lock */
};

/* One open image, and the connection that is only its. All zero is closed. */
struct rbd_io {
	rados_t cluster;
	rados_ioctx_t ioctx;
	rbd_image_t image;
	uint64_t size;        /* at open */
	uint64_t object_size; /* the image's RADOS objects' size, 4 MiB by default */
	bool read_only;       /* opened read-only: librbd refuses writes with EROFS */
	bool locked;          /* holds the image's exclusive lock, in manual mode */
	bool fast_diff;       /* the image has a valid fast-diff map at open: extents read it */
};

/* Connect as T->client and open T->image, read-only if READ_ONLY, into *RET_R. Errors
 * are librbd's: EPERM where the client's caps do not reach the namespace, ENOENT for an
 * image that is not there; and EINVAL for an image whose own or whose pool's settings
 * turn a cache in librbd on (rbd_cache, or the pwl_cache plugin): every write must be
 * answered by the OSDs. Nothing is left open on failure.
 *
 * One writer across hosts: a read-write open of an image with the exclusive-lock
 * feature (every image thinproxy makes) takes its lock in manual mode and holds it until
 * rbd_io_close, refusing to hand it to anyone who asks. Another read-write open, by any
 * other client (another connection, process or host), is then refused at once by the
 * live holder, with EROFS (librbd 16.2's answer); it asks again every half second for
 * T->lock_wait seconds (0: once) before it fails, for a holder that is about to close.
 * Read-only opens take no lock and still work, and the holder runs the snapshots and
 * resizes other clients ask for. A holder that died keeps the lock until its watch on
 * the image lapses (osd_client_watch_timeout on the OSDs, 30 s by default), and an open
 * meanwhile waits in librbd for it to answer, whatever T->lock_wait says: it then
 * blocklists the dead holder's address and takes the lock over. A holder that was only
 * stopped or cut off is blocklisted the same way: its later writes fail with ESHUTDOWN
 * (the OSDs' answer to a blocklisted client), and none reaches the image. That answer
 * is the OSDs' own because librbd's cache is off: every write returns when the OSDs have
 * it. An image without exclusive-lock is opened without a lock, and nothing stops a
 * second writer. */
int rbd_io_open(const struct rbd_io_target *t, bool read_only, struct rbd_io *ret_r);

/* Close the image and the connection and set *R to all zero. Any number of times, also
 * on an all-zero or half-opened one. Writes not yet flushed are flushed by librbd. */
void rbd_io_close(struct rbd_io *r);

/* Read COUNT bytes at OFFSET into BUF. */
int rbd_io_pread(const struct rbd_io *r, void *buf, uint32_t count, uint64_t offset);

/* Write COUNT bytes of BUF at OFFSET. It returns when the OSDs have committed it (no
 * librbd cache, see rbd_io_open); with FUA, a flush follows as well, so that FUA stays
 * true if a cache is ever turned on. */
int rbd_io_pwrite(const struct rbd_io *r, const void *buf, uint32_t count, uint64_t offset,
                  bool fua);

/* Make COUNT bytes at OFFSET read back as zeroes (rbd_aio_write_zeroes). With ALLOCATE
 * (NBD's NO_HOLE) the range stays allocated, else librbd may deallocate whole objects. */
int rbd_io_zero(const struct rbd_io *r, uint32_t count, uint64_t offset, bool allocate, bool fua);

/* Discard COUNT bytes at OFFSET (rbd_aio_discard), a hint: what the range reads back is
 * unspecified. librbd removes whole objects of an image that is not a clone, which then
 * read back zeroes, but leaves parts of objects as they are (rbd_skip_partial_discard),
 * and a clone's discarded range may read back its parent's data. */
int rbd_io_trim(const struct rbd_io *r, uint32_t count, uint64_t offset, bool fua);

/* Wait until every write that returned is on the OSDs' disks. */
int rbd_io_flush(const struct rbd_io *r);

/* Map [OFFSET, OFFSET+COUNT) into data and holes: call FN(ARG, offset, length, data) for
 * consecutive ranges that cover it from OFFSET, in order, data and holes alternating. FN
 * returns 0 to go on, or -1 with errno set to stop, and then so does this function.
 *
 * The ranges end after at most RBD_IO_EXTENTS_OBJECTS objects (the one OFFSET is in and
 * those after it), short of OFFSET+COUNT if that lies further: each object may cost a
 * request to an OSD, and a client may ask for a whole image. The caller asks again from
 * where they ended; NBD lets a block status reply describe less than was asked.
 *
 * Data is what rbd_diff_iterate2 says the image and its parents (include_parent) have
 * written since they were created, and its granularity is librbd's: each object that
 * exists is data from its start to its end in RADOS, the end of the furthest byte ever
 * written into it, holes inside it included; objects that do not exist, and the rest of
 * an object after its end, are holes. Where the image has fast-diff, its object map
 * first finds the objects that exist, and only those are asked for their ends; without
 * it, every object in the range is asked. */
#define RBD_IO_EXTENTS_OBJECTS 64
typedef int (*rbd_io_extent_fn)(void *arg, uint64_t offset, uint64_t length, bool data);
int rbd_io_extents(const struct rbd_io *r, uint64_t count, uint64_t offset, rbd_io_extent_fn fn,
                   void *arg);

#pragma GCC visibility pop

#endif
