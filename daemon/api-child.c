/* The API processes, from the root parent's side: see daemon/api-child.h.
 *
 * A process's life: api_child_start makes its channels (SOCK_SEQPACKET socketpairs) and
 * its control socketpair, starts thinproxyd-api on their far ends as the configured uid
 * (daemon/spawn.c: no capabilities, no_new_privs, no other fd), gives it every socket
 * it serves on the control socketpair (TP_API_LISTEN, each with the next index of the
 * process's struct ops_server), and starts one thread per channel that answers its
 * requests with ops_server_serve_one. A channel that sends a malformed message, or that
 * stalls in the middle of one for API_STALL_MS, gets the process killed: it is no longer
 * to be trusted. Its end of the control socketpair is in the loop's epoll set: the
 * process never writes there, so anything that end reports (its close, at the latest)
 * means it has ended or must end. The loop kills it then, reaps it (its pid stays its
 * own until then: no pidfd is needed, and valgrind, which lacks pidfd_open, can run the
 * daemon), shuts the channels down, joins their threads (an operation already running
 * finishes; ops keep a change whole), and starts a fresh process after a backoff that
 * grows with each death in a row, as a tenant's nbdkit is restarted. The sockets stay
 * bound and listening in the parent all along, so that connections made meanwhile wait
 * in the backlog instead of failing. */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "api-child.h"
#include "api-wire-io.h"
#include "api-wire.h"
#include "log.h"
#include "ops-server.h"
#include "spawn.h"
#include "tp-backoff.h"
#include "tp-clock.h"

#define API_RESTART_MIN_MS 250
#define API_RESTART_MAX_MS 30000
#define API_HEALTHY_MS     60000
#define API_STOP_MS        3000
#define API_STALL_MS       2000
#define API_NOFILE         65536

/* A socket the process serves. */
struct listener {
	int fd;
	char *path;
	struct principal p;
};

struct channel {
	struct api_child *c;
	int fd; /* the parent's end; -1: none */
	pthread_t thread;
	bool running; /* the thread was started and not yet joined */
};

struct api_child {
	char *name, *program;
	int program_fd; /* its sealed copy, run whatever the modes above PROGRAM */
	uid_t uid;
	unsigned n_channels;
	bool keep_stderr;

	/* The sockets, and what the running process was told: under LOCK, which
	 * api_child_listen and api_child_unlisten take from any thread. */
	pthread_mutex_t lock;
	struct listener *listeners;
	size_t n, cap;
	struct ops_server server; /* the running process's indexes */
	int control_fd;           /* -1: no process to tell */

	/* The process: the loop's thread alone changes these. */
	struct channel channels[API_CHILD_CHANNELS_MAX];
	pid_t pid; /* 0: not running */
	bool deaf; /* telling it failed: it is being killed, tell it nothing more */
	bool up;   /* server initialised, channels made */
	int64_t started_ms;
	unsigned failures;  /* deaths in a row without a healthy run */
	int64_t restart_ms; /* when to start it again; 0: no start pending */
};

int api_child_new(const struct api_child_config *cfg, struct api_child **ret)
{
	struct api_child *c;

	if (cfg->channels == 0 || cfg->channels > API_CHILD_CHANNELS_MAX || cfg->uid == 0)
		return -EINVAL;
	c = calloc(1, sizeof *c);
	if (c == NULL)
		return -ENOMEM;
	c->name = strdup(cfg->name);
	c->program = strdup(cfg->program);
	if (c->name == NULL || c->program == NULL) {
		free(c->name);
		free(c->program);
		free(c);
		return -ENOMEM;
	}
	c->program_fd = spawn_sealed_copy(cfg->program, "thinproxyd-api", 0555);
	if (c->program_fd < 0) {
		int r = c->program_fd;

		free(c->name);
		free(c->program);
		free(c);
		return r;
	}
	c->uid = cfg->uid;
	c->n_channels = cfg->channels;
	c->keep_stderr = cfg->keep_stderr;
	pthread_mutex_init(&c->lock, NULL);
	c->control_fd = -1;
	for (unsigned i = 0; i < API_CHILD_CHANNELS_MAX; i++)
		c->channels[i] = (struct channel){.c = c, .fd = -1};
	*ret = c;
	return 0;
}

/* Kill the process: it has stalled or gone out of step. Its control socketpair closing
 * tells the loop, which reaps it. Any thread: the loop reaps it only after joining the
 * channels' threads, so its pid names it until then. */
static void child_kill(struct api_child *c)
{
	if (c->pid > 0)
		kill(c->pid, SIGKILL);
}

/* Tell the running process to serve L (or, if TAKE_BACK, to stop serving index INDEX).
 * The lock held. A process that cannot be told is killed. */
static void tell(struct api_child *c, const struct listener *l, bool take_back, uint32_t index)
{
	struct tp_api_listen m;
	int r;

	if (c->control_fd < 0 || c->deaf)
		return;
	if (take_back) {
		ops_server_drop(&c->server, index);
		r = api_wire_encode_listen(TP_API_UNLISTEN, index, NULL, &m);
	} else {
		r = ops_server_add(&c->server, &l->p, &index);
		if (r == 0)
			r = api_wire_encode_listen(TP_API_LISTEN, index, &l->p, &m);
	}
	if (r == 0)
		r = api_wire_send_listen(c->control_fd, &m, take_back ? -1 : l->fd);
	if (r < 0) {
		log_errno(LOG_ERR, r, "API process %s (%d): give it its sockets: %m; killing it",
		          c->name, (int)c->pid);
		child_kill(c);
		/* Nothing more to tell it: the next process is told everything. */
		c->deaf = true;
	}
}

/* The index the running process serves P's socket as, or UINT32_MAX. The lock held. */
static uint32_t index_of(struct api_child *c, const struct principal *p)
{
	uint32_t found = UINT32_MAX;

	pthread_mutex_lock(&c->server.lock);
	for (size_t i = 0; i < c->server.n; i++) {
		const struct ops_socket *s = &c->server.sockets[i];

		if (s->live && s->p.admin == p->admin && strcmp(s->p.tenant, p->tenant) == 0)
			found = (uint32_t)i;
	}
	pthread_mutex_unlock(&c->server.lock);
	return found;
}

/* Forget listener I: taken back from the process, closed, unlinked. The lock held. */
static void listener_remove(struct api_child *c, size_t i)
{
	struct listener *l = &c->listeners[i];
	uint32_t index = c->control_fd >= 0 && !c->deaf ? index_of(c, &l->p) : UINT32_MAX;

	if (index != UINT32_MAX)
		tell(c, l, true, index);
	close(l->fd);
	if (l->path)
		unlink(l->path);
	free(l->path);
	c->listeners[i] = c->listeners[--c->n];
}

static ssize_t listener_find(struct api_child *c, const char *tenant)
{
	for (size_t i = 0; i < c->n; i++) {
		const struct principal *p = &c->listeners[i].p;

		if (tenant == NULL ? p->admin : !p->admin && strcmp(p->tenant, tenant) == 0)
			return (ssize_t)i;
	}
	return -1;
}

int api_child_listen(struct api_child *c, int fd, const char *path, const struct principal *p)
{
	struct listener l = {.fd = fd, .p = *p};
	ssize_t old;
	int r = 0;

	if (path && (l.path = strdup(path)) == NULL) {
		close(fd);
		return -ENOMEM;
	}
	pthread_mutex_lock(&c->lock);
	old = listener_find(c, p->admin ? NULL : p->tenant);
	if (old >= 0) {
		/* The same path, bound again: it is not ours to unlink any more. */
		free(c->listeners[old].path);
		c->listeners[old].path = NULL;
		listener_remove(c, (size_t)old);
	}
	if (c->n == c->cap) {
		size_t cap = c->cap ? 2 * c->cap : 16;
		struct listener *grown = realloc(c->listeners, cap * sizeof *grown);

		if (grown == NULL)
			r = -ENOMEM;
		else {
			c->listeners = grown;
			c->cap = cap;
		}
	}
	if (r == 0) {
		c->listeners[c->n++] = l;
		tell(c, &l, false, 0);
	} else {
		close(fd);
		free(l.path);
	}
	pthread_mutex_unlock(&c->lock);
	return r;
}

void api_child_unlisten(struct api_child *c, const char *tenant)
{
	ssize_t i;

	pthread_mutex_lock(&c->lock);
	i = listener_find(c, tenant);
	if (i >= 0)
		listener_remove(c, (size_t)i);
	pthread_mutex_unlock(&c->lock);
}

/* A channel's thread: answer its requests until the process closes it or the loop shuts
 * it down (-EPIPE), or it goes out of step (the process is killed). */
static void *channel_serve(void *arg)
{
	struct channel *ch = arg;
	struct pollfd pfd = {.fd = ch->fd, .events = POLLIN};
	int r;

	for (;;) {
		if (poll(&pfd, 1, -1) < 0) {
			if (errno == EINTR)
				continue;
			r = -errno;
		} else {
			r = ops_server_serve_one(&ch->c->server, ch->fd);
			if (r == 0)
				continue;
		}
		if (r != -EPIPE) {
			log_errno(LOG_ERR, r, "API process %s (%d): %m; killing it", ch->c->name,
			          (int)ch->c->pid);
			child_kill(ch->c);
		}
		return NULL;
	}
}

static void schedule(struct api_child *c)
{
	int64_t delay = 0;

	if (c->failures > 0) {
		delay = API_RESTART_MIN_MS;
		for (unsigned i = 1; i < c->failures && delay < API_RESTART_MAX_MS; i++)
			delay *= 2;
		if (delay > API_RESTART_MAX_MS)
			delay = API_RESTART_MAX_MS;
	}
	c->failures++;
	c->restart_ms = tp_now_ms() + delay;
}

/* Undo what start made of the process's side: the channels shut down and their threads
 * joined, the control socketpair closed, the indexes forgotten. The process itself is
 * the caller's. */
static void channels_close(struct api_child *c)
{
	pthread_mutex_lock(&c->lock);
	if (c->control_fd >= 0)
		close(c->control_fd);
	c->control_fd = -1;
	pthread_mutex_unlock(&c->lock);
	for (unsigned i = 0; i < c->n_channels; i++)
		if (c->channels[i].fd >= 0)
			shutdown(c->channels[i].fd, SHUT_RDWR);
	for (unsigned i = 0; i < c->n_channels; i++) {
		struct channel *ch = &c->channels[i];

		if (ch->running)
			pthread_join(ch->thread, NULL);
		ch->running = false;
		if (ch->fd >= 0)
			close(ch->fd);
		ch->fd = -1;
	}
	if (c->up) {
		pthread_mutex_lock(&c->lock);
		ops_server_free(&c->server);
		pthread_mutex_unlock(&c->lock);
	}
	c->up = false;
}

/* Make the channels and the control socketpair: the parent's ends into C, the far ends
 * into FAR (the channels', then the control's). */
static int channels_make(struct api_child *c, int *far)
{
	int pair[2];

	for (unsigned i = 0; i <= c->n_channels; i++) {
		if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) < 0)
			return -errno;
		far[i] = pair[1];
		if (i < c->n_channels) {
			struct timeval stall = {API_STALL_MS / 1000, API_STALL_MS % 1000 * 1000};

			c->channels[i].fd = pair[0];
			/* A message stalled halfway, or a reply the process does not take. */
			if (setsockopt(pair[0], SOL_SOCKET, SO_RCVTIMEO, &stall, sizeof stall) <
			        0 ||
			    setsockopt(pair[0], SOL_SOCKET, SO_SNDTIMEO, &stall, sizeof stall) < 0)
				return -errno;
		} else {
			struct timeval stall = {API_STALL_MS / 1000, API_STALL_MS % 1000 * 1000};

			c->control_fd = pair[0];
			if (setsockopt(pair[0], SOL_SOCKET, SO_SNDTIMEO, &stall, sizeof stall) < 0)
				return -errno;
		}
	}
	return 0;
}

static void reap(struct api_child *c, int ep);

/* Spawn the process on fresh channels: its pid into C. Logs why not. */
static int child_spawn(struct api_child *c)
{
	int far[API_CHILD_CHANNELS_MAX + 1];
	char channels_arg[API_CHILD_CHANNELS_MAX * 4], control_arg[16];
	char *argv[] = {c->program, "--control", control_arg, channels_arg, NULL};
	char *envp[] = {"PATH=" SPAWN_SAFE_PATH, NULL};
	sigset_t stop;
	struct spawn_args a = {.fds = far,
	                       .exec_fd = c->program_fd,
	                       .n_fds = c->n_channels + 1,
	                       .cgroup_fd = -1,
	                       .nofile = {API_NOFILE, API_NOFILE},
	                       .nproc = {RLIM_INFINITY, RLIM_INFINITY},
	                       .uid = c->uid,
	                       .gid = c->uid,
	                       .keep_stderr = c->keep_stderr,
	                       .blocked = &stop,
	                       .argv = argv,
	                       .envp = envp};
	const char *step = NULL;
	struct rlimit cur;
	size_t len = 0;
	pid_t pid;
	int r;

	/* It reads SIGTERM and SIGINT from a signalfd: blocked from the start, one sent while
	 * it starts (a daemon stopping just then) still ends it cleanly. */
	sigemptyset(&stop);
	sigaddset(&stop, SIGTERM);
	sigaddset(&stop, SIGINT);
	for (unsigned i = 0; i <= c->n_channels; i++)
		far[i] = -1;
	/* Channels onto fds 3, 4, ..., the control socketpair after them. */
	for (unsigned i = 0; i < c->n_channels; i++)
		len += (size_t)snprintf(channels_arg + len, sizeof channels_arg - len, "%s%u",
		                        i ? "," : "", SPAWN_FIRST_FD + i);
	snprintf(control_arg, sizeof control_arg, "%u", SPAWN_FIRST_FD + c->n_channels);
	if (getrlimit(RLIMIT_NOFILE, &cur) == 0 && cur.rlim_max < API_NOFILE)
		a.nofile.rlim_cur = a.nofile.rlim_max = cur.rlim_max;

	pthread_mutex_lock(&c->lock);
	r = ops_server_init(&c->server, NULL, 0);
	c->up = r == 0;
	pthread_mutex_unlock(&c->lock);
	if (r == 0)
		r = channels_make(c, far);
	if (r == 0)
		r = spawn_unprivileged(&a, &pid, &step);
	for (unsigned i = 0; i <= c->n_channels; i++)
		if (far[i] >= 0)
			close(far[i]);
	if (r < 0) {
		if (step && *step)
			log_errno(LOG_ERR, r, "API process %s: start %s: %s: %m", c->name,
			          c->program, step);
		else
			log_errno(LOG_ERR, r, "API process %s: start %s: %m", c->name, c->program);
		channels_close(c);
		return r;
	}
	c->pid = pid;
	c->started_ms = tp_now_ms();
	return 0;
}

int api_child_start(struct api_child *c, int ep)
{
	struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP};
	int r;

	c->restart_ms = 0;
	c->deaf = false;
	r = child_spawn(c);
	if (r < 0) {
		schedule(c);
		return r;
	}
	/* Watched first, so that from here on a kill is all a failure needs: the loop
	 * reaps it. */
	ev.data.fd = c->control_fd;
	if (epoll_ctl(ep, EPOLL_CTL_ADD, c->control_fd, &ev) < 0) {
		log_errno(LOG_ERR, -errno, "API process %s (%d): watch it: %m; killing it", c->name,
		          (int)c->pid);
		reap(c, -1);
		return -EIO;
	}
	/* Its sockets, then the threads that answer it. */
	pthread_mutex_lock(&c->lock);
	for (size_t i = 0; i < c->n; i++)
		tell(c, &c->listeners[i], false, 0);
	pthread_mutex_unlock(&c->lock);
	for (unsigned i = 0; r == 0 && i < c->n_channels; i++) {
		r = -pthread_create(&c->channels[i].thread, NULL, channel_serve, &c->channels[i]);
		c->channels[i].running = r == 0;
	}
	if (r < 0) {
		log_errno(LOG_ERR, r, "API process %s (%d): serve it: %m; killing it", c->name,
		          (int)c->pid);
		child_kill(c);
		return r;
	}
	log_info("started API process %s %d (%s) as %u:%u", c->name, (int)c->pid, c->program,
	         (unsigned)c->uid, (unsigned)c->uid);
	return 0;
}

/* Reap the process, killed first (it has ended, or is to end), close its side and
 * schedule its restart. */
static void reap(struct api_child *c, int ep)
{
	int status = 0;

	kill(c->pid, SIGKILL);
	while (waitpid(c->pid, &status, 0) < 0 && errno == EINTR)
		;
	if (WIFEXITED(status))
		log_warning("API process %s %d exited with status %d", c->name, (int)c->pid,
		            WEXITSTATUS(status));
	else
		log_warning("API process %s %d killed by signal %d", c->name, (int)c->pid,
		            WTERMSIG(status));
	if (ep >= 0)
		epoll_ctl(ep, EPOLL_CTL_DEL, c->control_fd, NULL);
	channels_close(c);
	c->pid = 0;
	if (tp_now_ms() - c->started_ms >= API_HEALTHY_MS)
		c->failures = 0;
	schedule(c);
}

bool api_child_event(struct api_child *c, int ep, int fd)
{
	if (c == NULL || c->pid == 0 || fd != c->control_fd)
		return false;
	reap(c, ep);
	return true;
}

int api_child_next_ms(const struct api_child *c)
{
	int64_t left;

	if (c == NULL || c->restart_ms == 0)
		return -1;
	left = c->restart_ms - tp_now_ms();
	return left <= 0 ? 0 : (int)(left < INT32_MAX ? left : INT32_MAX);
}

void api_child_free(struct api_child *c)
{
	if (c == NULL)
		return;
	if (c->pid > 0) {
		long step = 1, waited = 0;
		int status;

		/* It exits when its channels close; what it was answering is finished first. */
		channels_close(c);
		while (waitpid(c->pid, &status, WNOHANG) == 0 && waited < API_STOP_MS)
			waited += tp_backoff(&step);
		if (waited >= API_STOP_MS) {
			kill(c->pid, SIGKILL);
			waitpid(c->pid, &status, 0);
		}
	}
	while (c->n > 0)
		listener_remove(c, c->n - 1);
	free(c->listeners);
	pthread_mutex_destroy(&c->lock);
	close(c->program_fd);
	free(c->name);
	free(c->program);
	free(c);
}
