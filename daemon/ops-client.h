/* The operations of daemon/ops.h as the API process has them (issue 21): every function
 * api.c calls, carried out by the root parent over the wire of include/tp-api-wire.h.
 * Linked instead of the real operations (daemon/ops.c and its duties), never with them. */
#ifndef TP_OPS_CLIENT_H
#define TP_OPS_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "ops.h"

/* Ask over the N_FDS channels FDS, this process's ends of the socketpairs (not taken
 * over: the caller closes them), one request at a time on each. SOCKETS[i] (N of them,
 * copied) is the principal api.c serves socket i with, in the order the parent passed the
 * sockets; at most one is the admin's (admin, tenant_id 0). A principal api.c passes maps
 * to its index as follows: a tenant's (not admin) to the socket of the same tenant id and
 * name; the admin's own (tenant_id 0) to the admin socket; the admin acting for tenant T
 * (admin, T's tenant_id, as ops_principal_for_tenant answers) to the admin socket, with
 * acting_for T. Operations without a principal go from the admin socket. Anything else is
 * refused here with -EPERM. -EINVAL, -ENOMEM. */
int ops_client_init(const int *fds, size_t n_fds, const struct principal *sockets, size_t n);

/* The parent gave socket INDEX, for the principal P (TP_API_LISTEN); it took it back
 * (TP_API_UNLISTEN). Listen: -EINVAL for a second admin socket, -ENOMEM. */
int ops_client_listen(uint32_t index, const struct principal *p);
void ops_client_unlisten(uint32_t index);

/* An eventfd that becomes readable once the client is broken (a channel failed or went
 * out of step): the process is to stop. -1 before ops_client_init. */
int ops_client_broken_fd(void);

/* Forget the sockets and channels; calls after it fail with -EIO. */
void ops_client_shutdown(void);

#endif
