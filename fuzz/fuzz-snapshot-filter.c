/* Fuzz target: client/snapshotter/filter.c, containerd's filter language as List takes it
 * from containerd. The input is the request's filters, one a line; each is parsed and, if
 * it parses, matched against a few snapshots. Checked: a parse either succeeds or gives
 * one NUL-terminated reason within its buffer that begins with "invalid filter", and a
 * match never reads past what a field gives. */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../client/snapshotter/filter.h"

#define CHECK(cond)                       \
	do {                              \
		if (!(cond))              \
			__builtin_trap(); \
	} while (0)

#define MAX_FILTERS 16

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct snapshot {
	const char *name, *parent, *kind, *label_key, *label_value;
};

static bool field(const char *const *path, size_t n, const char **ret_value, void *opaque)
{
	const struct snapshot *s = opaque;

	CHECK(n > 0);
	for (size_t i = 0; i < n; i++)
		CHECK(path[i] != NULL);
	if (strcmp(path[0], "name") == 0)
		return *ret_value = s->name, true;
	if (strcmp(path[0], "parent") == 0)
		return *ret_value = s->parent, true;
	if (strcmp(path[0], "kind") == 0)
		return *ret_value = s->kind, true;
	if (strcmp(path[0], "labels") == 0 && n == 2 && strcmp(path[1], s->label_key) == 0)
		return *ret_value = s->label_value, true;
	return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const struct snapshot snapshots[] = {
	    {"default/1/a", "", "active", "containerd.io/gc.root", "x"},
	    {"p", "q", "committed", "l", "1"},
	    {"", "", "view", "", ""},
	};
	char *text = malloc(size + 1), *filters[MAX_FILTERS], *line, *save = NULL;
	char reason[256];
	struct filter *f = NULL;
	size_t n = 0;
	int r;

	if (text == NULL)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';
	/* strtok_r skips empty lines; an empty filter is its own case, seeded as "\n\n". */
	for (line = strtok_r(text, "\n", &save); line != NULL && n < MAX_FILTERS;
	     line = strtok_r(NULL, "\n", &save))
		filters[n++] = line;
	memset(reason, 'x', sizeof reason);
	r = filter_parse((const char *const *)filters, n, &f, reason, sizeof reason);
	if (r == 0) {
		for (size_t i = 0; i < sizeof snapshots / sizeof snapshots[0]; i++)
			filter_match(f, field, (void *)&snapshots[i]);
		filter_free(f);
	} else {
		CHECK(r == -EINVAL || r == -ENOMEM);
		if (r == -EINVAL) {
			CHECK(memchr(reason, '\0', sizeof reason) != NULL);
			CHECK(strncmp(reason, "invalid filter", 14) == 0);
		}
	}
	free(text);
	return 0;
}
