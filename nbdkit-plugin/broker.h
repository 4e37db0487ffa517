/* The plugin's client of thinproxyd's broker (include/tp-broker.h): OPEN, LIST and MAP,
 * one request per connection. Each returns -1 with errno set and logs nothing; the
 * caller says what failed. */
#ifndef THINPROXY_PLUGIN_BROKER_H
#define THINPROXY_PLUGIN_BROKER_H

#include <stdbool.h>
#include <stdint.h>

#include "tp-broker.h"

/* Internal to the plugin: the .so exports only what nbdkit looks up in it (plugin_init,
 * the debug flags). */
#pragma GCC visibility push(hidden)

/* The broker's socket: TP_BROKER_PATH_DEFAULT unless broker= set it. */
extern const char *broker_path;

/* Ask the broker to open REF with the request FLAGS (TP_BROKER_WANT_WRITE,
 * TP_BROKER_WANT_DIRECT). Returns 0 with the answer in *RET_REPLY (a refusal if its error
 * is set, else the device in *RET_FD), or -1 with errno set if there was no well-formed
 * answer. */
int broker_open(const char *ref, uint32_t flags, struct tp_broker_reply *ret_reply, int *ret_fd);

/* Ask the broker for the tenant's exports. Returns the socket its answer comes on, or -1
 * with errno set if the broker cannot be reached. */
int broker_list(void);

/* Receive the answer to LIST on SOCK into *RET_REPLY: how many entries follow, or a refusal
 * if its error is set (a malformed answer too, with the reason). Returns 0, or -1 with
 * errno set if there was no answer. */
int broker_list_reply(int sock, struct tp_broker_reply *ret_reply);

/* Receive the next entry of a list on SOCK. Returns 0, or -1 with errno set. */
int broker_list_entry(int sock, struct tp_broker_entry *ret_entry);

/* Ask the broker for the map of REF. Returns 0 with the answer in *RET_REPLY (a refusal if
 * its error is set, else its ranges in *RET_RANGES, malloc'ed with room for at least
 * one), or -1 with errno set if there was no well-formed answer. */
int broker_map(const char *ref, struct tp_broker_reply *ret_reply,
               struct tp_broker_range **ret_ranges);

#pragma GCC visibility pop

#endif
