/* thinproxyd's settings: defaults, then the config file, then command-line flags. Every
 * option of the file is also a flag of the same name (see thinproxyd.conf(5)). */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cgroup.h"
#include "config.h"
#include "log.h"
#include "supervise.h"
#include "tp-cleanup.h"
#include "tp-rules.h"

#define DEFAULT_CONFIG "/etc/thinproxy/thinproxyd.conf"

enum {
	OPT_CONFIG = 256,
	OPT_STATE_DIR,
	OPT_RUN_DIR,
	OPT_POOL,
	OPT_ALLOW_SKIP_BLOCK_ZEROING,
	OPT_DATA,
	OPT_METADATA,
	OPT_POOL_NAME,
	OPT_LOOP_SIZE,
	OPT_METADATA_SIZE,
	OPT_METADATA_MAX,
	OPT_BLOCK_SIZE,
	OPT_MIN_FREE,
	OPT_LOW_WATER,
	OPT_NBDKIT,
	OPT_PLUGIN,
	OPT_NBD_UID_BASE,
	OPT_CGROUP,
	OPT_NBDKIT_MEMORY_MAX,
	OPT_NBDKIT_PIDS_MAX,
	OPT_NBDKIT_IDLE,
	OPT_API_PROCESS,
	OPT_NO_API_PROCESS,
	OPT_API_PROGRAM,
	OPT_API_UID,
	OPT_LOG_LEVEL,
	OPT_SYSLOG,
	OPT_FOREGROUND,
	OPT_TEARDOWN,
	OPT_HELP,
	OPT_VERSION,
};

static const struct option options[] = {
    {"config", required_argument, NULL, OPT_CONFIG},
    {"state-dir", required_argument, NULL, OPT_STATE_DIR},
    {"run-dir", required_argument, NULL, OPT_RUN_DIR},
    {"pool", required_argument, NULL, OPT_POOL},
    {"allow-skip-block-zeroing", no_argument, NULL, OPT_ALLOW_SKIP_BLOCK_ZEROING},
    {"data", required_argument, NULL, OPT_DATA},
    {"metadata", required_argument, NULL, OPT_METADATA},
    {"pool-name", required_argument, NULL, OPT_POOL_NAME},
    {"loop-size", required_argument, NULL, OPT_LOOP_SIZE},
    {"metadata-size", required_argument, NULL, OPT_METADATA_SIZE},
    {"metadata-max", required_argument, NULL, OPT_METADATA_MAX},
    {"block-size", required_argument, NULL, OPT_BLOCK_SIZE},
    {"min-free", required_argument, NULL, OPT_MIN_FREE},
    {"low-water", required_argument, NULL, OPT_LOW_WATER},
    {"nbdkit", required_argument, NULL, OPT_NBDKIT},
    {"plugin", required_argument, NULL, OPT_PLUGIN},
    {"nbd-uid-base", required_argument, NULL, OPT_NBD_UID_BASE},
    {"cgroup", required_argument, NULL, OPT_CGROUP},
    {"nbdkit-memory-max", required_argument, NULL, OPT_NBDKIT_MEMORY_MAX},
    {"nbdkit-pids-max", required_argument, NULL, OPT_NBDKIT_PIDS_MAX},
    {"nbdkit-idle", required_argument, NULL, OPT_NBDKIT_IDLE},
    {"api-process", no_argument, NULL, OPT_API_PROCESS},
    {"no-api-process", no_argument, NULL, OPT_NO_API_PROCESS},
    {"api-program", required_argument, NULL, OPT_API_PROGRAM},
    {"api-uid", required_argument, NULL, OPT_API_UID},
    {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
    {"syslog", no_argument, NULL, OPT_SYSLOG},
    {"foreground", no_argument, NULL, OPT_FOREGROUND},
    {"teardown", no_argument, NULL, OPT_TEARDOWN},
    {"help", no_argument, NULL, OPT_HELP},
    {"version", no_argument, NULL, OPT_VERSION},
    {NULL, 0, NULL, 0},
};

static const char usage_text[] =
    "Usage: thinproxyd [OPTION]...\n"
    "Lend thin volumes of a device-mapper thin pool to tenants over NBD.\n"
    "\n"
    "  --config FILE        settings file (default " DEFAULT_CONFIG ")\n"
    "  --state-dir DIR      store and embedded pool (default /var/lib/thinproxy)\n"
    "  --run-dir DIR        sockets (default /run/thinproxy)\n"
    "  --pool NAME          use the existing thin-pool dm device NAME\n"
    "  --allow-skip-block-zeroing\n"
    "                       ... even if it does not zero new blocks (unsafe)\n"
    "  --data DEV           create (or reattach) our pool on data device DEV ...\n"
    "  --metadata DEV       ... and metadata device DEV\n"
    "  --pool-name NAME     dm name of our own pool (default thinproxy-pool)\n"
    "  --loop-size SIZE     embedded pool's data size (default 10G)\n"
    "  --metadata-size SIZE embedded pool's first metadata size (default: for 10000\n"
    "                       volumes, by thin_metadata_size's rule, twice over)\n"
    "  --metadata-max SIZE  the most it grows to when half full (default 15.9G)\n"
    "  --block-size SIZE    new pools' block size, 64K to 1G (default 64K)\n"
    "  --min-free SIZE|N%   refuse new volumes below this free space (default 5%)\n"
    "  --low-water N%       warn when free data or metadata drops below (default 20%)\n"
    "  --nbdkit PATH        nbdkit binary (default nbdkit)\n"
    "  --plugin PATH        thinproxy plugin for nbdkit (default: nbdkit's plugin dir)\n"
    "  --nbd-uid-base UID   first uid for tenants' nbdkit processes (default 2000000000)\n"
    "  --cgroup WHERE       the cgroup v2 in which each tenant's nbdkit gets one of its\n"
    "                       own: auto (default), a path, or none (no cgroups)\n"
    "  --nbdkit-memory-max SIZE\n"
    "                       memory of each tenant's nbdkit (default 1G; 0: no limit)\n"
    "  --nbdkit-pids-max N  its processes and threads (default 1024; 0: no limit)\n"
    "  --nbdkit-idle SECONDS\n"
    "                       a tenant's nbdkit starts with its first client and exits\n"
    "                       after SECONDS without one (default 60; 0: always runs)\n"
    "  --no-api-process     parse the REST API's HTTP in the daemon itself, not in the\n"
    "                       unprivileged API processes (thinproxyd-api; the default)\n"
    "  --api-program PATH   the API process's program (default: thinproxyd-api next to\n"
    "                       thinproxyd)\n"
    "  --api-uid UID        the tenants' API process's uid and gid, the admin's is one\n"
    "                       less (default: --nbd-uid-base minus 1)\n"
    "  --log-level LEVEL    error, warning, notice, info (default) or debug\n"
    "  --syslog             log to syslog instead of stderr\n"
    "  --foreground         do not detach\n"
    "  --teardown           with the daemon stopped: stop the tenants' nbdkits, take the\n"
    "                       thin devices and the pool down, then exit\n"
    "  --help               show this help\n"
    "  --version            show the version\n";

static int set_string(char **dst, const char *v)
{
	char *s = strdup(v);

	if (s == NULL)
		return -ENOMEM;
	free(*dst);
	*dst = s;
	return 0;
}

static int parse_uint(const char *v, uint64_t max, uint64_t *ret)
{
	char *end;
	unsigned long long n;

	if (*v < '0' || *v > '9')
		return -EINVAL;
	errno = 0;
	n = strtoull(v, &end, 10);
	if (errno || *end || n > max)
		return -EINVAL;
	*ret = n;
	return 0;
}

static int parse_percent(const char *v, unsigned *ret)
{
	size_t len = strlen(v);
	CLEANUP_FREE char *num = NULL;
	uint64_t n;

	if (len < 2 || v[len - 1] != '%' || (num = strndup(v, len - 1)) == NULL ||
	    parse_uint(num, 99, &n) < 0)
		return -EINVAL;
	*ret = (unsigned)n;
	return 0;
}

/* Apply one option; NAME is its long name, for messages. */
static int apply(struct config *cfg, int opt, const char *name, const char *v)
{
	uint64_t n;
	int r = 0;

	switch (opt) {
	case OPT_CONFIG:
		return set_string(&cfg->config_file, v);
	case OPT_STATE_DIR:
		return set_string(&cfg->state_dir, v);
	case OPT_RUN_DIR:
		return set_string(&cfg->run_dir, v);
	case OPT_POOL:
		return set_string(&cfg->pool, v);
	case OPT_DATA:
		return set_string(&cfg->data, v);
	case OPT_METADATA:
		return set_string(&cfg->metadata, v);
	case OPT_POOL_NAME:
		if (!tp_name_valid(v) || strlen(v) > 48)
			r = -EINVAL;
		else
			r = set_string(&cfg->pool_name, v);
		break;
	case OPT_NBDKIT:
		return set_string(&cfg->nbdkit, v);
	case OPT_PLUGIN:
		return set_string(&cfg->plugin, v);
	case OPT_LOOP_SIZE:
		r = tp_parse_size(v, &cfg->loop_size);
		if (r == 0 && (cfg->loop_size < (UINT64_C(64) << 20) || cfg->loop_size % 512))
			r = -EINVAL;
		break;
	case OPT_METADATA_SIZE:
	case OPT_METADATA_MAX:
		/* dm-thin: a few blocks of 4 KiB at least; it uses no more than ~15.9 GiB. */
		r = tp_parse_size(v, &n);
		if (r == 0 && (n < (UINT64_C(2) << 20) || n % 4096))
			r = -EINVAL;
		if (r == 0 && opt == OPT_METADATA_SIZE)
			cfg->metadata_size = n;
		else if (r == 0)
			cfg->metadata_max = n;
		break;
	case OPT_BLOCK_SIZE:
		r = tp_parse_size(v, &n);
		/* dm-thin: a multiple of 64 KiB between 64 KiB and 1 GiB. */
		if (r == 0 && (n < (64 << 10) || n > (UINT64_C(1) << 30) || n % (64 << 10)))
			r = -EINVAL;
		if (r == 0)
			cfg->block_size = n;
		break;
	case OPT_MIN_FREE:
		if (strchr(v, '%')) {
			r = parse_percent(v, &cfg->min_free_percent);
			cfg->min_free = 0;
		} else {
			r = tp_parse_size(v, &cfg->min_free);
			cfg->min_free_percent = 0;
		}
		break;
	case OPT_LOW_WATER:
		r = parse_percent(v, &cfg->low_water_percent);
		break;
	case OPT_CGROUP:
		if (strcmp(v, "auto") != 0 && strcmp(v, "none") != 0 && !cgroups_path_valid(v))
			r = -EINVAL;
		else
			r = set_string(&cfg->cgroup, v);
		break;
	case OPT_NBDKIT_MEMORY_MAX:
		r = tp_parse_size(v, &cfg->nbdkit_memory_max);
		/* Below a few MiB nbdkit could not even start. */
		if (r == 0 && cfg->nbdkit_memory_max != 0 && cfg->nbdkit_memory_max < (16 << 20))
			r = -EINVAL;
		break;
	case OPT_NBDKIT_PIDS_MAX:
		r = parse_uint(v, 1 << 22, &cfg->nbdkit_pids_max);
		/* nbdkit needs a few threads of its own and more per connection. */
		if (r == 0 && cfg->nbdkit_pids_max != 0 && cfg->nbdkit_pids_max < 32)
			r = -EINVAL;
		break;
	case OPT_NBDKIT_IDLE:
		r = parse_uint(v, SUPERVISE_IDLE_MAX_S, &n);
		if (r == 0)
			cfg->nbdkit_idle = (unsigned)n;
		break;
	case OPT_NBD_UID_BASE:
		r = parse_uint(v, UINT32_MAX - 65536, &n);
		if (r == 0 && n < 1000)
			r = -EINVAL;
		cfg->nbd_uid_base = (uint32_t)n;
		break;
	case OPT_API_PROCESS:
		cfg->api_process = true;
		break;
	case OPT_NO_API_PROCESS:
		cfg->api_process = false;
		break;
	case OPT_API_PROGRAM:
		if (v[0] != '/')
			r = -EINVAL;
		else
			r = set_string(&cfg->api_program, v);
		break;
	case OPT_API_UID:
		/* Never root, nor what (uid_t)-1 means to setresuid. */
		r = parse_uint(v, UINT32_MAX - 1, &n);
		if (r == 0 && n == 0)
			r = -EINVAL;
		cfg->api_uid = (uint32_t)n;
		break;
	case OPT_LOG_LEVEL:
		r = log_level_from_string(v);
		if (r >= 0) {
			cfg->log_level = r;
			r = 0;
		}
		break;
	case OPT_SYSLOG:
		cfg->syslog = true;
		break;
	case OPT_FOREGROUND:
		cfg->foreground = true;
		break;
	case OPT_ALLOW_SKIP_BLOCK_ZEROING:
		cfg->allow_skip_block_zeroing = true;
		break;
	case OPT_TEARDOWN:
		cfg->teardown = true;
		break;
	default:
		return -EINVAL;
	}
	if (r < 0)
		fprintf(stderr, "thinproxyd: invalid value for %s: \"%s\"\n", name, v ? v : "");
	return r;
}

static int option_by_name(const char *name)
{
	for (size_t i = 0; options[i].name; i++)
		if (strcmp(options[i].name, name) == 0)
			return options[i].val;
	return -1;
}

/* Read "key = value" lines; '#' starts a comment. Keys are the long flag names. */
static int read_file(struct config *cfg, const char *path, bool must_exist)
{
	CLEANUP_FCLOSE FILE *f = fopen(path, "re");
	CLEANUP_FREE char *line = NULL;
	size_t cap = 0;
	unsigned lineno = 0;
	ssize_t len;

	if (f == NULL) {
		if (errno == ENOENT && !must_exist)
			return 0;
		fprintf(stderr, "thinproxyd: cannot read %s: %m\n", path);
		return -errno;
	}
	while ((len = getline(&line, &cap, f)) >= 0) {
		char *p = line, *key, *val, *end;
		int opt;

		lineno++;
		if ((end = strchr(p, '#')))
			*end = '\0';
		while (*p == ' ' || *p == '\t')
			p++;
		for (end = p + strlen(p); end > p && strchr(" \t\r\n", end[-1]); end--)
			;
		*end = '\0';
		if (*p == '\0')
			continue;
		key = p;
		val = strchr(p, '=');
		if (val) {
			char *k = val;

			*val++ = '\0';
			while (k > key && (k[-1] == ' ' || k[-1] == '\t'))
				*--k = '\0';
			while (*val == ' ' || *val == '\t')
				val++;
		}
		opt = option_by_name(key);
		if (opt < 0 || opt == OPT_CONFIG || opt == OPT_HELP || opt == OPT_VERSION ||
		    opt == OPT_TEARDOWN || opt == OPT_NO_API_PROCESS) {
			fprintf(stderr, "thinproxyd: %s:%u: unknown setting \"%s\"\n", path, lineno,
			        key);
			return -EINVAL;
		}
		if (opt == OPT_SYSLOG || opt == OPT_FOREGROUND ||
		    opt == OPT_ALLOW_SKIP_BLOCK_ZEROING || opt == OPT_API_PROCESS) {
			if (val && strcmp(val, "true") != 0 && strcmp(val, "yes") != 0) {
				if (strcmp(val, "false") == 0 || strcmp(val, "no") == 0) {
					if (opt == OPT_API_PROCESS)
						cfg->api_process = false;
					continue;
				}
				fprintf(stderr, "thinproxyd: %s:%u: %s takes true or false\n", path,
				        lineno, key);
				return -EINVAL;
			}
		} else if (val == NULL || *val == '\0') {
			fprintf(stderr, "thinproxyd: %s:%u: %s needs a value\n", path, lineno, key);
			return -EINVAL;
		}
		if (apply(cfg, opt, key, val) < 0) {
			fprintf(stderr, "thinproxyd: in %s:%u\n", path, lineno);
			return -EINVAL;
		}
	}
	return 0;
}

int config_parse(struct config *cfg, int argc, char **argv)
{
	int opt, r;

	memset(cfg, 0, sizeof *cfg);
	cfg->loop_size = UINT64_C(10) << 30;
	cfg->block_size = 64 << 10;
	cfg->min_free_percent = 5;
	cfg->low_water_percent = 20;
	cfg->nbd_uid_base = 2000000000u;
	cfg->api_process = true;
	/* nbdkit serves a request of up to 64 MiB from a buffer of that size, and runs 16
	 * threads per connection (1.32): 1 GiB is sixteen such requests at once; 1024 tasks
	 * are some 60 connections. */
	cfg->nbdkit_memory_max = UINT64_C(1) << 30;
	cfg->nbdkit_pids_max = 1024;
	cfg->nbdkit_idle = 60;
	cfg->log_level = LOG_INFO;
	if (set_string(&cfg->state_dir, "/var/lib/thinproxy") < 0 ||
	    set_string(&cfg->cgroup, "auto") < 0 ||
	    set_string(&cfg->run_dir, "/run/thinproxy") < 0 ||
	    set_string(&cfg->nbdkit, "nbdkit") < 0)
		return -ENOMEM;

	/* First pass: only --config, --help and --version, so flags can override the file. */
	opterr = 0;
	while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
		if (opt == OPT_HELP) {
			fputs(usage_text, stdout);
			return 1;
		}
		if (opt == OPT_VERSION) {
			puts("thinproxyd " TP_VERSION);
			return 1;
		}
		if (opt == OPT_CONFIG && set_string(&cfg->config_file, optarg) < 0)
			return -ENOMEM;
	}
	r = read_file(cfg, cfg->config_file ? cfg->config_file : DEFAULT_CONFIG,
	              cfg->config_file != NULL);
	if (r < 0)
		return r;

	optind = 0;
	opterr = 1;
	while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
		const char *name = NULL;

		if (opt == '?')
			goto usage;
		for (size_t i = 0; options[i].name; i++)
			if (options[i].val == opt)
				name = options[i].name;
		if (apply(cfg, opt, name, optarg) < 0)
			return -EINVAL;
	}
	if (optind < argc) {
		fprintf(stderr, "thinproxyd: unexpected argument \"%s\"\n", argv[optind]);
		goto usage;
	}
	if (cfg->pool && (cfg->data || cfg->metadata)) {
		fprintf(stderr, "thinproxyd: --pool and --data/--metadata exclude each other\n");
		goto usage;
	}
	if (!cfg->data != !cfg->metadata) {
		fprintf(stderr, "thinproxyd: --data and --metadata go together\n");
		goto usage;
	}
	if ((cfg->metadata_size || cfg->metadata_max) && (cfg->pool || cfg->data)) {
		fprintf(stderr, "thinproxyd: --metadata-size and --metadata-max are for the "
		                "embedded pool, not --pool or --data\n");
		goto usage;
	}
	if (cfg->metadata_size && cfg->metadata_max && cfg->metadata_max < cfg->metadata_size) {
		fprintf(stderr, "thinproxyd: --metadata-max is below --metadata-size\n");
		goto usage;
	}
	if (cfg->api_uid == 0)
		cfg->api_uid = cfg->nbd_uid_base - 1;
	if (cfg->api_process && cfg->api_uid < 2) {
		fprintf(stderr, "thinproxyd: --api-uid must be at least 2: the admin's API process "
		                "runs as one less, never root\n");
		goto usage;
	}
	if (cfg->state_dir[0] != '/' || cfg->run_dir[0] != '/') {
		fprintf(stderr, "thinproxyd: --state-dir and --run-dir must be absolute paths\n");
		goto usage;
	}
	return 0;
usage:
	fprintf(stderr, "Try 'thinproxyd --help' for more information.\n");
	return -EINVAL;
}

void config_free(struct config *cfg)
{
	free(cfg->config_file);
	free(cfg->state_dir);
	free(cfg->run_dir);
	free(cfg->pool);
	free(cfg->data);
	free(cfg->metadata);
	free(cfg->pool_name);
	free(cfg->nbdkit);
	free(cfg->plugin);
	free(cfg->cgroup);
	free(cfg->api_program);
}
