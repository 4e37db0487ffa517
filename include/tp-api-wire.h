/* The wire between thinproxyd's root parent and its API process (issue 21): how the
 * unprivileged process that parses tenants' HTTP and JSON (daemon/api.c) asks the parent
 * to run one operation of daemon/ops.h, and how the parent answers. daemon/api-wire.c
 * encodes and decodes it; nothing here does I/O.
 *
 * Transport: an AF_UNIX SOCK_SEQPACKET socketpair the parent makes before it starts the
 * API process. Packets keep their boundaries, so a message always starts at the start of
 * a packet and a peer cannot shift the parent's reading by a stray byte, and a closed
 * peer is a clean end of file. A message is one struct tp_api_header, a fixed part and a
 * variable tail (labels, listing entries, text), TP_API_MESSAGE_MAX bytes at most: the
 * header's LENGTH counts all of it. A volume's labels alone can be 64 x 4 KiB, more than
 * one datagram of a default socket buffer, so a message travels as packets of exactly
 * TP_API_PACKET_MAX bytes, but the last (1 to TP_API_PACKET_MAX bytes): the receiver
 * reads LENGTH from the first and knows how many bytes each further packet must hold.
 *
 * Every message is in host byte order (both ends are one program on one host). A request
 * is a struct tp_api_request and, if it carries labels, N_LABELS labels (struct
 * tp_api_label, the key, a NUL, the value and a NUL if the label has one). A reply is a
 * struct tp_api_reply and COUNT records of the kind its operation answers with. Strings
 * in fixed fields end with a NUL followed by zero bytes only; labels' key and value are
 * what tp_label_invalid accepts; names are valid by tp_name_valid, references by
 * tp_broker_ref_valid; every flag, reserved field and field the operation does not use
 * is zero; every count is within its maximum and the message's length is exactly what
 * its counts add up to. Anything else is malformed (-EBADMSG): the parent stops the API
 * process, the API process stops.
 *
 * Who asks: SOCKET is the index of the API socket the request came in on, in the order
 * the parent passed the sockets; the parent holds the principal of each and trusts
 * nothing else. ACTING_FOR is "" or, only from the admin socket and only for the
 * operations that take a principal, the tenant the admin acts for (/v1/tenants/T/...):
 * the parent looks that tenant up itself. Operations without a principal (tenants,
 * images, grants, pool, metrics) are the admin's: the parent refuses them from any other
 * socket. An API process that is taken over can still name any index it was given, so
 * the parent should give each API process only the sockets it serves.
 *
 * Requests carry an ID the reply repeats, so that api.c's several threads may share the
 * socketpair. A reply carries the operation's error: ERROR (a positive errno, what the
 * ops_* call returned), CODE (its enum tp_error) and MESSAGE (ops_error_message), and
 * nothing else; or ERROR 0, CODE 0, an empty MESSAGE and the records.
 *
 * Listings are paged: a request gives CURSOR, the number of entries of the listing the
 * asker already has (0 to start), and a reply carries at most TP_API_PAGE_MAX entries,
 * the CURSOR the next page starts at (the asked cursor plus COUNT) and TP_API_MORE if
 * there may be more. A page with no entries has no TP_API_MORE. The parent runs the
 * listing again for every page, so a volume created or removed between two pages can
 * make a listing show another one twice or not at all.
 *
 * A diff is paged by bytes instead: CURSOR is the offset its changes go on from (0 to
 * start), a reply carries at most TP_API_CHANGES_MAX changes, in order, none overlapping
 * another, each within the volume's size and from CURSOR on (the parent cuts the one that
 * straddles it), and the CURSOR the next page starts at: the end of its last change, or
 * the asked cursor if it has none. Each page is a diff of its own metadata snapshot, so a
 * write between two pages shows in the later page if it falls there and not at all if it
 * falls before it: every byte is told of once, as one snapshot had it.
 *
 *   operation                request fields (beyond socket, id)     reply records
 *   VOLUME_LIST              acting_for, cursor, labels (filter)    page of volumes
 *   VOLUME_INFO              acting_for, name                       1 volume
 *   VOLUME_CHILDREN          acting_for, name, cursor               page of children
 *   VOLUME_CREATE            acting_for, name, size, labels (set)   1 volume
 *   VOLUME_SNAPSHOT          acting_for, name, target (parent       1 volume
 *                            reference), size, labels (set)
 *   VOLUME_COMMIT            acting_for, name, target (new name,    1 volume
 *                            TP_API_TARGET), labels (set)
 *   VOLUME_SET_LABELS        acting_for, name, labels (patch)       1 volume
 *   VOLUME_RESIZE            acting_for, name, size                 1 volume
 *   VOLUME_REMOVE            acting_for, name                       none
 *   USAGE                    acting_for                             1 tenant
 *   TENANT_ADD, _UPDATE      name, uid, gid, max_* and TP_API_HAS_* 1 tenant
 *   TENANT_GET               name                                   1 tenant
 *   TENANT_LIST              cursor                                 page of tenants
 *   TENANT_REMOVE            name, TP_API_FORCE                     none
 *   POOL_STATUS              nothing                                1 pool
 *   IMAGE_IMPORT             name, path                             1 image
 *   IMAGE_PUBLISH            name, target (tenant, TP_API_TARGET;   1 image
 *                            without it: to all)
 *   IMAGE_LIST               cursor                                 page of images
 *   IMAGE_REMOVE             name                                   none
 *   GRANT, REVOKE            owner, name (volume), target (to),     none
 *                            TP_API_WRITE
 *   GRANT_LIST               cursor                                 page of grants
 *   METRICS                  nothing                                1 text
 *   PRINCIPAL_FOR_TENANT     name                                   1 principal
 *   VOLUME_DIFF              acting_for, name, target (the          a diff's page of
 *                            reference to compare with), cursor     changes
 *   VOLUME_USAGE             acting_for, name                       1 volume usage
 *
 * Labels are given (TP_API_LABELS) or not (NULL in ops.h: none, or keep them); a set has
 * a value for each key and no key twice, a patch may have keys without a value (remove
 * it) and no key twice, a filter may have both. A volume record is a struct
 * tp_api_volume and its N_LABELS labels (a set); an image record a struct tp_api_volume
 * without labels, a struct tp_api_image and N_PUBLISHED tenant names of
 * TP_API_NAME_SIZE bytes; a text record a struct tp_api_text and TEXT_LEN bytes without
 * a NUL, then a NUL. A diff's reply holds a struct tp_api_diff (the volume's size) before
 * its COUNT struct tp_api_change records, each at least a byte long; a volume usage
 * record is a struct tp_api_volume_usage whose exclusive and shared bytes add up to
 * the mapped ones. States travel as indexes into the lists of daemon/api-wire.c.
 */
#ifndef TP_API_WIRE_H
#define TP_API_WIRE_H

#include <stdint.h>

#include "tp-rules.h"

#define TP_API_MAGIC   UINT32_C(0x54504157) /* "TPAW" */
#define TP_API_VERSION 1

/* A name and its NUL; a reference ("NAME", "images/NAME", "OWNER/NAME") and its NUL. */
#define TP_API_NAME_SIZE (TP_NAME_MAX + 1)
#define TP_API_REF_SIZE  (2 * TP_NAME_MAX + 2)
/* An image's source path and its NUL (PATH_MAX). */
#define TP_API_PATH_SIZE 4096
/* An error message and its NUL: what ops.c keeps of one. */
#define TP_API_MESSAGE_SIZE 512
/* The pool's name and its NUL (struct pool_view). */
#define TP_API_POOL_NAME_SIZE 128

/* Bounds: a message, the packets it travels in, a page of a listing, a page of a diff
 * (1.5 MiB of changes: a diff is taken anew for every page, so its pages are few), an
 * image's publications (one per tenant), the metrics text. */
#define TP_API_MESSAGE_MAX   (UINT32_C(4) << 20)
#define TP_API_PACKET_MAX    (UINT32_C(64) << 10)
#define TP_API_PAGE_MAX      256
#define TP_API_CHANGES_MAX   65536
#define TP_API_PUBLISHED_MAX 4096
#define TP_API_ERRNO_MAX     4095

enum tp_api_op {
	TP_API_VOLUME_LIST = 1,
	TP_API_VOLUME_INFO,
	TP_API_VOLUME_CHILDREN,
	TP_API_VOLUME_CREATE,
	TP_API_VOLUME_SNAPSHOT,
	TP_API_VOLUME_COMMIT,
	TP_API_VOLUME_SET_LABELS,
	TP_API_VOLUME_RESIZE,
	TP_API_VOLUME_REMOVE,
	TP_API_USAGE,
	TP_API_TENANT_ADD,
	TP_API_TENANT_GET,
	TP_API_TENANT_LIST,
	TP_API_TENANT_UPDATE,
	TP_API_TENANT_REMOVE,
	TP_API_POOL_STATUS,
	TP_API_IMAGE_IMPORT,
	TP_API_IMAGE_PUBLISH,
	TP_API_IMAGE_LIST,
	TP_API_IMAGE_REMOVE,
	TP_API_GRANT,
	TP_API_REVOKE,
	TP_API_GRANT_LIST,
	TP_API_METRICS,
	TP_API_PRINCIPAL_FOR_TENANT,
	TP_API_VOLUME_DIFF,
	TP_API_VOLUME_USAGE, /* the last */
};
#define TP_API_OP_MAX TP_API_VOLUME_USAGE
/* A reply's op: its request's, with this bit. */
#define TP_API_REPLY UINT16_C(0x8000)

/* Request flags. */
#define TP_API_LABELS          UINT32_C(0x01) /* labels given (N_LABELS may be 0) */
#define TP_API_TARGET          UINT32_C(0x02) /* commit: a new name; publish: a tenant */
#define TP_API_FORCE           UINT32_C(0x04) /* tenant removal */
#define TP_API_WRITE           UINT32_C(0x08) /* a write grant */
#define TP_API_HAS_UID         UINT32_C(0x10) /* tenant spec: which fields are given */
#define TP_API_HAS_GID         UINT32_C(0x20)
#define TP_API_HAS_MAX_VOLUMES UINT32_C(0x40)
#define TP_API_HAS_MAX_SIZE    UINT32_C(0x80)
#define TP_API_HAS_MAX_USED    UINT32_C(0x100)
/* Reply flags. */
#define TP_API_MORE UINT32_C(0x1) /* a listing may go on past this page */
/* Record flags. */
#define TP_API_WRITABLE    UINT32_C(0x1) /* volume: the asker may open it read-write */
#define TP_API_ALL         UINT32_C(0x1) /* image: published to every tenant */
#define TP_API_NEEDS_CHECK UINT32_C(0x1) /* pool */
#define TP_API_GRANT_WRITE UINT32_C(0x1) /* grant */
#define TP_API_DATA        UINT32_C(0x1) /* change: the volume holds data there, not zeroes */
#define TP_API_HAS_VALUE   UINT16_C(0x1) /* label: a value follows the key */

struct tp_api_header {
	uint32_t magic;
	uint16_t version;
	uint16_t op;     /* enum tp_api_op, | TP_API_REPLY in a reply */
	uint32_t id;     /* the asker's; the reply repeats it */
	uint32_t length; /* of the whole message, this header included */
};

struct tp_api_request {
	struct tp_api_header h;
	uint32_t socket; /* the index of the API socket asked on */
	uint32_t flags;
	char acting_for[TP_API_NAME_SIZE]; /* "" or the tenant the admin acts for */
	uint64_t size;
	uint64_t cursor;
	uint64_t max_volumes, max_size, max_used;
	uint32_t uid, gid;
	uint32_t n_labels;
	uint32_t reserved;
	char owner[TP_API_NAME_SIZE];
	char name[TP_API_NAME_SIZE];
	char target[TP_API_REF_SIZE];
	char path[TP_API_PATH_SIZE];
};

struct tp_api_label {
	uint16_t key_len;   /* bytes before the key's NUL */
	uint16_t value_len; /* bytes before the value's NUL; 0 without TP_API_HAS_VALUE */
	uint16_t flags;     /* TP_API_HAS_VALUE */
	uint16_t reserved;
};

struct tp_api_reply {
	struct tp_api_header h;
	uint32_t error; /* 0 or a positive errno up to TP_API_ERRNO_MAX */
	uint32_t code;  /* enum tp_error: 0 exactly when error is */
	char message[TP_API_MESSAGE_SIZE];
	uint32_t flags; /* TP_API_MORE */
	uint32_t count; /* records that follow */
	uint64_t cursor;
};

struct tp_api_volume {
	char name[TP_API_REF_SIZE];
	char owner[TP_API_NAME_SIZE]; /* "" for images */
	char parent[TP_API_REF_SIZE]; /* "" for none */
	uint64_t size, used;
	int64_t created, updated;
	uint32_t thin_id;
	uint16_t state; /* index into the volume states */
	uint16_t flags; /* TP_API_WRITABLE */
	uint32_t n_labels;
	uint32_t reserved;
};

struct tp_api_image {
	uint64_t imported;
	uint32_t flags; /* TP_API_ALL */
	uint32_t n_published;
};

#define TP_API_TENANT_ALLOCATED 0x1 /* allocated is given (else it is zero) */

struct tp_api_tenant {
	char name[TP_API_NAME_SIZE];
	uint32_t uid, gid, nbd_uid;
	uint16_t nbd;   /* index into the nbdkit states */
	uint16_t flags; /* TP_API_TENANT_ALLOCATED */
	uint64_t max_volumes, max_size, max_used;
	uint64_t volumes, size, used;
	int64_t created;
	uint64_t allocated;
};

struct tp_api_pool {
	char name[TP_API_POOL_NAME_SIZE];
	uint64_t transaction_id, block_size;
	uint64_t data_used, data_total, meta_used, meta_total, meta_limit;
	uint64_t min_free, volumes;
	uint16_t meta_state; /* index into the metadata states */
	uint16_t mode;       /* index into the pool modes */
	uint32_t flags;      /* TP_API_NEEDS_CHECK */
};

struct tp_api_grant {
	char owner[TP_API_NAME_SIZE], volume[TP_API_NAME_SIZE], to[TP_API_NAME_SIZE];
	uint32_t flags; /* TP_API_GRANT_WRITE */
	uint32_t reserved;
};

struct tp_api_child {
	char tenant[TP_API_NAME_SIZE];
	uint64_t n;
};

struct tp_api_principal {
	int64_t tenant_id;
	char tenant[TP_API_NAME_SIZE];
};

struct tp_api_text {
	uint32_t text_len;
	uint32_t reserved;
};

struct tp_api_diff {
	uint64_t size; /* the volume's: every change ends within it */
};

struct tp_api_change {
	uint64_t offset, length;
	uint32_t flags; /* TP_API_DATA */
	uint32_t reserved;
};

struct tp_api_volume_usage {
	uint64_t mapped, exclusive, shared; /* bytes */
};

/* The parent's word to the API process about its sockets, on a second SOCK_SEQPACKET
 * socketpair that only the parent writes and only the API process reads, one packet of
 * sizeof(struct tp_api_listen) bytes each. TP_API_LISTEN: serve the listening socket
 * that travels with the message (one fd, SCM_RIGHTS) as index SOCKET, for the principal
 * FLAGS (TP_API_ADMIN) or TENANT_ID and TENANT give; TP_API_UNLISTEN: stop serving socket
 * SOCKET (the principal fields are zero). An index is never given twice in the life of
 * one API process. The parent never reads this socketpair, so it opens nothing that the
 * API process could attack: it only tells the API process which indexes to ask with, and
 * still checks each request's index against its own list. */
#define TP_API_LISTEN   UINT16_C(0x4001)
#define TP_API_UNLISTEN UINT16_C(0x4002)
#define TP_API_ADMIN    UINT32_C(0x1)

struct tp_api_listen {
	struct tp_api_header h; /* op: TP_API_LISTEN or TP_API_UNLISTEN; id 0 */
	uint32_t socket;
	uint32_t flags; /* TP_API_ADMIN */
	int64_t tenant_id;
	char tenant[TP_API_NAME_SIZE];
};

_Static_assert(sizeof(struct tp_api_header) == 16, "header layout");
_Static_assert(sizeof(struct tp_api_request) == 4496, "request layout");
_Static_assert(sizeof(struct tp_api_label) == 8, "label layout");
_Static_assert(sizeof(struct tp_api_reply) == 552, "reply layout");
_Static_assert(sizeof(struct tp_api_volume) == 368, "volume layout");
_Static_assert(sizeof(struct tp_api_image) == 16, "image layout");
_Static_assert(sizeof(struct tp_api_tenant) == 144, "tenant layout");
_Static_assert(sizeof(struct tp_api_pool) == 208, "pool layout");
_Static_assert(sizeof(struct tp_api_grant) == 200, "grant layout");
_Static_assert(sizeof(struct tp_api_child) == 72, "child layout");
_Static_assert(sizeof(struct tp_api_principal) == 72, "principal layout");
_Static_assert(sizeof(struct tp_api_text) == 8, "text layout");
_Static_assert(sizeof(struct tp_api_diff) == 8, "diff layout");
_Static_assert(sizeof(struct tp_api_change) == 24, "change layout");
_Static_assert(sizeof(struct tp_api_volume_usage) == 24, "volume usage layout");
_Static_assert(sizeof(struct tp_api_listen) == 96, "listen layout");

/* The largest request: its fixed part and a full set of the largest labels. */
#define TP_API_REQUEST_MAX               \
	(sizeof(struct tp_api_request) + \
	 TP_LABELS_MAX * (sizeof(struct tp_api_label) + TP_LABEL_BYTES_MAX + 2))
/* The longest metrics text that fits in a reply. */
#define TP_API_TEXT_MAX \
	(TP_API_MESSAGE_MAX - sizeof(struct tp_api_reply) - sizeof(struct tp_api_text) - 1)

#endif
