/* Idle exit: with idle=SECONDS, the tenant's nbdkit asks nbdkit to shut down once it has
 * served no connection for that long, so that an idle tenant costs no process.
 * thinproxyd holds the listening socket too and starts a new nbdkit when the next client
 * knocks; clients queued on the socket meanwhile are served by that one.
 *
 * Busy is: a handle open (an NBD connection past its handshake: an attached device's
 * connections are never idle), or a connection or a handle closed less than SECONDS
 * ago. A connection still in its handshake after SECONDS (which no real client takes)
 * may be cut by the exit. */
#ifndef TP_PLUGIN_IDLE_H
#define TP_PLUGIN_IDLE_H

/* The idle=SECONDS parameter: 1 to 86400, or 0 (the default) for never. Returns 0, or
 * -1 with the error reported. */
int idle_config(const char *value);

/* From .after_fork: start the timer (nothing without idle=). Returns 0 or -1. */
int idle_start(void);

/* From .preconnect, .open and .close: a connection came, a handle opened or closed. */
void idle_connection(void);
void idle_opened(void);
void idle_closed(void);

/* From .cleanup: stop the timer. */
void idle_stop(void);

#endif
