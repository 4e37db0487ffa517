/* What the unit tests that run a real nbdkit against a real broker share: the nbdkit
 * program to run and the broker, served by a thread as the daemon's main loop would. */
#ifndef TP_NBDKIT_HARNESS_H
#define TP_NBDKIT_HARNESS_H

#include <stdbool.h>

/* The nbdkit to run. A sanitized plugin needs the sanitizer runtimes loaded before it,
 * so under ASan this is a wrapper written into DIR that preloads the runtimes this test
 * runs with; otherwise plain "nbdkit". */
const char *harness_nbdkit_program(const char *dir);

/* Listen on the broker socket PATH and answer on a thread until harness_broker_stop(). */
void harness_broker_start(const char *path);

/* Stop answering, as a killed daemon does: the socket stays, nobody listens on it. */
void harness_broker_stop(void);

bool harness_broker_running(void);

#endif
