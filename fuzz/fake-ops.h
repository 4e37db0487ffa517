/* A stand-in for daemon/ops.h in the fuzz target fuzz-api-request: the same functions,
 * checking their inputs as the real ones do (names with tp_name_valid, sizes against the
 * same bounds, the same -errno and messages), over a fixed set of tenants, volumes, one
 * image and one grant, and changing nothing. What it adds are traps for what api.c must
 * never do: an admin-only operation asked for on a tenant's socket, a volume operation for
 * another principal than the socket's (or than the tenant the admin named), a label that
 * breaks the rules of include/tp-rules.h. */
#ifndef TP_FUZZ_FAKE_OPS_H
#define TP_FUZZ_FAKE_OPS_H

#include "../daemon/ops.h"

/* The principal of the socket the request arrived on. */
extern struct principal fake_ops_socket;

/* Set by every operation that takes what api.c parsed from a request body. */
extern bool fake_ops_body_used;

/* The admin socket's and tenant alice's socket's principals. */
extern const struct principal fake_ops_admin, fake_ops_alice;

#endif
