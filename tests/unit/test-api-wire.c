/* Unit tests for daemon/api-wire.c: the wire between the root parent and the API process
 * (include/tp-api-wire.h), as both ends encode and decode it. */
#include <check.h>
#include <stddef.h>
#include <stdlib.h>

#include "../../daemon/api-wire.h"
#include "tp-cleanup.h"

/* A request of OP with every field OP takes set to something valid. */
static void full_request(struct api_wire_request *req, enum tp_api_op op)
{
	static struct tp_label set[] = {{"app", "web"}, {"tier", "front"}};
	static struct tp_label patch[] = {{"app", "db"}, {"tier", NULL}};
	static struct tp_label filter[] = {{"app", "web"}, {"app", NULL}};
	struct label_list l = {NULL, 2};

	api_wire_request_init(req, op, 7, 3);
	switch (op) {
	case TP_API_VOLUME_LIST:
		req->w.cursor = 512;
		l.l = filter;
		ck_assert_int_eq(api_wire_request_labels(req, &l), 0);
		break;
	case TP_API_VOLUME_CHILDREN:
		req->w.cursor = 1;
		/* fall through */
	case TP_API_VOLUME_INFO:
	case TP_API_VOLUME_REMOVE:
		ck_assert_int_eq(API_WIRE_SET(req->w.name, "layer1"), 0);
		break;
	case TP_API_VOLUME_SNAPSHOT:
		ck_assert_int_eq(API_WIRE_SET(req->w.target, "images/base"), 0);
		/* fall through */
	case TP_API_VOLUME_CREATE:
	case TP_API_VOLUME_RESIZE:
		req->w.size = UINT64_C(1) << 30;
		ck_assert_int_eq(API_WIRE_SET(req->w.name, "layer1"), 0);
		l.l = set;
		if (op != TP_API_VOLUME_RESIZE)
			ck_assert_int_eq(api_wire_request_labels(req, &l), 0);
		break;
	case TP_API_VOLUME_COMMIT:
		ck_assert_int_eq(API_WIRE_SET(req->w.name, "layer1"), 0);
		ck_assert_int_eq(API_WIRE_SET(req->w.target, "layer1.done"), 0);
		req->w.flags |= TP_API_TARGET;
		l.l = set;
		ck_assert_int_eq(api_wire_request_labels(req, &l), 0);
		break;
	case TP_API_VOLUME_SET_LABELS:
		ck_assert_int_eq(API_WIRE_SET(req->w.name, "layer1"), 0);
		l.l = patch;
		ck_assert_int_eq(api_wire_request_labels(req, &l), 0);
		break;
	case TP_API_USAGE:
		ck_assert_int_eq(API_WIRE_SET(req->w.acting_for, "alice"), 0);
		break;
	case TP_API_TENANT_ADD:
	case TP_API_TENANT_UPDATE:
		ck_assert_int_eq(API_WIRE_SET(req->w.name, "alice"), 0);
		req->w.flags = TP_API_HAS_UID | TP_API_HAS_GID | TP_API_HAS_MAX_VOLUMES |
		               TP_API_HAS_MAX_SIZE | TP_API_HAS_MAX_USED;
		req->w.uid = 1000;
		req->w.gid = 1001;
		req->w.max_volumes = 10;
		req->w.max_size = UINT64_C(1) << 40;
		req->w.max_used = UINT64_C(1) << 39;
		break;
	case TP_API_TENANT_REMOVE:
		req->w.flags = TP_API_FORCE;
		/* fall through */
	case TP_API_TENANT_GET:
	case TP_API_IMAGE_REMOVE:
	case TP_API_PRINCIPAL_FOR_TENANT:
		ck_assert_int_eq(API_WIRE_SET(req->w.name, "alice"), 0);
		break;
	case TP_API_TENANT_LIST:
	case TP_API_IMAGE_LIST:
	case TP_API_GRANT_LIST:
		req->w.cursor = 256;
		break;
	case TP_API_IMAGE_IMPORT:
		ck_assert_int_eq(API_WIRE_SET(req->w.name, "base"), 0);
		ck_assert_int_eq(API_WIRE_SET(req->w.path, "/srv/images/base.raw"), 0);
		break;
	case TP_API_IMAGE_PUBLISH:
		ck_assert_int_eq(API_WIRE_SET(req->w.name, "base"), 0);
		ck_assert_int_eq(API_WIRE_SET(req->w.target, "alice"), 0);
		req->w.flags = TP_API_TARGET;
		break;
	case TP_API_GRANT:
	case TP_API_REVOKE:
		ck_assert_int_eq(API_WIRE_SET(req->w.owner, "alice"), 0);
		ck_assert_int_eq(API_WIRE_SET(req->w.name, "layer1"), 0);
		ck_assert_int_eq(API_WIRE_SET(req->w.target, "bob"), 0);
		req->w.flags = TP_API_WRITE;
		break;
	case TP_API_POOL_STATUS:
	case TP_API_METRICS:
		break;
	case TP_API_VOLUME_DIFF:
		req->w.cursor = UINT64_C(1) << 20;
		ck_assert_int_eq(API_WIRE_SET(req->w.target, "images/base"), 0);
		/* fall through */
	case TP_API_VOLUME_USAGE:
		ck_assert_int_eq(API_WIRE_SET(req->w.acting_for, "alice"), 0);
		ck_assert_int_eq(API_WIRE_SET(req->w.name, "layer1"), 0);
		break;
	}
}

/* REQ encoded; the test owns the buffer. */
static unsigned char *encode(const struct api_wire_request *req, size_t *ret_len)
{
	void *buf;

	ck_assert_int_eq(api_wire_encode_request(req, &buf, ret_len), 0);
	return buf;
}

static int decode(const void *buf, size_t len)
{
	struct api_wire_request out;

	return api_wire_decode_request(buf, len, &out);
}

/* A valid request of OP, as raw bytes the test may then damage. */
static unsigned char *valid_request(enum tp_api_op op, size_t *ret_len)
{
	struct api_wire_request req;

	full_request(&req, op);
	return encode(&req, ret_len);
}

START_TEST(round_trips_every_request)
{
	for (unsigned op = 1; op <= TP_API_OP_MAX; op++) {
		struct api_wire_request req, out;
		size_t len;
		CLEANUP_FREE unsigned char *buf = NULL;

		full_request(&req, op);
		buf = encode(&req, &len);
		ck_assert_int_eq(api_wire_decode_request(buf, len, &out), 0);
		req.w.h.length = (uint32_t)len;
		ck_assert_int_eq(memcmp(&req.w, &out.w, sizeof req.w), 0);
		ck_assert_uint_eq(out.labels.n, req.labels.n);
		ck_assert_int_eq(out.labels.l == NULL, req.labels.l == NULL);
		for (size_t i = 0; i < out.labels.n; i++) {
			ck_assert_str_eq(out.labels.l[i].key, req.labels.l[i].key);
			ck_assert_int_eq(out.labels.l[i].value == NULL,
			                 req.labels.l[i].value == NULL);
			if (out.labels.l[i].value)
				ck_assert_str_eq(out.labels.l[i].value, req.labels.l[i].value);
		}
	}
}
END_TEST

START_TEST(round_trips_given_empty_and_absent_labels)
{
	struct api_wire_request req, out;
	struct label_list none = {NULL, 0};
	CLEANUP_FREE unsigned char *a = NULL, *b = NULL;
	size_t len;

	/* A commit without labels keeps them; with an empty set it removes them all. */
	api_wire_request_init(&req, TP_API_VOLUME_COMMIT, 1, 0);
	ck_assert_int_eq(API_WIRE_SET(req.w.name, "v"), 0);
	a = encode(&req, &len);
	ck_assert_int_eq(api_wire_decode_request(a, len, &out), 0);
	ck_assert_ptr_null(out.labels.l);
	ck_assert_int_eq(api_wire_request_labels(&req, &none), 0);
	b = encode(&req, &len);
	ck_assert_int_eq(api_wire_decode_request(b, len, &out), 0);
	ck_assert_ptr_nonnull(out.labels.l);
	ck_assert_uint_eq(out.labels.n, 0);
}
END_TEST

START_TEST(round_trips_largest_request)
{
	static char keys[TP_LABELS_MAX][8], value[TP_LABEL_BYTES_MAX];
	struct tp_label labels[TP_LABELS_MAX];
	struct label_list l = {labels, TP_LABELS_MAX};
	struct api_wire_request req, out;
	CLEANUP_FREE unsigned char *buf = NULL;
	size_t len;

	for (int i = 0; i < TP_LABELS_MAX; i++) {
		snprintf(keys[i], sizeof keys[i], "k%04d", i);
		labels[i].key = keys[i];
		labels[i].value = value;
	}
	memset(value, 'v', TP_LABEL_BYTES_MAX - 5);
	full_request(&req, TP_API_VOLUME_CREATE);
	ck_assert_int_eq(api_wire_request_labels(&req, &l), 0);
	buf = encode(&req, &len);
	ck_assert_uint_eq(len, TP_API_REQUEST_MAX);
	ck_assert_int_eq(api_wire_decode_request(buf, len, &out), 0);
	ck_assert_uint_eq(out.labels.n, TP_LABELS_MAX);
	ck_assert_str_eq(out.labels.l[63].value, value);
}
END_TEST

START_TEST(rejects_request_of_wrong_length)
{
	size_t len;
	CLEANUP_FREE unsigned char *buf = valid_request(TP_API_VOLUME_CREATE, &len);
	CLEANUP_FREE unsigned char *longer = calloc(1, len + 1);
	struct tp_api_header h;

	ck_assert_int_eq(decode(buf, len), 0);
	ck_assert_int_eq(decode(buf, len - 1), -EBADMSG);
	ck_assert_int_eq(decode(buf, 10), -EBADMSG);
	ck_assert_int_eq(decode(buf, 0), -EBADMSG);
	/* One byte more, and the header saying so: the labels do not add up. */
	memcpy(longer, buf, len);
	memcpy(&h, longer, sizeof h);
	h.length++;
	memcpy(longer, &h, sizeof h);
	ck_assert_int_eq(decode(longer, len + 1), -EBADMSG);
	/* The right bytes, a header that says otherwise. */
	h.length = (uint32_t)len - 1;
	memcpy(buf, &h, sizeof h);
	ck_assert_int_eq(decode(buf, len), -EBADMSG);
}
END_TEST

/* Decode BUF (LEN) with the fixed request's field at OFFSET set to the N bytes of V. */
static int decode_with(const unsigned char *buf, size_t len, size_t offset, const void *v, size_t n)
{
	CLEANUP_FREE unsigned char *copy = malloc(len);

	memcpy(copy, buf, len);
	memcpy(copy + offset, v, n);
	return decode(copy, len);
}

#define REQ_FIELD(f) offsetof(struct tp_api_request, f)

START_TEST(rejects_wrong_magic_version_and_op)
{
	size_t len;
	CLEANUP_FREE unsigned char *buf = valid_request(TP_API_VOLUME_INFO, &len);
	uint32_t magic = 0x54504b42;
	uint16_t version = 2, op;

	ck_assert_int_eq(decode_with(buf, len, REQ_FIELD(h.magic), &magic, 4), -EBADMSG);
	ck_assert_int_eq(decode_with(buf, len, REQ_FIELD(h.version), &version, 2), -EBADMSG);
	op = 0;
	ck_assert_int_eq(decode_with(buf, len, REQ_FIELD(h.op), &op, 2), -EBADMSG);
	op = TP_API_OP_MAX + 1;
	ck_assert_int_eq(decode_with(buf, len, REQ_FIELD(h.op), &op, 2), -EBADMSG);
	op = TP_API_VOLUME_INFO | TP_API_REPLY;
	ck_assert_int_eq(decode_with(buf, len, REQ_FIELD(h.op), &op, 2), -EBADMSG);
}
END_TEST

START_TEST(rejects_unknown_flag_bits)
{
	size_t len;
	CLEANUP_FREE unsigned char *buf = valid_request(TP_API_GRANT, &len);
	uint32_t flags = TP_API_WRITE | 0x80000000u, force = TP_API_FORCE, reserved = 1;

	ck_assert_int_eq(decode_with(buf, len, REQ_FIELD(flags), &flags, 4), -EBADMSG);
	/* A flag of another operation is unknown to this one. */
	ck_assert_int_eq(decode_with(buf, len, REQ_FIELD(flags), &force, 4), -EBADMSG);
	ck_assert_int_eq(decode_with(buf, len, REQ_FIELD(reserved), &reserved, 4), -EBADMSG);
}
END_TEST

START_TEST(rejects_string_without_nul_or_with_bytes_after_it)
{
	size_t len;
	CLEANUP_FREE unsigned char *buf = valid_request(TP_API_IMAGE_IMPORT, &len);
	char name[TP_API_NAME_SIZE], path[TP_API_PATH_SIZE];

	memset(name, 'a', sizeof name);
	ck_assert_int_eq(decode_with(buf, len, REQ_FIELD(name), name, sizeof name), -EBADMSG);
	memset(name, 0, sizeof name);
	memcpy(name, "base\0x", 6);
	ck_assert_int_eq(decode_with(buf, len, REQ_FIELD(name), name, sizeof name), -EBADMSG);
	memset(path, '/', sizeof path);
	ck_assert_int_eq(decode_with(buf, len, REQ_FIELD(path), path, sizeof path), -EBADMSG);
	memset(path, 0, sizeof path);
	ck_assert_int_eq(decode_with(buf, len, REQ_FIELD(path), path, sizeof path), -EBADMSG);
}
END_TEST

START_TEST(rejects_invalid_names_and_references)
{
	size_t len;
	CLEANUP_FREE unsigned char *info = valid_request(TP_API_VOLUME_INFO, &len);
	CLEANUP_FREE unsigned char *snap = NULL;
	char name[TP_API_NAME_SIZE] = "Layer1", ref[TP_API_REF_SIZE] = "a/b/c";
	size_t snap_len;

	ck_assert_int_eq(decode_with(info, len, REQ_FIELD(name), name, sizeof name), -EBADMSG);
	memset(name, 0, sizeof name);
	ck_assert_int_eq(decode_with(info, len, REQ_FIELD(name), name, sizeof name), -EBADMSG);
	memcpy(name, "..", 3);
	ck_assert_int_eq(decode_with(info, len, REQ_FIELD(acting_for), name, sizeof name),
	                 -EBADMSG);
	snap = valid_request(TP_API_VOLUME_SNAPSHOT, &snap_len);
	ck_assert_int_eq(decode_with(snap, snap_len, REQ_FIELD(target), ref, sizeof ref), -EBADMSG);
	memset(ref, 0, sizeof ref);
	memcpy(ref, "alice/layer1", 13);
	ck_assert_int_eq(decode_with(snap, snap_len, REQ_FIELD(target), ref, sizeof ref), 0);
}
END_TEST

/* A diff compares with a reference, which it must have; usage takes none, nor a cursor. */
START_TEST(rejects_a_diff_without_a_reference_and_usage_with_one)
{
	size_t len;
	CLEANUP_FREE unsigned char *diff = valid_request(TP_API_VOLUME_DIFF, &len);
	CLEANUP_FREE unsigned char *usage = NULL;
	char ref[TP_API_REF_SIZE] = "";
	uint64_t one = 1;

	ck_assert_int_eq(decode_with(diff, len, REQ_FIELD(target), ref, sizeof ref), -EBADMSG);
	memcpy(ref, "a/b/c", 6);
	ck_assert_int_eq(decode_with(diff, len, REQ_FIELD(target), ref, sizeof ref), -EBADMSG);
	memcpy(ref, "bob/layer1", 11);
	ck_assert_int_eq(decode_with(diff, len, REQ_FIELD(target), ref, sizeof ref), 0);
	ck_assert_int_eq(decode_with(diff, len, REQ_FIELD(size), &one, 8), -EBADMSG);
	ck_assert(api_wire_op_is_listing(TP_API_VOLUME_DIFF));
	ck_assert(api_wire_op_has_principal(TP_API_VOLUME_DIFF));
	usage = valid_request(TP_API_VOLUME_USAGE, &len);
	ck_assert_int_eq(decode_with(usage, len, REQ_FIELD(target), ref, sizeof ref), -EBADMSG);
	ck_assert_int_eq(decode_with(usage, len, REQ_FIELD(cursor), &one, 8), -EBADMSG);
	ck_assert(!api_wire_op_is_listing(TP_API_VOLUME_USAGE));
	ck_assert(api_wire_op_has_principal(TP_API_VOLUME_USAGE));
}
END_TEST

START_TEST(rejects_acting_for_on_admin_operation)
{
	size_t len;
	CLEANUP_FREE unsigned char *buf = valid_request(TP_API_TENANT_GET, &len);
	char name[TP_API_NAME_SIZE] = "alice";

	ck_assert_int_eq(decode_with(buf, len, REQ_FIELD(acting_for), name, sizeof name), -EBADMSG);
	ck_assert(api_wire_op_has_principal(TP_API_VOLUME_LIST));
	ck_assert(!api_wire_op_has_principal(TP_API_TENANT_GET));
}
END_TEST

START_TEST(rejects_fields_the_operation_does_not_use)
{
	size_t len;
	CLEANUP_FREE unsigned char *info = valid_request(TP_API_VOLUME_INFO, &len);
	CLEANUP_FREE unsigned char *tenant = NULL;
	uint64_t one = 1;
	uint32_t uid = 5, has_gid = TP_API_HAS_GID;
	char path[8] = "/x";

	ck_assert_int_eq(decode_with(info, len, REQ_FIELD(size), &one, 8), -EBADMSG);
	ck_assert_int_eq(decode_with(info, len, REQ_FIELD(cursor), &one, 8), -EBADMSG);
	ck_assert_int_eq(decode_with(info, len, REQ_FIELD(path), path, sizeof path), -EBADMSG);
	ck_assert_int_eq(decode_with(info, len, REQ_FIELD(owner), "a", 1), -EBADMSG);
	/* A quota field not given is zero. */
	tenant = valid_request(TP_API_TENANT_ADD, &len);
	ck_assert_int_eq(decode_with(tenant, len, REQ_FIELD(flags), &has_gid, 4), -EBADMSG);
	ck_assert_int_eq(decode_with(tenant, len, REQ_FIELD(uid), &uid, 4), 0);
}
END_TEST

/* A one-label request of OP (no other label) with the label record L and BYTES after it,
 * as raw bytes. */
static unsigned char *label_request(enum tp_api_op op, struct tp_api_label l, const void *bytes,
                                    size_t n, size_t *ret_len)
{
	struct api_wire_request req;
	struct tp_api_request w;
	unsigned char *buf;

	full_request(&req, op);
	w = req.w;
	w.flags |= TP_API_LABELS;
	w.n_labels = 1;
	*ret_len = sizeof w + sizeof l + n;
	w.h.length = (uint32_t)*ret_len;
	buf = malloc(*ret_len);
	memcpy(buf, &w, sizeof w);
	memcpy(buf + sizeof w, &l, sizeof l);
	memcpy(buf + sizeof w + sizeof l, bytes, n);
	return buf;
}

/* Does the request of OP with one label (L, then BYTES) decode? */
static int decode_label(enum tp_api_op op, struct tp_api_label l, const void *bytes, size_t n)
{
	size_t len;
	CLEANUP_FREE unsigned char *buf = label_request(op, l, bytes, n, &len);

	return decode(buf, len);
}

START_TEST(rejects_invalid_labels)
{
	struct tp_api_label kv = {3, 3, TP_API_HAS_VALUE, 0}, k = {3, 0, 0, 0};

	ck_assert_int_eq(decode_label(TP_API_VOLUME_CREATE, kv, "app\0web", 8), 0);
	/* No NUL after the key, or one inside it. */
	ck_assert_int_eq(decode_label(TP_API_VOLUME_CREATE, kv, "appxweb", 8), -EBADMSG);
	ck_assert_int_eq(decode_label(TP_API_VOLUME_CREATE, kv, "a\0p\0web", 8), -EBADMSG);
	/* Not UTF-8; a control character in the key. */
	ck_assert_int_eq(decode_label(TP_API_VOLUME_CREATE, kv, "app\0w\xffz", 8), -EBADMSG);
	ck_assert_int_eq(decode_label(TP_API_VOLUME_CREATE, kv, "a\tp\0web", 8), -EBADMSG);
	/* A set has a value for every key; a patch need not. */
	ck_assert_int_eq(decode_label(TP_API_VOLUME_CREATE, k, "app", 4), -EBADMSG);
	ck_assert_int_eq(decode_label(TP_API_VOLUME_SET_LABELS, k, "app", 4), 0);
	/* A value length without a value; an unknown label flag; a reserved field. */
	k.value_len = 1;
	ck_assert_int_eq(decode_label(TP_API_VOLUME_SET_LABELS, k, "app", 4), -EBADMSG);
	kv.flags |= 0x2;
	ck_assert_int_eq(decode_label(TP_API_VOLUME_CREATE, kv, "app\0web", 8), -EBADMSG);
	kv.flags = TP_API_HAS_VALUE;
	kv.reserved = 1;
	ck_assert_int_eq(decode_label(TP_API_VOLUME_CREATE, kv, "app\0web", 8), -EBADMSG);
	/* An empty key; a label running past the message; bytes after the last label. */
	kv = (struct tp_api_label){0, 3, TP_API_HAS_VALUE, 0};
	ck_assert_int_eq(decode_label(TP_API_VOLUME_CREATE, kv, "\0web", 5), -EBADMSG);
	kv.key_len = 3;
	ck_assert_int_eq(decode_label(TP_API_VOLUME_CREATE, kv, "app\0we", 6), -EBADMSG);
	ck_assert_int_eq(decode_label(TP_API_VOLUME_CREATE, kv, "app\0web\0", 9), -EBADMSG);
	/* Labels on an operation that takes none. */
	ck_assert_int_eq(decode_label(TP_API_VOLUME_INFO, kv, "app\0web", 8), -EBADMSG);
}
END_TEST

START_TEST(rejects_key_twice_but_in_a_filter)
{
	struct tp_label twice[] = {{"app", "a"}, {"app", "b"}};
	struct label_list l = {twice, 2};
	struct api_wire_request req;
	void *buf;
	size_t len;

	full_request(&req, TP_API_VOLUME_CREATE);
	ck_assert_int_eq(api_wire_request_labels(&req, &l), 0);
	ck_assert_int_eq(api_wire_encode_request(&req, &buf, &len), -EINVAL);
	full_request(&req, TP_API_VOLUME_LIST);
	ck_assert_int_eq(api_wire_request_labels(&req, &l), 0);
	ck_assert_int_eq(api_wire_encode_request(&req, &buf, &len), 0);
	free(buf);
}
END_TEST

START_TEST(bounds_the_label_count)
{
	size_t len;
	CLEANUP_FREE unsigned char *buf = valid_request(TP_API_VOLUME_CREATE, &len);
	uint32_t n = TP_LABELS_MAX + 1;
	struct tp_label many[TP_LABELS_MAX + 1];
	struct label_list l = {many, TP_LABELS_MAX + 1};
	struct api_wire_request req;

	ck_assert_int_eq(decode_with(buf, len, REQ_FIELD(n_labels), &n, 4), -EBADMSG);
	n = UINT32_MAX;
	ck_assert_int_eq(decode_with(buf, len, REQ_FIELD(n_labels), &n, 4), -EBADMSG);
	full_request(&req, TP_API_VOLUME_CREATE);
	ck_assert_int_eq(api_wire_request_labels(&req, &l), -EINVAL);
}
END_TEST

START_TEST(refuses_to_encode_what_the_parent_would_refuse)
{
	struct api_wire_request req;
	void *buf;
	size_t len;

	api_wire_request_init(&req, TP_API_VOLUME_INFO, 1, 0);
	ck_assert_int_eq(API_WIRE_SET(req.w.name, "Not-A-Name"), 0);
	ck_assert_int_eq(api_wire_encode_request(&req, &buf, &len), -EINVAL);
	ck_assert_int_eq(API_WIRE_SET(req.w.name, "x"), 0);
	req.w.size = 1;
	ck_assert_int_eq(api_wire_encode_request(&req, &buf, &len), -EINVAL);
	api_wire_request_init(&req, TP_API_VOLUME_SET_LABELS, 1, 0);
	ck_assert_int_eq(API_WIRE_SET(req.w.name, "x"), 0);
	ck_assert_int_eq(api_wire_encode_request(&req, &buf, &len), -EINVAL); /* no patch */
	api_wire_request_init(&req, 0, 1, 0);
	ck_assert_int_eq(api_wire_encode_request(&req, &buf, &len), -EINVAL);
	/* A name longer than its field does not even go in. */
	ck_assert_int_eq(API_WIRE_SET(req.w.name, "0123456789012345678901234567890123456789"
	                                          "0123456789012345678901234"),
	                 -EINVAL);
}
END_TEST

/* Replies */

static struct tp_label view_labels[] = {{"app", "web"}, {"caf\xc3\xa9", ""}};

static struct volume_view sample_volume(void)
{
	struct volume_view v = {.name = "layer1",
	                        .owner = "alice",
	                        .parent = "images/base",
	                        .size = 1 << 30,
	                        .used = 4096,
	                        .state = "committed",
	                        .created = 1700000000,
	                        .updated = 1700000001,
	                        .writable = true,
	                        .thin_id = 42,
	                        .labels = view_labels,
	                        .n_labels = 2};
	return v;
}

/* End W into a buffer the test owns. */
static unsigned char *end(struct api_wire_writer *w, bool more, uint64_t cursor, size_t *ret_len)
{
	void *buf;

	ck_assert_int_eq(api_wire_reply_end(w, more, cursor, &buf, ret_len), 0);
	return buf;
}

static void assert_same_volume(const struct volume_view *a, const struct volume_view *b)
{
	ck_assert_str_eq(a->name, b->name);
	ck_assert_str_eq(a->owner, b->owner);
	ck_assert_str_eq(a->parent, b->parent);
	ck_assert_uint_eq(a->size, b->size);
	ck_assert_uint_eq(a->used, b->used);
	ck_assert_str_eq(a->state, b->state);
	ck_assert_int_eq(a->created, b->created);
	ck_assert_int_eq(a->updated, b->updated);
	ck_assert_int_eq(a->writable, b->writable);
	ck_assert_uint_eq(a->thin_id, b->thin_id);
	ck_assert_uint_eq(a->n_labels, b->n_labels);
	for (size_t i = 0; i < a->n_labels; i++) {
		ck_assert_str_eq(a->labels[i].key, b->labels[i].key);
		ck_assert_str_eq(a->labels[i].value, b->labels[i].value);
	}
}

START_TEST(round_trips_volume_reply)
{
	struct api_wire_writer w;
	struct api_wire_reply rep;
	struct volume_view v = sample_volume(), out;
	CLEANUP_FREE unsigned char *buf = NULL;
	size_t len;

	ck_assert_int_eq(api_wire_reply_begin(&w, TP_API_VOLUME_COMMIT, 9), 0);
	ck_assert_int_eq(api_wire_put_volume(&w, &v), 0);
	/* One volume answers a commit, not two. */
	ck_assert_int_eq(api_wire_put_volume(&w, &v), -EINVAL);
	buf = end(&w, false, 0, &len);
	ck_assert_int_eq(api_wire_decode_reply(buf, len, TP_API_VOLUME_COMMIT, 9, 0, &rep), 0);
	ck_assert_uint_eq(rep.w.error, 0);
	ck_assert_int_eq(api_wire_get_volume(&rep, &out), 0);
	assert_same_volume(&v, &out);
	/* The labels are one block of their own, as ops_volume_view_clear frees them. */
	ck_assert_ptr_ne(out.labels[0].key, view_labels[0].key);
	free(out.labels);
}
END_TEST

/* ops_volume_fn: compare with the sample, count. */
static int count_sample(const struct volume_view *v, void *opaque)
{
	struct volume_view s = sample_volume();

	assert_same_volume(&s, v);
	return ++*(int *)opaque == 3 ? -ECANCELED : 0;
}

START_TEST(round_trips_volume_page)
{
	struct api_wire_writer w;
	struct api_wire_reply rep;
	struct volume_view v = sample_volume();
	CLEANUP_FREE unsigned char *buf = NULL;
	size_t len;
	int n = 0;

	ck_assert_int_eq(api_wire_reply_begin(&w, TP_API_VOLUME_LIST, 1), 0);
	for (int i = 0; i < 4; i++)
		ck_assert_int_eq(api_wire_put_volume(&w, &v), 0);
	buf = end(&w, true, 14, &len);
	ck_assert_int_eq(api_wire_decode_reply(buf, len, TP_API_VOLUME_LIST, 1, 10, &rep), 0);
	ck_assert_uint_eq(rep.w.count, 4);
	ck_assert_uint_eq(rep.w.flags, TP_API_MORE);
	ck_assert_uint_eq(rep.w.cursor, 14);
	/* A negative return from the callback stops the walk and is returned. */
	ck_assert_int_eq(api_wire_get_volumes(&rep, count_sample, &n), -ECANCELED);
	ck_assert_int_eq(n, 3);
}
END_TEST

START_TEST(checks_the_page_cursor)
{
	struct api_wire_writer w;
	struct api_wire_reply rep;
	struct grant_view g = {"alice", "layer1", "bob", true};
	CLEANUP_FREE unsigned char *buf = NULL;
	void *none;
	size_t len;

	ck_assert_int_eq(api_wire_reply_begin(&w, TP_API_GRANT_LIST, 1), 0);
	ck_assert_int_eq(api_wire_put_grant(&w, &g), 0);
	buf = end(&w, false, 6, &len);
	ck_assert_int_eq(api_wire_decode_reply(buf, len, TP_API_GRANT_LIST, 1, 5, &rep), 0);
	/* Asked at another cursor than the page answers. */
	ck_assert_int_eq(api_wire_decode_reply(buf, len, TP_API_GRANT_LIST, 1, 4, &rep), -EBADMSG);
	/* An empty page that says there is more would be asked for again and again. */
	ck_assert_int_eq(api_wire_reply_begin(&w, TP_API_GRANT_LIST, 1), 0);
	ck_assert_int_eq(api_wire_reply_end(&w, true, 0, &none, &len), -EINVAL);
	api_wire_writer_free(&w);
	/* At most TP_API_PAGE_MAX entries. */
	ck_assert_int_eq(api_wire_reply_begin(&w, TP_API_GRANT_LIST, 1), 0);
	for (int i = 0; i < TP_API_PAGE_MAX; i++)
		ck_assert_int_eq(api_wire_put_grant(&w, &g), 0);
	ck_assert_int_eq(api_wire_put_grant(&w, &g), -E2BIG);
	api_wire_writer_free(&w);
}
END_TEST

START_TEST(fills_a_page_up_to_the_message_bound)
{
	static char keys[TP_LABELS_MAX][8], value[TP_LABEL_BYTES_MAX];
	struct tp_label labels[TP_LABELS_MAX];
	struct volume_view v = sample_volume();
	struct api_wire_writer w;
	struct api_wire_reply rep;
	CLEANUP_FREE unsigned char *buf = NULL;
	size_t len;
	int n = 0, r;

	for (int i = 0; i < TP_LABELS_MAX; i++) {
		snprintf(keys[i], sizeof keys[i], "k%04d", i);
		labels[i].key = keys[i];
		labels[i].value = value;
	}
	memset(value, 'v', TP_LABEL_BYTES_MAX - 5);
	v.labels = labels;
	v.n_labels = TP_LABELS_MAX;
	ck_assert_int_eq(api_wire_reply_begin(&w, TP_API_VOLUME_LIST, 1), 0);
	while ((r = api_wire_put_volume(&w, &v)) == 0)
		n++;
	/* What did not fit left the page as it was: it ends and decodes. */
	ck_assert_int_eq(r, -E2BIG);
	ck_assert_int_gt(n, 1);
	buf = end(&w, true, (uint64_t)n, &len);
	ck_assert_uint_le(len, TP_API_MESSAGE_MAX);
	ck_assert_int_eq(api_wire_decode_reply(buf, len, TP_API_VOLUME_LIST, 1, 0, &rep), 0);
	ck_assert_uint_eq(rep.w.count, (unsigned)n);
}
END_TEST

/* ops_children_fn: remember the last. */
static int last_child(const char *tenant, uint64_t n, void *opaque)
{
	snprintf(opaque, TP_API_NAME_SIZE, "%s=%llu", tenant, (unsigned long long)n);
	return 0;
}

START_TEST(round_trips_children_page)
{
	struct api_wire_writer w;
	struct api_wire_reply rep;
	CLEANUP_FREE unsigned char *buf = NULL;
	char last[TP_API_NAME_SIZE] = "";
	size_t len;

	ck_assert_int_eq(api_wire_reply_begin(&w, TP_API_VOLUME_CHILDREN, 2), 0);
	ck_assert_int_eq(api_wire_put_child(&w, "alice", 2), 0);
	ck_assert_int_eq(api_wire_put_child(&w, "bob", 1), 0);
	ck_assert_int_eq(api_wire_put_child(&w, "Bob", 1), -EINVAL);
	ck_assert_int_eq(api_wire_put_volume(&w, &(struct volume_view){0}), -EINVAL);
	buf = end(&w, false, 2, &len);
	ck_assert_int_eq(api_wire_decode_reply(buf, len, TP_API_VOLUME_CHILDREN, 2, 0, &rep), 0);
	ck_assert_int_eq(api_wire_get_children(&rep, last_child, last), 0);
	ck_assert_str_eq(last, "bob=1");
}
END_TEST

START_TEST(round_trips_tenant_pool_and_principal)
{
	struct tenant_view t = {"alice", 1000, 1000,    60000, 10,        1 << 30,
	                        0,       2,    1 << 20, 4096,  "running", 1700000000},
	                   tout[1];
	struct pool_view p = {.name = "thinproxy-pool",
	                      .transaction_id = 12,
	                      .block_size = 65536,
	                      .data_used = 1,
	                      .data_total = 2,
	                      .meta_used = 3,
	                      .meta_total = 4,
	                      .meta_limit = 5,
	                      .meta_state = "warning",
	                      .mode = "out_of_data_space",
	                      .needs_check = true,
	                      .min_free = 6,
	                      .volumes = 7},
	                 pout;
	struct principal pr = {false, 3, "alice"}, prout;
	struct api_wire_writer w;
	struct api_wire_reply rep;
	size_t len;

	{
		CLEANUP_FREE unsigned char *buf = NULL;

		ck_assert_int_eq(api_wire_reply_begin(&w, TP_API_USAGE, 1), 0);
		ck_assert_int_eq(api_wire_put_tenant(&w, &t), 0);
		buf = end(&w, false, 0, &len);
		ck_assert_int_eq(api_wire_decode_reply(buf, len, TP_API_USAGE, 1, 0, &rep), 0);
		api_wire_get_tenants(&rep, tout);
		ck_assert_str_eq(tout[0].name, "alice");
		ck_assert_uint_eq(tout[0].uid, t.uid);
		ck_assert_uint_eq(tout[0].gid, t.gid);
		ck_assert_uint_eq(tout[0].nbd_uid, t.nbd_uid);
		ck_assert_uint_eq(tout[0].max_volumes, t.max_volumes);
		ck_assert_uint_eq(tout[0].max_size, t.max_size);
		ck_assert_uint_eq(tout[0].max_used, t.max_used);
		ck_assert_uint_eq(tout[0].volumes, t.volumes);
		ck_assert_uint_eq(tout[0].size, t.size);
		ck_assert_uint_eq(tout[0].used, t.used);
		ck_assert_str_eq(tout[0].nbd, "running");
		ck_assert_int_eq(tout[0].created, t.created);
		ck_assert(!tout[0].has_allocated);
	}
	{
		CLEANUP_FREE unsigned char *buf = NULL;

		/* The exact allocation, where the pool tells it. */
		t.has_allocated = true;
		t.allocated = 3 << 16;
		ck_assert_int_eq(api_wire_reply_begin(&w, TP_API_USAGE, 1), 0);
		ck_assert_int_eq(api_wire_put_tenant(&w, &t), 0);
		buf = end(&w, false, 0, &len);
		ck_assert_int_eq(api_wire_decode_reply(buf, len, TP_API_USAGE, 1, 0, &rep), 0);
		api_wire_get_tenants(&rep, tout);
		ck_assert(tout[0].has_allocated);
		ck_assert_uint_eq(tout[0].allocated, 3 << 16);
		/* An allocation without its flag, or an unknown flag, is malformed. */
		size_t flags_at =
		    len - sizeof(struct tp_api_tenant) + offsetof(struct tp_api_tenant, flags);
		uint16_t none = 0, unknown = TP_API_TENANT_ALLOCATED | 2;

		memcpy(buf + flags_at, &none, sizeof none);
		ck_assert_int_eq(api_wire_decode_reply(buf, len, TP_API_USAGE, 1, 0, &rep),
		                 -EBADMSG);
		memcpy(buf + flags_at, &unknown, sizeof unknown);
		ck_assert_int_eq(api_wire_decode_reply(buf, len, TP_API_USAGE, 1, 0, &rep),
		                 -EBADMSG);
	}
	{
		CLEANUP_FREE unsigned char *buf = NULL;

		ck_assert_int_eq(api_wire_reply_begin(&w, TP_API_POOL_STATUS, 1), 0);
		ck_assert_int_eq(api_wire_put_pool(&w, &p), 0);
		buf = end(&w, false, 0, &len);
		ck_assert_int_eq(api_wire_decode_reply(buf, len, TP_API_POOL_STATUS, 1, 0, &rep),
		                 0);
		api_wire_get_pool(&rep, &pout);
		ck_assert_str_eq(pout.name, p.name);
		ck_assert_str_eq(pout.meta_state, "warning");
		ck_assert_str_eq(pout.mode, "out_of_data_space");
		ck_assert(pout.needs_check);
		ck_assert_uint_eq(pout.meta_limit, 5);
		ck_assert_uint_eq(pout.volumes, 7);
	}
	{
		CLEANUP_FREE unsigned char *buf = NULL;

		ck_assert_int_eq(api_wire_reply_begin(&w, TP_API_PRINCIPAL_FOR_TENANT, 1), 0);
		ck_assert_int_eq(api_wire_put_principal(&w, &(struct principal){.admin = true}),
		                 -EINVAL);
		ck_assert_int_eq(api_wire_put_principal(&w, &pr), 0);
		buf = end(&w, false, 0, &len);
		ck_assert_int_eq(
		    api_wire_decode_reply(buf, len, TP_API_PRINCIPAL_FOR_TENANT, 1, 0, &rep), 0);
		api_wire_get_principal(&rep, &prout);
		ck_assert(!prout.admin);
		ck_assert_int_eq(prout.tenant_id, 3);
		ck_assert_str_eq(prout.tenant, "alice");
	}
}
END_TEST

START_TEST(round_trips_image_page)
{
	char published[2][TP_NAME_MAX + 1] = {"alice", "bob"};
	struct image_view im = {.volume = {.name = "images/base",
	                                   .state = "importing",
	                                   .size = 1 << 30,
	                                   .created = 1},
	                        .imported = 1 << 20,
	                        .n_published = 2,
	                        .published = published},
	                  out[2];
	struct api_wire_writer w;
	struct api_wire_reply rep;
	CLEANUP_FREE unsigned char *buf = NULL;
	size_t len;

	ck_assert_int_eq(api_wire_reply_begin(&w, TP_API_IMAGE_LIST, 1), 0);
	ck_assert_int_eq(api_wire_put_image(&w, &im), 0);
	im.published_all = true;
	im.n_published = 0;
	ck_assert_int_eq(api_wire_put_image(&w, &im), 0);
	/* Images have no labels. */
	im.volume.labels = view_labels;
	im.volume.n_labels = 1;
	ck_assert_int_eq(api_wire_put_image(&w, &im), -EINVAL);
	buf = end(&w, false, 2, &len);
	ck_assert_int_eq(api_wire_decode_reply(buf, len, TP_API_IMAGE_LIST, 1, 0, &rep), 0);
	ck_assert_int_eq(api_wire_get_images(&rep, out), 0);
	ck_assert_str_eq(out[0].volume.name, "images/base");
	ck_assert_str_eq(out[0].volume.state, "importing");
	ck_assert_uint_eq(out[0].imported, 1 << 20);
	ck_assert_uint_eq(out[0].n_published, 2);
	ck_assert_str_eq(out[0].published[1], "bob");
	ck_assert(!out[0].published_all);
	ck_assert(out[1].published_all);
	ck_assert_ptr_null(out[1].published);
	free(out[0].published);
}
END_TEST

START_TEST(round_trips_metrics_text)
{
	struct api_wire_writer w;
	struct api_wire_reply rep;
	CLEANUP_FREE unsigned char *buf = NULL;
	const char *text = "# TYPE thinproxy_volumes gauge\nthinproxy_volumes 7\n";
	size_t len;

	ck_assert_int_eq(api_wire_reply_begin(&w, TP_API_METRICS, 1), 0);
	ck_assert_int_eq(api_wire_put_text(&w, text), 0);
	buf = end(&w, false, 0, &len);
	ck_assert_int_eq(api_wire_decode_reply(buf, len, TP_API_METRICS, 1, 0, &rep), 0);
	ck_assert_str_eq(api_wire_get_text(&rep), text);
	/* A NUL inside the text. */
	buf[sizeof(struct tp_api_reply) + sizeof(struct tp_api_text) + 3] = '\0';
	ck_assert_int_eq(api_wire_decode_reply(buf, len, TP_API_METRICS, 1, 0, &rep), -EBADMSG);
}
END_TEST

START_TEST(round_trips_empty_reply)
{
	struct api_wire_writer w;
	struct api_wire_reply rep;
	CLEANUP_FREE unsigned char *buf = NULL;
	size_t len;

	ck_assert_int_eq(api_wire_reply_begin(&w, TP_API_REVOKE, 4), 0);
	ck_assert_int_eq(api_wire_put_grant(&w, &(struct grant_view){"a", "b", "c", 0}), -EINVAL);
	buf = end(&w, false, 0, &len);
	ck_assert_uint_eq(len, sizeof(struct tp_api_reply));
	ck_assert_int_eq(api_wire_decode_reply(buf, len, TP_API_REVOKE, 4, 0, &rep), 0);
	ck_assert_uint_eq(rep.w.count, 0);
}
END_TEST

START_TEST(round_trips_error_reply)
{
	struct api_wire_reply rep;
	CLEANUP_FREE unsigned char *buf = NULL, *odd = NULL;
	char long_message[1000];
	void *b;
	size_t len;

	ck_assert_int_eq(api_wire_encode_error(TP_API_VOLUME_CREATE, 5, -EDQUOT,
	                                       TP_ERROR_QUOTA_EXCEEDED, "over quota", &b, &len),
	                 0);
	buf = b;
	ck_assert_int_eq(api_wire_decode_reply(buf, len, TP_API_VOLUME_CREATE, 5, 0, &rep), 0);
	ck_assert_uint_eq(rep.w.error, EDQUOT);
	ck_assert_uint_eq(rep.w.code, TP_ERROR_QUOTA_EXCEEDED);
	ck_assert_str_eq(rep.w.message, "over quota");
	/* Out of range: EIO and internal; a message cut to its field. */
	memset(long_message, 'm', sizeof long_message - 1);
	long_message[sizeof long_message - 1] = '\0';
	ck_assert_int_eq(
	    api_wire_encode_error(TP_API_VOLUME_LIST, 5, 1, 99, long_message, &b, &len), 0);
	odd = b;
	ck_assert_int_eq(api_wire_decode_reply(odd, len, TP_API_VOLUME_LIST, 5, 7, &rep), 0);
	ck_assert_uint_eq(rep.w.error, EIO);
	ck_assert_uint_eq(rep.w.code, TP_ERROR_INTERNAL);
	ck_assert_uint_eq(strlen(rep.w.message), TP_API_MESSAGE_SIZE - 1);
}
END_TEST

/* Decode the reply BUF (LEN) of OP with the fixed field at OFFSET set to the N bytes of V. */
static int decode_reply_with(const unsigned char *buf, size_t len, enum tp_api_op op, size_t offset,
                             const void *v, size_t n)
{
	CLEANUP_FREE unsigned char *copy = malloc(len);
	struct api_wire_reply rep;

	memcpy(copy, buf, len);
	memcpy(copy + offset, v, n);
	return api_wire_decode_reply(copy, len, op, 1, 0, &rep);
}

#define REP_FIELD(f) offsetof(struct tp_api_reply, f)

START_TEST(rejects_malformed_error_reply)
{
	CLEANUP_FREE unsigned char *buf = NULL;
	uint32_t zero = 0, big = TP_API_ERRNO_MAX + 1, code = TP_ERROR_INTERNAL + 1, one = 1;
	struct api_wire_reply rep;
	void *b;
	size_t len;

	ck_assert_int_eq(api_wire_encode_error(TP_API_VOLUME_INFO, 1, -ENOENT, TP_ERROR_NOT_FOUND,
	                                       "no such volume", &b, &len),
	                 0);
	buf = b;
	ck_assert_int_eq(decode_reply_with(buf, len, TP_API_VOLUME_INFO, REP_FIELD(code), &zero, 4),
	                 -EBADMSG);
	ck_assert_int_eq(decode_reply_with(buf, len, TP_API_VOLUME_INFO, REP_FIELD(code), &code, 4),
	                 -EBADMSG);
	ck_assert_int_eq(decode_reply_with(buf, len, TP_API_VOLUME_INFO, REP_FIELD(error), &big, 4),
	                 -EBADMSG);
	/* An error carries no records, flags or cursor. */
	ck_assert_int_eq(decode_reply_with(buf, len, TP_API_VOLUME_INFO, REP_FIELD(count), &one, 4),
	                 -EBADMSG);
	ck_assert_int_eq(decode_reply_with(buf, len, TP_API_VOLUME_INFO, REP_FIELD(flags), &one, 4),
	                 -EBADMSG);
	/* No NUL in the message; bytes after its NUL. */
	memset(buf + REP_FIELD(message), 'x', TP_API_MESSAGE_SIZE);
	ck_assert_int_eq(api_wire_decode_reply(buf, len, TP_API_VOLUME_INFO, 1, 0, &rep), -EBADMSG);
	buf[REP_FIELD(message) + 3] = '\0';
	memset(buf + REP_FIELD(message) + 4, 0, TP_API_MESSAGE_SIZE - 5);
	ck_assert_int_eq(api_wire_decode_reply(buf, len, TP_API_VOLUME_INFO, 1, 0, &rep), -EBADMSG);
}
END_TEST

START_TEST(rejects_reply_of_another_request)
{
	struct api_wire_writer w;
	struct api_wire_reply rep;
	struct volume_view v = sample_volume();
	CLEANUP_FREE unsigned char *buf = NULL;
	size_t len;

	ck_assert_int_eq(api_wire_reply_begin(&w, TP_API_VOLUME_INFO, 8), 0);
	ck_assert_int_eq(api_wire_put_volume(&w, &v), 0);
	buf = end(&w, false, 0, &len);
	ck_assert_int_eq(api_wire_decode_reply(buf, len, TP_API_VOLUME_INFO, 8, 0, &rep), 0);
	ck_assert_int_eq(api_wire_decode_reply(buf, len, TP_API_VOLUME_INFO, 9, 0, &rep), -EBADMSG);
	ck_assert_int_eq(api_wire_decode_reply(buf, len, TP_API_VOLUME_RESIZE, 8, 0, &rep),
	                 -EBADMSG);
	ck_assert_int_eq(api_wire_decode_reply(buf, len - 1, TP_API_VOLUME_INFO, 8, 0, &rep),
	                 -EBADMSG);
	/* A request is no reply. */
	ck_assert_int_eq(api_wire_decode_reply(buf, len, 0, 8, 0, &rep), -EINVAL);
}
END_TEST

START_TEST(rejects_malformed_volume_record)
{
	struct api_wire_writer w;
	struct volume_view v = sample_volume();
	CLEANUP_FREE unsigned char *buf = NULL;
	size_t len, at = sizeof(struct tp_api_reply);
	uint16_t state = 7, flags = 2;
	uint32_t n = TP_LABELS_MAX + 1;

	ck_assert_int_eq(api_wire_reply_begin(&w, TP_API_VOLUME_INFO, 1), 0);
	ck_assert_int_eq(api_wire_put_volume(&w, &v), 0);
	buf = end(&w, false, 0, &len);
	ck_assert_int_eq(decode_reply_with(buf, len, TP_API_VOLUME_INFO,
	                                   at + offsetof(struct tp_api_volume, state), &state, 2),
	                 -EBADMSG);
	ck_assert_int_eq(decode_reply_with(buf, len, TP_API_VOLUME_INFO,
	                                   at + offsetof(struct tp_api_volume, flags), &flags, 2),
	                 -EBADMSG);
	ck_assert_int_eq(decode_reply_with(buf, len, TP_API_VOLUME_INFO,
	                                   at + offsetof(struct tp_api_volume, n_labels), &n, 4),
	                 -EBADMSG);
	ck_assert_int_eq(decode_reply_with(buf, len, TP_API_VOLUME_INFO,
	                                   at + offsetof(struct tp_api_volume, owner), "Al", 2),
	                 -EBADMSG);
	ck_assert_int_eq(decode_reply_with(buf, len, TP_API_VOLUME_INFO,
	                                   at + offsetof(struct tp_api_volume, parent), "/", 1),
	                 -EBADMSG);
	/* A state ops never gives cannot be sent. */
	v.state = "frozen";
	ck_assert_int_eq(api_wire_reply_begin(&w, TP_API_VOLUME_INFO, 1), 0);
	ck_assert_int_eq(api_wire_put_volume(&w, &v), -EINVAL);
	api_wire_writer_free(&w);
}
END_TEST

/* A page of a diff of a 1 GiB volume from byte FROM, with the changes C (N), ended at
 * CURSOR with MORE; the test owns the buffer. */
static unsigned char *diff_page(uint64_t from, const struct volume_change *c, size_t n, bool more,
                                uint64_t cursor, size_t *ret_len)
{
	struct api_wire_writer w;

	ck_assert_int_eq(api_wire_reply_begin(&w, TP_API_VOLUME_DIFF, 1), 0);
	ck_assert_int_eq(api_wire_put_diff(&w, UINT64_C(1) << 30, from), 0);
	for (size_t i = 0; i < n; i++)
		ck_assert_int_eq(api_wire_put_change(&w, &c[i]), 0);
	return end(&w, more, cursor, ret_len);
}

START_TEST(round_trips_diff_pages)
{
	const struct volume_change c[] = {
	    {65536, 4096, true}, {69632, 8192, false}, {1 << 20, 512, true}};
	struct volume_change out[3];
	struct api_wire_reply rep;
	CLEANUP_FREE unsigned char *buf = NULL, *empty = NULL;
	uint64_t size;
	size_t len;

	/* The next page starts where the last change ends. */
	buf = diff_page(65536, c, 3, true, (1 << 20) + 512, &len);
	ck_assert_uint_eq(len, sizeof(struct tp_api_reply) + sizeof(struct tp_api_diff) +
	                           3 * sizeof(struct tp_api_change));
	ck_assert_int_eq(api_wire_decode_reply(buf, len, TP_API_VOLUME_DIFF, 1, 65536, &rep), 0);
	ck_assert_uint_eq(rep.w.count, 3);
	ck_assert_uint_eq(rep.w.flags, TP_API_MORE);
	ck_assert_uint_eq(rep.w.cursor, (1 << 20) + 512);
	api_wire_get_changes(&rep, &size, out);
	ck_assert_uint_eq(size, UINT64_C(1) << 30);
	for (size_t i = 0; i < 3; i++) {
		ck_assert_uint_eq(out[i].offset, c[i].offset);
		ck_assert_uint_eq(out[i].length, c[i].length);
		ck_assert_int_eq(out[i].data, c[i].data);
	}
	/* Asked from past a change the page holds. */
	ck_assert_int_eq(api_wire_decode_reply(buf, len, TP_API_VOLUME_DIFF, 1, 65537, &rep),
	                 -EBADMSG);
	/* A last page without changes ends where it was asked from, even past the size. */
	empty = diff_page(UINT64_C(1) << 31, NULL, 0, false, UINT64_C(1) << 31, &len);
	ck_assert_int_eq(
	    api_wire_decode_reply(empty, len, TP_API_VOLUME_DIFF, 1, UINT64_C(1) << 31, &rep), 0);
	ck_assert_uint_eq(rep.w.count, 0);
	ck_assert_int_eq(api_wire_decode_reply(empty, len, TP_API_VOLUME_DIFF, 1, 0, &rep),
	                 -EBADMSG);
}
END_TEST

/* The parent cannot send changes out of order, overlapping, empty or past the size, nor
 * end a page anywhere but where its last change ends. */
START_TEST(refuses_to_encode_a_diff_out_of_order)
{
	const struct volume_change first = {4096, 4096, true};
	const struct volume_change bad[] = {
	    {8191, 1, true},                         /* overlaps the first */
	    {8192, 0, false},                        /* empty */
	    {(UINT64_C(1) << 30) - 512, 1024, true}, /* past the size */
	    {UINT64_C(1) << 31, 512, true},          /* starts past it */
	};
	struct api_wire_writer w;
	void *buf;
	size_t len;

	ck_assert_int_eq(api_wire_reply_begin(&w, TP_API_VOLUME_DIFF, 1), 0);
	/* The size first. */
	ck_assert_int_eq(api_wire_put_change(&w, &first), -EINVAL);
	ck_assert_int_eq(api_wire_put_diff(&w, UINT64_C(1) << 30, 8192), 0);
	ck_assert_int_eq(api_wire_put_diff(&w, UINT64_C(1) << 30, 8192), -EINVAL);
	/* From the asked offset on. */
	ck_assert_int_eq(api_wire_put_change(&w, &first), -EINVAL);
	api_wire_writer_free(&w);
	ck_assert_int_eq(api_wire_reply_begin(&w, TP_API_VOLUME_DIFF, 1), 0);
	ck_assert_int_eq(api_wire_put_diff(&w, UINT64_C(1) << 30, 0), 0);
	ck_assert_int_eq(api_wire_put_change(&w, &first), 0);
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		ck_assert_int_eq(api_wire_put_change(&w, &bad[i]), -EINVAL);
	ck_assert_int_eq(api_wire_reply_end(&w, false, 8193, &buf, &len), -EINVAL);
	ck_assert_int_eq(api_wire_reply_end(&w, false, 8192, &buf, &len), 0);
	free(buf);
	/* A diff's records belong to a diff only. */
	ck_assert_int_eq(api_wire_reply_begin(&w, TP_API_VOLUME_INFO, 1), 0);
	ck_assert_int_eq(api_wire_put_diff(&w, 1 << 20, 0), -EINVAL);
	ck_assert_int_eq(api_wire_put_change(&w, &first), -EINVAL);
	api_wire_writer_free(&w);
	/* A page of no diff at all. */
	ck_assert_int_eq(api_wire_reply_begin(&w, TP_API_VOLUME_DIFF, 1), 0);
	ck_assert_int_eq(api_wire_reply_end(&w, false, 0, &buf, &len), -EINVAL);
	api_wire_writer_free(&w);
}
END_TEST

/* Decode the diff page BUF (LEN) with the N bytes at OFFSET (after the reply's fixed part)
 * set to V, as asked from 0. */
static int decode_diff_with(const unsigned char *buf, size_t len, size_t offset, const void *v,
                            size_t n)
{
	CLEANUP_FREE unsigned char *copy = malloc(len);
	struct api_wire_reply rep;

	memcpy(copy, buf, len);
	memcpy(copy + sizeof(struct tp_api_reply) + offset, v, n);
	return api_wire_decode_reply(copy, len, TP_API_VOLUME_DIFF, 1, 0, &rep);
}

#define CHANGE_FIELD(i, f)                                                 \
	(sizeof(struct tp_api_diff) + (i) * sizeof(struct tp_api_change) + \
	 offsetof(struct tp_api_change, f))

START_TEST(rejects_malformed_diff_page)
{
	const struct volume_change c[] = {{0, 4096, true}, {8192, 4096, false}};
	CLEANUP_FREE unsigned char *buf = diff_page(0, c, 2, false, 12288, &(size_t){0});
	size_t len = sizeof(struct tp_api_reply) + sizeof(struct tp_api_diff) +
	             2 * sizeof(struct tp_api_change);
	uint64_t zero = 0, overlap = 4095, small = 12287, past = UINT64_C(1) << 30;
	uint32_t flags = 2, one = 1, count = TP_API_CHANGES_MAX + 1;
	struct api_wire_reply rep;

	ck_assert_int_eq(decode_diff_with(buf, len, 0, &zero, 0), 0);
	ck_assert_int_eq(decode_diff_with(buf, len, CHANGE_FIELD(0, flags), &flags, 4), -EBADMSG);
	ck_assert_int_eq(decode_diff_with(buf, len, CHANGE_FIELD(0, reserved), &one, 4), -EBADMSG);
	ck_assert_int_eq(decode_diff_with(buf, len, CHANGE_FIELD(0, length), &zero, 8), -EBADMSG);
	ck_assert_int_eq(decode_diff_with(buf, len, CHANGE_FIELD(1, offset), &overlap, 8),
	                 -EBADMSG);
	ck_assert_int_eq(decode_diff_with(buf, len, CHANGE_FIELD(1, offset), &past, 8), -EBADMSG);
	/* Within a size smaller than the changes. */
	ck_assert_int_eq(decode_diff_with(buf, len, 0, &small, 8), -EBADMSG);
	/* A cursor not where the last change ends; more records than a page holds; bytes
	 * missing or left over. */
	ck_assert_int_eq(
	    decode_reply_with(buf, len, TP_API_VOLUME_DIFF, REP_FIELD(cursor), &small, 8),
	    -EBADMSG);
	ck_assert_int_eq(
	    decode_reply_with(buf, len, TP_API_VOLUME_DIFF, REP_FIELD(count), &count, 4), -EBADMSG);
	ck_assert_int_eq(decode_reply_with(buf, len, TP_API_VOLUME_DIFF, REP_FIELD(count), &one, 4),
	                 -EBADMSG);
	ck_assert_int_eq(api_wire_decode_reply(buf, len - 1, TP_API_VOLUME_DIFF, 1, 0, &rep),
	                 -EBADMSG);
}
END_TEST

/* A page of a diff holds up to TP_API_CHANGES_MAX changes, which fit in one message. */
START_TEST(fills_a_diff_page_up_to_its_bound)
{
	struct api_wire_writer w;
	struct api_wire_reply rep;
	CLEANUP_FREE unsigned char *buf = NULL;
	uint64_t at = 0;
	size_t len;

	ck_assert_int_eq(api_wire_reply_begin(&w, TP_API_VOLUME_DIFF, 1), 0);
	ck_assert_int_eq(api_wire_put_diff(&w, UINT64_C(1) << 40, 0), 0);
	for (int i = 0; i < TP_API_CHANGES_MAX; i++, at += 131072)
		ck_assert_int_eq(api_wire_put_change(&w, &(struct volume_change){at, 65536, i & 1}),
		                 0);
	ck_assert_int_eq(api_wire_put_change(&w, &(struct volume_change){at, 65536, true}), -E2BIG);
	buf = end(&w, true, at - 65536, &len);
	ck_assert_uint_le(len, TP_API_MESSAGE_MAX);
	ck_assert_int_eq(api_wire_decode_reply(buf, len, TP_API_VOLUME_DIFF, 1, 0, &rep), 0);
	ck_assert_uint_eq(rep.w.count, TP_API_CHANGES_MAX);
}
END_TEST

START_TEST(round_trips_volume_usage_that_adds_up)
{
	struct volume_usage u = {.mapped = 3 << 20, .exclusive = 1 << 20, .shared = 2 << 20}, out;
	struct api_wire_writer w;
	struct api_wire_reply rep;
	CLEANUP_FREE unsigned char *buf = NULL;
	uint64_t wrong = 1 << 20;
	size_t len;

	ck_assert_int_eq(api_wire_reply_begin(&w, TP_API_VOLUME_USAGE, 1), 0);
	ck_assert_int_eq(api_wire_put_volume_usage(&w, &(struct volume_usage){3, 1, 1}), -EINVAL);
	ck_assert_int_eq(api_wire_put_volume_usage(&w, &(struct volume_usage){1, 2, 0}), -EINVAL);
	ck_assert_int_eq(api_wire_put_volume_usage(&w, &u), 0);
	ck_assert_int_eq(api_wire_put_volume_usage(&w, &u), -EINVAL);
	buf = end(&w, false, 0, &len);
	ck_assert_int_eq(api_wire_decode_reply(buf, len, TP_API_VOLUME_USAGE, 1, 0, &rep), 0);
	api_wire_get_volume_usage(&rep, &out);
	ck_assert_uint_eq(out.mapped, u.mapped);
	ck_assert_uint_eq(out.exclusive, u.exclusive);
	ck_assert_uint_eq(out.shared, u.shared);
	ck_assert_int_eq(decode_reply_with(buf, len, TP_API_VOLUME_USAGE,
	                                   sizeof(struct tp_api_reply) +
	                                       offsetof(struct tp_api_volume_usage, shared),
	                                   &wrong, 8),
	                 -EBADMSG);
	ck_assert_int_eq(api_wire_decode_reply(buf, len - 8, TP_API_VOLUME_USAGE, 1, 0, &rep),
	                 -EBADMSG);
}
END_TEST

START_TEST(reads_the_length_of_a_first_packet)
{
	size_t len;
	CLEANUP_FREE unsigned char *buf = valid_request(TP_API_VOLUME_CREATE, &len);
	uint32_t length;

	ck_assert_int_eq(api_wire_message_length(buf,
	                                         TP_API_PACKET_MAX < len ? TP_API_PACKET_MAX : len,
	                                         TP_API_REQUEST_MAX, &length),
	                 0);
	ck_assert_uint_eq(length, len);
	ck_assert_int_eq(api_wire_message_length(buf, 15, TP_API_REQUEST_MAX, &length), -EBADMSG);
	ck_assert_int_eq(api_wire_message_length(buf, len, len - 1, &length), -EBADMSG);
}
END_TEST

START_TEST(round_trips_listen_messages)
{
	struct principal admin = {.admin = true}, alice = {.tenant_id = 7, .tenant = "alice"}, p;
	struct tp_api_listen m;
	uint32_t index;
	uint16_t op;

	ck_assert_int_eq(api_wire_encode_listen(TP_API_LISTEN, 0, &admin, &m), 0);
	ck_assert_int_eq(api_wire_decode_listen(&m, sizeof m, &op, &index, &p), 0);
	ck_assert(op == TP_API_LISTEN && index == 0 && p.admin && p.tenant_id == 0);
	ck_assert_int_eq(api_wire_encode_listen(TP_API_LISTEN, 41, &alice, &m), 0);
	ck_assert_int_eq(api_wire_decode_listen(&m, sizeof m, &op, &index, &p), 0);
	ck_assert(op == TP_API_LISTEN && index == 41 && !p.admin && p.tenant_id == 7);
	ck_assert_str_eq(p.tenant, "alice");
	ck_assert_int_eq(api_wire_encode_listen(TP_API_UNLISTEN, 41, NULL, &m), 0);
	ck_assert_int_eq(api_wire_decode_listen(&m, sizeof m, &op, &index, &p), 0);
	ck_assert(op == TP_API_UNLISTEN && index == 41 && !p.admin && p.tenant_id == 0);
}
END_TEST

START_TEST(rejects_malformed_listen_messages)
{
	struct principal alice = {.tenant_id = 7, .tenant = "alice"}, bad = alice, p;
	struct tp_api_listen m, good;
	unsigned char buf[sizeof m + 1];
	uint32_t index;
	uint16_t op;

	/* What the encoder refuses: a listen without a principal, an unlisten with one, a
	 * tenant without an id or with an invalid name, an admin with a tenant id. */
	ck_assert_int_eq(api_wire_encode_listen(TP_API_LISTEN, 1, NULL, &m), -EINVAL);
	ck_assert_int_eq(api_wire_encode_listen(TP_API_UNLISTEN, 1, &alice, &m), -EINVAL);
	bad.tenant_id = 0;
	ck_assert_int_eq(api_wire_encode_listen(TP_API_LISTEN, 1, &bad, &m), -EINVAL);
	bad = (struct principal){.tenant_id = 7, .tenant = "-x"};
	ck_assert_int_eq(api_wire_encode_listen(TP_API_LISTEN, 1, &bad, &m), -EINVAL);
	bad = (struct principal){.admin = true, .tenant_id = 7};
	ck_assert_int_eq(api_wire_encode_listen(TP_API_LISTEN, 1, &bad, &m), -EINVAL);
	ck_assert_int_eq(api_wire_encode_listen(TP_API_VOLUME_LIST, 1, &alice, &m), -EINVAL);

	/* What the decoder refuses: each field of a good message spoiled in turn. */
	ck_assert_int_eq(api_wire_encode_listen(TP_API_LISTEN, 3, &alice, &good), 0);
	memcpy(buf, &good, sizeof good);
	buf[sizeof good] = 0;
	ck_assert_int_eq(api_wire_decode_listen(buf, sizeof good + 1, &op, &index, &p), -EBADMSG);
	ck_assert_int_eq(api_wire_decode_listen(buf, sizeof good - 1, &op, &index, &p), -EBADMSG);
	m = good, m.h.magic++;
	ck_assert_int_eq(api_wire_decode_listen(&m, sizeof m, &op, &index, &p), -EBADMSG);
	m = good, m.h.version++;
	ck_assert_int_eq(api_wire_decode_listen(&m, sizeof m, &op, &index, &p), -EBADMSG);
	m = good, m.h.op = TP_API_VOLUME_LIST;
	ck_assert_int_eq(api_wire_decode_listen(&m, sizeof m, &op, &index, &p), -EBADMSG);
	m = good, m.h.id = 1;
	ck_assert_int_eq(api_wire_decode_listen(&m, sizeof m, &op, &index, &p), -EBADMSG);
	m = good, m.h.length--;
	ck_assert_int_eq(api_wire_decode_listen(&m, sizeof m, &op, &index, &p), -EBADMSG);
	m = good, m.flags = 2;
	ck_assert_int_eq(api_wire_decode_listen(&m, sizeof m, &op, &index, &p), -EBADMSG);
	m = good, m.flags = TP_API_ADMIN;
	ck_assert_int_eq(api_wire_decode_listen(&m, sizeof m, &op, &index, &p), -EBADMSG);
	m = good, m.tenant_id = -1;
	ck_assert_int_eq(api_wire_decode_listen(&m, sizeof m, &op, &index, &p), -EBADMSG);
	m = good, m.tenant[0] = '-';
	ck_assert_int_eq(api_wire_decode_listen(&m, sizeof m, &op, &index, &p), -EBADMSG);
	m = good, m.tenant[10] = 'x';
	ck_assert_int_eq(api_wire_decode_listen(&m, sizeof m, &op, &index, &p), -EBADMSG);
	m = good, m.h.op = TP_API_UNLISTEN;
	ck_assert_int_eq(api_wire_decode_listen(&m, sizeof m, &op, &index, &p), -EBADMSG);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("api-wire");
	TCase *tc = tcase_create("api-wire");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, round_trips_every_request);
	tcase_add_test(tc, round_trips_given_empty_and_absent_labels);
	tcase_add_test(tc, round_trips_largest_request);
	tcase_add_test(tc, rejects_request_of_wrong_length);
	tcase_add_test(tc, rejects_wrong_magic_version_and_op);
	tcase_add_test(tc, rejects_unknown_flag_bits);
	tcase_add_test(tc, rejects_string_without_nul_or_with_bytes_after_it);
	tcase_add_test(tc, rejects_invalid_names_and_references);
	tcase_add_test(tc, rejects_a_diff_without_a_reference_and_usage_with_one);
	tcase_add_test(tc, rejects_acting_for_on_admin_operation);
	tcase_add_test(tc, rejects_fields_the_operation_does_not_use);
	tcase_add_test(tc, rejects_invalid_labels);
	tcase_add_test(tc, rejects_key_twice_but_in_a_filter);
	tcase_add_test(tc, bounds_the_label_count);
	tcase_add_test(tc, refuses_to_encode_what_the_parent_would_refuse);
	tcase_add_test(tc, round_trips_volume_reply);
	tcase_add_test(tc, round_trips_volume_page);
	tcase_add_test(tc, checks_the_page_cursor);
	tcase_add_test(tc, fills_a_page_up_to_the_message_bound);
	tcase_add_test(tc, round_trips_children_page);
	tcase_add_test(tc, round_trips_tenant_pool_and_principal);
	tcase_add_test(tc, round_trips_image_page);
	tcase_add_test(tc, round_trips_metrics_text);
	tcase_add_test(tc, round_trips_empty_reply);
	tcase_add_test(tc, round_trips_error_reply);
	tcase_add_test(tc, rejects_malformed_error_reply);
	tcase_add_test(tc, rejects_reply_of_another_request);
	tcase_add_test(tc, rejects_malformed_volume_record);
	tcase_add_test(tc, round_trips_diff_pages);
	tcase_add_test(tc, refuses_to_encode_a_diff_out_of_order);
	tcase_add_test(tc, rejects_malformed_diff_page);
	tcase_add_test(tc, fills_a_diff_page_up_to_its_bound);
	tcase_add_test(tc, round_trips_volume_usage_that_adds_up);
	tcase_add_test(tc, reads_the_length_of_a_first_packet);
	tcase_add_test(tc, round_trips_listen_messages);
	tcase_add_test(tc, rejects_malformed_listen_messages);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
