/* The operations of daemon/ops.h as the API process has them (issue 21): every function
 * api.c calls, carried out by the root parent over the wire of include/tp-api-wire.h.
 * Linked instead of the real operations (daemon/ops.c and its duties), never with them. */
#ifndef TP_OPS_CLIENT_H
#define TP_OPS_CLIENT_H

#include <stddef.h>

#include "ops.h"

/* Ask over FD, this process's end of the socketpair (not taken over: the caller closes
 * it). SOCKETS[i] (N of them, copied) is the principal api.c serves socket i with, in the
 * order the parent passed the sockets; at most one is the admin's (admin, tenant_id 0).
 * A principal api.c passes maps to its index as follows: a tenant's (not admin) to the
 * socket of the same tenant id and name; the admin's own (tenant_id 0) to the admin
 * socket; the admin acting for tenant T (admin, T's tenant_id, as ops_principal_for_tenant
 * answers) to the admin socket, with acting_for T. Operations without a principal go from
 * the admin socket. Anything else is refused here with -EPERM. -EINVAL, -ENOMEM. */
int ops_client_init(int fd, const struct principal *sockets, size_t n);
/* Forget the sockets; calls after it fail with -EIO. */
void ops_client_shutdown(void);

#endif
