/* The root parent's side of the wire to the API process, alone (tests/unit/test-ops-wire.c
 * runs it): ops-server-harness FD TENANT... serves the socketpair end FD with the real
 * operations, on a store and the fake pool in a fresh directory under /tmp, until the
 * other end closes. Socket 0 is the admin's, socket I (from 1) tenant TENANT I's, each
 * tenant added first. Exits 0 after a clean end, 1 otherwise. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../daemon/log.h"
#include "../../daemon/ops-server.h"
#include "../../daemon/ops.h"
#include "../../daemon/pool.h"
#include "../../daemon/store.h"

int main(int argc, char **argv)
{
	struct principal sockets[16] = {{.admin = true}};
	struct ops_config oc = {.nbd_uid_base = 60000};
	char dir[] = "/tmp/ops-server-harness.XXXXXX", path[128], cmd[160];
	struct pool_config pc = {.state_dir = dir};
	struct ops_server s;
	struct store *st = NULL;
	struct pool *pool;
	int fd, r, n = argc - 1;

	if (argc < 2 || argc > 16 || (fd = atoi(argv[1])) < 0) {
		fprintf(stderr, "usage: ops-server-harness FD [TENANT]...\n");
		return 2;
	}
	log_init("ops-server-harness", false, LOG_ERR);
	if (mkdtemp(dir) == NULL)
		return 1;
	snprintf(path, sizeof path, "%s/db", dir);
	r = store_open(path, &st);
	if (r == 0 && (r = pool_open(&pc, &pool)) == 0 && (r = ops_init(st, pool, &oc)) == 0) {
		for (int i = 1; r == 0 && i < n; i++) {
			struct tenant_spec spec = {.name = argv[i + 1]};
			struct tenant_view tv;

			r = ops_tenant_add(&spec, &tv);
			if (r == 0)
				r = ops_principal_for_tenant(argv[i + 1], &sockets[i]);
			sockets[i].admin = false;
		}
		if (r == 0 && (r = ops_server_init(&s, sockets, (size_t)n)) == 0) {
			r = ops_server_run(&s, fd);
			ops_server_free(&s);
		}
		ops_shutdown();
		pool_close(pool);
	}
	if (st != NULL)
		store_close(st);
	if (r < 0)
		fprintf(stderr, "ops-server-harness: %s\n", strerror(-r));
	snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
	if (system(cmd) != 0)
		r = -EIO;
	return r < 0 ? 1 : 0;
}
