/* containerd's filter language, as List (Walk) takes it: each filter a comma-separated
 * list of selectors that must all hold, `FIELDPATH`, `FIELDPATH==VALUE`, `!=` or `~=`
 * (a regular expression), fields separated by dots and quoted with "..." where they are
 * not plain words (labels."containerd.io/gc.root"), values plain or quoted ("...", or
 * /.../ and |...| for a regular expression); a list of filters matches what any one of
 * them matches, and no filter (or an empty one) matches everything.
 *
 * Regular expressions are POSIX extended ones here (containerd's are Go's RE2): the
 * common subset reads the same. One that does not compile matches nothing, as in
 * containerd; one that glibc would compile into a huge automaton is refused. */
#ifndef TP_SNAPSHOTTER_FILTER_H
#define TP_SNAPSHOTTER_FILTER_H

#include <stdbool.h>
#include <stddef.h>

struct filter;

/* Parse the N filter strings FILTERS into *RET_FILTER. -EINVAL with REASON (LEN bytes)
 * saying where for one that does not parse, -ENOMEM. */
int filter_parse(const char *const *filters, size_t n, struct filter **ret_filter, char *reason,
                 size_t len);
/* Free F; NULL is fine. */
void filter_free(struct filter *f);

/* What an object says of a field path (N_PATH fields): its value in *RET_VALUE and true,
 * or false if the object has no such field. */
typedef bool filter_field_fn(const char *const *path, size_t n_path, const char **ret_value,
                             void *opaque);

/* Whether the object that FIELD describes matches F. */
bool filter_match(const struct filter *f, filter_field_fn *field, void *opaque);

#endif
