/* thinproxy: the command-line client of thinproxyd. Global options, the command table,
 * and the exit status: 0 success, 1 error, 2 usage. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include "tp-cleanup.h"
#include "tp-rules.h"
#include "client.h"
#include "http.h"
#include "output.h"

#define DEFAULT_DIR "/run/thinproxy"
#ifndef TP_VERSION
#define TP_VERSION "unknown"
#endif

enum { EXIT_USAGE = 2 };

static command_fn cmd_help;

#define JSON_HELP "      --json           print the daemon's JSON answer\n"
#define HELP_HELP "  -h, --help           show this help\n"
#define LABEL_HELP                                                                            \
	"  -l, --label KEY=VALUE\n"                                                           \
	"                       a label of the new volume (repeatable, up to 64): a key of\n" \
	"                       1-4095 bytes, with the value at most 4096, UTF-8\n"
#define QUOTA_HELP                                                                   \
	"      --uid U          owner of the tenant's control socket\n"              \
	"      --gid G          group of the tenant's control socket\n"              \
	"      --max-volumes N  at most N volumes\n"                                 \
	"      --max-size S     at most S bytes of volumes' virtual size in total\n" \
	"      --max-used S     at most S bytes of pool space in use\n"

static const struct command commands[] = {
    {
        .name = "create",
        .synopsis = "NAME --size SIZE [--label KEY=VALUE]...",
        .summary = "create an empty volume",
        .help = "Create an empty thin volume NAME of SIZE bytes. Blocks take pool space only\n"
                "once written.\n\n"
                "Options:\n"
                "  -s, --size SIZE      virtual size: bytes, or with a suffix K, M, G, T, "
                "P\n" LABEL_HELP JSON_HELP HELP_HELP,
        .kind = CMD_VOLUME,
        .options = OPT(SIZE) | OPT(LABEL),
        .required = OPT(SIZE),
        .operand = "NAME",
        .min_operands = 1,
        .max_operands = 1,
        .run = cmd_create,
    },
    {
        .name = "snapshot",
        .synopsis = "NAME --from PARENT [--size SIZE] [--label KEY=VALUE]...",
        .summary = "create a volume as a snapshot of another",
        .help =
            "Create volume NAME as a writable snapshot of PARENT: one of your volumes\n"
            "(NAME), a published image (images/NAME) or a volume granted to you\n"
            "(OWNER/NAME). It shares PARENT's blocks until either is written; it does not\n"
            "take PARENT's labels.\n\n"
            "Options:\n"
            "      --from PARENT    the volume to snapshot\n"
            "  -s, --size SIZE      grow the snapshot to SIZE (at least PARENT's size)\n" LABEL_HELP
                JSON_HELP HELP_HELP,
        .kind = CMD_VOLUME,
        .options = OPT(FROM) | OPT(SIZE) | OPT(LABEL),
        .required = OPT(FROM),
        .operand = "NAME",
        .min_operands = 1,
        .max_operands = 1,
        .run = cmd_snapshot,
    },
    {
        .name = "commit",
        .synopsis = "NAME [--as NEW]",
        .summary = "make a volume read-only, for good",
        .help = "Freeze volume NAME: from now on it is read-only, and it stays a valid parent\n"
                "for snapshots. There is no way back.\n\n"
                "Options:\n"
                "      --as NEW         rename it to NEW with the commit, all or nothing (NEW\n"
                "                       taken: nothing changes); a committed volume keeps\n"
                "                       its name\n" JSON_HELP HELP_HELP,
        .kind = CMD_VOLUME,
        .options = OPT(AS),
        .operand = "NAME",
        .min_operands = 1,
        .max_operands = 1,
        .run = cmd_commit,
    },
    {
        .name = "label",
        .synopsis = "NAME (KEY=VALUE | KEY-)...",
        .summary = "set and remove a volume's labels",
        .help = "Change the labels of volume NAME, committed or not, all in one go: KEY=VALUE\n"
                "sets KEY (a key of 1-4095 bytes, with the value at most 4096, UTF-8), KEY-\n"
                "removes it; the other labels stay. A volume has at most 64. Prints the\n"
                "volume as info does.\n\n"
                "Options:\n" JSON_HELP HELP_HELP,
        .kind = CMD_VOLUME,
        .operand = "NAME",
        .more = "KEY=VALUE or KEY-",
        .min_operands = 2,
        .max_operands = OPERANDS_MAX,
        .run = cmd_label,
    },
    {
        .name = "rm",
        .synopsis = "NAME",
        .summary = "remove a volume",
        .help = "Remove volume NAME and free its blocks. A volume that is open or has snapshots\n"
                "is busy and stays.\n\n"
                "Options:\n" JSON_HELP HELP_HELP,
        .kind = CMD_VOLUME,
        .operand = "NAME",
        .min_operands = 1,
        .max_operands = 1,
        .run = cmd_rm,
    },
    {
        .name = "ls",
        .synopsis = "[--quiet] [--label KEY[=VALUE]]... [--attached]",
        .summary = "list volumes, or the attached devices",
        .help =
            "List your volumes, then the images and granted volumes you may read, named as\n"
            "you would name them as a parent. With --label, only your own volumes that\n"
            "have every label given. With --attached, list the NBD devices attached on\n"
            "this machine instead, with their volumes (no daemon needed).\n\n"
            "Options:\n"
            "  -q, --quiet          print only the names (or devices), one a line\n"
            "  -l, --label KEY[=VALUE]\n"
            "                       only volumes with label KEY (of that VALUE); repeatable\n"
            "      --attached       list attached devices: DEVICE, VOLUME, TENANT (of a\n"
            "                       host-side attach), SIZE, ACCESS, KEEPER (its pid)\n" JSON_HELP
                HELP_HELP,
        .kind = CMD_VOLUME,
        .options = OPT(QUIET) | OPT(LABEL) | OPT(ATTACHED),
        .run = cmd_ls,
    },
    {
        .name = "info",
        .synopsis = "NAME",
        .summary = "show a volume",
        .help = "Show everything about volume NAME; NAME may also be images/NAME or\n"
                "OWNER/NAME, as ls shows them. Of your own volumes, also their exact usage of\n"
                "the pool where the daemon can tell it: the bytes mapped, those held alone\n"
                "(exclusive) and those shared with the parent (with --json: \"usage\").\n\n"
                "Options:\n" JSON_HELP HELP_HELP,
        .kind = CMD_VOLUME,
        .operand = "NAME",
        .min_operands = 1,
        .max_operands = 1,
        .run = cmd_info,
    },
    {
        .name = "diff",
        .synopsis = "NAME --from REF",
        .summary = "show where a volume differs from another",
        .help = "Show the byte ranges where volume NAME differs from REF: one of your volumes\n"
                "(NAME), a published image (images/NAME) or a volume granted to you\n"
                "(OWNER/NAME), such as NAME's parent or an older snapshot of it. In each\n"
                "range NAME holds data, or reads zeroes where REF has data: what a backup of\n"
                "NAME made after one of REF must copy. Offsets and lengths are in bytes; the\n"
                "last line totals them.\n\n"
                "Options:\n"
                "      --from REF       the volume to compare with\n" JSON_HELP HELP_HELP,
        .kind = CMD_VOLUME,
        .options = OPT(FROM),
        .required = OPT(FROM),
        .operand = "NAME",
        .min_operands = 1,
        .max_operands = 1,
        .run = cmd_diff,
    },
    {
        .name = "resize",
        .synopsis = "NAME --size SIZE",
        .summary = "grow a volume",
        .help = "Grow volume NAME to SIZE bytes. Volumes never shrink.\n\n"
                "Options:\n"
                "  -s, --size SIZE      the new virtual size\n" JSON_HELP HELP_HELP,
        .kind = CMD_VOLUME,
        .options = OPT(SIZE),
        .required = OPT(SIZE),
        .operand = "NAME",
        .min_operands = 1,
        .max_operands = 1,
        .run = cmd_resize,
    },
    {
        .name = "usage",
        .synopsis = "",
        .summary = "show quotas and consumption",
        .help = "Show how many volumes, how much virtual size and how much pool space the tenant\n"
                "has, against its quotas.\n\n"
                "Options:\n" JSON_HELP HELP_HELP,
        .kind = CMD_VOLUME,
        .run = cmd_usage,
    },
    {
        .name = "attach",
        .synopsis = "NAME [DEVICE] [--connections N] [--readonly] [--timeout S] [--cache MODE]",
        .summary = "attach a volume as a kernel NBD device",
        .help = "Attach volume NAME (or images/NAME, OWNER/NAME) as the kernel NBD device DEVICE\n"
                "(/dev/nbdN), or the first free one, and print the device. A keeper process\n"
                "stays for each device: it reconnects the device when the tenant's nbdkit\n"
                "restarts, and ends with detach. With --admin --tenant T, attach on the host\n"
                "through tenant T's nbd.sock, to hand the device to T's container or VM.\n"
                "Needs CAP_SYS_ADMIN.\n\n"
                "Options:\n"
                "      --connections N  open N connections (1 to 16; default 1)\n"
                "  -r, --readonly       attach read-only\n"
                "      --timeout S      how long I/O waits for a lost connection to come back\n"
                "                       before it fails (dead-connection timeout; default 60)\n"
                "      --io-timeout S   how long one request may take before its connection\n"
                "                       counts as dead (default 30; 0: no limit)\n"
                "      --cache MODE     none: the server reads and writes the volume with\n"
                "                       direct I/O, so the host caches its data once, in the\n"
                "                       device's page cache; writeback (default): through the\n"
                "                       host's page cache as well\n"
                "      --json           print the device and its settings as JSON\n" HELP_HELP,
        .kind = CMD_VOLUME,
        .options = OPT(CONNECTIONS) | OPT(READONLY) | OPT(TIMEOUT) | OPT(IO_TIMEOUT) | OPT(CACHE),
        .operand = "NAME",
        .min_operands = 1,
        .max_operands = 2,
        .run = cmd_attach,
    },
    {
        .name = "detach",
        .synopsis = "DEVICE",
        .summary = "detach a kernel NBD device",
        .help = "Stop the keeper of DEVICE (/dev/nbdN) and disconnect it. A device that is\n"
                "mounted, or held by another block device, is busy and stays attached.\n\n"
                "Options:\n" HELP_HELP,
        .kind = CMD_DEVICE,
        .operand = "DEVICE",
        .min_operands = 1,
        .max_operands = 1,
        .run = cmd_detach,
    },
    {
        .name = "snapshotter",
        .synopsis = "[--socket PATH] [--fs ext4|xfs] [--size SIZE]",
        .summary = "serve containerd's snapshots as thin volumes",
        .help =
            "Serve containerd's snapshotter API (containerd.services.snapshots.v1, gRPC) on\n"
            "the unix socket PATH, for a proxy plugin of containerd:\n\n"
            "  [proxy_plugins.thinproxy]\n"
            "    type = \"snapshot\"\n"
            "    address = \"" SNAPSHOTTER_SOCKET "\"\n\n"
            "Each snapshot is a volume of the tenant's: a layer a thin snapshot of its parent,\n"
            "attached as /dev/nbdN while it is active or a view, which containerd mounts.\n"
            "What containerd knows of it is kept in the volume's labels in thinproxyd, and\n"
            "nowhere else. Runs in the foreground and logs to stderr; SIGTERM ends it and\n"
            "leaves the devices attached. One per tenant. Needs CAP_SYS_ADMIN, as attach.\n\n"
            "Options:\n"
            "      --socket PATH    where to listen (default " SNAPSHOTTER_SOCKET ")\n"
            "      --fs FS          file system of new layers: ext4 (default) or xfs\n"
            "  -s, --size SIZE      virtual size of new layers (default 10G)\n" HELP_HELP,
        .kind = CMD_VOLUME,
        .options = OPT(SOCKET) | OPT(FS) | OPT(SIZE),
        .run = cmd_snapshotter,
    },
    {
        .name = "pool",
        .synopsis = "",
        .summary = "show the thin pool's status",
        .help = "Show the thin pool: data and metadata space, mode, transaction id.\n\n"
                "Options:\n" JSON_HELP HELP_HELP,
        .kind = CMD_ADMIN,
        .run = cmd_pool,
    },
    {
        .name = "metrics",
        .synopsis = "",
        .summary = "print metrics in Prometheus text format",
        .help = "Print the daemon's metrics in Prometheus text format, as GET /metrics\n"
                "serves them.\n\n"
                "Options:\n" JSON_HELP HELP_HELP,
        .kind = CMD_ADMIN,
        .run = cmd_metrics,
    },
    {
        .group = "tenant",
        .name = "add",
        .synopsis = "NAME [--uid U] [--gid G] [--max-volumes N] [--max-size S] [--max-used S]",
        .summary = "add a tenant",
        .help = "Add tenant NAME: its directory with control.sock and nbd.sock under\n"
                "DIR/tenants/NAME, and its own nbdkit. Quotas are unlimited unless given.\n\n"
                "Options:\n" QUOTA_HELP JSON_HELP HELP_HELP,
        .kind = CMD_ADMIN,
        .options = OPTS_QUOTA,
        .operand = "NAME",
        .min_operands = 1,
        .max_operands = 1,
        .run = cmd_tenant_add,
    },
    {
        .group = "tenant",
        .name = "rm",
        .synopsis = "NAME [--force]",
        .summary = "remove a tenant",
        .help = "Remove tenant NAME. A tenant that owns volumes is busy and stays, unless\n"
                "--force removes its volumes too.\n\n"
                "Options:\n"
                "  -f, --force          remove the tenant's volumes with it\n" JSON_HELP HELP_HELP,
        .kind = CMD_ADMIN,
        .options = OPT(FORCE),
        .operand = "NAME",
        .min_operands = 1,
        .max_operands = 1,
        .run = cmd_tenant_rm,
    },
    {
        .group = "tenant",
        .name = "ls",
        .synopsis = "[--quiet]",
        .summary = "list tenants",
        .help = "List the tenants with their quotas and consumption (- is no limit).\n\n"
                "Options:\n"
                "  -q, --quiet          print only the names, one a line\n" JSON_HELP HELP_HELP,
        .kind = CMD_ADMIN,
        .options = OPT(QUIET),
        .run = cmd_tenant_ls,
    },
    {
        .group = "tenant",
        .name = "info",
        .synopsis = "NAME",
        .summary = "show a tenant",
        .help = "Show tenant NAME: owner, nbdkit, quotas and consumption.\n\n"
                "Options:\n" JSON_HELP HELP_HELP,
        .kind = CMD_ADMIN,
        .operand = "NAME",
        .min_operands = 1,
        .max_operands = 1,
        .run = cmd_tenant_info,
    },
    {
        .group = "tenant",
        .name = "set",
        .synopsis = "NAME [--uid U] [--gid G] [--max-volumes N] [--max-size S] [--max-used S]",
        .summary = "change a tenant's owner or quotas",
        .help = "Change what is given of tenant NAME's socket owner and quotas; a quota of\n"
                "'none' or 'unlimited' removes it.\n\n"
                "Options:\n" QUOTA_HELP JSON_HELP HELP_HELP,
        .kind = CMD_ADMIN,
        .options = OPTS_QUOTA,
        .any_of = OPTS_QUOTA,
        .operand = "NAME",
        .min_operands = 1,
        .max_operands = 1,
        .run = cmd_tenant_set,
    },
    {
        .group = "image",
        .name = "import",
        .synopsis = "NAME --from PATH",
        .summary = "copy a file or device into a new image",
        .help = "Copy the host file or block device PATH into a new read-only image NAME.\n"
                "Tenants see it once it is published.\n\n"
                "Options:\n"
                "      --from PATH      the file or block device to copy\n" JSON_HELP HELP_HELP,
        .kind = CMD_ADMIN,
        .options = OPT(FROM),
        .required = OPT(FROM),
        .operand = "NAME",
        .min_operands = 1,
        .max_operands = 1,
        .run = cmd_image_import,
    },
    {
        .group = "image",
        .name = "publish",
        .synopsis = "NAME (--tenant T | --all)",
        .summary = "let a tenant, or all, use an image",
        .help = "Let tenant T, or every tenant, read image NAME and snapshot from it as\n"
                "images/NAME.\n\n"
                "Options:\n"
                "      --tenant T       publish to tenant T\n"
                "      --all            publish to every tenant, present and future\n" JSON_HELP
                    HELP_HELP,
        .kind = CMD_ADMIN,
        .options = OPT(TENANT) | OPT(ALL),
        .one_of = OPT(TENANT) | OPT(ALL),
        .operand = "NAME",
        .min_operands = 1,
        .max_operands = 1,
        .run = cmd_image_publish,
    },
    {
        .group = "image",
        .name = "ls",
        .synopsis = "[--quiet]",
        .summary = "list images",
        .help = "List the images and whom they are published to.\n\n"
                "Options:\n"
                "  -q, --quiet          print only the names, one a line\n" JSON_HELP HELP_HELP,
        .kind = CMD_ADMIN,
        .options = OPT(QUIET),
        .run = cmd_image_ls,
    },
    {
        .group = "image",
        .name = "rm",
        .synopsis = "NAME",
        .summary = "remove an image",
        .help = "Remove image NAME. An image that volumes are snapshots of is busy and stays.\n\n"
                "Options:\n" JSON_HELP HELP_HELP,
        .kind = CMD_ADMIN,
        .operand = "NAME",
        .min_operands = 1,
        .max_operands = 1,
        .run = cmd_image_rm,
    },
    {
        .name = "grant",
        .synopsis = "VOLUME --owner A --to B [--write]",
        .summary = "let tenant B use a volume of tenant A",
        .help = "Let tenant B read tenant A's volume VOLUME, and snapshot from it, as A/VOLUME.\n\n"
                "Options:\n"
                "      --owner A        the tenant that owns VOLUME\n"
                "      --to B           the tenant to grant access to\n"
                "      --write          let B write it too\n" JSON_HELP HELP_HELP,
        .kind = CMD_ADMIN,
        .options = OPT(OWNER) | OPT(TO) | OPT(WRITE),
        .required = OPT(OWNER) | OPT(TO),
        .operand = "VOLUME",
        .min_operands = 1,
        .max_operands = 1,
        .run = cmd_grant,
    },
    {
        .name = "revoke",
        .synopsis = "VOLUME --owner A --to B",
        .summary = "withdraw a grant",
        .help = "Withdraw tenant B's access to tenant A's volume VOLUME.\n\n"
                "Options:\n"
                "      --owner A        the tenant that owns VOLUME\n"
                "      --to B           the tenant that had access\n" JSON_HELP HELP_HELP,
        .kind = CMD_ADMIN,
        .options = OPT(OWNER) | OPT(TO),
        .required = OPT(OWNER) | OPT(TO),
        .operand = "VOLUME",
        .min_operands = 1,
        .max_operands = 1,
        .run = cmd_revoke,
    },
    {
        .name = "grants",
        .synopsis = "",
        .summary = "list grants",
        .help = "List which tenant may use which other tenant's volumes.\n\n"
                "Options:\n" JSON_HELP HELP_HELP,
        .kind = CMD_ADMIN,
        .run = cmd_grants,
    },
    {
        .name = "help",
        .synopsis = "[COMMAND]",
        .summary = "show help for thinproxy or a command",
        .help = "Show thinproxy's help, or COMMAND's (e.g. 'thinproxy help tenant add').\n\n"
                "Options:\n" HELP_HELP,
        .kind = CMD_OTHER,
        .operand = "COMMAND",
        .max_operands = 2,
        .run = cmd_help,
    },
};

static void print_help(FILE *f)
{
	const char *sections[] = {"Volume commands (a tenant's own, or with --admin --tenant T):",
	                          "Admin commands (with --admin):"};

	fputs("Usage: thinproxy [OPTIONS] COMMAND [ARGS...]\n\n"
	      "Manage thin volumes through thinproxyd's REST socket: DIR/control.sock inside a\n"
	      "tenant's container, DIR/admin.sock for root on the host.\n\n"
	      "Options:\n"
	      "      --dir DIR        socket directory (default: $THINPROXY_DIR, else " DEFAULT_DIR
	      ")\n"
	      "      --admin          use DIR/admin.sock: root on the host\n"
	      "      --tenant T       with --admin: volume commands act on tenant T\n"
	      "      --json           print the daemon's JSON answer instead of tables\n"
	      "  -h, --help           show this help\n"
	      "      --version        show thinproxy's version\n",
	      f);
	for (int s = 0; s < 2; s++) {
		fprintf(f, "\n%s\n", sections[s]);
		for (size_t i = 0; i < ARRAY_SIZE(commands); i++) {
			const struct command *cmd = &commands[i];
			char line[128];

			if (s == 0 ? cmd->kind != CMD_VOLUME && cmd->kind != CMD_DEVICE
			           : cmd->kind != CMD_ADMIN)
				continue;
			snprintf(line, sizeof line, "%s%s%s %s", cmd->group ? cmd->group : "",
			         cmd->group ? " " : "", cmd->name, cmd->synopsis);
			/* Long synopses get the summary on a line of its own. */
			if (strlen(line) <= 38)
				fprintf(f, "  %-38s %s\n", line, cmd->summary);
			else
				fprintf(f, "  %s\n  %-38s %s\n", line, "", cmd->summary);
		}
	}
	fputs("\nRun 'thinproxy COMMAND --help' for a command's options; see thinproxy(1).\n", f);
}

/* Whether NAME is a command group ("tenant", "image"). */
static bool is_group(const char *name)
{
	for (size_t i = 0; i < ARRAY_SIZE(commands); i++)
		if (commands[i].group != NULL && strcmp(commands[i].group, name) == 0)
			return true;
	return false;
}

/* Command NAME of GROUP (NULL for the top level), or NULL if there is none. */
static const struct command *find_command(const char *group, const char *name)
{
	for (size_t i = 0; i < ARRAY_SIZE(commands); i++) {
		const struct command *cmd = &commands[i];

		if ((cmd->group == NULL) != (group == NULL))
			continue;
		if (group != NULL && strcmp(cmd->group, group) != 0)
			continue;
		if (strcmp(cmd->name, name) == 0)
			return cmd;
	}
	return NULL;
}

/* A group's commands, for "thinproxy tenant --help" and "thinproxy help tenant". */
static void print_group_help(const char *group, FILE *f)
{
	fprintf(f, "Usage: thinproxy --admin %s COMMAND [ARGS...]\n\nCommands:\n", group);
	for (size_t i = 0; i < ARRAY_SIZE(commands); i++)
		if (commands[i].group != NULL && strcmp(commands[i].group, group) == 0)
			fprintf(f, "  %s %s %s\n      %s\n", group, commands[i].name,
			        commands[i].synopsis, commands[i].summary);
	fprintf(f, "\nRun 'thinproxy %s COMMAND --help' for a command's options.\n", group);
}

static int cmd_help(struct ctx *c, const struct args *a)
{
	const struct command *cmd = NULL;

	(void)c;
	if (a->n_operands == 0) {
		print_help(stdout);
		return 0;
	}
	if (is_group(a->operand[0]) && a->n_operands == 1) {
		print_group_help(a->operand[0], stdout);
		return 0;
	}
	if (is_group(a->operand[0]))
		cmd = find_command(a->operand[0], a->operand[1]);
	else if (a->n_operands == 1)
		cmd = find_command(NULL, a->operand[0]);
	if (cmd == NULL)
		return error_line(-EINVAL, "help", "unknown command '%s%s%s'", a->operand[0],
		                  a->n_operands > 1 ? " " : "",
		                  a->n_operands > 1 ? a->operand[1] : "");
	args_print_help(cmd, stdout);
	return 0;
}

/* Print a usage error about the command line as a whole; returns -EINVAL. */
static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int usage_error(const char *fmt, ...)
{
	char message[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(message, sizeof message, fmt, ap);
	va_end(ap);
	return error_line(-EINVAL, NULL, "%s (see 'thinproxy --help')", message);
}

/* Exit status for a result before a command runs: -EINVAL is a usage error. */
static int exit_status(int r)
{
	if (r == -EINVAL)
		return EXIT_USAGE;
	return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}

/* Parse the global options and the command's; run it. Returns the exit status. */
static int run(int argc, char **argv)
{
	enum { G_DIR = 0x100, G_ADMIN, G_TENANT, G_JSON, G_VERSION };
	static const struct option longopts[] = {
	    {"dir", required_argument, NULL, G_DIR},
	    {"admin", no_argument, NULL, G_ADMIN},
	    {"tenant", required_argument, NULL, G_TENANT},
	    {"json", no_argument, NULL, G_JSON},
	    {"help", no_argument, NULL, 'h'},
	    {"version", no_argument, NULL, G_VERSION},
	    {NULL, 0, NULL, 0},
	};
	struct http *http = NULL;
	struct ctx c = {0};
	const struct command *cmd;
	const char *dir = getenv("THINPROXY_DIR");
	char socket_path[sizeof((struct sockaddr_un *)0)->sun_path];
	struct args a;
	int opt, r, n;

	/* '+': the first operand is the command; its options are its own. */
	opterr = 0;
	while ((opt = getopt_long(argc, argv, "+:h", longopts, NULL)) != -1) {
		switch (opt) {
		case G_DIR:
			dir = optarg;
			break;
		case G_ADMIN:
			c.admin = true;
			break;
		case G_TENANT:
			c.tenant = optarg;
			break;
		case G_JSON:
			c.json = true;
			break;
		case 'h':
			print_help(stdout);
			return EXIT_SUCCESS;
		case G_VERSION:
			puts("thinproxy " TP_VERSION);
			return EXIT_SUCCESS;
		case ':':
			return exit_status(
			    usage_error("option '%s' needs a value", argv[optind - 1]));
		default:
			return exit_status(usage_error("unknown option '%s'", argv[optind - 1]));
		}
	}
	if (optind == argc)
		return exit_status(usage_error("missing command"));
	argc -= optind;
	argv += optind;

	if (is_group(argv[0])) {
		if (argc == 1) {
			error_line(-EINVAL, argv[0], "missing command (see 'thinproxy %s --help')",
			           argv[0]);
			return EXIT_USAGE;
		}
		if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
			print_group_help(argv[0], stdout);
			return EXIT_SUCCESS;
		}
		cmd = find_command(argv[0], argv[1]);
		if (cmd == NULL) {
			char name[160];

			snprintf(name, sizeof name, "%s %s", argv[0], argv[1]);
			return exit_status(usage_error("unknown command '%s'", name));
		}
		argc--;
		argv++;
	} else {
		cmd = find_command(NULL, argv[0]);
		if (cmd == NULL)
			return exit_status(usage_error("unknown command '%s'", argv[0]));
	}

	r = args_parse(cmd, argc, argv, &a);
	if (r != 0)
		return r > 0 ? EXIT_SUCCESS : exit_status(r);
	c.json = c.json || a.json;
	if (a.quiet && c.json)
		return exit_status(args_usage_error(cmd, "--quiet and --json exclude each other"));
	if (a.attached && a.n_labels > 0)
		return exit_status(
		    args_usage_error(cmd, "--label and --attached exclude each other"));

	if (cmd->kind == CMD_OTHER)
		return exit_status(cmd->run(&c, &a));
	if (c.tenant != NULL && !c.admin)
		return exit_status(usage_error("--tenant needs --admin"));
	/* Commands on this machine's devices need no daemon, and --admin changes nothing
	 * for them. */
	if (cmd->kind == CMD_DEVICE || a.attached) {
		r = cmd->run(&c, &a);
		return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
	}
	if (cmd->kind == CMD_ADMIN && !c.admin)
		return exit_status(args_usage_error(cmd, "an admin command: needs --admin"));
	if (cmd->kind == CMD_ADMIN && c.tenant != NULL)
		return exit_status(
		    args_usage_error(cmd, "--tenant applies to volume commands only"));
	if (cmd->kind == CMD_VOLUME && c.admin && c.tenant == NULL)
		return exit_status(args_usage_error(cmd, "with --admin, needs --tenant T"));
	/* From here on, a bad value is an error (1), not a usage error (2). */
	if (c.tenant != NULL && check_name("--tenant", "tenant", c.tenant) < 0)
		return EXIT_FAILURE;

	if (dir == NULL || dir[0] == '\0')
		dir = DEFAULT_DIR;
	c.dir = dir;
	n = snprintf(socket_path, sizeof socket_path, "%s/%s", dir,
	             c.admin ? "admin.sock" : "control.sock");
	if (n < 0 || (size_t)n >= sizeof socket_path) {
		error_line(-ENAMETOOLONG, NULL, "socket path %s/%s too long", dir,
		           c.admin ? "admin.sock" : "control.sock");
		return EXIT_FAILURE;
	}
	r = http_open(socket_path, &http);
	if (r < 0)
		return EXIT_FAILURE;
	c.http = http;
	c.socket_path = socket_path;
	r = cmd->run(&c, &a);
	http_close(http);
	/* Commands' own failures are never usage errors. */
	return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}

int main(int argc, char **argv)
{
	int status = run(argc, argv);

	/* A full disk or a closed pipe must not pass for success. */
	if (fflush(stdout) != 0 || ferror(stdout)) {
		if (status == EXIT_SUCCESS)
			error_line(-EIO, NULL, "write error: %s", strerror(errno));
		return EXIT_FAILURE;
	}
	return status;
}
