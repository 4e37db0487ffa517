/* Tests of the thinproxy command as a whole: $TP_BUILD/thinproxy is run for real. First the
 * help / bad-option / missing-argument battery for every command (usage errors exit 2,
 * bad values 1), then requests against a throwaway server on a unix socket that records
 * the request and gives one canned answer. The server stands in for nothing of
 * thinproxyd's behaviour: it proves what the client sends and how it reads answers. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tp-cleanup.h"

#define DIR_TEMPLATE "/tmp/test-client-cli-XXXXXX"
static char dir[sizeof DIR_TEMPLATE];
static char binary[PATH_MAX];

struct result {
	int status;
	char *out, *err;
};

static void setup(void)
{
	const char *build = getenv("TP_BUILD");

	memcpy(dir, DIR_TEMPLATE, sizeof dir);
	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(binary, sizeof binary, "%s/thinproxy", build != NULL ? build : "build");
	ck_assert_msg(access(binary, X_OK) == 0, "%s: %s (set TP_BUILD)", binary, strerror(errno));
}

static void teardown(void)
{
	static const char *const files[] = {"out",        "err",      "request", "control.sock",
	                                    "admin.sock", "nbd.sock", "img.raw"};
	char path[PATH_MAX];

	for (size_t i = 0; i < ARRAY_SIZE(files); i++) {
		snprintf(path, sizeof path, "%s/%s", dir, files[i]);
		unlink(path);
	}
	rmdir(dir);
}

/* The contents of DIR/NAME, or NULL if there is no such file. */
static char *slurp(const char *name)
{
	char path[PATH_MAX], *text = NULL;
	size_t len = 0;
	FILE *f;

	snprintf(path, sizeof path, "%s/%s", dir, name);
	f = fopen(path, "re");
	if (f == NULL)
		return NULL;
	if (getdelim(&text, &len, '\0', f) < 0) {
		free(text);
		text = strdup("");
	}
	fclose(f);
	return text;
}

/* Run thinproxy with the NULL-terminated arguments ARGS in DIR, with THINPROXY_DIR=DIR. */
static struct result run_argv(const char *const *args)
{
	const char *argv[160] = {"thinproxy"};
	struct result res = {0};
	size_t n = 1;
	pid_t pid;
	int status;

	for (; args[n - 1] != NULL && n < ARRAY_SIZE(argv) - 1; n++)
		argv[n] = args[n - 1];
	argv[n] = NULL;

	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		int in, out, err;

		if (chdir(dir) < 0)
			_exit(127);
		in = open("/dev/null", O_RDONLY);
		out = open("out", O_WRONLY | O_CREAT | O_TRUNC, 0600);
		err = open("err", O_WRONLY | O_CREAT | O_TRUNC, 0600);
		if (in < 0 || out < 0 || err < 0 || dup2(in, 0) < 0 || dup2(out, 1) < 0 ||
		    dup2(err, 2) < 0)
			_exit(127);
		setenv("THINPROXY_DIR", dir, 1);
		execv(binary, (char **)argv);
		_exit(127);
	}
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert_msg(WIFEXITED(status), "thinproxy died of signal %d", WTERMSIG(status));
	res.status = WEXITSTATUS(status);
	res.out = slurp("out");
	res.err = slurp("err");
	ck_assert_ptr_nonnull(res.out);
	ck_assert_ptr_nonnull(res.err);
	return res;
}

#define RUN(...) run_argv((const char *const[]){__VA_ARGS__, NULL})

static void result_free(struct result *res)
{
	free(res->out);
	free(res->err);
}
#define CLEANUP_RESULT __attribute__((cleanup(result_free)))

/* Assert that RES failed with STATUS and one line on stderr containing NEEDLE. */
static void assert_fails(const struct result *res, int status, const char *needle)
{
	ck_assert_msg(res->status == status, "exit %d, not %d; stderr: %s", res->status, status,
	              res->err);
	ck_assert_msg(strstr(res->err, needle) != NULL, "stderr lacks \"%s\": %s", needle,
	              res->err);
	ck_assert_msg(strncmp(res->err, "thinproxy: ", 11) == 0, "stderr: %s", res->err);
	ck_assert_msg(strchr(res->err, '\n') == res->err + strlen(res->err) - 1, "not one line: %s",
	              res->err);
	ck_assert_str_eq(res->out, "");
}

/* Every command, as its words and the options that make it complete. */
static const struct {
	const char *words[2];
	const char *operand;      /* NULL if it takes none */
	const char *value_option; /* an option that takes a value, or NULL */
	const char *second;       /* a valid second operand, for commands that take two */
	bool many;                /* takes any number of operands (up to 65) */
} commands[] = {
    {{"create"}, "NAME", "--size"},
    {{"snapshot"}, "NAME", "--from"},
    {{"commit"}, "NAME", "--as"},
    {{"label"}, "NAME", NULL, NULL, true},
    {{"rm"}, "NAME", NULL},
    {{"ls"}, NULL, NULL},
    {{"info"}, "NAME", NULL},
    {{"diff"}, "NAME", "--from"},
    {{"resize"}, "NAME", "--size"},
    {{"usage"}, NULL, NULL},
    {{"pool"}, NULL, NULL},
    {{"metrics"}, NULL, NULL},
    {{"tenant", "add"}, "NAME", "--max-size"},
    {{"tenant", "rm"}, "NAME", NULL},
    {{"tenant", "ls"}, NULL, NULL},
    {{"tenant", "info"}, "NAME", NULL},
    {{"tenant", "set"}, "NAME", "--uid"},
    {{"image", "import"}, "NAME", "--from"},
    {{"image", "publish"}, "NAME", "--tenant"},
    {{"image", "ls"}, NULL, NULL},
    {{"image", "rm"}, "NAME", NULL},
    {{"grant"}, "VOLUME", "--owner"},
    {{"revoke"}, "VOLUME", "--to"},
    {{"grants"}, NULL, NULL},
    {{"attach"}, "NAME", "--connections", "/dev/nbd0"},
    {{"detach"}, "DEVICE", NULL},
    {{"snapshotter"}, NULL, "--socket"},
};

/* Run command I with EXTRA appended (up to three arguments, NULL-terminated). */
static struct result run_command3(size_t i, const char *extra1, const char *extra2,
                                  const char *extra3)
{
	const char *args[7];
	size_t n = 0;

	args[n++] = commands[i].words[0];
	if (commands[i].words[1] != NULL)
		args[n++] = commands[i].words[1];
	args[n++] = extra1;
	args[n++] = extra1 != NULL ? extra2 : NULL;
	args[n++] = extra1 != NULL && extra2 != NULL ? extra3 : NULL;
	args[n] = NULL;
	return run_argv(args);
}

static struct result run_command(size_t i, const char *extra1, const char *extra2)
{
	return run_command3(i, extra1, extra2, NULL);
}

static void command_name(size_t i, char *buf, size_t len)
{
	snprintf(buf, len, "%s%s%s", commands[i].words[0], commands[i].words[1] ? " " : "",
	         commands[i].words[1] ? commands[i].words[1] : "");
}

START_TEST(prints_the_program_help_with_every_command)
{
	CLEANUP_RESULT struct result a = RUN("--help");
	CLEANUP_RESULT struct result b = RUN("-h");
	CLEANUP_RESULT struct result c = RUN("help");
	char name[64];

	ck_assert_int_eq(a.status, 0);
	ck_assert_int_eq(b.status, 0);
	ck_assert_int_eq(c.status, 0);
	ck_assert_str_eq(a.err, "");
	ck_assert(strncmp(a.out, "Usage: thinproxy [OPTIONS] COMMAND", 34) == 0);
	ck_assert_str_eq(a.out, b.out);
	ck_assert_str_eq(a.out, c.out);
	for (size_t i = 0; i < ARRAY_SIZE(commands); i++) {
		char line[80];

		command_name(i, name, sizeof name);
		snprintf(line, sizeof line, "\n  %s ", name);
		ck_assert_msg(strstr(a.out, line) != NULL, "help lacks %s", name);
	}
}
END_TEST

START_TEST(prints_the_version)
{
	CLEANUP_RESULT struct result r = RUN("--version");

	ck_assert_int_eq(r.status, 0);
	ck_assert(strncmp(r.out, "thinproxy ", 10) == 0);
}
END_TEST

START_TEST(every_command_prints_its_help_and_exits_0)
{
	for (size_t i = 0; i < ARRAY_SIZE(commands); i++) {
		CLEANUP_RESULT struct result r = run_command(i, "--help", NULL);
		CLEANUP_RESULT struct result via_help = {0};
		char name[64], usage[96], *options;

		command_name(i, name, sizeof name);
		ck_assert_msg(r.status == 0, "%s --help: exit %d", name, r.status);
		ck_assert_str_eq(r.err, "");
		ck_assert_msg(strncmp(r.out, "Usage: thinproxy ", 17) == 0, "%s: %s", name, r.out);
		/* The usage line names the command; the rest lists its options. */
		options = strchr(r.out, '\n');
		ck_assert_ptr_nonnull(options);
		*options++ = '\0';
		snprintf(usage, sizeof usage, " %s", name);
		ck_assert_msg(strstr(r.out, usage) != NULL, "%s: %s", name, r.out);
		ck_assert_msg(strstr(options, "--help") != NULL, "%s", name);
		if (commands[i].value_option != NULL)
			ck_assert_msg(strstr(options, commands[i].value_option) != NULL,
			              "%s --help lacks %s", name, commands[i].value_option);

		via_help = RUN("help", commands[i].words[0], commands[i].words[1]);
		ck_assert_int_eq(via_help.status, 0);
		ck_assert_msg(strncmp(via_help.out, "Usage: thinproxy ", 17) == 0, "%s", name);
	}
}
END_TEST

START_TEST(every_command_rejects_an_unknown_option_with_status_2)
{
	for (size_t i = 0; i < ARRAY_SIZE(commands); i++) {
		CLEANUP_RESULT struct result r = run_command(i, "--no-such-option", NULL);
		char name[64], hint[96];

		command_name(i, name, sizeof name);
		assert_fails(&r, 2, "unknown option '--no-such-option'");
		snprintf(hint, sizeof hint, "see 'thinproxy %s --help'", name);
		ck_assert_msg(strstr(r.err, hint) != NULL, "%s", r.err);
	}
}
END_TEST

START_TEST(every_command_with_an_operand_exits_2_without_it)
{
	for (size_t i = 0; i < ARRAY_SIZE(commands); i++) {
		CLEANUP_RESULT struct result r = {0};
		char needle[32];

		if (commands[i].operand == NULL)
			continue;
		r = run_command(i, NULL, NULL);
		snprintf(needle, sizeof needle, "missing %s", commands[i].operand);
		assert_fails(&r, 2, needle);
	}
}
END_TEST

START_TEST(every_option_with_a_value_exits_2_without_one)
{
	for (size_t i = 0; i < ARRAY_SIZE(commands); i++) {
		CLEANUP_RESULT struct result r = {0};
		char needle[64];

		if (commands[i].value_option == NULL)
			continue;
		r = run_command(i, "x", commands[i].value_option);
		snprintf(needle, sizeof needle, "option '%s' needs a value",
		         commands[i].value_option);
		assert_fails(&r, 2, needle);
	}
}
END_TEST

START_TEST(every_command_rejects_an_extra_operand_with_status_2)
{
	for (size_t i = 0; i < ARRAY_SIZE(commands); i++) {
		CLEANUP_RESULT struct result r = {0};

		if (commands[i].many)
			continue; /* label_takes_at_most_64_changes */
		if (commands[i].second != NULL)
			r = run_command3(i, "x", commands[i].second, "extra");
		else if (commands[i].operand != NULL)
			r = run_command(i, "x", "extra");
		else
			r = run_command(i, "extra", NULL);
		assert_fails(&r, 2, "unexpected argument 'extra'");
	}
}
END_TEST

/* Every option that takes a value, of every command that has one: in the command's help,
 * and without its value a usage error. (every_option_with_a_value_exits_2_without_one
 * takes one option per command.) */
START_TEST(every_value_option_is_in_the_help_and_exits_2_without_a_value)
{
	static const struct {
		const char *words[3]; /* the command, and an operand if it needs one */
		const char *option;
	} cases[] = {
	    {{"create", "x"}, "--size"},
	    {{"create", "x"}, "--label"},
	    {{"create", "x"}, "-l"},
	    {{"snapshot", "x"}, "--from"},
	    {{"snapshot", "x"}, "--size"},
	    {{"snapshot", "x"}, "--label"},
	    {{"commit", "x"}, "--as"},
	    {{"ls"}, "--label"},
	    {{"ls"}, "-l"},
	    {{"resize", "x"}, "--size"},
	    {{"attach", "x"}, "--timeout"},
	    {{"attach", "x"}, "--io-timeout"},
	    {{"attach", "x"}, "--cache"},
	};

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		CLEANUP_RESULT struct result help = RUN(cases[i].words[0], "--help");
		CLEANUP_RESULT struct result r = {0};
		const char *args[5] = {cases[i].words[0]};
		size_t n = 1;
		char needle[64];

		if (cases[i].words[1] != NULL)
			args[n++] = cases[i].words[1];
		args[n++] = cases[i].option;
		args[n] = NULL;
		r = run_argv(args);
		ck_assert_int_eq(help.status, 0);
		ck_assert_msg(strstr(help.out, cases[i].option) != NULL, "%s --help lacks %s",
		              cases[i].words[0], cases[i].option);
		snprintf(needle, sizeof needle, "option '%s' needs a value",
		         strncmp(cases[i].option, "--", 2) == 0 ? cases[i].option : "--label");
		assert_fails(&r, 2, needle);
	}
}
END_TEST

/* label takes a volume and up to 64 changes, and at least one; --label goes up to 64
 * times too. */
START_TEST(label_takes_at_most_64_changes)
{
	const char *args[72] = {"label", "x"};
	const char *opts[140] = {"create", "x", "--size", "1G"};
	CLEANUP_RESULT struct result none = RUN("label", "x");
	CLEANUP_RESULT struct result many = {0};
	CLEANUP_RESULT struct result too_many_options = {0};
	char changes[65][8];

	for (int i = 0; i < 65; i++) {
		snprintf(changes[i], sizeof changes[i], "k%d-", i);
		args[2 + i] = changes[i];
		opts[4 + 2 * i] = "--label";
		opts[5 + 2 * i] = "k=v";
	}
	args[67] = NULL;
	opts[4 + 2 * 65] = NULL;
	many = run_argv(args);
	too_many_options = run_argv(opts);
	assert_fails(&none, 2, "label: missing KEY=VALUE or KEY-");
	assert_fails(&many, 2, "unexpected argument 'k64-'");
	assert_fails(&too_many_options, 2, "create: at most 64 --label");
}
END_TEST

START_TEST(rejects_missing_required_options_with_status_2)
{
	CLEANUP_RESULT struct result create = RUN("create", "x");
	CLEANUP_RESULT struct result snapshot = RUN("snapshot", "x", "--size", "1G");
	CLEANUP_RESULT struct result resize = RUN("resize", "x");
	CLEANUP_RESULT struct result import = RUN("--admin", "image", "import", "x");
	CLEANUP_RESULT struct result grant = RUN("--admin", "grant", "v", "--owner", "a");
	CLEANUP_RESULT struct result revoke = RUN("--admin", "revoke", "v", "--to", "b");
	CLEANUP_RESULT struct result diff = RUN("diff", "x");

	assert_fails(&diff, 2, "diff: missing --from");
	assert_fails(&create, 2, "create: missing --size");
	assert_fails(&snapshot, 2, "snapshot: missing --from");
	assert_fails(&resize, 2, "resize: missing --size");
	assert_fails(&import, 2, "image import: missing --from");
	assert_fails(&grant, 2, "grant: missing --to");
	assert_fails(&revoke, 2, "revoke: missing --owner");
}
END_TEST

START_TEST(rejects_unknown_and_missing_commands_with_status_2)
{
	CLEANUP_RESULT struct result none = RUN("--json");
	CLEANUP_RESULT struct result unknown = RUN("frobnicate");
	CLEANUP_RESULT struct result group = RUN("--admin", "tenant");
	CLEANUP_RESULT struct result sub = RUN("--admin", "image", "frobnicate");
	CLEANUP_RESULT struct result global = RUN("--frobnicate", "ls");
	CLEANUP_RESULT struct result no_dir = RUN("--dir");
	CLEANUP_RESULT struct result help = RUN("help", "frobnicate");

	assert_fails(&none, 2, "missing command");
	assert_fails(&unknown, 2, "unknown command 'frobnicate'");
	assert_fails(&group, 2, "tenant: missing command");
	assert_fails(&sub, 2, "unknown command 'image frobnicate'");
	assert_fails(&global, 2, "unknown option '--frobnicate'");
	assert_fails(&no_dir, 2, "option '--dir' needs a value");
	assert_fails(&help, 2, "unknown command 'frobnicate'");
}
END_TEST

START_TEST(rejects_options_in_the_wrong_place_with_status_2)
{
	CLEANUP_RESULT struct result admin_only = RUN("pool");
	CLEANUP_RESULT struct result no_tenant = RUN("--admin", "ls");
	CLEANUP_RESULT struct result no_admin = RUN("--tenant", "alice", "ls");
	CLEANUP_RESULT struct result tenant_for_admin = RUN("--admin", "--tenant", "a", "pool");
	CLEANUP_RESULT struct result neither = RUN("--admin", "image", "publish", "base");
	CLEANUP_RESULT struct result both =
	    RUN("--admin", "image", "publish", "base", "--all", "--tenant", "a");
	CLEANUP_RESULT struct result nothing = RUN("--admin", "tenant", "set", "alice");
	CLEANUP_RESULT struct result quiet_json = RUN("--json", "ls", "-q");
	CLEANUP_RESULT struct result flag_value = RUN("rm", "x", "--json=yes");
	CLEANUP_RESULT struct result attach_admin = RUN("--admin", "attach", "layer1");
	CLEANUP_RESULT struct result detach_tenant = RUN("--tenant", "a", "detach", "/dev/nbd0");
	CLEANUP_RESULT struct result label_attached = RUN("ls", "--label", "k", "--attached");
	CLEANUP_RESULT struct result label_resize = RUN("resize", "x", "--size", "1G", "-l", "k=v");
	CLEANUP_RESULT struct result as_create = RUN("create", "x", "--size", "1G", "--as", "y");

	assert_fails(&admin_only, 2, "pool: an admin command: needs --admin");
	assert_fails(&no_tenant, 2, "ls: with --admin, needs --tenant T");
	assert_fails(&no_admin, 2, "--tenant needs --admin");
	assert_fails(&tenant_for_admin, 2, "--tenant applies to volume commands only");
	assert_fails(&neither, 2, "needs exactly one of --tenant or --all");
	assert_fails(&both, 2, "needs exactly one of --tenant or --all");
	assert_fails(&nothing, 2, "needs at least one of --uid, --gid, --max-volumes");
	assert_fails(&quiet_json, 2, "--quiet and --json exclude each other");
	assert_fails(&flag_value, 2, "option '--json' takes no value");
	assert_fails(&attach_admin, 2, "attach: with --admin, needs --tenant T");
	assert_fails(&detach_tenant, 2, "--tenant needs --admin");
	assert_fails(&label_attached, 2, "ls: --label and --attached exclude each other");
	assert_fails(&label_resize, 2, "resize: unknown option '-l'");
	assert_fails(&as_create, 2, "create: unknown option '--as'");
}
END_TEST

START_TEST(rejects_bad_values_with_status_1_before_connecting)
{
	CLEANUP_RESULT struct result name = RUN("create", "Layer1", "--size", "1G");
	CLEANUP_RESULT struct result size = RUN("create", "layer1", "--size", "10X");
	CLEANUP_RESULT struct result small = RUN("create", "layer1", "--size", "4K");
	CLEANUP_RESULT struct result parent = RUN("snapshot", "l2", "--from", "a/b/c");
	CLEANUP_RESULT struct result diff_ref = RUN("diff", "l2", "--from", "Base");
	CLEANUP_RESULT struct result diff_name = RUN("diff", "L2", "--from", "base");
	CLEANUP_RESULT struct result uid = RUN("--admin", "tenant", "add", "a", "--uid", "-1");
	CLEANUP_RESULT struct result big_uid =
	    RUN("--admin", "tenant", "add", "a", "--uid", "4294967295");
	CLEANUP_RESULT struct result quota =
	    RUN("--admin", "tenant", "set", "a", "--max-size", "lots");
	CLEANUP_RESULT struct result count =
	    RUN("--admin", "tenant", "set", "a", "--max-volumes", "1e3");
	CLEANUP_RESULT struct result tenant = RUN("--admin", "--tenant", "Bob", "ls");
	CLEANUP_RESULT struct result grant =
	    RUN("--admin", "grant", "v", "--owner", "a", "--to", "");
	CLEANUP_RESULT struct result ref = RUN("attach", "Layer1");
	CLEANUP_RESULT struct result device = RUN("attach", "layer1", "/dev/sda");
	CLEANUP_RESULT struct result none = RUN("attach", "layer1", "--connections", "0");
	CLEANUP_RESULT struct result many = RUN("attach", "layer1", "--connections", "17");
	CLEANUP_RESULT struct result timeout = RUN("attach", "layer1", "--timeout", "1m");
	CLEANUP_RESULT struct result io_timeout = RUN("attach", "layer1", "--io-timeout", "-1");
	CLEANUP_RESULT struct result cache = RUN("attach", "layer1", "--cache", "direct");
	CLEANUP_RESULT struct result detach = RUN("detach", "nbd01");
	CLEANUP_RESULT struct result no_value = RUN("create", "x", "--size", "1G", "-l", "tier");
	CLEANUP_RESULT struct result no_key = RUN("snapshot", "x", "--from", "b", "--label", "=v");
	CLEANUP_RESULT struct result control =
	    RUN("create", "x", "--size", "1G", "--label", "a\x1b[2J=v");
	CLEANUP_RESULT struct result not_utf8 = RUN("ls", "--label", "k=\xff");
	CLEANUP_RESULT struct result change = RUN("label", "x", "a=1", "tier");
	CLEANUP_RESULT struct result remove = RUN("label", "x", "-");
	CLEANUP_RESULT struct result as = RUN("commit", "x", "--as", "Done");
	CLEANUP_RESULT struct result fs = RUN("snapshotter", "--fs", "zfs");
	CLEANUP_RESULT struct result layer_size = RUN("snapshotter", "--size", "10X");
	CLEANUP_RESULT struct result relative = RUN("snapshotter", "--socket", "s.sock");

	assert_fails(&name, 1, "create Layer1: invalid volume name 'Layer1'");
	assert_fails(&size, 1, "create layer1: invalid size '10X'");
	assert_fails(&small, 1, "create layer1: size '4K' out of range: 64K to 16P");
	assert_fails(&parent, 1, "snapshot l2: invalid reference 'a/b/c'");
	assert_fails(&diff_ref, 1, "diff l2: invalid reference 'Base'");
	assert_fails(&diff_name, 1, "diff L2: invalid volume name 'L2'");
	assert_fails(&uid, 1, "tenant add a: invalid --uid '-1'");
	assert_fails(&big_uid, 1, "tenant add a: --uid '4294967295' out of range");
	assert_fails(&quota, 1, "tenant set a: invalid --max-size 'lots'");
	assert_fails(&count, 1, "tenant set a: invalid --max-volumes '1e3'");
	assert_fails(&tenant, 1, "invalid tenant name 'Bob'");
	assert_fails(&grant, 1, "grant v: invalid tenant name ''");
	assert_fails(&ref, 1, "attach Layer1: invalid reference 'Layer1'");
	assert_fails(&device, 1, "attach layer1: invalid device '/dev/sda': expected /dev/nbdN");
	assert_fails(&none, 1, "attach layer1: --connections '0' out of range: 1 to 16");
	assert_fails(&many, 1, "attach layer1: --connections '17' out of range: 1 to 16");
	assert_fails(&timeout, 1, "attach layer1: invalid --timeout '1m'");
	assert_fails(&io_timeout, 1, "attach layer1: invalid --io-timeout '-1'");
	assert_fails(&cache, 1,
	             "attach layer1: invalid --cache 'direct': expected none or writeback");
	assert_fails(&detach, 1, "detach nbd01: invalid device 'nbd01'");
	assert_fails(&no_value, 1, "create x: invalid label 'tier': expected KEY=VALUE");
	assert_fails(&no_key, 1, "snapshot x: invalid label '=v': the key is empty");
	assert_fails(&control, 1, "invalid label 'a?[2J=v': the key contains a control character");
	assert_fails(&not_utf8, 1, "ls: invalid label 'k=\xff': the value is not valid UTF-8");
	assert_fails(&change, 1,
	             "label x: invalid label change 'tier': expected KEY=VALUE to set or KEY- to "
	             "remove");
	assert_fails(&remove, 1, "label x: invalid label '': the key is empty");
	assert_fails(&as, 1, "commit x: invalid volume name 'Done'");
	assert_fails(&fs, 1, "snapshotter: invalid --fs 'zfs': expected ext4 or xfs");
	assert_fails(&layer_size, 1, "snapshotter: invalid size '10X'");
	assert_fails(&relative, 1,
	             "snapshotter: invalid --socket 's.sock': expected an absolute path");
}
END_TEST

START_TEST(reports_a_missing_socket_with_its_path_and_status_1)
{
	CLEANUP_RESULT struct result tenant = RUN("ls");
	CLEANUP_RESULT struct result admin = RUN("--admin", "pool");
	CLEANUP_RESULT struct result other = RUN("--dir", "/nonexistent", "usage");
	char expected[PATH_MAX + 100];

	snprintf(expected, sizeof expected,
	         "thinproxy: cannot reach %s/control.sock: No such file or directory\n", dir);
	ck_assert_int_eq(tenant.status, 1);
	ck_assert_str_eq(tenant.err, expected);
	snprintf(expected, sizeof expected,
	         "thinproxy: cannot reach %s/admin.sock: No such file or directory\n", dir);
	ck_assert_int_eq(admin.status, 1);
	ck_assert_str_eq(admin.err, expected);
	ck_assert_int_eq(other.status, 1);
	ck_assert_str_eq(other.err, "thinproxy: cannot reach /nonexistent/control.sock: No such "
	                            "file or directory\n");
}
END_TEST

START_TEST(attach_reports_a_missing_nbd_socket_with_its_path)
{
	CLEANUP_RESULT struct result tenant = RUN("attach", "layer1");
	CLEANUP_RESULT struct result admin =
	    RUN("--admin", "--tenant", "alice", "attach", "layer1");
	char expected[PATH_MAX + 100];

	snprintf(expected, sizeof expected,
	         "thinproxy: attach layer1: cannot reach %s/nbd.sock: No such file or directory\n",
	         dir);
	ck_assert_int_eq(tenant.status, 1);
	ck_assert_str_eq(tenant.err, expected);
	snprintf(
	    expected, sizeof expected,
	    "thinproxy: attach layer1: cannot reach %s/tenants/alice/nbd.sock: No such file or "
	    "directory\n",
	    dir);
	ck_assert_int_eq(admin.status, 1);
	ck_assert_str_eq(admin.err, expected);
}
END_TEST

START_TEST(detach_reports_a_device_that_does_not_exist)
{
	CLEANUP_RESULT struct result r = RUN("detach", "/dev/nbd65535");

	assert_fails(&r, 1, "detach /dev/nbd65535: no such device");
}
END_TEST

START_TEST(lists_attached_devices_without_a_daemon)
{
	CLEANUP_RESULT struct result table = RUN("ls", "--attached");
	CLEANUP_RESULT struct result admin = RUN("--admin", "ls", "--attached", "--quiet");
	CLEANUP_RESULT struct result json = RUN("--json", "ls", "--attached");

	ck_assert_msg(table.status == 0, "%s", table.err);
	ck_assert(strncmp(table.out, "DEVICE     ", 6) == 0);
	ck_assert_msg(admin.status == 0, "%s", admin.err);
	ck_assert_msg(json.status == 0, "%s", json.err);
	ck_assert_msg(json.out[0] == '[', "%s", json.out);
}
END_TEST

/* A throwaway NBD server on DIR/nbd.sock: to one connection, say the LEN bytes of SCRIPT,
 * then read until the client hangs up. */
static pid_t serve_nbd(const void *script, size_t len)
{
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	struct timeval timeout = {.tv_sec = 10};
	int fd;
	pid_t pid;

	snprintf(addr.sun_path, sizeof addr.sun_path, "%s/nbd.sock", dir);
	unlink(addr.sun_path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&addr, sizeof addr), 0);
	ck_assert_int_eq(listen(fd, 1), 0);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		char buf[4096];
		int conn = accept(fd, NULL, NULL);

		if (conn < 0 || write(conn, script, len) != (ssize_t)len)
			_exit(1);
		setsockopt(conn, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
		while (read(conn, buf, sizeof buf) > 0)
			;
		_exit(0);
	}
	close(fd);
	return pid;
}

START_TEST(attach_reports_a_volume_the_server_does_not_know)
{
	/* NBDMAGIC IHAVEOPT, fixed newstyle; then NBD_REP_ERR_UNKNOWN to NBD_OPT_GO. */
	static const unsigned char script[] = {
	    'N', 'B', 'D', 'M', 'A',  'G', 'I',  'C',  'I',  'H',  'A',  'V',  'E',
	    'O', 'P', 'T', 0,   1,    0,   0x03, 0xe8, 0x89, 0x04, 0x55, 0x65, 0xa9,
	    0,   0,   0,   7,   0x80, 0,   0,    6,    0,    0,    0,    0};
	pid_t pid = serve_nbd(script, sizeof script);
	CLEANUP_RESULT struct result r = RUN("attach", "layer1");
	int status;

	assert_fails(&r, 1, "thinproxy: attach layer1: no such volume: layer1");
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
}
END_TEST

START_TEST(attach_refuses_a_server_that_is_not_fixed_newstyle)
{
	static const unsigned char script[] = {'N', 'B', 'D',  'M',  'A',  'G',  'I',  'C',
	                                       0,   0,   0x42, 0x02, 0x81, 0x86, 0x12, 0x53};
	pid_t pid = serve_nbd(script, sizeof script);
	CLEANUP_RESULT struct result r = RUN("attach", "layer1");
	int status;

	assert_fails(&r, 1, "attach layer1: an oldstyle NBD server");
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
}
END_TEST

/* One canned answer: STATUS and BODY (as CONTENT_TYPE). */
struct canned {
	int status;
	const char *content_type, *body;
};

/* Read one request from CONN and append it, as it came, to DIR/request; then answer A. */
static void answer_one(int conn, const struct canned *a)
{
	char request[65536], head[512], path[PATH_MAX];
	size_t len = 0, need = 0;
	FILE *f;

	while (len < sizeof request - 1) {
		ssize_t n = read(conn, request + len, sizeof request - 1 - len);
		char *end;

		if (n <= 0)
			break;
		len += (size_t)n;
		request[len] = '\0';
		end = strstr(request, "\r\n\r\n");
		if (end == NULL)
			continue;
		if (need == 0) {
			const char *cl = strcasestr(request, "\r\nContent-Length:");

			need = (size_t)(end + 4 - request) +
			       (cl != NULL && cl < end ? strtoul(cl + 17, NULL, 10) : 0);
		}
		if (len >= need)
			break;
	}
	request[len] = '\0';
	snprintf(path, sizeof path, "%s/request", dir);
	f = fopen(path, "ae");
	if (f == NULL)
		_exit(1);
	fputs(request, f);
	fclose(f);
	if (a->status == 204)
		snprintf(head, sizeof head, "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
	else
		snprintf(head, sizeof head,
		         "HTTP/1.1 %d Canned\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
		         "Connection: close\r\n\r\n",
		         a->status, a->content_type, strlen(a->body));
	if (write(conn, head, strlen(head)) < 0 ||
	    (a->status != 204 && write(conn, a->body, strlen(a->body)) < 0))
		_exit(1);
}

/* The throwaway server: listen on DIR/SOCKET_NAME, and in a child answer N requests, one a
 * connection, with ANSWERS in turn, after appending each request as it came to
 * DIR/request. */
static pid_t serve_answers(const char *socket_name, const struct canned *answers, size_t n)
{
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	struct timeval timeout = {.tv_sec = 10};
	int fd;
	pid_t pid;

	snprintf(addr.sun_path, sizeof addr.sun_path, "%s/%s", dir, socket_name);
	unlink(addr.sun_path); /* the previous server's */
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&addr, sizeof addr), 0);
	ck_assert_int_eq(listen(fd, 1), 0);
	/* Never hang the test if the client does not come. */
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);

	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		for (size_t i = 0; i < n; i++) {
			int conn = accept(fd, NULL, NULL);

			if (conn < 0)
				_exit(1);
			setsockopt(conn, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
			answer_one(conn, &answers[i]);
			close(conn);
		}
		_exit(0);
	}
	close(fd);
	return pid;
}

/* One request answered with STATUS and BODY (as CONTENT_TYPE). */
static pid_t serve_once(const char *socket_name, int status, const char *content_type,
                        const char *body)
{
	const struct canned a = {status, content_type, body};

	return serve_answers(socket_name, &a, 1);
}

/* Wait for the server and hand back the request it saw (NULL if none came); the next
 * server starts with no request on record. */
static char *served_request(pid_t pid)
{
	char path[PATH_MAX];
	char *request;
	int status;

	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	request = slurp("request");
	snprintf(path, sizeof path, "%s/request", dir);
	unlink(path);
	return request;
}

static const char quota_error[] = "{\"error\": {\"code\": \"quota_exceeded\", \"message\": "
                                  "\"tenant alice may own at most 10 volumes\"}}";
static const char volume[] = "{\"name\": \"layer1\", \"owner\": \"alice\", \"size\": 1073741824, "
                             "\"used\": 65536, \"state\": \"ready\", \"parent\": null, "
                             "\"created\": \"2026-11-23T10:00:00Z\", \"writable\": true}";
static const char volume_usage[] = "{\"mapped\": 196608, \"exclusive\": 65536, \"shared\": 131072}";
static const char volume_table[] = "NAME    SIZE  USED  STATE  PARENT\n"
                                   "layer1    1G   64K  ready  -\n";

/* Assert that REQUEST starts with the request line LINE and ends with BODY. */
static void assert_request(const char *request, const char *line, const char *body)
{
	ck_assert_ptr_nonnull(request);
	ck_assert_msg(strncmp(request, line, strlen(line)) == 0, "request: %s", request);
	ck_assert_msg(strlen(request) >= strlen(body) &&
	                  strcmp(request + strlen(request) - strlen(body), body) == 0,
	              "body is not %s: %s", body, request);
	if (body[0] == '{')
		ck_assert_msg(strcasestr(request, "\r\nContent-Type: application/json\r\n"),
		              "no JSON content type: %s", request);
}

START_TEST(shows_the_daemons_error_code_and_message_with_status_1)
{
	pid_t pid = serve_once("control.sock", 507, "application/json", quota_error);
	CLEANUP_RESULT struct result r = RUN("create", "layer1", "--size", "1G");
	CLEANUP_FREE char *request = served_request(pid);

	ck_assert_int_eq(r.status, 1);
	ck_assert_str_eq(r.err, "thinproxy: create layer1: quota exceeded: tenant alice may own at "
	                        "most 10 volumes\n");
	ck_assert_str_eq(r.out, "");
}
END_TEST

START_TEST(creates_with_a_json_post_and_shows_the_new_volume)
{
	pid_t pid = serve_once("control.sock", 201, "application/json", volume);
	CLEANUP_RESULT struct result r = RUN("create", "layer1", "--size", "1G");
	CLEANUP_FREE char *request = served_request(pid);

	ck_assert_int_eq(r.status, 0);
	ck_assert_str_eq(r.out, volume_table);
	assert_request(request, "POST /v1/volumes HTTP/1.1\r\n",
	               "{\"name\":\"layer1\",\"size\":1073741824}");
}
END_TEST

/* --label KEY=VALUE (split at the first '=') goes into "labels", on create and snapshot. */
START_TEST(creates_and_snapshots_with_labels)
{
	pid_t pid = serve_once("control.sock", 201, "application/json", volume);
	CLEANUP_RESULT struct result r = RUN("create", "layer1", "--size", "1G", "--label",
	                                     "tier=gold", "-l", "expr=a=b", "-l", "empty=");
	CLEANUP_FREE char *request = served_request(pid);
	CLEANUP_FREE char *snapshot_request = NULL;
	CLEANUP_RESULT struct result snapshot = {0};

	ck_assert_msg(r.status == 0, "%s", r.err);
	assert_request(request, "POST /v1/volumes HTTP/1.1\r\n",
	               "{\"name\":\"layer1\",\"size\":1073741824,"
	               "\"labels\":{\"tier\":\"gold\",\"expr\":\"a=b\",\"empty\":\"\"}}");
	pid = serve_once("control.sock", 201, "application/json", volume);
	snapshot =
	    RUN("snapshot", "l2", "--from", "images/base", "--label", "containerd.io/gc.root=x");
	snapshot_request = served_request(pid);
	ck_assert_msg(snapshot.status == 0, "%s", snapshot.err);
	assert_request(snapshot_request, "POST /v1/volumes HTTP/1.1\r\n",
	               "{\"name\":\"l2\",\"parent\":\"images/base\","
	               "\"labels\":{\"containerd.io/gc.root\":\"x\"}}");
}
END_TEST

/* commit --as NEW sends the new name; without it, no body (commits_with_an_empty_post...). */
START_TEST(commits_as_a_new_name_with_a_json_body)
{
	pid_t pid = serve_once("control.sock", 200, "application/json", volume);
	CLEANUP_RESULT struct result r = RUN("commit", "work", "--as", "layer1");
	CLEANUP_FREE char *request = served_request(pid);

	ck_assert_msg(r.status == 0, "%s", r.err);
	ck_assert_str_eq(r.out, volume_table);
	assert_request(request, "POST /v1/volumes/work/commit HTTP/1.1\r\n",
	               "{\"name\":\"layer1\"}");
}
END_TEST

/* label NAME KEY=VALUE KEY- is one merge patch: a string sets, null removes. */
START_TEST(labels_with_one_merge_patch_and_shows_the_volume)
{
	static const char labelled[] = "{\"name\": \"layer1\", \"state\": \"committed\","
	                               " \"labels\": {\"tier\": \"gold\"}}";
	pid_t pid = serve_once("control.sock", 200, "application/json", labelled);
	CLEANUP_RESULT struct result r = RUN("label", "layer1", "tier=gold", "old-", "a-b=c=d");
	CLEANUP_FREE char *request = served_request(pid);

	ck_assert_msg(r.status == 0, "%s", r.err);
	assert_request(request, "PATCH /v1/volumes/layer1 HTTP/1.1\r\n",
	               "{\"labels\":{\"tier\":\"gold\",\"old\":null,\"a-b\":\"c=d\"}}");
	ck_assert_ptr_nonnull(strstr(r.out, "\nlabels:    tier=gold\n"));
}
END_TEST

/* ls --label KEY[=VALUE] becomes ?label=..., every byte but the unreserved escaped. */
START_TEST(lists_by_label_with_an_escaped_query)
{
	static const char list[] = "{\"volumes\": [{\"name\": \"a\", \"size\": 65536}]}";
	pid_t pid = serve_once("control.sock", 200, "application/json", list);
	CLEANUP_RESULT struct result r =
	    RUN("ls", "-q", "--label", "containerd.io/gc.root", "-l", "k=a b&c=\xc3\xa9+%");
	CLEANUP_FREE char *request = served_request(pid);
	CLEANUP_FREE char *admin_request = NULL;
	CLEANUP_RESULT struct result admin = {0};

	ck_assert_msg(r.status == 0, "%s", r.err);
	ck_assert_str_eq(r.out, "a\n");
	assert_request(request,
	               "GET /v1/volumes?label=containerd.io%2Fgc.root"
	               "&label=k%3Da%20b%26c%3D%C3%A9%2B%25 HTTP/1.1\r\n",
	               "");
	pid = serve_once("admin.sock", 200, "application/json", list);
	admin = RUN("--admin", "--tenant", "alice", "ls", "--label", "tier", "--json");
	admin_request = served_request(pid);
	ck_assert_msg(admin.status == 0, "%s", admin.err);
	assert_request(admin_request, "GET /v1/tenants/alice/volumes?label=tier HTTP/1.1\r\n", "");
}
END_TEST

START_TEST(snapshots_with_the_parent_reference_and_an_optional_size)
{
	pid_t pid = serve_once("control.sock", 201, "application/json", volume);
	CLEANUP_RESULT struct result r =
	    RUN("snapshot", "layer2", "--from", "images/base", "-s", "20G");
	CLEANUP_FREE char *request = served_request(pid);

	ck_assert_int_eq(r.status, 0);
	assert_request(request, "POST /v1/volumes HTTP/1.1\r\n",
	               "{\"name\":\"layer2\",\"parent\":\"images/base\",\"size\":21474836480}");
}
END_TEST

START_TEST(acts_on_a_tenants_volumes_under_its_path_on_the_admin_socket)
{
	const struct canned answers[] = {{200, "application/json", volume},
	                                 {200, "application/json", volume_usage}};
	pid_t pid = serve_answers("admin.sock", answers, 2);
	CLEANUP_RESULT struct result r = RUN("--admin", "--tenant", "alice", "info", "layer1");
	CLEANUP_FREE char *request = served_request(pid);

	ck_assert_msg(r.status == 0, "%s", r.err);
	assert_request(request, "GET /v1/tenants/alice/volumes/layer1 HTTP/1.1\r\n", "");
	ck_assert_ptr_nonnull(
	    strstr(request, "\r\n\r\nGET /v1/tenants/alice/volumes/layer1/usage HTTP/1.1\r\n"));
	ck_assert(strncmp(r.out, "name:       layer1\nowner:      alice\n", 37) == 0);
}
END_TEST

/* info shows the exact usage /usage answers, after the volume's used bytes; with --json as
 * the member "usage". */
START_TEST(shows_a_volumes_exact_usage_in_info)
{
	const struct canned answers[] = {{200, "application/json", volume},
	                                 {200, "application/json", volume_usage}};
	pid_t pid = serve_answers("control.sock", answers, 2);
	CLEANUP_RESULT struct result r = RUN("info", "layer1");
	CLEANUP_FREE char *request = served_request(pid);
	CLEANUP_FREE char *json_request = NULL;
	CLEANUP_RESULT struct result json = {0};

	ck_assert_msg(r.status == 0, "%s", r.err);
	ck_assert_str_eq(r.err, "");
	ck_assert_ptr_nonnull(strstr(request, "\r\n\r\nGET /v1/volumes/layer1/usage HTTP/1.1\r\n"));
	ck_assert_ptr_nonnull(strstr(r.out, "\nused:       64K (65536 bytes)\n"
	                                    "mapped:     192K (196608 bytes)\n"
	                                    "exclusive:  64K (65536 bytes)\n"
	                                    "shared:     128K (131072 bytes)\n"
	                                    "state:      ready\n"));
	pid = serve_answers("control.sock", answers, 2);
	json = RUN("info", "layer1", "--json");
	json_request = served_request(pid);
	ck_assert_msg(json.status == 0, "%s", json.err);
	ck_assert_ptr_nonnull(strstr(json.out, "\"usage\": {\n"));
	ck_assert_ptr_nonnull(strstr(json.out, "\"exclusive\": 65536"));
}
END_TEST

/* A daemon that cannot tell a volume's usage (not_supported), or knows no /usage (one from
 * before it: 404), leaves info as it was, without a word; another failure is said, and the
 * volume shown all the same. */
START_TEST(shows_info_as_before_where_the_daemon_cannot_tell_the_usage)
{
	static const char not_supported[] =
	    "{\"error\": {\"code\": \"not_supported\", \"message\": \"volume usage: this pool "
	    "cannot tell what its volumes hold\"}}";
	static const char no_route[] =
	    "{\"error\": {\"code\": \"not_found\", \"message\": \"no such resource\"}}";
	static const char busy[] =
	    "{\"error\": {\"code\": \"busy\", \"message\": \"volume usage: the pool's metadata "
	    "snapshot is held by another tool; try again once it is released\"}}";
	static const struct {
		int status;
		const char *body, *err;
	} cases[] = {
	    {501, not_supported, ""},
	    {404, no_route, ""},
	    {409, busy,
	     "thinproxy: info layer1: busy: volume usage: the pool's metadata snapshot is held "
	     "by another tool; try again once it is released; shown without its exact usage\n"},
	};

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		const struct canned answers[] = {
		    {200, "application/json", volume},
		    {cases[i].status, "application/json", cases[i].body}};
		pid_t pid = serve_answers("control.sock", answers, 2);
		CLEANUP_RESULT struct result r = RUN("info", "layer1");
		CLEANUP_FREE char *request = served_request(pid);

		ck_assert_msg(r.status == 0, "%s", r.err);
		ck_assert_str_eq(r.err, cases[i].err);
		ck_assert(strncmp(r.out, "name:      layer1\n", 17) == 0);
		ck_assert_ptr_null(strstr(r.out, "mapped:"));
	}
}
END_TEST

static const char diff_answer[] =
    "{\"size\": 2147483648, \"from\": \"images/base\", \"changes\": ["
    "{\"offset\": 0, \"length\": 65536, \"kind\": \"data\"},"
    " {\"offset\": 1073741824, \"length\": 131072, \"kind\": \"zero\"},"
    " {\"offset\": 2147418112, \"length\": 65536, \"kind\": \"data\"}]}";

/* diff NAME --from REF asks with the reference escaped, and shows the ranges in bytes and
 * a total; --json the daemon's answer. */
START_TEST(diffs_a_volume_as_a_table_of_ranges_and_a_total)
{
	pid_t pid = serve_once("control.sock", 200, "application/json", diff_answer);
	CLEANUP_RESULT struct result r = RUN("diff", "work", "--from", "images/base");
	CLEANUP_FREE char *request = served_request(pid);
	CLEANUP_FREE char *json_request = NULL, *admin_request = NULL;
	CLEANUP_RESULT struct result json = {0}, admin = {0};

	ck_assert_msg(r.status == 0, "%s", r.err);
	assert_request(request, "GET /v1/volumes/work/diff?from=images%2Fbase HTTP/1.1\r\n", "");
	ck_assert_str_eq(r.out, "    OFFSET  LENGTH  KIND\n"
	                        "         0   65536  data\n"
	                        "1073741824  131072  zero\n"
	                        "2147418112   65536  data\n"
	                        "total: 3 ranges, 256K (262144 bytes): 128K data, 128K zeroes\n");
	pid = serve_once("control.sock", 200, "application/json", diff_answer);
	json = RUN("--json", "diff", "work", "--from", "images/base");
	json_request = served_request(pid);
	ck_assert_msg(json.status == 0, "%s", json.err);
	ck_assert_ptr_nonnull(
	    strstr(json.out, "{\n  \"size\": 2147483648,\n  \"from\": \"images/base\",\n"));
	pid = serve_once("admin.sock", 200, "application/json",
	                 "{\"size\": 65536, \"from\": \"base\", \"changes\": []}");
	admin = RUN("--admin", "--tenant", "alice", "diff", "work", "--from", "base");
	admin_request = served_request(pid);
	ck_assert_msg(admin.status == 0, "%s", admin.err);
	assert_request(admin_request,
	               "GET /v1/tenants/alice/volumes/work/diff?from=base HTTP/1.1\r\n", "");
	ck_assert_str_eq(admin.out, "total: 0 ranges: no difference\n");
}
END_TEST

/* What the daemon refuses is said in its words: a pool that cannot tell, a reference the
 * tenant cannot see; an answer without changes is malformed. */
START_TEST(reports_a_diff_the_daemon_cannot_give)
{
	static const struct {
		int status;
		const char *body, *error;
	} cases[] = {
	    {501,
	     "{\"error\": {\"code\": \"not_supported\", \"message\": \"diff volumes: this pool "
	     "cannot tell what its volumes hold\"}}",
	     "thinproxy: diff work: not supported: diff volumes: this pool cannot tell what its "
	     "volumes hold\n"},
	    {404, "{\"error\": {\"code\": \"not_found\", \"message\": \"no such volume: bob/x\"}}",
	     "thinproxy: diff work: not found: no such volume: bob/x\n"},
	    {200, "{\"size\": 65536}",
	     "thinproxy: diff work: the daemon's answer has no \"changes\" list\n"},
	};

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		pid_t pid =
		    serve_once("control.sock", cases[i].status, "application/json", cases[i].body);
		CLEANUP_RESULT struct result r = RUN("diff", "work", "--from", "bob/x");

		free(served_request(pid));
		ck_assert_int_eq(r.status, 1);
		ck_assert_str_eq(r.err, cases[i].error);
		ck_assert_str_eq(r.out, "");
	}
}
END_TEST

START_TEST(shows_a_reference_from_the_volume_list)
{
	static const char list[] = "{\"volumes\": [{\"name\": \"layer1\"},"
	                           " {\"name\": \"images/base\", \"size\": 10737418240,"
	                           "  \"state\": \"image\", \"writable\": false}]}";
	pid_t pid = serve_once("control.sock", 200, "application/json", list);
	CLEANUP_RESULT struct result r = RUN("info", "images/base");
	CLEANUP_FREE char *request = served_request(pid);
	CLEANUP_FREE char *request_missing = NULL;
	CLEANUP_RESULT struct result missing = {0};

	ck_assert_int_eq(r.status, 0);
	assert_request(request, "GET /v1/volumes HTTP/1.1\r\n", "");
	ck_assert(strncmp(r.out, "name:      images/base\n", 23) == 0);
	ck_assert_ptr_nonnull(strstr(r.out, "\nsize:      10G (10737418240 bytes)\n"));

	pid = serve_once("control.sock", 200, "application/json", list);
	missing = RUN("info", "bob/layer1");
	request_missing = served_request(pid);
	assert_fails(&missing, 1, "info bob/layer1: not found");
}
END_TEST

START_TEST(commits_with_an_empty_post_and_no_content_type)
{
	pid_t pid = serve_once("control.sock", 200, "application/json", volume);
	CLEANUP_RESULT struct result r = RUN("commit", "layer1");
	CLEANUP_FREE char *request = served_request(pid);

	ck_assert_int_eq(r.status, 0);
	assert_request(request, "POST /v1/volumes/layer1/commit HTTP/1.1\r\n", "\r\n\r\n");
	ck_assert_ptr_null(strcasestr(request, "Content-Type"));
	ck_assert_ptr_nonnull(strcasestr(request, "\r\nContent-Length: 0\r\n"));
}
END_TEST

START_TEST(resizes_with_the_new_size_in_bytes)
{
	pid_t pid = serve_once("control.sock", 200, "application/json", volume);
	CLEANUP_RESULT struct result r = RUN("resize", "layer1", "--size=2G");
	CLEANUP_FREE char *request = served_request(pid);

	ck_assert_int_eq(r.status, 0);
	assert_request(request, "POST /v1/volumes/layer1/resize HTTP/1.1\r\n",
	               "{\"size\":2147483648}");
}
END_TEST

START_TEST(removes_with_delete_and_prints_nothing)
{
	pid_t pid = serve_once("control.sock", 204, NULL, NULL);
	CLEANUP_RESULT struct result r = RUN("rm", "layer1");
	CLEANUP_FREE char *request = served_request(pid);

	ck_assert_int_eq(r.status, 0);
	ck_assert_str_eq(r.out, "");
	ck_assert_str_eq(r.err, "");
	assert_request(request, "DELETE /v1/volumes/layer1 HTTP/1.1\r\n", "");
}
END_TEST

START_TEST(lists_volumes_as_a_table_or_as_the_daemons_json)
{
	static const char list[] = "{\"volumes\": [{\"name\": \"a\", \"size\": 65536, \"used\": 0, "
	                           "\"state\": \"committed\", \"parent\": \"images/base\"}]}";
	pid_t pid = serve_once("control.sock", 200, "application/json", list);
	CLEANUP_RESULT struct result table = RUN("ls");
	CLEANUP_FREE char *request = served_request(pid);
	CLEANUP_RESULT struct result json = {0};

	ck_assert_int_eq(table.status, 0);
	ck_assert_str_eq(table.out, "NAME  SIZE  USED  STATE      PARENT\n"
	                            "a      64K     0  committed  images/base\n");
	assert_request(request, "GET /v1/volumes HTTP/1.1\r\n", "");

	pid = serve_once("control.sock", 200, "application/json", list);
	json = RUN("ls", "--json");
	free(served_request(pid));
	ck_assert_int_eq(json.status, 0);
	ck_assert(strncmp(json.out, "{\n  \"volumes\": [\n", 17) == 0);
	ck_assert_ptr_nonnull(strstr(json.out, "\"parent\": \"images/base\""));
}
END_TEST

/* ls parses the list element by element; any spacing, and a list among other members,
 * read the same, and -q prints the names alone. */
START_TEST(lists_volumes_one_by_one_whatever_the_spacing)
{
	static const char spaced[] = " {\n \"volumes\" :\t[ {\"name\": \"a\", \"size\": 65536},\n"
	                             "{\"name\":\"b\",\"size\":131072} ,{\"name\":\"c\"} ]\r\n}\n";
	static const char among[] =
	    "{\"count\": 3, \"volumes\": [{\"name\": \"a\", \"size\": 65536},"
	    " {\"name\": \"b\", \"size\": 131072}, {\"name\": \"c\"}]}";
	static const char table[] = "NAME  SIZE  USED  STATE  PARENT\n"
	                            "a      64K     -  -      -\n"
	                            "b     128K     -  -      -\n"
	                            "c        -     -  -      -\n";
	const char *bodies[] = {spaced, among};

	for (size_t i = 0; i < ARRAY_SIZE(bodies); i++) {
		pid_t pid = serve_once("control.sock", 200, "application/json", bodies[i]);
		CLEANUP_RESULT struct result r = RUN("ls");
		CLEANUP_RESULT struct result q = {0};

		free(served_request(pid));
		ck_assert_msg(r.status == 0, "body %zu: exit %d: %s", i, r.status, r.err);
		ck_assert_str_eq(r.out, table);
		pid = serve_once("control.sock", 200, "application/json", bodies[i]);
		q = RUN("ls", "-q");
		free(served_request(pid));
		ck_assert_int_eq(q.status, 0);
		ck_assert_str_eq(q.out, "a\nb\nc\n");
	}
}
END_TEST

/* An answer that breaks after some elements were read prints nothing of them; one
 * without the list says so. (A list among other members is read when it comes last: see
 * above. When it comes first, its elements are gone by the time the rest shows.) */
START_TEST(prints_nothing_of_a_list_that_breaks_midway)
{
	static const struct {
		const char *body, *error;
	} cases[] = {
	    {"{\"volumes\": [{\"name\": \"a\"}, {\"name\": \"b\"}, }", "malformed JSON"},
	    {"{\"volumes\": [{\"name\": \"a\"} {\"name\": \"b\"}]}", "malformed JSON"},
	    {"{\"volumes\": [{\"name\": \"a\"}]} []", "malformed JSON"},
	    {"{\"volumes\": [{\"name\": \"a\"}], \"more\": 1}", "more than its \"volumes\" list"},
	    {"{\"volumes\": {\"name\": \"a\"}}", "no \"volumes\" list"},
	    {"{\"volume\": []}", "no \"volumes\" list"},
	    {"[]", "no \"volumes\" list"},
	    {"", "malformed JSON"},
	};

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		pid_t pid = serve_once("control.sock", 200, "application/json", cases[i].body);
		CLEANUP_RESULT struct result r = RUN("ls");

		free(served_request(pid));
		assert_fails(&r, 1, cases[i].error);
	}
}
END_TEST

START_TEST(reports_an_error_status_without_an_error_object)
{
	pid_t pid = serve_once("control.sock", 502, "text/plain", "bad gateway");
	CLEANUP_RESULT struct result r = RUN("info", "layer1");
	CLEANUP_FREE char *request = served_request(pid);

	ck_assert_int_eq(r.status, 1);
	ck_assert_str_eq(r.err, "thinproxy: info layer1: the daemon answered HTTP 502\n");
}
END_TEST

START_TEST(refuses_malformed_json_in_a_success_answer)
{
	pid_t pid =
	    serve_once("control.sock", 200, "application/json", "{\"volumes\": [} trailing");
	CLEANUP_RESULT struct result r = RUN("ls");
	CLEANUP_FREE char *request = served_request(pid);

	ck_assert_int_eq(r.status, 1);
	ck_assert_str_eq(r.err, "thinproxy: ls: malformed JSON in the daemon's answer\n");
	ck_assert_str_eq(r.out, "");
}
END_TEST

START_TEST(adds_a_tenant_with_its_owner_and_quotas)
{
	static const char tenant[] = "{\"name\": \"alice\", \"uid\": 1000}";
	pid_t pid = serve_once("admin.sock", 201, "application/json", tenant);
	CLEANUP_RESULT struct result r =
	    RUN("--admin", "tenant", "add", "alice", "--uid", "1000", "--gid", "1001",
	        "--max-volumes", "10", "--max-size", "1T", "--max-used", "unlimited");
	CLEANUP_FREE char *request = served_request(pid);

	ck_assert_int_eq(r.status, 0);
	assert_request(request, "POST /v1/tenants HTTP/1.1\r\n",
	               "{\"name\":\"alice\",\"uid\":1000,\"gid\":1001,\"max_volumes\":10,"
	               "\"max_size\":1099511627776,\"max_used\":null}");
}
END_TEST

START_TEST(sets_a_cleared_quota_to_null_with_patch)
{
	pid_t pid = serve_once("admin.sock", 200, "application/json", "{\"name\": \"alice\"}");
	CLEANUP_RESULT struct result r =
	    RUN("--admin", "tenant", "set", "alice", "--max-volumes", "5", "--max-used", "none");
	CLEANUP_FREE char *request = served_request(pid);

	ck_assert_int_eq(r.status, 0);
	assert_request(request, "PATCH /v1/tenants/alice HTTP/1.1\r\n",
	               "{\"max_volumes\":5,\"max_used\":null}");
}
END_TEST

START_TEST(removes_a_tenant_by_force_with_a_query)
{
	pid_t pid = serve_once("admin.sock", 204, NULL, NULL);
	CLEANUP_RESULT struct result r = RUN("--admin", "tenant", "rm", "--force", "alice");
	CLEANUP_FREE char *request = served_request(pid);

	ck_assert_int_eq(r.status, 0);
	assert_request(request, "DELETE /v1/tenants/alice?force=1 HTTP/1.1\r\n", "");
}
END_TEST

START_TEST(imports_an_image_from_an_absolute_path)
{
	pid_t pid;
	char file[PATH_MAX], real[PATH_MAX], body[PATH_MAX + 64];
	CLEANUP_RESULT struct result r = {0};
	CLEANUP_FREE char *request = NULL;
	int fd;

	snprintf(file, sizeof file, "%s/img.raw", dir);
	fd = open(file, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	ck_assert_int_ge(fd, 0);
	close(fd);
	ck_assert_ptr_nonnull(realpath(file, real));
	pid = serve_once("admin.sock", 201, "application/json", "{\"name\": \"base\"}");
	/* thinproxy runs in DIR: the relative path is made absolute for the daemon. */
	r = RUN("--admin", "image", "import", "base", "--from", "img.raw");
	request = served_request(pid);
	ck_assert_int_eq(r.status, 0);
	snprintf(body, sizeof body, "{\"name\":\"base\",\"from\":\"%s\"}", real);
	assert_request(request, "POST /v1/images HTTP/1.1\r\n", body);
}
END_TEST

START_TEST(refuses_to_import_a_missing_file_before_asking)
{
	CLEANUP_RESULT struct result r =
	    RUN("--admin", "image", "import", "base", "--from", "nope");

	assert_fails(&r, 1, "image import base: nope: No such file or directory");
}
END_TEST

START_TEST(publishes_an_image_to_one_tenant_or_all)
{
	pid_t pid = serve_once("admin.sock", 200, "application/json", "{\"name\": \"base\"}");
	CLEANUP_RESULT struct result one =
	    RUN("--admin", "image", "publish", "base", "--tenant", "bob");
	CLEANUP_FREE char *request = served_request(pid);
	CLEANUP_FREE char *request_all = NULL;
	CLEANUP_RESULT struct result all = {0};

	ck_assert_int_eq(one.status, 0);
	assert_request(request, "POST /v1/images/base/publish HTTP/1.1\r\n",
	               "{\"tenant\":\"bob\"}");
	pid = serve_once("admin.sock", 200, "application/json", "{\"name\": \"base\"}");
	all = RUN("--admin", "image", "publish", "base", "--all");
	request_all = served_request(pid);
	ck_assert_int_eq(all.status, 0);
	assert_request(request_all, "POST /v1/images/base/publish HTTP/1.1\r\n", "{\"all\":true}");
}
END_TEST

START_TEST(grants_and_revokes_with_the_grant_in_the_body)
{
	pid_t pid = serve_once("admin.sock", 201, "application/json",
	                       "{\"owner\": \"alice\", \"volume\": \"db\", \"to\": \"bob\", "
	                       "\"write\": true}");
	CLEANUP_RESULT struct result grant =
	    RUN("--admin", "grant", "db", "--owner", "alice", "--to", "bob", "--write");
	CLEANUP_FREE char *request = served_request(pid);
	CLEANUP_FREE char *revoke_request = NULL;
	CLEANUP_RESULT struct result revoke = {0};

	ck_assert_int_eq(grant.status, 0);
	ck_assert_str_eq(grant.out, "OWNER  VOLUME  TO   ACCESS\n"
	                            "alice  db      bob  rw\n");
	assert_request(request, "POST /v1/grants HTTP/1.1\r\n",
	               "{\"owner\":\"alice\",\"volume\":\"db\",\"to\":\"bob\",\"write\":true}");
	pid = serve_once("admin.sock", 204, NULL, NULL);
	revoke = RUN("--admin", "revoke", "db", "--owner", "alice", "--to", "bob");
	revoke_request = served_request(pid);
	ck_assert_int_eq(revoke.status, 0);
	assert_request(revoke_request, "DELETE /v1/grants HTTP/1.1\r\n",
	               "{\"owner\":\"alice\",\"volume\":\"db\",\"to\":\"bob\"}");
}
END_TEST

START_TEST(prints_metrics_as_the_daemon_serves_them)
{
	static const char metrics[] = "# TYPE thinproxy_volumes gauge\nthinproxy_volumes 3\n";
	pid_t pid = serve_once("admin.sock", 200, "text/plain; version=0.0.4", metrics);
	CLEANUP_RESULT struct result r = RUN("--admin", "metrics");
	CLEANUP_FREE char *request = served_request(pid);

	ck_assert_int_eq(r.status, 0);
	ck_assert_str_eq(r.out, metrics);
	assert_request(request, "GET /metrics HTTP/1.1\r\n", "");
}
END_TEST

int main(void)
{
	Suite *s = suite_create("client-cli");
	TCase *usage = tcase_create("usage");
	TCase *requests = tcase_create("requests");
	SRunner *sr;
	int failed;

	tcase_add_checked_fixture(usage, setup, teardown);
	tcase_add_checked_fixture(requests, setup, teardown);
	tcase_set_timeout(usage, 60);
	tcase_set_timeout(requests, 30);

	tcase_add_test(usage, prints_the_program_help_with_every_command);
	tcase_add_test(usage, prints_the_version);
	tcase_add_test(usage, every_command_prints_its_help_and_exits_0);
	tcase_add_test(usage, every_command_rejects_an_unknown_option_with_status_2);
	tcase_add_test(usage, every_command_with_an_operand_exits_2_without_it);
	tcase_add_test(usage, every_option_with_a_value_exits_2_without_one);
	tcase_add_test(usage, every_command_rejects_an_extra_operand_with_status_2);
	tcase_add_test(usage, every_value_option_is_in_the_help_and_exits_2_without_a_value);
	tcase_add_test(usage, label_takes_at_most_64_changes);
	tcase_add_test(usage, rejects_missing_required_options_with_status_2);
	tcase_add_test(usage, rejects_unknown_and_missing_commands_with_status_2);
	tcase_add_test(usage, rejects_options_in_the_wrong_place_with_status_2);
	tcase_add_test(usage, rejects_bad_values_with_status_1_before_connecting);
	tcase_add_test(usage, reports_a_missing_socket_with_its_path_and_status_1);
	tcase_add_test(usage, attach_reports_a_missing_nbd_socket_with_its_path);
	tcase_add_test(usage, detach_reports_a_device_that_does_not_exist);
	tcase_add_test(usage, lists_attached_devices_without_a_daemon);

	tcase_add_test(requests, shows_the_daemons_error_code_and_message_with_status_1);
	tcase_add_test(requests, creates_with_a_json_post_and_shows_the_new_volume);
	tcase_add_test(requests, snapshots_with_the_parent_reference_and_an_optional_size);
	tcase_add_test(requests, creates_and_snapshots_with_labels);
	tcase_add_test(requests, commits_as_a_new_name_with_a_json_body);
	tcase_add_test(requests, labels_with_one_merge_patch_and_shows_the_volume);
	tcase_add_test(requests, lists_by_label_with_an_escaped_query);
	tcase_add_test(requests, acts_on_a_tenants_volumes_under_its_path_on_the_admin_socket);
	tcase_add_test(requests, shows_a_reference_from_the_volume_list);
	tcase_add_test(requests, shows_a_volumes_exact_usage_in_info);
	tcase_add_test(requests, shows_info_as_before_where_the_daemon_cannot_tell_the_usage);
	tcase_add_test(requests, diffs_a_volume_as_a_table_of_ranges_and_a_total);
	tcase_add_test(requests, reports_a_diff_the_daemon_cannot_give);
	tcase_add_test(requests, commits_with_an_empty_post_and_no_content_type);
	tcase_add_test(requests, resizes_with_the_new_size_in_bytes);
	tcase_add_test(requests, removes_with_delete_and_prints_nothing);
	tcase_add_test(requests, lists_volumes_as_a_table_or_as_the_daemons_json);
	tcase_add_test(requests, reports_an_error_status_without_an_error_object);
	tcase_add_test(requests, refuses_malformed_json_in_a_success_answer);
	tcase_add_test(requests, lists_volumes_one_by_one_whatever_the_spacing);
	tcase_add_test(requests, prints_nothing_of_a_list_that_breaks_midway);
	tcase_add_test(requests, adds_a_tenant_with_its_owner_and_quotas);
	tcase_add_test(requests, sets_a_cleared_quota_to_null_with_patch);
	tcase_add_test(requests, removes_a_tenant_by_force_with_a_query);
	tcase_add_test(requests, imports_an_image_from_an_absolute_path);
	tcase_add_test(requests, refuses_to_import_a_missing_file_before_asking);
	tcase_add_test(requests, publishes_an_image_to_one_tenant_or_all);
	tcase_add_test(requests, grants_and_revokes_with_the_grant_in_the_body);
	tcase_add_test(requests, prints_metrics_as_the_daemon_serves_them);
	tcase_add_test(requests, attach_reports_a_volume_the_server_does_not_know);
	tcase_add_test(requests, attach_refuses_a_server_that_is_not_fixed_newstyle);

	suite_add_tcase(s, usage);
	suite_add_tcase(s, requests);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
