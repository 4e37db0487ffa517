/* The pool commands of the admin socket: pool status and metrics. */
#include <stdio.h>

#include "tp-cleanup.h"
#include "client.h"
#include "output.h"

int cmd_pool(struct ctx *c, const struct args *a)
{
	CLEANUP_JSON struct json_object *answer = NULL;
	int r;

	(void)a;
	r = http_json(c->http, "pool", "GET", "/v1/pool", NULL, &answer);
	if (r < 0)
		return r;
	return c->json ? print_json(stdout, answer) : print_pool(stdout, answer);
}

/* Prometheus text as the daemon serves it: it is already for machines, so --json has
 * nothing to add. */
int cmd_metrics(struct ctx *c, const struct args *a)
{
	CLEANUP_FREE char *text = NULL;
	int r;

	(void)a;
	r = http_text(c->http, "metrics", "/metrics", &text);
	if (r < 0)
		return r;
	fputs(text, stdout);
	return 0;
}
