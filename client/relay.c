/* A reconnecting userspace relay between the kernel's NBD client and the server (see
 * relay.h).
 *
 * Three threads: the request thread reads the kernel's requests and sends them; the reply
 * thread reads the server's replies, answers the kernel and reconnects; the resend thread
 * sends the outstanding requests again on each fresh connection. The reply thread never
 * writes to the server: a server answers only as fast as its replies are read (nbdkit
 * stops reading requests while its replies cannot be written), so a reply thread that
 * resent a few MiB of writes itself, with reads outstanding, would wait for a server
 * that waits for it.
 *
 * Locking: LOCK guards the list of outstanding requests and the connection's state.
 * SERVER_WLOCK is held for every write to the server, and while a new request is added
 * to the list. A request records the connection it was last sent on, set under both
 * locks by the thread that sends it there, so the request thread and the resend thread
 * never send the same request twice on one connection. KERNEL_WLOCK is held for every
 * write to the kernel. Order: SERVER_WLOCK before LOCK. Only the reply thread removes
 * requests from the list and frees them, never one that is being sent. */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include <linux/nbd.h>

#include "tp-cleanup.h"
#include "tp-clock.h"
#include "keeper.h"
#include "relay.h"

/* The kernel never sends a request larger than its 32 MiB maximum transfer. */
#define REQUEST_MAX (32u << 20)
/* The kernel keeps at most 128 requests in flight per connection. */
#define PENDING_MAX  1024u
#define REQUEST_SIZE 28u
#define REPLY_SIZE   16u
/* Backoff between reconnect attempts. */
#define RETRY_FIRST_MS 50
#define RETRY_MAX_MS   2000

/* A request without its reply yet. */
struct pending {
	struct pending *next;
	unsigned char header[REQUEST_SIZE]; /* as the kernel sent it */
	unsigned char handle[8];
	uint16_t cmd;
	uint32_t len;
	unsigned char *data; /* NBD_CMD_WRITE's payload */
	unsigned gen;        /* the connection it was last sent on, 0 if none */
	bool sending;        /* a thread is writing it to the server */
};

struct relay {
	char name[64];
	unsigned dead_timeout;
	relay_connect_fn *reconnect;
	void *opaque;

	int kernel_fd;
	int stop_pipe[2];
	pthread_t requests, replies, resends;
	bool have_requests, have_replies, have_resends;

	pthread_mutex_t lock, server_wlock, kernel_wlock;
	pthread_cond_t sent;   /* a request is no longer being sent */
	pthread_cond_t resend; /* resend_gen is set, or the relay stops */
	int server_fd;         /* -1 while the server is away */
	unsigned gen;          /* counts connections */
	bool up;               /* server_fd is connected */
	bool failing;          /* away longer than dead_timeout: I/O fails */
	bool stopping;         /* the relay ends */
	bool disconnecting;    /* the kernel sent NBD_CMD_DISC */
	struct timespec since; /* when the server went away */
	struct pending *head, **tail;
	size_t n_pending;

	/* For the resend thread: the fresh connection whose outstanding requests are to be
	 * sent (0: none), and for its log line how long after the loss it was made and how
	 * many attempts it took. */
	unsigned resend_gen;
	int64_t resend_after_ms;
	int resend_attempts;
};

static uint32_t get32(const unsigned char *p)
{
	uint32_t v;

	memcpy(&v, p, sizeof v);
	return be32toh(v);
}

static void put32(unsigned char *p, uint32_t v)
{
	v = htobe32(v);
	memcpy(p, &v, sizeof v);
}

/* Read exactly LEN bytes: 0, -ECONNRESET at end of file, or -errno. */
static int read_full(int fd, void *buf, size_t len)
{
	char *p = buf;

	while (len > 0) {
		ssize_t n = read(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -ECONNRESET;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static int write_full(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len > 0) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static void free_pending(struct pending *p)
{
	if (p == NULL)
		return;
	free(p->data);
	free(p);
}

/* Answer the kernel's request HANDLE with ERROR and, if DATA, LEN bytes of it. */
static int answer(struct relay *r, const unsigned char *handle, uint32_t error, const void *data,
                  uint32_t len)
{
	unsigned char reply[REPLY_SIZE];
	int rc;

	put32(reply, NBD_REPLY_MAGIC);
	put32(reply + 4, error);
	memcpy(reply + 8, handle, 8);
	pthread_mutex_lock(&r->kernel_wlock);
	rc = write_full(r->kernel_fd, reply, sizeof reply);
	if (rc == 0 && data != NULL)
		rc = write_full(r->kernel_fd, data, len);
	pthread_mutex_unlock(&r->kernel_wlock);
	return rc;
}

/* Fail every outstanding request with EIO. Reply thread only. */
static void fail_pending(struct relay *r)
{
	struct pending *list;

	pthread_mutex_lock(&r->lock);
	list = r->head;
	r->head = NULL;
	r->tail = &r->head;
	r->n_pending = 0;
	pthread_mutex_unlock(&r->lock);
	while (list != NULL) {
		struct pending *next = list->next;

		answer(r, list->handle, EIO, NULL, 0);
		free_pending(list);
		list = next;
	}
}

static bool ending(struct relay *r)
{
	bool end;

	pthread_mutex_lock(&r->lock);
	end = r->stopping || r->disconnecting;
	pthread_mutex_unlock(&r->lock);
	return end;
}

/* Sleep MS milliseconds; true if the relay is ending. */
static bool pause_ms(struct relay *r, int ms)
{
	struct pollfd p = {.fd = r->stop_pipe[0], .events = POLLIN};

	if (ending(r))
		return true;
	while (poll(&p, 1, ms) < 0 && errno == EINTR)
		;
	return ending(r);
}

static void wake(struct relay *r)
{
	char c = 1;

	(void)!write(r->stop_pipe[1], &c, 1);
}

/* Send request P on FD: its header, and its data for a write. */
static int send_request(int fd, const struct pending *p)
{
	int rc = write_full(fd, p->header, REQUEST_SIZE);

	if (rc == 0 && p->data != NULL)
		rc = write_full(fd, p->data, p->len);
	return rc;
}

/* Send P on the current connection, FD. Called with SERVER_WLOCK and LOCK held; returns
 * with LOCK released. A failed write leaves the request in the list for the resend after
 * the reconnect; the reply thread notices the broken connection by itself, or now. */
static int send_on(struct relay *r, int fd, struct pending *p)
{
	int rc;

	p->gen = r->gen;
	p->sending = true;
	pthread_mutex_unlock(&r->lock);
	rc = send_request(fd, p);
	pthread_mutex_lock(&r->lock);
	p->sending = false;
	pthread_cond_broadcast(&r->sent);
	pthread_mutex_unlock(&r->lock);
	if (rc < 0)
		shutdown(fd, SHUT_RDWR);
	return rc;
}

/* The kernel's request P: keep it until its reply, and send it if the server is there. */
static void submit(struct relay *r, struct pending *p)
{
	pthread_mutex_lock(&r->server_wlock);
	pthread_mutex_lock(&r->lock);
	if (r->failing || r->stopping || r->n_pending >= PENDING_MAX) {
		pthread_mutex_unlock(&r->lock);
		pthread_mutex_unlock(&r->server_wlock);
		answer(r, p->handle, EIO, NULL, 0);
		free_pending(p);
		return;
	}
	*r->tail = p;
	r->tail = &p->next;
	r->n_pending++;
	if (!r->up) {
		/* Sent when the server is back. */
		pthread_mutex_unlock(&r->lock);
		pthread_mutex_unlock(&r->server_wlock);
		return;
	}
	send_on(r, r->server_fd, p);
	pthread_mutex_unlock(&r->server_wlock);
}

/* NBD_CMD_DISC from the kernel (HEADER): pass it on; the server closes the connection
 * once it has answered everything before it. */
static void disconnect(struct relay *r, const unsigned char *header)
{
	bool up;
	int fd;

	pthread_mutex_lock(&r->server_wlock);
	pthread_mutex_lock(&r->lock);
	r->disconnecting = true;
	up = r->up;
	fd = r->server_fd;
	pthread_mutex_unlock(&r->lock);
	if (up && write_full(fd, header, REQUEST_SIZE) < 0)
		shutdown(fd, SHUT_RDWR);
	pthread_mutex_unlock(&r->server_wlock);
	wake(r);
}

/* The request thread: the kernel's requests, until it closes its end. */
static void *requests_main(void *arg)
{
	struct relay *r = arg;

	for (;;) {
		unsigned char header[REQUEST_SIZE];
		struct pending *p;
		int rc;

		if (read_full(r->kernel_fd, header, sizeof header) < 0)
			break;
		if (get32(header) != NBD_REQUEST_MAGIC) {
			keeper_log(LOG_ERR, "%s: request with bad magic %#x from the kernel",
			           r->name, get32(header));
			break;
		}
		if ((get32(header + 4) & 0xffff) == NBD_CMD_DISC) {
			disconnect(r, header);
			continue;
		}
		p = calloc(1, sizeof *p);
		if (p == NULL)
			break;
		memcpy(p->header, header, sizeof header);
		memcpy(p->handle, header + 8, 8);
		p->cmd = (uint16_t)(get32(header + 4) & 0xffff);
		p->len = get32(header + 24);
		if (p->len > REQUEST_MAX && (p->cmd == NBD_CMD_READ || p->cmd == NBD_CMD_WRITE)) {
			keeper_log(LOG_ERR, "%s: request of %u bytes from the kernel", r->name,
			           p->len);
			free_pending(p);
			break;
		}
		if (p->cmd == NBD_CMD_WRITE) {
			p->data = malloc(p->len ? p->len : 1);
			rc = p->data != NULL ? read_full(r->kernel_fd, p->data, p->len) : -ENOMEM;
			if (rc < 0) {
				free_pending(p);
				break;
			}
		}
		submit(r, p);
	}

	/* The kernel has let go of its end (or misbehaved): the relay ends. */
	pthread_mutex_lock(&r->lock);
	r->stopping = true;
	if (r->server_fd >= 0)
		shutdown(r->server_fd, SHUT_RDWR);
	pthread_mutex_unlock(&r->lock);
	wake(r);
	return NULL;
}

/* The server's connection broke (WHY): stop using it. Reply thread only. */
static void connection_lost(struct relay *r, const char *why)
{
	int fd;

	pthread_mutex_lock(&r->lock);
	fd = r->server_fd;
	r->server_fd = -1;
	r->up = false;
	clock_gettime(CLOCK_MONOTONIC, &r->since);
	pthread_mutex_unlock(&r->lock);
	if (fd < 0)
		return;
	if (!ending(r))
		keeper_log(LOG_WARNING, "%s: connection to the server lost (%s), reconnecting",
		           r->name, why);
	/* Wake a writer blocked on it, then close it once nobody writes to it. */
	shutdown(fd, SHUT_RDWR);
	pthread_mutex_lock(&r->server_wlock);
	close(fd);
	pthread_mutex_unlock(&r->server_wlock);
}

/* Connect again, with growing pauses, until it works or the relay ends; then have the
 * resend thread send every outstanding request again. Past the dead-connection timeout,
 * outstanding and new requests fail. Returns 0, or -ECANCELED if the relay ended. Reply
 * thread only. */
static int reconnect(struct relay *r)
{
	int delay = RETRY_FIRST_MS, fd = -1, rc, attempts = 0;

	for (;;) {
		if (ending(r))
			return -ECANCELED;
		rc = r->reconnect(r->opaque, &fd);
		attempts++;
		if (rc == 0)
			break;
		pthread_mutex_lock(&r->lock);
		if (!r->failing && tp_elapsed_ms(&r->since) >= (int64_t)r->dead_timeout * 1000) {
			r->failing = true;
			pthread_mutex_unlock(&r->lock);
			keeper_log(
			    LOG_ERR,
			    "%s: the server is away for more than %us: I/O fails until it is "
			    "back",
			    r->name, r->dead_timeout);
			fail_pending(r);
		} else {
			pthread_mutex_unlock(&r->lock);
		}
		if (pause_ms(r, delay))
			return -ECANCELED;
		delay = delay * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : delay * 2;
	}

	/* No request in the list was sent on the new connection yet: the resend thread
	 * sends them, while this thread goes back to reading replies. */
	pthread_mutex_lock(&r->lock);
	if (r->stopping || r->disconnecting) {
		/* Ended while we connected: nothing will be sent, or read, on it. */
		pthread_mutex_unlock(&r->lock);
		close(fd);
		return -ECANCELED;
	}
	r->server_fd = fd;
	r->gen++;
	r->up = true;
	r->failing = false;
	r->resend_gen = r->gen;
	r->resend_after_ms = tp_elapsed_ms(&r->since);
	r->resend_attempts = attempts;
	pthread_cond_signal(&r->resend);
	pthread_mutex_unlock(&r->lock);
	return 0;
}

/* Send every outstanding request that was not sent on connection GEN yet, oldest first;
 * the number sent, or -ECONNRESET if GEN broke first. Resend thread only. */
static ssize_t resend(struct relay *r, unsigned gen)
{
	ssize_t resent = 0;

	/* Held throughout, so that an NBD_CMD_DISC from the kernel follows the requests
	 * it was sent after, as it did on the old connection. */
	pthread_mutex_lock(&r->server_wlock);
	for (;;) {
		struct pending *p = NULL;

		pthread_mutex_lock(&r->lock);
		if (!r->up || r->gen != gen) {
			pthread_mutex_unlock(&r->lock);
			resent = -ECONNRESET;
			break;
		}
		/* From the head each time: a request sent a moment ago may have been
		 * answered and freed since. */
		for (p = r->head; p != NULL && p->gen == gen; p = p->next)
			;
		if (p == NULL) {
			pthread_mutex_unlock(&r->lock);
			break;
		}
		if (send_on(r, r->server_fd, p) < 0) {
			resent = -ECONNRESET;
			break;
		}
		resent++;
	}
	pthread_mutex_unlock(&r->server_wlock);
	return resent;
}

/* The resend thread: after each reconnect, every outstanding request on the fresh
 * connection, while the reply thread goes on reading the replies. */
static void *resends_main(void *arg)
{
	struct relay *r = arg;

	pthread_mutex_lock(&r->lock);
	for (;;) {
		struct timespec start;
		int64_t after_ms;
		int attempts;
		unsigned gen;
		ssize_t resent;

		while (!r->stopping && r->resend_gen == 0)
			pthread_cond_wait(&r->resend, &r->lock);
		if (r->stopping)
			break;
		gen = r->resend_gen;
		after_ms = r->resend_after_ms;
		attempts = r->resend_attempts;
		r->resend_gen = 0;
		pthread_mutex_unlock(&r->lock);
		/* Broken again before it was done: the reply thread says so, and the next
		 * reconnect logs. */
		clock_gettime(CLOCK_MONOTONIC, &start);
		resent = resend(r, gen);
		if (resent >= 0)
			keeper_log(LOG_NOTICE,
			           "%s: reconnected after %lld ms (%d attempts), %zd requests "
			           "resent in %lld ms",
			           r->name, (long long)after_ms, attempts, resent,
			           (long long)tp_elapsed_ms(&start));
		pthread_mutex_lock(&r->lock);
	}
	pthread_mutex_unlock(&r->lock);
	return NULL;
}

/* The outstanding request with HANDLE, or NULL if none was sent on the current
 * connection: the server cannot answer what it was never asked. LOCK held. */
static struct pending *find(struct relay *r, const unsigned char *handle)
{
	for (struct pending *p = r->head; p != NULL; p = p->next)
		if (memcmp(p->handle, handle, 8) == 0)
			return p->gen == r->gen ? p : NULL;
	return NULL;
}

static void unlink_pending(struct relay *r, struct pending *p)
{
	struct pending **pp;

	for (pp = &r->head; *pp != NULL; pp = &(*pp)->next)
		if (*pp == p) {
			*pp = p->next;
			if (r->tail == &p->next)
				r->tail = pp;
			r->n_pending--;
			return;
		}
}

/* The reply thread: the server's replies to the kernel, and reconnecting. */
static void *replies_main(void *arg)
{
	struct relay *r = arg;
	CLEANUP_FREE unsigned char *buf = NULL;
	size_t cap = 0;

	for (;;) {
		unsigned char reply[REPLY_SIZE];
		struct pending *p;
		uint32_t error;
		bool up;
		int fd, rc;

		pthread_mutex_lock(&r->lock);
		fd = r->server_fd;
		up = r->up;
		pthread_mutex_unlock(&r->lock);
		if (ending(r) && !up)
			break;
		if (!up) {
			if (reconnect(r) < 0)
				break;
			continue;
		}

		rc = read_full(fd, reply, sizeof reply);
		if (rc < 0) {
			if (ending(r))
				break;
			connection_lost(r, rc == -ECONNRESET ? "closed" : strerror(-rc));
			continue;
		}
		if (get32(reply) != NBD_REPLY_MAGIC) {
			connection_lost(r, "reply with bad magic");
			continue;
		}
		pthread_mutex_lock(&r->lock);
		p = find(r, reply + 8);
		/* The server may answer while the last bytes of a request are still on their
		 * way out of the request thread's write: it frees nothing before that write
		 * is done. */
		while (p != NULL && p->sending)
			pthread_cond_wait(&r->sent, &r->lock);
		pthread_mutex_unlock(&r->lock);
		if (p == NULL) {
			connection_lost(r, "reply to no request of ours");
			continue;
		}
		error = get32(reply + 4);
		if (p->cmd == NBD_CMD_READ && error == 0) {
			if (p->len > cap) {
				unsigned char *grown = realloc(buf, p->len);

				if (grown == NULL) {
					connection_lost(r, strerror(ENOMEM));
					continue;
				}
				buf = grown;
				cap = p->len;
			}
			rc = read_full(fd, buf, p->len);
			if (rc < 0) {
				connection_lost(r, rc == -ECONNRESET ? "closed" : strerror(-rc));
				continue;
			}
		}
		pthread_mutex_lock(&r->lock);
		unlink_pending(r, p);
		pthread_mutex_unlock(&r->lock);
		rc = answer(r, p->handle, error, p->cmd == NBD_CMD_READ && error == 0 ? buf : NULL,
		            p->len);
		free_pending(p);
		if (rc < 0)
			break;
	}

	/* The server is gone for good (after NBD_CMD_DISC) or the relay ends: nothing is
	 * sent any more, what is still outstanding fails, and the kernel sees its
	 * connection close. */
	pthread_mutex_lock(&r->lock);
	r->stopping = true;
	pthread_cond_signal(&r->resend);
	pthread_mutex_unlock(&r->lock);
	connection_lost(r, "the relay ends");
	fail_pending(r);
	shutdown(r->kernel_fd, SHUT_RDWR);
	return NULL;
}

int relay_start(const struct relay_config *cfg, struct relay **ret_relay)
{
	struct relay *r = calloc(1, sizeof *r);
	int rc;

	if (r == NULL)
		return -ENOMEM;
	snprintf(r->name, sizeof r->name, "%s", cfg->name);
	r->dead_timeout = cfg->dead_timeout;
	r->reconnect = cfg->reconnect;
	r->opaque = cfg->opaque;
	r->kernel_fd = cfg->kernel_fd;
	r->server_fd = cfg->server_fd;
	r->up = true;
	r->gen = 1;
	r->tail = &r->head;
	r->stop_pipe[0] = r->stop_pipe[1] = -1;
	pthread_mutex_init(&r->lock, NULL);
	pthread_mutex_init(&r->server_wlock, NULL);
	pthread_mutex_init(&r->kernel_wlock, NULL);
	pthread_cond_init(&r->sent, NULL);
	pthread_cond_init(&r->resend, NULL);
	if (pipe2(r->stop_pipe, O_CLOEXEC | O_NONBLOCK) < 0) {
		rc = -errno;
		goto fail;
	}
	rc = -pthread_create(&r->replies, NULL, replies_main, r);
	if (rc < 0)
		goto fail;
	r->have_replies = true;
	rc = -pthread_create(&r->resends, NULL, resends_main, r);
	if (rc < 0)
		goto fail;
	r->have_resends = true;
	rc = -pthread_create(&r->requests, NULL, requests_main, r);
	if (rc < 0)
		goto fail;
	r->have_requests = true;
	*ret_relay = r;
	return 0;

fail:
	relay_stop(r);
	return rc;
}

void relay_stop(struct relay *r)
{
	if (r == NULL)
		return;
	pthread_mutex_lock(&r->lock);
	r->stopping = true;
	if (r->server_fd >= 0)
		shutdown(r->server_fd, SHUT_RDWR);
	pthread_cond_signal(&r->resend);
	pthread_mutex_unlock(&r->lock);
	shutdown(r->kernel_fd, SHUT_RDWR);
	if (r->stop_pipe[1] >= 0)
		wake(r);
	if (r->have_requests)
		pthread_join(r->requests, NULL);
	if (r->have_resends)
		pthread_join(r->resends, NULL);
	if (r->have_replies)
		pthread_join(r->replies, NULL);
	else if (r->server_fd >= 0)
		close(r->server_fd);
	for (struct pending *p = r->head, *next; p != NULL; p = next) {
		next = p->next;
		free_pending(p);
	}
	close(r->kernel_fd);
	if (r->stop_pipe[0] >= 0) {
		close(r->stop_pipe[0]);
		close(r->stop_pipe[1]);
	}
	pthread_mutex_destroy(&r->lock);
	pthread_mutex_destroy(&r->server_wlock);
	pthread_mutex_destroy(&r->kernel_wlock);
	pthread_cond_destroy(&r->sent);
	pthread_cond_destroy(&r->resend);
	free(r);
}
