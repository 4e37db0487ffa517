/* What the real operations (daemon/ops.c and its duties) and the API process's stand-in
 * for them (daemon/ops-client.c) share of daemon/ops.h: freeing the views they hand out,
 * and the rules a list of labels keeps. Linked into thinproxyd and thinproxyd-api alike. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"

void ops_volume_view_clear(struct volume_view *view)
{
	if (view == NULL)
		return;
	free(view->labels);
	view->labels = NULL;
	view->n_labels = 0;
}

void ops_image_views_free(struct image_view *views, size_t n)
{
	for (size_t i = 0; views != NULL && i < n; i++)
		free(views[i].published);
	free(views);
}

int ops_labels_check(const struct label_list *l, bool patch, char *why, size_t why_size)
{
	const char *rule;

	if (l == NULL)
		return 0;
	if (l->n > TP_LABELS_MAX) {
		snprintf(why, why_size, "too many labels: %zu, at most %d", l->n, TP_LABELS_MAX);
		return -EINVAL;
	}
	for (size_t i = 0; i < l->n; i++) {
		const char *value = l->l[i].value;

		if (value == NULL && !patch) {
			snprintf(why, why_size, "label %zu has no value", i + 1);
			return -EINVAL;
		}
		rule = tp_label_invalid(l->l[i].key, strlen(l->l[i].key), value,
		                        value ? strlen(value) : 0);
		if (rule != NULL) {
			snprintf(why, why_size, "label %zu: %s", i + 1, rule);
			return -EINVAL;
		}
	}
	return 0;
}
