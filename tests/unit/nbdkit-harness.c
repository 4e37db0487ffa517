/* The shared parts of test-plugin-broker and test-supervise (nbdkit-harness.h). */
#include <check.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../daemon/broker.h"
#include "nbdkit-harness.h"

#if defined(__SANITIZE_ADDRESS__)
#include <link.h>

struct runtimes {
	char asan[PATH_MAX], ubsan[PATH_MAX];
};

static int find_runtime(struct dl_phdr_info *info, size_t size, void *opaque)
{
	struct runtimes *rt = opaque;

	(void)size;
	if (strstr(info->dlpi_name, "/libasan.so"))
		snprintf(rt->asan, sizeof rt->asan, "%s", info->dlpi_name);
	if (strstr(info->dlpi_name, "/libubsan.so"))
		snprintf(rt->ubsan, sizeof rt->ubsan, "%s", info->dlpi_name);
	return 0;
}
#endif

const char *harness_nbdkit_program(const char *dir)
{
#if defined(__SANITIZE_ADDRESS__)
	static char path[PATH_MAX];
	struct runtimes rt = {"", ""};
	FILE *f;

	dl_iterate_phdr(find_runtime, &rt);
	snprintf(path, sizeof path, "%s/nbdkit-sanitized", dir);
	f = fopen(path, "we");
	ck_assert_ptr_nonnull(f);
	fprintf(f, "#!/bin/sh\nLD_PRELOAD='%s %s' ASAN_OPTIONS=detect_leaks=0 exec nbdkit \"$@\"\n",
	        rt.asan, rt.ubsan);
	fclose(f);
	ck_assert_int_eq(chmod(path, 0755), 0);
	return path;
#else
	(void)dir;
	return "nbdkit";
#endif
}

static struct broker *broker;
static pthread_t broker_thread;
static volatile bool stopping;

static void *serve_broker(void *arg)
{
	struct pollfd pfd = {.fd = broker_fd(broker), .events = POLLIN};

	(void)arg;
	while (!stopping)
		if (poll(&pfd, 1, 50) > 0)
			broker_run(broker);
	return NULL;
}

void harness_broker_start(const char *path)
{
	ck_assert_int_eq(broker_start(path, &broker), 0);
	stopping = false;
	ck_assert_int_eq(pthread_create(&broker_thread, NULL, serve_broker, NULL), 0);
}

void harness_broker_stop(void)
{
	stopping = true;
	pthread_join(broker_thread, NULL);
	broker_stop(broker);
	broker = NULL;
}

bool harness_broker_running(void)
{
	return broker != NULL;
}
