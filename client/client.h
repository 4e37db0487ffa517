/* What thinproxy's command groups share: the command table's shape, the parsed command
 * line, and the context a command runs in. A command returns 0 or -errno; it has printed
 * one line on stderr by then, and main turns the result into the exit status. */
#ifndef TP_CLIENT_H
#define TP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <json-c/json.h>

#include "tp-rules.h"
#include "http.h"

/* The options a command may take, as bits of struct command's masks. --json and --help
 * are accepted by every command. */
enum opt_id {
	O_SIZE,
	O_FROM,
	O_LABEL,
	O_AS,
	O_UID,
	O_GID,
	O_MAX_VOLUMES,
	O_MAX_SIZE,
	O_MAX_USED,
	O_FORCE,
	O_TENANT,
	O_ALL,
	O_OWNER,
	O_TO,
	O_WRITE,
	O_QUIET,
	O_CONNECTIONS,
	O_READONLY,
	O_TIMEOUT,
	O_IO_TIMEOUT,
	O_CACHE,
	O_ATTACHED,
	O_SOCKET,
	O_FS,
	O_JSON,
	O_HELP,
	O_COUNT
};
#define OPT(id)    (1u << O_##id)
#define OPTS_QUOTA (OPT(UID) | OPT(GID) | OPT(MAX_VOLUMES) | OPT(MAX_SIZE) | OPT(MAX_USED))

/* The most operands a command takes: a volume and a change to each of its labels. */
#define OPERANDS_MAX (1 + TP_LABELS_MAX)

/* One command line after option parsing; strings point into argv. */
struct args {
	const char *operand[OPERANDS_MAX];
	size_t n_operands;
	const char *label[TP_LABELS_MAX]; /* --label, in the order given */
	size_t n_labels;
	const char *size, *from, *as, *uid, *gid, *max_volumes, *max_size, *max_used;
	const char *tenant, *owner, *to;
	const char *connections, *timeout, *io_timeout, *cache;
	const char *socket, *fs;
	bool force, all, write, quiet, json, readonly, attached;
	unsigned given; /* OPT() bits of the options that were present */
};

/* Where and how a command runs: the global options, and the connection to the daemon. */
struct ctx {
	const char *dir;         /* the socket directory */
	const char *socket_path; /* the socket commands talk to */
	bool admin;
	const char *tenant; /* --admin --tenant T: volume commands act on T */
	bool json;
	struct http *http;
};

struct command;
typedef int command_fn(struct ctx *c, const struct args *a);

enum command_kind {
	CMD_VOLUME, /* tenant socket, or the admin socket with --tenant */
	CMD_ADMIN,  /* admin socket only */
	CMD_DEVICE, /* this machine's NBD devices: needs no daemon; --admin changes nothing */
	CMD_OTHER,  /* needs no daemon (help) */
};

struct command {
	const char *group; /* "tenant", "image", or NULL for a top-level command */
	const char *name;
	const char *synopsis; /* operands and options, after the name */
	const char *summary;  /* one line for the program's --help */
	const char *help;     /* description and options for the command's --help */
	enum command_kind kind;
	unsigned options;    /* OPT() bits accepted */
	unsigned required;   /* OPT() bits that must all be given */
	unsigned one_of;     /* OPT() bits of which exactly one must be given */
	unsigned any_of;     /* OPT() bits of which at least one must be given */
	const char *operand; /* the operand's name in messages, e.g. "NAME" */
	const char *more;    /* the further operands' name, where more than one is needed */
	unsigned min_operands, max_operands;
	command_fn *run;
};

/* args.c: the command line, and the values in it. */

/* Parse ARGV (ARGV[0] is the command's name) by CMD's rules into *RET_ARGS. Returns 0, 1
 * after printing the command's help for --help, or -EINVAL after one usage line. */
int args_parse(const struct command *cmd, int argc, char **argv, struct args *ret_args);
void args_print_help(const struct command *cmd, FILE *f);
/* Print "thinproxy: CMD: MESSAGE (see 'thinproxy CMD --help')" and return -EINVAL. */
int args_usage_error(const struct command *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Value checks: each prints "thinproxy: WHAT: reason" and returns -EINVAL or -ERANGE when
 * the value is bad. KIND names the object ("volume", "tenant", "image"). */
int check_name(const char *what, const char *kind, const char *name);
/* A reference to a volume: NAME, images/NAME or OWNER/NAME. */
int check_ref(const char *what, const char *ref);
/* A label: "KEY=VALUE" (split at the first '='), or where NEED_VALUE is false also "KEY"
 * alone, by the rules of tp-rules.h. *RET_KEY_LEN: the length of its key. */
int check_label(const char *what, const char *s, bool need_value, size_t *ret_key_len);
/* A volume size within TP_SIZE_MIN..TP_SIZE_MAX. */
int parse_volume_size(const char *what, const char *s, uint64_t *ret_size);
/* A uid or gid: a decimal number below 2^32 - 1. */
int parse_id(const char *what, const char *option, const char *s, uint32_t *ret_id);
/* A quota: a count (or, if IS_SIZE, a size) or "none"/"unlimited", as a JSON integer or
 * null. *RET_VALUE is NULL for null. */
int parse_quota(const char *what, const char *option, const char *s, bool is_size,
                struct json_object **ret_value);

/* The commands, one file per group. */
command_fn cmd_create, cmd_snapshot, cmd_commit, cmd_rm, cmd_ls, cmd_info, cmd_resize, cmd_usage;
command_fn cmd_label, cmd_diff;
command_fn cmd_pool, cmd_metrics;
command_fn cmd_tenant_add, cmd_tenant_rm, cmd_tenant_ls, cmd_tenant_info, cmd_tenant_set;
command_fn cmd_image_import, cmd_image_publish, cmd_image_ls, cmd_image_rm;
command_fn cmd_grant, cmd_revoke, cmd_grants;
command_fn cmd_attach, cmd_detach;
/* snapshotter/service.c: containerd's snapshotter API, served until SIGTERM. */
command_fn cmd_snapshotter;
#define SNAPSHOTTER_SOCKET "/run/thinproxy-snapshotter/snapshotter.sock"
/* ls --attached: the attached NBD devices and their volumes. */
int attach_list(struct ctx *c, bool quiet);

#endif
