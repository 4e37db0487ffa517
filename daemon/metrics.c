/* The metrics, in Prometheus's text format: the pool's space and each tenant's usage. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "ops-internal.h"
#include "pool.h"
#include "store.h"
#include "tp-cleanup.h"

int ops_metrics(char **ret_text)
{
	CLEANUP_FREE struct tenant *tenants = NULL;
	CLEANUP_FREE uint64_t *allocated = NULL;
	struct pool_status st;
	uint64_t bs;
	size_t n = 0, i, len = 0;
	char *text = NULL;
	FILE *f;
	int r;

	LOCKED;
	r = pool_get_status(ops.pool, &st);
	if (r == 0)
		r = store_tenant_list(ops.store, &tenants, &n);
	if (r < 0)
		return internal(r, "read metrics");
	/* Exact, from the pool's metadata; left out where the pool cannot tell (the
	 * in-memory pool) or its metadata snapshot is another tool's just now. */
	allocated = calloc(n ? n : 1, sizeof *allocated);
	if (allocated == NULL)
		return -ENOMEM;
	r = tenants_allocated(tenants, n, allocated);
	if (r < 0 && r != -EOPNOTSUPP)
		log_errno(LOG_WARNING, r,
		          "metrics: the tenants' exact allocations: %m, leaving them out");
	if (r < 0) {
		free(allocated);
		allocated = NULL;
	}
	bs = pool_block_size(ops.pool);
	f = open_memstream(&text, &len);
	if (f == NULL)
		return -ENOMEM;
	fprintf(f,
	        "# HELP thinproxy_pool_data_bytes Data space of the thin pool.\n"
	        "# TYPE thinproxy_pool_data_bytes gauge\n"
	        "thinproxy_pool_data_bytes{state=\"used\"} %" PRIu64 "\n"
	        "thinproxy_pool_data_bytes{state=\"total\"} %" PRIu64 "\n"
	        "# HELP thinproxy_pool_metadata_bytes Metadata space of the thin pool (limit: what "
	        "it may grow to).\n"
	        "# TYPE thinproxy_pool_metadata_bytes gauge\n"
	        "thinproxy_pool_metadata_bytes{state=\"used\"} %" PRIu64 "\n"
	        "thinproxy_pool_metadata_bytes{state=\"total\"} %" PRIu64 "\n"
	        "thinproxy_pool_metadata_bytes{state=\"limit\"} %" PRIu64 "\n"
	        "# HELP thinproxy_pool_transaction_id The pool's transaction id.\n"
	        "# TYPE thinproxy_pool_transaction_id counter\n"
	        "thinproxy_pool_transaction_id %" PRIu64 "\n"
	        "# HELP thinproxy_pool_out_of_space 1 when writers get ENOSPC.\n"
	        "# TYPE thinproxy_pool_out_of_space gauge\n"
	        "thinproxy_pool_out_of_space %d\n",
	        st.data_used * bs, st.data_total * bs, st.meta_used * 4096, st.meta_total * 4096,
	        pool_metadata_limit(ops.pool) > st.meta_total * 4096 ? pool_metadata_limit(ops.pool)
	                                                             : st.meta_total * 4096,
	        st.transaction_id, st.out_of_data_space ? 1 : 0);
	fprintf(f, "# HELP thinproxy_tenant_volumes Volumes a tenant owns.\n"
	           "# TYPE thinproxy_tenant_volumes gauge\n"
	           "# HELP thinproxy_tenant_size_bytes Virtual size of a tenant's volumes.\n"
	           "# TYPE thinproxy_tenant_size_bytes gauge\n"
	           "# HELP thinproxy_tenant_used_bytes Mapped bytes of a tenant's volumes.\n"
	           "# TYPE thinproxy_tenant_used_bytes gauge\n"
	           "# HELP thinproxy_tenant_allocated_bytes Pool blocks a tenant's volumes hold, "
	           "each counted once however many of its volumes share it.\n"
	           "# TYPE thinproxy_tenant_allocated_bytes gauge\n"
	           "# HELP thinproxy_tenant_nbdkit_running 1 while a tenant's nbdkit runs; 0 while "
	           "it is idle (on demand), restarting, failed or stopped.\n"
	           "# TYPE thinproxy_tenant_nbdkit_running gauge\n");
	for (i = 0; i < n; i++) {
		struct usage u;

		if (store_tenant_usage(ops.store, tenants[i].id, &u) < 0)
			continue;
		fprintf(f,
		        "thinproxy_tenant_volumes{tenant=\"%s\"} %" PRIu64 "\n"
		        "thinproxy_tenant_size_bytes{tenant=\"%s\"} %" PRIu64 "\n"
		        "thinproxy_tenant_used_bytes{tenant=\"%s\"} %" PRIu64 "\n",
		        tenants[i].name, u.volumes, tenants[i].name, u.size, tenants[i].name,
		        u.used);
		if (allocated != NULL)
			fprintf(f, "thinproxy_tenant_allocated_bytes{tenant=\"%s\"} %" PRIu64 "\n",
			        tenants[i].name, allocated[i]);
		if (ops.cfg.tenant_nbd_state != NULL)
			fprintf(f, "thinproxy_tenant_nbdkit_running{tenant=\"%s\"} %d\n",
			        tenants[i].name,
			        strcmp(ops.cfg.tenant_nbd_state(tenants[i].name), "running") == 0);
	}
	if (fclose(f) != 0) {
		free(text);
		return -ENOMEM;
	}
	*ret_text = text;
	return 0;
}
