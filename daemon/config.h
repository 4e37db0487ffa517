/* thinproxyd's settings: defaults, then the config file, then command-line flags. */
#ifndef TP_CONFIG_H
#define TP_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

struct config {
	char *config_file;
	char *state_dir, *run_dir;
	char *pool, *data, *metadata, *pool_name;
	uint64_t loop_size, block_size;
	uint64_t metadata_size, metadata_max; /* the embedded pool's; 0: the defaults */
	uint64_t min_free;
	unsigned min_free_percent, low_water_percent;
	char *nbdkit, *plugin;
	uint32_t nbd_uid_base;
	char *cgroup;                                /* "auto", "none" or a cgroup path */
	uint64_t nbdkit_memory_max, nbdkit_pids_max; /* 0: no limit */
	unsigned nbdkit_idle;                        /* seconds; 0: nbdkits always run */
	/* The admin socket served by an unprivileged API process (issue 21), the program's
	 * path (NULL: thinproxyd-api next to thinproxyd) and its uid and gid. */
	bool api_process;
	char *api_program;
	uint32_t api_uid;
	int log_level;
	bool syslog, foreground;
	bool allow_skip_block_zeroing;
	bool teardown; /* --teardown: take the pool down instead of serving */
};

/* Fill CFG from ARGV (and the config file it names, or the default one if it exists).
 * Returns 0, 1 if the program should exit successfully (--help, --version), or -EINVAL
 * after printing why to stderr. */
int config_parse(struct config *cfg, int argc, char **argv);
void config_free(struct config *cfg);

#endif
