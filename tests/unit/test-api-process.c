/* Unit tests for the API process, end to end on the host (issue 21): real HTTP over unix
 * sockets to build/thinproxyd-api, which parses it with api.c and asks over its end of a
 * socketpair for each operation; tests/unit/ops-server-harness holds the other end and
 * runs the real operations on a store and the fake pool, as the root parent is to. The
 * test binds the listening sockets, as the parent is to, and the API process inherits
 * them: socket 0 is the admin's, socket 1 alice's. */
#include <check.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <json.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../../daemon/api-wire-io.h"
#include "../../daemon/api-wire.h"
#include "../../daemon/log.h"
#include "../../daemon/ops-client.h"

static char dir[] = "/tmp/test-api-process.XXXXXX";
static char admin_path[128], alice_path[128];
static pid_t harness, api;

/* A listening unix socket at PATH, closed on exec. */
static int listen_at(const char *path)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	ck_assert_int_ge(fd, 0);
	snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
	ck_assert_int_eq(listen(fd, 16), 0);
	return fd;
}

/* Run the program PATH with ARGV and the fds KEEP (-1 ends them) open for it, no other
 * of ours: a copy of a socketpair's end left in another process would keep it open after
 * its owner is gone. Returns its pid. */
static pid_t start(const char *path, char *const *argv, const int *keep)
{
	pid_t pid = fork();

	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		sigset_t stop;

		/* As thinproxyd starts it (daemon/spawn.c): a SIGTERM sent before the program
		 * reads its signals waits for it. */
		sigemptyset(&stop);
		sigaddset(&stop, SIGTERM);
		sigaddset(&stop, SIGINT);
		sigprocmask(SIG_BLOCK, &stop, NULL);
		for (; *keep >= 0; keep++)
			fcntl(*keep, F_SETFD, 0);
		execv(path, argv);
		_exit(127);
	}
	return pid;
}

static void setup(void)
{
	const char *build = getenv("TP_BUILD") ? getenv("TP_BUILD") : "build";
	struct principal admin = {.admin = true}, alice;
	char harness_path[4096], api_path[4096], ops_arg[16], admin_arg[32], alice_arg[128];
	int sv[2], admin_fd, alice_fd;

	log_init("test-api-process", false, LOG_CRIT);
	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(admin_path, sizeof admin_path, "%s/admin.sock", dir);
	snprintf(alice_path, sizeof alice_path, "%s/alice.sock", dir);
	snprintf(harness_path, sizeof harness_path, "%s/tests/ops-server-harness", build);
	snprintf(api_path, sizeof api_path, "%s/thinproxyd-api", build);

	/* The parent's end, alice added; her principal as the parent has it, asked of it over
	 * the admin socket before the API process takes this end over. */
	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
	snprintf(ops_arg, sizeof ops_arg, "%d", sv[1]);
	harness = start(harness_path, (char *[]){harness_path, ops_arg, "alice", NULL},
	                (int[]){sv[1], -1});
	close(sv[1]);
	ck_assert_int_eq(ops_client_init(&sv[0], 1, &admin, 1), 0);
	ck_assert_int_eq(ops_principal_for_tenant("alice", &alice), 0);
	ops_client_shutdown();

	admin_fd = listen_at(admin_path);
	alice_fd = listen_at(alice_path);
	snprintf(ops_arg, sizeof ops_arg, "%d", sv[0]);
	snprintf(admin_arg, sizeof admin_arg, "%d:admin", admin_fd);
	snprintf(alice_arg, sizeof alice_arg, "%d:%lld:%s", alice_fd, (long long)alice.tenant_id,
	         alice.tenant);
	api = start(api_path, (char *[]){api_path, ops_arg, admin_arg, alice_arg, NULL},
	            (int[]){sv[0], admin_fd, alice_fd, -1});
	close(sv[0]);
	close(admin_fd);
	close(alice_fd);
}

/* Wait for PID and check that it exited with STATUS. */
static void reap(pid_t pid, int status)
{
	int ws;

	ck_assert_int_eq(waitpid(pid, &ws, 0), pid);
	ck_assert_msg(WIFEXITED(ws), "pid %d: status %#x", (int)pid, ws);
	ck_assert_int_eq(WEXITSTATUS(ws), status);
}

static void teardown(void)
{
	char cmd[128];

	if (api > 0) {
		kill(api, SIGTERM);
		reap(api, 0);
	}
	/* The API process's end closed with it: the harness stops cleanly. */
	if (harness > 0)
		reap(harness, 0);
	snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
	ck_assert_int_eq(system(cmd), 0);
	strcpy(dir + strlen(dir) - 6, "XXXXXX");
}

static size_t collect(char *data, size_t size, size_t n, void *opaque)
{
	FILE *f = opaque;

	return fwrite(data, size, n, f);
}

/* METHOD URL with BODY over the unix socket SOCK: the status; the body parsed into
 * *RET_JSON if asked for. */
static long http(const char *sock, const char *method, const char *url, const char *body,
                 json_object **ret_json)
{
	struct curl_slist *headers = curl_slist_append(NULL, "Content-Type: application/json");
	char full[256], *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);
	CURL *c = curl_easy_init();
	long status = 0;

	ck_assert_ptr_nonnull(c);
	ck_assert_ptr_nonnull(f);
	snprintf(full, sizeof full, "http://localhost%s", url);
	curl_easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH, sock);
	curl_easy_setopt(c, CURLOPT_URL, full);
	curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, f);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, 20L);
	if (body) {
		curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
	}
	ck_assert_int_eq(curl_easy_perform(c), CURLE_OK);
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	curl_easy_cleanup(c);
	curl_slist_free_all(headers);
	fclose(f);
	if (ret_json) {
		*ret_json = json_tokener_parse(text);
		ck_assert_ptr_nonnull(*ret_json);
	}
	free(text);
	return status;
}

static const char *get(json_object *o, const char *key)
{
	json_object *v;

	ck_assert(json_object_object_get_ex(o, key, &v));
	return json_object_get_string(v);
}

START_TEST(serves_a_tenant_through_the_parent)
{
	json_object *j, *list;

	ck_assert_int_eq(
	    http(alice_path, "POST", "/v1/volumes", "{\"name\":\"base\",\"size\":1048576}", &j),
	    201);
	ck_assert_str_eq(get(j, "name"), "base");
	json_object_put(j);
	ck_assert_int_eq(http(alice_path, "GET", "/v1/volumes", NULL, &j), 200);
	ck_assert(json_object_object_get_ex(j, "volumes", &list));
	ck_assert_int_eq(json_object_array_length(list), 1);
	ck_assert_str_eq(get(json_object_array_get_idx(list, 0), "name"), "base");
	json_object_put(j);
	ck_assert_int_eq(http(alice_path, "GET", "/v1/volumes/missing", NULL, &j), 404);
	json_object_put(j);
	ck_assert_int_eq(http(alice_path, "DELETE", "/v1/volumes/base", NULL, NULL), 204);
	ck_assert_int_eq(http(alice_path, "GET", "/v1/volumes/base", NULL, NULL), 404);
}
END_TEST

START_TEST(serves_the_admin_through_the_parent)
{
	json_object *j;

	ck_assert_int_eq(
	    http(admin_path, "POST", "/v1/tenants", "{\"name\":\"carol\",\"uid\":1234}", NULL),
	    201);
	ck_assert_int_eq(http(admin_path, "GET", "/v1/tenants/carol", NULL, &j), 200);
	ck_assert_str_eq(get(j, "name"), "carol");
	json_object_put(j);
	/* The admin acting for alice sees what alice made through her own socket. */
	ck_assert_int_eq(
	    http(alice_path, "POST", "/v1/volumes", "{\"name\":\"a\",\"size\":1048576}", NULL),
	    201);
	ck_assert_int_eq(http(admin_path, "GET", "/v1/tenants/alice/volumes/a", NULL, &j), 200);
	ck_assert_str_eq(get(j, "owner"), "alice");
	json_object_put(j);
	ck_assert_int_eq(http(admin_path, "GET", "/v1/pool", NULL, NULL), 200);
	/* Alice's socket is not the admin's: the admin's routes are not there. */
	ck_assert_int_eq(http(alice_path, "GET", "/v1/tenants", NULL, NULL), 404);
}
END_TEST

/* A parent that goes closes its end of the socketpair: the API process stops by itself.
 * (One of its own, on a socketpair whose other end the test holds.) */
START_TEST(stops_when_the_parent_goes)
{
	const char *build = getenv("TP_BUILD") ? getenv("TP_BUILD") : "build";
	char api_path[4096], path[160], ops_arg[16], sock_arg[32];
	int sv[2], fd;
	pid_t pid;

	snprintf(api_path, sizeof api_path, "%s/thinproxyd-api", build);
	snprintf(path, sizeof path, "%s/other.sock", dir);
	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
	fd = listen_at(path);
	snprintf(ops_arg, sizeof ops_arg, "%d", sv[1]);
	snprintf(sock_arg, sizeof sock_arg, "%d:admin", fd);
	pid =
	    start(api_path, (char *[]){api_path, ops_arg, sock_arg, NULL}, (int[]){sv[1], fd, -1});
	close(sv[1]);
	close(fd);
	close(sv[0]);
	reap(pid, 0);
}
END_TEST

/* Can a client connect to the unix socket PATH? */
static bool connects(const char *path)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	bool ok;

	ck_assert_int_ge(fd, 0);
	snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
	ok = connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
	close(fd);
	return ok;
}

/* Give the API process on CONTROL socket INDEX for P (NULL: take it back), with FD. */
static void tell(int control, uint16_t op, uint32_t index, const struct principal *p, int fd)
{
	struct tp_api_listen m;

	ck_assert_int_eq(api_wire_encode_listen(op, index, p, &m), 0);
	ck_assert_int_eq(api_wire_send_listen(control, &m, fd), 0);
}

/* An API process of its own with a control socketpair and no socket on its command line,
 * before a harness of its own (the admin, then bob): sockets given on the control
 * socketpair are served under the indexes given, and a socket taken back is closed. */
START_TEST(serves_the_sockets_the_control_socketpair_gives)
{
	const char *build = getenv("TP_BUILD") ? getenv("TP_BUILD") : "build";
	struct principal admin = {.admin = true}, bob;
	char harness_path[4096], api_path[4096], ops_arg[16], control_arg[16];
	char admin2[160], bob_path[160];
	int ops[2], control[2], fd;
	pid_t h, pid;

	snprintf(harness_path, sizeof harness_path, "%s/tests/ops-server-harness", build);
	snprintf(api_path, sizeof api_path, "%s/thinproxyd-api", build);
	snprintf(admin2, sizeof admin2, "%s/admin2.sock", dir);
	snprintf(bob_path, sizeof bob_path, "%s/bob.sock", dir);
	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, ops), 0);
	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, control), 0);
	snprintf(ops_arg, sizeof ops_arg, "%d", ops[1]);
	h = start(harness_path, (char *[]){harness_path, ops_arg, "bob", NULL},
	          (int[]){ops[1], -1});
	close(ops[1]);
	ck_assert_int_eq(ops_client_init(&ops[0], 1, &admin, 1), 0);
	ck_assert_int_eq(ops_principal_for_tenant("bob", &bob), 0);
	ops_client_shutdown();
	bob.admin = false;

	snprintf(ops_arg, sizeof ops_arg, "%d", ops[0]);
	snprintf(control_arg, sizeof control_arg, "%d", control[1]);
	pid = start(api_path, (char *[]){api_path, "--control", control_arg, ops_arg, NULL},
	            (int[]){ops[0], control[1], -1});
	close(ops[0]);
	close(control[1]);
	fd = listen_at(admin2);
	tell(control[0], TP_API_LISTEN, 0, &admin, fd);
	close(fd);
	fd = listen_at(bob_path);
	tell(control[0], TP_API_LISTEN, 1, &bob, fd);
	close(fd);
	ck_assert_int_eq(
	    http(bob_path, "POST", "/v1/volumes", "{\"name\":\"b\",\"size\":1048576}", NULL), 201);
	ck_assert_int_eq(http(admin2, "GET", "/v1/tenants/bob/volumes/b", NULL, NULL), 200);

	/* Taken back: once the API process has closed its copy, nobody listens there. */
	tell(control[0], TP_API_UNLISTEN, 1, NULL, -1);
	for (int i = 0; i < 2000 && connects(bob_path); i++)
		usleep(10000);
	ck_assert(!connects(bob_path));
	ck_assert_int_eq(http(admin2, "GET", "/v1/pool", NULL, NULL), 200);

	/* The control socketpair closed: it stops, and the harness after it. */
	close(control[0]);
	reap(pid, 0);
	reap(h, 0);
}
END_TEST

/* A word on the control socketpair that is not one of the parent's (here a listen with
 * no socket attached): the API process stops with status 1, for the parent to start a
 * fresh one. */
START_TEST(stops_on_a_malformed_word_from_the_parent)
{
	const char *build = getenv("TP_BUILD") ? getenv("TP_BUILD") : "build";
	struct principal admin = {.admin = true};
	char api_path[4096], ops_arg[16], control_arg[16];
	int ops[2], control[2];
	pid_t pid;

	snprintf(api_path, sizeof api_path, "%s/thinproxyd-api", build);
	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, ops), 0);
	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, control), 0);
	snprintf(ops_arg, sizeof ops_arg, "%d", ops[1]);
	snprintf(control_arg, sizeof control_arg, "%d", control[1]);
	pid = start(api_path, (char *[]){api_path, "--control", control_arg, ops_arg, NULL},
	            (int[]){ops[1], control[1], -1});
	close(ops[1]);
	close(control[1]);
	tell(control[0], TP_API_LISTEN, 0, &admin, -1);
	reap(pid, 1);
	close(control[0]);
	close(ops[0]);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("api-process");
	TCase *tc = tcase_create("api-process");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, serves_a_tenant_through_the_parent);
	tcase_add_test(tc, serves_the_admin_through_the_parent);
	tcase_add_test(tc, stops_when_the_parent_goes);
	tcase_add_test(tc, serves_the_sockets_the_control_socketpair_gives);
	tcase_add_test(tc, stops_on_a_malformed_word_from_the_parent);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr;
	int failed;

	curl_global_init(CURL_GLOBAL_DEFAULT);
	sr = srunner_create(suite());
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	curl_global_cleanup();
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
