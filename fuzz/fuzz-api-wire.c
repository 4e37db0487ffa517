/* Fuzz target: daemon/api-wire.c, the wire between the root parent and the API process,
 * from both ends. The input is one message as received:
 *   - api_wire_decode_request reads it as the parent does (what a compromised API process
 *     may send). Whatever decodes must be canonical: encoded again, it gives back exactly
 *     the input's bytes.
 *   - api_wire_decode_reply reads it as the API process does, as the reply to each
 *     operation in turn (its id and cursor taken from the header), and every record a
 *     reply holds is then read out the way the ops client will (a diff's page as asked
 *     from its start).
 *   - api_wire_decode_listen reads it as the API process reads the parent's word about
 *     its sockets; whatever decodes is canonical too. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../daemon/api-wire.h"

#define CHECK(cond)                       \
	do {                              \
		if (!(cond))              \
			__builtin_trap(); \
	} while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_request(const uint8_t *data, size_t size)
{
	static struct api_wire_request req;
	void *again;
	size_t len;
	int r = api_wire_decode_request(data, size, &req);

	CHECK(r == 0 || r == -EBADMSG);
	if (r < 0)
		return;
	CHECK(api_wire_encode_request(&req, &again, &len) == 0);
	CHECK(len == size && memcmp(again, data, size) == 0);
	free(again);
}

static int count_volume(const struct volume_view *v, void *opaque)
{
	CHECK(v->n_labels <= TP_LABELS_MAX && v->state != NULL);
	for (size_t i = 0; i < v->n_labels; i++)
		CHECK(v->labels[i].value != NULL);
	++*(size_t *)opaque;
	return 0;
}

static int count_child(const char *tenant, uint64_t n, void *opaque)
{
	(void)n;
	CHECK(tp_name_valid(tenant));
	++*(size_t *)opaque;
	return 0;
}

static void read_records(const struct api_wire_reply *rep, enum tp_api_op op)
{
	static struct tenant_view tenants[TP_API_PAGE_MAX];
	static struct image_view images[TP_API_PAGE_MAX];
	static struct grant_view grants[TP_API_PAGE_MAX];
	static struct volume_change changes[TP_API_CHANGES_MAX];
	struct volume_usage vu;
	uint64_t size;
	struct volume_view v;
	struct pool_view p;
	struct principal pr;
	size_t n = 0;

	if (rep->w.error != 0 || rep->w.count == 0)
		return;
	switch (op) {
	case TP_API_VOLUME_LIST:
		CHECK(api_wire_get_volumes(rep, count_volume, &n) == 0 && n == rep->w.count);
		break;
	case TP_API_VOLUME_CHILDREN:
		CHECK(api_wire_get_children(rep, count_child, &n) == 0 && n == rep->w.count);
		break;
	case TP_API_VOLUME_INFO:
	case TP_API_VOLUME_CREATE:
	case TP_API_VOLUME_SNAPSHOT:
	case TP_API_VOLUME_COMMIT:
	case TP_API_VOLUME_SET_LABELS:
	case TP_API_VOLUME_RESIZE:
		if (api_wire_get_volume(rep, &v) == 0)
			free(v.labels);
		break;
	case TP_API_USAGE:
	case TP_API_TENANT_ADD:
	case TP_API_TENANT_GET:
	case TP_API_TENANT_LIST:
	case TP_API_TENANT_UPDATE:
		api_wire_get_tenants(rep, tenants);
		CHECK(tp_name_valid(tenants[rep->w.count - 1].name));
		break;
	case TP_API_POOL_STATUS:
		api_wire_get_pool(rep, &p);
		CHECK(p.mode != NULL && p.meta_state != NULL);
		break;
	case TP_API_IMAGE_IMPORT:
	case TP_API_IMAGE_PUBLISH:
	case TP_API_IMAGE_LIST:
		if (api_wire_get_images(rep, images) == 0)
			for (size_t i = 0; i < rep->w.count; i++)
				free(images[i].published);
		break;
	case TP_API_GRANT_LIST:
		api_wire_get_grants(rep, grants);
		CHECK(tp_name_valid(grants[rep->w.count - 1].to));
		break;
	case TP_API_METRICS:
		CHECK(api_wire_get_text(rep) != NULL);
		break;
	case TP_API_PRINCIPAL_FOR_TENANT:
		api_wire_get_principal(rep, &pr);
		CHECK(!pr.admin && pr.tenant_id > 0 && tp_name_valid(pr.tenant));
		break;
	case TP_API_VOLUME_DIFF:
		api_wire_get_changes(rep, &size, changes);
		CHECK(changes[rep->w.count - 1].length > 0 &&
		      changes[rep->w.count - 1].offset + changes[rep->w.count - 1].length <= size);
		break;
	case TP_API_VOLUME_USAGE:
		api_wire_get_volume_usage(rep, &vu);
		CHECK(vu.exclusive + vu.shared == vu.mapped);
		break;
	case TP_API_VOLUME_REMOVE:
	case TP_API_TENANT_REMOVE:
	case TP_API_IMAGE_REMOVE:
	case TP_API_GRANT:
	case TP_API_REVOKE:
		CHECK(0); /* these answer with no record */
		break;
	}
}

static void check_reply(const uint8_t *data, size_t size)
{
	struct tp_api_reply w;
	struct api_wire_reply rep;

	if (size < sizeof w)
		return;
	memcpy(&w, data, sizeof w);
	for (unsigned op = 1; op <= TP_API_OP_MAX; op++) {
		/* A diff's cursor counts bytes: its page may have been asked from 0. */
		uint64_t asked = op == TP_API_VOLUME_DIFF ? 0
		                 : w.cursor >= w.count    ? w.cursor - w.count
		                                          : 0;
		int r = api_wire_decode_reply(data, size, op, w.h.id, asked, &rep);

		CHECK(r == 0 || r == -EBADMSG);
		if (r == 0) {
			CHECK(rep.w.h.op == (op | TP_API_REPLY) && rep.w.h.length == size);
			read_records(&rep, op);
		}
	}
}

/* The parent's word on the control socketpair, as the API process reads it: whatever
 * decodes encodes back to the same bytes. */
static void check_listen(const uint8_t *data, size_t size)
{
	struct tp_api_listen again;
	struct principal p;
	uint32_t index;
	uint16_t op;
	int r = api_wire_decode_listen(data, size, &op, &index, &p);

	CHECK(r == 0 || r == -EBADMSG);
	if (r < 0)
		return;
	CHECK(api_wire_encode_listen(op, index, op == TP_API_LISTEN ? &p : NULL, &again) == 0);
	CHECK(size == sizeof again && memcmp(&again, data, size) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint32_t length;

	if (size > TP_API_MESSAGE_MAX)
		return 0;
	if (api_wire_message_length(data, size, TP_API_MESSAGE_MAX, &length) == 0)
		CHECK(length >= sizeof(struct tp_api_header) && length <= TP_API_MESSAGE_MAX);
	check_request(data, size);
	check_reply(data, size);
	check_listen(data, size);
	return 0;
}
