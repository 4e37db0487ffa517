/* The codec of include/tp-api-wire.h: every request and reply between the root parent and
 * the API process, encoded from and decoded to daemon/ops.h's own types. Pure functions
 * over byte buffers; the I/O is the callers'. Decoders return 0 or -EBADMSG for anything
 * but a well-formed message of the kind asked for; encoders refuse with -EINVAL what the
 * decoder would refuse, so that whatever one end sends, the other accepts. */
#ifndef TP_API_WIRE_CODEC_H
#define TP_API_WIRE_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ops.h"
#include "tp-api-wire.h"

/* The length of the message whose first packet is BUF (LEN bytes): checks the header's
 * magic, version and length (at least a header, at most MAX). -EBADMSG if not. */
int api_wire_message_length(const void *buf, size_t len, size_t max, uint32_t *ret_length);

/* Does the operation OP take a principal (VOLUME_*, USAGE)? The others are the admin's. */
bool api_wire_op_has_principal(enum tp_api_op op);
/* Is OP a listing, answered in pages? */
bool api_wire_op_is_listing(enum tp_api_op op);

/* Requests (the API process encodes, the parent decodes). The fixed part is W as on the
 * wire; the labels are LABELS when HAS_LABELS. Decoded labels point into the buffer they
 * were decoded from. */
struct api_wire_request {
	struct tp_api_request w;
	struct label_list labels;
	struct tp_label label[TP_LABELS_MAX];
};

/* Start REQ: all zero but the header and the asking socket. */
void api_wire_request_init(struct api_wire_request *req, enum tp_api_op op, uint32_t id,
                           uint32_t socket);
/* Copy S into the fixed field FIELD of SIZE bytes, zero-padded. -EINVAL if it does not fit. */
int api_wire_set_string(char *field, size_t size, const char *s);
#define API_WIRE_SET(field, s) api_wire_set_string((field), sizeof(field), (s))
/* Give REQ the labels LABELS (NULL: none given; copied, the strings are not). */
int api_wire_request_labels(struct api_wire_request *req, const struct label_list *labels);
/* Encode REQ into *RET_BUF (malloc'ed), *RET_LEN bytes. -EINVAL if the parent would refuse
 * it, -ENOMEM. */
int api_wire_encode_request(const struct api_wire_request *req, void **ret_buf, size_t *ret_len);
int api_wire_decode_request(const void *buf, size_t len, struct api_wire_request *ret_req);

/* Replies (the parent encodes, the API process decodes). The parent begins one, puts the
 * records the operation answers with, and ends it; or encodes an error instead. */
struct api_wire_writer {
	unsigned char *buf;
	size_t len, cap;
	enum tp_api_op op;
	uint32_t count;
	/* A diff's, once api_wire_put_diff began it: its size, the offset the page starts at,
	 * and the end of its last change (FROM before the first). */
	bool diff;
	uint64_t size, from, end;
};

int api_wire_reply_begin(struct api_wire_writer *w, enum tp_api_op op, uint32_t id);
/* Each returns 0, -EINVAL if the record is not one OP answers with or would not decode,
 * -E2BIG if it does not fit in the message or the page any more (the reply stays as it
 * was: end it, with TP_API_MORE for a listing), or -ENOMEM. */
int api_wire_put_volume(struct api_wire_writer *w, const struct volume_view *v);
int api_wire_put_child(struct api_wire_writer *w, const char *tenant, uint64_t n);
int api_wire_put_tenant(struct api_wire_writer *w, const struct tenant_view *t);
int api_wire_put_pool(struct api_wire_writer *w, const struct pool_view *p);
int api_wire_put_image(struct api_wire_writer *w, const struct image_view *im);
int api_wire_put_grant(struct api_wire_writer *w, const struct grant_view *g);
int api_wire_put_principal(struct api_wire_writer *w, const struct principal *p);
int api_wire_put_text(struct api_wire_writer *w, const char *text);
int api_wire_put_volume_usage(struct api_wire_writer *w, const struct volume_usage *u);
/* A diff's page: its volume's SIZE and the offset FROM that the page starts at (the asked
 * cursor) first, then its changes, each after the one before and within SIZE. */
int api_wire_put_diff(struct api_wire_writer *w, uint64_t size, uint64_t from);
int api_wire_put_change(struct api_wire_writer *w, const struct volume_change *c);
/* End the reply: MORE and CURSOR for a listing (false and 0 otherwise; for a diff, W's END).
 * Hands over the message in *RET_BUF, *RET_LEN. -EINVAL if the records are not what OP
 * answers with. */
int api_wire_reply_end(struct api_wire_writer *w, bool more, uint64_t cursor, void **ret_buf,
                       size_t *ret_len);
void api_wire_writer_free(struct api_wire_writer *w);
/* The reply to request ID of OP that it failed with R (negative errno), CODE and MESSAGE
 * (cut to fit). An R out of range travels as EIO, a CODE out of range as TP_ERROR_INTERNAL. */
int api_wire_encode_error(enum tp_api_op op, uint32_t id, int r, enum tp_error code,
                          const char *message, void **ret_buf, size_t *ret_len);

/* A reply as decoded: the fixed part, and the records, checked, in BODY (inside the
 * decoded buffer, which must outlive it). */
struct api_wire_reply {
	struct tp_api_reply w;
	const unsigned char *body;
	size_t body_len;
};

/* Decode the reply BUF of LEN bytes to request ID of OP asked at CURSOR (a listing's or a
 * diff's; 0 otherwise). On success, the call's result is 0 or -w.error. */
int api_wire_decode_reply(const void *buf, size_t len, enum tp_api_op op, uint32_t id,
                          uint64_t cursor, struct api_wire_reply *ret_rep);

/* The records of a decoded reply. Views handed to FN live as long as the call, their
 * strings in the buffer; the others copy, into what the caller frees as ops.h says
 * (ops_volume_view_clear, the image views' PUBLISHED). RET_VIEWS has room for w.count. */
int api_wire_get_volumes(const struct api_wire_reply *rep, ops_volume_fn fn, void *opaque);
int api_wire_get_volume(const struct api_wire_reply *rep, struct volume_view *ret_view);
int api_wire_get_children(const struct api_wire_reply *rep, ops_children_fn fn, void *opaque);
void api_wire_get_tenants(const struct api_wire_reply *rep, struct tenant_view *ret_views);
void api_wire_get_pool(const struct api_wire_reply *rep, struct pool_view *ret_view);
int api_wire_get_images(const struct api_wire_reply *rep, struct image_view *ret_views);
void api_wire_get_grants(const struct api_wire_reply *rep, struct grant_view *ret_views);
void api_wire_get_principal(const struct api_wire_reply *rep, struct principal *ret_principal);
/* The metrics text, inside the buffer. */
const char *api_wire_get_text(const struct api_wire_reply *rep);
void api_wire_get_volume_usage(const struct api_wire_reply *rep, struct volume_usage *ret_usage);
/* A diff's page: the volume's size, and its changes into RET_CHANGES. */
void api_wire_get_changes(const struct api_wire_reply *rep, uint64_t *ret_size,
                          struct volume_change *ret_changes);

/* The parent's messages about the API process's sockets (struct tp_api_listen). Encode
 * OP (TP_API_LISTEN, with the principal P; TP_API_UNLISTEN, P NULL) for socket SOCKET into
 * RET (-EINVAL for a principal that is neither the admin's nor a tenant's with a positive id
 * and a valid name); decode one, -EBADMSG unless it is exactly such a message. */
int api_wire_encode_listen(uint16_t op, uint32_t socket, const struct principal *p,
                           struct tp_api_listen *ret);
int api_wire_decode_listen(const void *buf, size_t len, uint16_t *ret_op, uint32_t *ret_socket,
                           struct principal *ret_p);

#endif
