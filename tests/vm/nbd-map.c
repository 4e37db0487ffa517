/* nbd-map: block status over NBD connections a guest test interleaves with writes, for
 * what one nbdinfo --map (a connection of its own, made and ended in one go) cannot show:
 * the map a connection holds while it and others write.
 *
 *   nbd-map URI STEP...
 *
 * Each STEP names a connection, c1 to c9 (opened with base:allocation on first use and
 * kept to the end), and what it does: "cN map OFF LEN" asks for block status until the
 * range is covered and prints "cN map: OFF LEN data|hole ..." with touching extents of
 * one kind joined ("data" = no hole flag); "cN write OFF LEN" writes bytes 0x5a, "cN trim
 * OFF LEN", "cN flush", each printing "cN write: ok"; "cN timemap OFF LEN" is a map that
 * prints only "cN timemap: MS" (the milliseconds it took, for bench/: the first one on a
 * connection includes thinproxy's plugin fetching the map). Exits 0 when every step ran,
 * 1 with libnbd's message on the first that failed. */
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libnbd.h>

#define CONNS 9

static struct nbd_handle *conns[CONNS];

/* Connection NAME ("c1".."c9"), connected on first use; NULL with a message if it cannot
 * be. */
static struct nbd_handle *conn(const char *name, const char *uri)
{
	int i;

	if (name[0] != 'c' || name[1] < '1' || name[1] > '9' || name[2] != '\0') {
		fprintf(stderr, "nbd-map: bad connection \"%s\"\n", name);
		return NULL;
	}
	i = name[1] - '1';
	if (conns[i] != NULL)
		return conns[i];
	conns[i] = nbd_create();
	if (conns[i] == NULL ||
	    nbd_add_meta_context(conns[i], LIBNBD_CONTEXT_BASE_ALLOCATION) < 0 ||
	    nbd_connect_uri(conns[i], uri) < 0) {
		fprintf(stderr, "nbd-map: %s: %s\n", name, nbd_get_error());
		return NULL;
	}
	return conns[i];
}

/* The extents printed so far: the last one's kind and end, to join touching ones. */
struct printed {
	uint64_t start, end;
	bool data, any;
	bool quiet;    /* print nothing */
	uint64_t next; /* where the next block status request starts */
};

static void flush_extent(struct printed *p)
{
	if (p->any && !p->quiet)
		printf(" %" PRIu64 " %" PRIu64 " %s", p->start, p->end - p->start,
		       p->data ? "data" : "hole");
}

static int extent(void *opaque, const char *context, uint64_t offset, uint32_t *entries, size_t n,
                  int *error)
{
	struct printed *p = opaque;

	(void)error;
	if (strcmp(context, LIBNBD_CONTEXT_BASE_ALLOCATION) != 0)
		return 0;
	for (size_t i = 0; i + 1 < n; i += 2) {
		bool data = !(entries[i + 1] & LIBNBD_STATE_HOLE);

		if (p->any && p->data == data && p->end == offset) {
			p->end += entries[i];
		} else {
			flush_extent(p);
			p->start = offset;
			p->end = offset + entries[i];
			p->data = data;
			p->any = true;
		}
		offset += entries[i];
	}
	p->next = offset;
	return 0;
}

static int map(struct nbd_handle *h, const char *name, uint64_t off, uint64_t len, bool quiet)
{
	struct printed p = {.next = off, .quiet = quiet};

	if (!quiet)
		printf("%s map:", name);
	while (p.next < off + len) {
		uint64_t at = p.next, count = off + len - at;

		if (count > (UINT64_C(1) << 31))
			count = UINT64_C(1) << 31;
		if (nbd_block_status(h, count, at,
		                     (nbd_extent_callback){.callback = extent, .user_data = &p},
		                     0) < 0)
			return -1;
		if (p.next <= at)
			return -1; /* no progress: the server answered nothing */
	}
	/* The last extent may run past the range asked: cut it there. */
	if (p.end > off + len)
		p.end = off + len;
	flush_extent(&p);
	if (!quiet)
		printf("\n");
	return 0;
}

static int timed_map(struct nbd_handle *h, const char *name, uint64_t off, uint64_t len)
{
	struct timespec a, b;
	int r;

	clock_gettime(CLOCK_MONOTONIC, &a);
	r = map(h, name, off, len, true);
	clock_gettime(CLOCK_MONOTONIC, &b);
	if (r == 0)
		printf("%s timemap: %.3f\n", name,
		       (double)(b.tv_sec - a.tv_sec) * 1e3 + (double)(b.tv_nsec - a.tv_nsec) / 1e6);
	return r;
}

static int step(const char *uri, char **argv, int *used)
{
	struct nbd_handle *h = conn(argv[0], uri);
	const char *what = argv[1];
	uint64_t off = 0, len = 0;
	int r;

	if (h == NULL || what == NULL)
		return -1;
	*used = 2;
	if (strcmp(what, "flush") != 0) {
		if (argv[2] == NULL || argv[3] == NULL)
			return -1;
		off = strtoull(argv[2], NULL, 0);
		len = strtoull(argv[3], NULL, 0);
		*used = 4;
	}
	if (strcmp(what, "map") == 0)
		return map(h, argv[0], off, len, false);
	if (strcmp(what, "timemap") == 0)
		return timed_map(h, argv[0], off, len);
	if (strcmp(what, "write") == 0) {
		char *buf = malloc(len);

		if (buf == NULL)
			return -1;
		memset(buf, 0x5a, len);
		r = nbd_pwrite(h, buf, len, off, 0);
		free(buf);
	} else if (strcmp(what, "trim") == 0) {
		r = nbd_trim(h, len, off, 0);
	} else if (strcmp(what, "flush") == 0) {
		r = nbd_flush(h, 0);
	} else {
		fprintf(stderr, "nbd-map: unknown step \"%s\"\n", what);
		return -1;
	}
	if (r == 0)
		printf("%s %s: ok\n", argv[0], what);
	return r;
}

int main(int argc, char **argv)
{
	int used, status = 0;

	if (argc < 3) {
		fprintf(stderr, "usage: nbd-map URI STEP...\n");
		return 2;
	}
	for (int i = 2; i < argc; i += used) {
		if (step(argv[1], argv + i, &used) < 0) {
			fflush(stdout);
			fprintf(stderr, "nbd-map: step %d (%s %s) failed: %s\n", i - 1, argv[i],
			        argc > i + 1 ? argv[i + 1] : "", nbd_get_error());
			status = 1;
			break;
		}
	}
	for (int i = 0; i < CONNS; i++)
		if (conns[i] != NULL) {
			nbd_shutdown(conns[i], 0);
			nbd_close(conns[i]);
		}
	return status;
}
