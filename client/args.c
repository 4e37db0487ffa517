/* A command's options and operands by the rules of its command table entry, and checks of
 * the values in them. Usage errors (unknown option, missing argument) return -EINVAL for
 * exit status 2; a bad value (a name, a size) is an error like any other, status 1. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "tp-cleanup.h"
#include "tp-rules.h"
#include "client.h"
#include "output.h"

/* Every option any command takes. Short forms only where they are customary. */
static const struct option_def {
	enum opt_id id;
	const char *name;
	int has_arg;
	int short_name;
} option_defs[] = {
    {O_SIZE, "size", required_argument, 's'},
    {O_FROM, "from", required_argument, 0},
    {O_LABEL, "label", required_argument, 'l'},
    {O_AS, "as", required_argument, 0},
    {O_UID, "uid", required_argument, 0},
    {O_GID, "gid", required_argument, 0},
    {O_MAX_VOLUMES, "max-volumes", required_argument, 0},
    {O_MAX_SIZE, "max-size", required_argument, 0},
    {O_MAX_USED, "max-used", required_argument, 0},
    {O_FORCE, "force", no_argument, 'f'},
    {O_TENANT, "tenant", required_argument, 0},
    {O_ALL, "all", no_argument, 0},
    {O_OWNER, "owner", required_argument, 0},
    {O_TO, "to", required_argument, 0},
    {O_WRITE, "write", no_argument, 0},
    {O_QUIET, "quiet", no_argument, 'q'},
    {O_CONNECTIONS, "connections", required_argument, 0},
    {O_READONLY, "readonly", no_argument, 'r'},
    {O_TIMEOUT, "timeout", required_argument, 0},
    {O_IO_TIMEOUT, "io-timeout", required_argument, 0},
    {O_CACHE, "cache", required_argument, 0},
    {O_ATTACHED, "attached", no_argument, 0},
    {O_SOCKET, "socket", required_argument, 0},
    {O_FS, "fs", required_argument, 0},
    {O_JSON, "json", no_argument, 0},
    {O_HELP, "help", no_argument, 'h'},
};

/* getopt_long's value for an option without a short form. */
#define LONG_ONLY(id) (0x100 + (int)(id))

static const struct option_def *def_by_value(int value)
{
	for (size_t i = 0; i < ARRAY_SIZE(option_defs); i++) {
		const struct option_def *d = &option_defs[i];

		if (value == (d->short_name ? d->short_name : LONG_ONLY(d->id)))
			return d;
	}
	return NULL;
}

/* "tenant add" or "create". */
static void command_name(const struct command *cmd, char *buf, size_t len)
{
	if (cmd->group != NULL)
		snprintf(buf, len, "%s %s", cmd->group, cmd->name);
	else
		snprintf(buf, len, "%s", cmd->name);
}

int args_usage_error(const struct command *cmd, const char *fmt, ...)
{
	CLEANUP_FREE char *message = NULL;
	char name[64];
	va_list ap;
	int n;

	command_name(cmd, name, sizeof name);
	va_start(ap, fmt);
	n = vasprintf(&message, fmt, ap);
	va_end(ap);
	if (n < 0)
		message = NULL;
	return error_line(-EINVAL, name, "%s (see 'thinproxy %s --help')",
	                  message != NULL ? message : strerror(ENOMEM), name);
}

void args_print_help(const struct command *cmd, FILE *f)
{
	static const char *const prefixes[] = {
	    [CMD_VOLUME] = "[--admin --tenant T] ",
	    [CMD_ADMIN] = "--admin ",
	    [CMD_DEVICE] = "",
	    [CMD_OTHER] = "",
	};
	char name[64];

	command_name(cmd, name, sizeof name);
	fprintf(f, "Usage: thinproxy %s%s%s%s\n\n%s", prefixes[cmd->kind], name,
	        cmd->synopsis[0] != '\0' ? " " : "", cmd->synopsis, cmd->help);
}

/* The option a bit of MASK stands for, as "--name". */
static const char *first_option(unsigned mask)
{
	for (size_t i = 0; i < ARRAY_SIZE(option_defs); i++)
		if (mask & (1u << option_defs[i].id))
			return option_defs[i].name;
	return "?";
}

/* "--tenant or --all", for messages about one_of and any_of. */
static void option_list(unsigned mask, char *buf, size_t len)
{
	size_t used = 0, count = 0, total = (size_t)__builtin_popcount(mask);

	buf[0] = '\0';
	for (size_t i = 0; i < ARRAY_SIZE(option_defs) && used < len; i++) {
		int n;

		if (!(mask & (1u << option_defs[i].id)))
			continue;
		count++;
		n = snprintf(buf + used, len - used, "%s--%s",
		             count == 1       ? ""
		             : count == total ? " or "
		                              : ", ",
		             option_defs[i].name);
		if (n < 0)
			break;
		used += (size_t)n;
	}
}

int args_parse(const struct command *cmd, int argc, char **argv, struct args *ret_args)
{
	unsigned accepted = cmd->options | OPT(JSON) | OPT(HELP);
	struct option longopts[ARRAY_SIZE(option_defs) + 1];
	char optstring[2 * ARRAY_SIZE(option_defs) + 2] = ":";
	size_t n_long = 0, n_short = 1;
	struct args a = {0};
	char list[128];
	int c;

	for (size_t i = 0; i < ARRAY_SIZE(option_defs); i++) {
		const struct option_def *d = &option_defs[i];

		if (!(accepted & (1u << d->id)))
			continue;
		longopts[n_long++] = (struct option){
		    d->name, d->has_arg, NULL, d->short_name ? d->short_name : LONG_ONLY(d->id)};
		if (d->short_name) {
			optstring[n_short++] = (char)d->short_name;
			if (d->has_arg == required_argument)
				optstring[n_short++] = ':';
		}
	}
	longopts[n_long] = (struct option){NULL, 0, NULL, 0};
	optstring[n_short] = '\0';

	/* Options and operands may come in any order ("rm --force x" and "rm x --force");
	 * "--" ends the options. optind = 0 makes getopt start afresh on this argv. */
	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, optstring, longopts, NULL)) != -1) {
		const struct option_def *d;

		if (c == '?') {
			/* An option we do not know, or one given a value it does not take. */
			d = optopt != 0 ? def_by_value(optopt) : NULL;
			if (d != NULL && d->has_arg == no_argument && (accepted & (1u << d->id)))
				return args_usage_error(cmd, "option '--%s' takes no value",
				                        d->name);
			if (optopt != 0 && optopt < 0x100)
				return args_usage_error(cmd, "unknown option '-%c'", optopt);
			return args_usage_error(cmd, "unknown option '%s'", argv[optind - 1]);
		}
		if (c == ':') {
			d = def_by_value(optopt);
			return args_usage_error(cmd, "option '--%s' needs a value",
			                        d != NULL ? d->name : "?");
		}
		d = def_by_value(c);
		if (d == NULL)
			return args_usage_error(cmd, "unknown option '%s'", argv[optind - 1]);
		a.given |= 1u << d->id;
		switch (d->id) {
		case O_SIZE:
			a.size = optarg;
			break;
		case O_FROM:
			a.from = optarg;
			break;
		case O_LABEL:
			if (a.n_labels == TP_LABELS_MAX)
				return args_usage_error(cmd, "at most %d --label", TP_LABELS_MAX);
			a.label[a.n_labels++] = optarg;
			break;
		case O_AS:
			a.as = optarg;
			break;
		case O_UID:
			a.uid = optarg;
			break;
		case O_GID:
			a.gid = optarg;
			break;
		case O_MAX_VOLUMES:
			a.max_volumes = optarg;
			break;
		case O_MAX_SIZE:
			a.max_size = optarg;
			break;
		case O_MAX_USED:
			a.max_used = optarg;
			break;
		case O_FORCE:
			a.force = true;
			break;
		case O_TENANT:
			a.tenant = optarg;
			break;
		case O_ALL:
			a.all = true;
			break;
		case O_OWNER:
			a.owner = optarg;
			break;
		case O_TO:
			a.to = optarg;
			break;
		case O_WRITE:
			a.write = true;
			break;
		case O_QUIET:
			a.quiet = true;
			break;
		case O_CONNECTIONS:
			a.connections = optarg;
			break;
		case O_READONLY:
			a.readonly = true;
			break;
		case O_TIMEOUT:
			a.timeout = optarg;
			break;
		case O_IO_TIMEOUT:
			a.io_timeout = optarg;
			break;
		case O_CACHE:
			a.cache = optarg;
			break;
		case O_ATTACHED:
			a.attached = true;
			break;
		case O_SOCKET:
			a.socket = optarg;
			break;
		case O_FS:
			a.fs = optarg;
			break;
		case O_JSON:
			a.json = true;
			break;
		case O_HELP:
		case O_COUNT:
			break;
		}
	}

	if (a.given & OPT(HELP)) {
		args_print_help(cmd, stdout);
		return 1;
	}

	for (; optind < argc; optind++) {
		if (a.n_operands == cmd->max_operands)
			return args_usage_error(cmd, "unexpected argument '%s'", argv[optind]);
		a.operand[a.n_operands++] = argv[optind];
	}
	if (a.n_operands < cmd->min_operands)
		return args_usage_error(cmd, "missing %s",
		                        a.n_operands > 0 && cmd->more ? cmd->more : cmd->operand);
	if ((cmd->required & a.given) != cmd->required) {
		unsigned missing = cmd->required & ~a.given;

		return args_usage_error(cmd, "missing --%s", first_option(missing));
	}
	if (cmd->one_of != 0 && __builtin_popcount(cmd->one_of & a.given) != 1) {
		option_list(cmd->one_of, list, sizeof list);
		return args_usage_error(cmd, "needs exactly one of %s", list);
	}
	if (cmd->any_of != 0 && (cmd->any_of & a.given) == 0) {
		option_list(cmd->any_of, list, sizeof list);
		return args_usage_error(cmd, "needs at least one of %s", list);
	}
	*ret_args = a;
	return 0;
}

int check_name(const char *what, const char *kind, const char *name)
{
	if (tp_name_valid(name))
		return 0;
	return error_line(-EINVAL, what,
	                  "invalid %s name '%s': 1 to %d characters of a-z, 0-9, '.', '_', '-', "
	                  "starting with a letter or digit",
	                  kind, name, TP_NAME_MAX);
}

int check_ref(const char *what, const char *ref)
{
	const char *slash = strchr(ref, '/');
	char owner[TP_NAME_MAX + 2];

	if (slash == NULL) {
		if (tp_name_valid(ref))
			return 0;
	} else if ((size_t)(slash - ref) < sizeof owner) {
		memcpy(owner, ref, (size_t)(slash - ref));
		owner[slash - ref] = '\0';
		if (tp_name_valid(owner) && tp_name_valid(slash + 1))
			return 0;
	}
	return error_line(-EINVAL, what,
	                  "invalid reference '%s': expected NAME, images/NAME or OWNER/NAME", ref);
}

int check_label(const char *what, const char *s, bool need_value, size_t *ret_key_len)
{
	const char *eq = strchr(s, '='), *why;
	size_t key_len = eq ? (size_t)(eq - s) : strlen(s);

	if (eq == NULL && need_value)
		return error_line(-EINVAL, what, "invalid label '%s': expected KEY=VALUE", s);
	why = tp_label_invalid(s, key_len, eq ? eq + 1 : NULL, eq ? strlen(eq + 1) : 0);
	if (why != NULL)
		return error_line(-EINVAL, what, "invalid label '%s': %s", s, why);
	*ret_key_len = key_len;
	return 0;
}

int parse_volume_size(const char *what, const char *s, uint64_t *ret_size)
{
	char min[32], max[32];
	uint64_t v;
	int r;

	r = tp_parse_size(s, &v);
	if (r == -EINVAL)
		return error_line(r, what,
		                  "invalid size '%s': expected bytes, optionally with a suffix K, "
		                  "M, G, T or P",
		                  s);
	if (r < 0 || v < TP_SIZE_MIN || v > TP_SIZE_MAX)
		return error_line(-ERANGE, what, "size '%s' out of range: %s to %s", s,
		                  tp_format_size(TP_SIZE_MIN, min, sizeof min),
		                  tp_format_size(TP_SIZE_MAX, max, sizeof max));
	*ret_size = v;
	return 0;
}

/* A plain decimal number without sign or blanks, at most MAX. */
static int parse_number(const char *s, uint64_t max, uint64_t *ret_value)
{
	unsigned long long v;
	char *end;

	if (s[0] < '0' || s[0] > '9')
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (*end != '\0')
		return -EINVAL;
	if (errno == ERANGE || v > max)
		return -ERANGE;
	*ret_value = v;
	return 0;
}

int parse_id(const char *what, const char *option, const char *s, uint32_t *ret_id)
{
	uint64_t v;
	int r;

	/* (uid_t)-1 means "no change" to chown(2): never a real owner. */
	r = parse_number(s, UINT32_MAX - 1, &v);
	if (r == -ERANGE)
		return error_line(r, what, "%s '%s' out of range: 0 to %" PRIu32, option, s,
		                  UINT32_MAX - 1);
	if (r < 0)
		return error_line(r, what, "invalid %s '%s': expected a decimal number", option, s);
	*ret_id = (uint32_t)v;
	return 0;
}

int parse_quota(const char *what, const char *option, const char *s, bool is_size,
                struct json_object **ret_value)
{
	struct json_object *value;
	uint64_t v;
	int r;

	if (strcmp(s, "none") == 0 || strcmp(s, "unlimited") == 0) {
		*ret_value = NULL;
		return 0;
	}
	r = is_size ? tp_parse_size(s, &v) : parse_number(s, INT64_MAX, &v);
	if (r == 0 && v > INT64_MAX)
		r = -ERANGE;
	if (r == -ERANGE)
		return error_line(r, what, "%s '%s' out of range", option, s);
	if (r < 0)
		return error_line(r, what, "invalid %s '%s': expected %s, or 'none' for no limit",
		                  option, s, is_size ? "a size such as 100G" : "a decimal number");
	value = json_object_new_int64((int64_t)v);
	if (value == NULL)
		return -ENOMEM;
	*ret_value = value;
	return 0;
}
