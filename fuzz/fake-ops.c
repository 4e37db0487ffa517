/* daemon/ops.h for the REST fuzz target: see fake-ops.h. Tenants alice (id 1) and bob
 * (id 2); alice owns "base" (committed) and "work" (a snapshot of base, labelled), bob owns
 * "layer1" (labelled), granted to alice; the image "debian" is published to all. */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fake-ops.h"

#define CHECK(cond)                       \
	do {                              \
		if (!(cond))              \
			__builtin_trap(); \
	} while (0)

const struct principal fake_ops_admin = {.admin = true};
const struct principal fake_ops_alice = {.tenant_id = 1, .tenant = "alice"};
struct principal fake_ops_socket;
bool fake_ops_body_used;

static const struct {
	const char *name;
	int64_t id;
} tenants[] = {{"alice", 1}, {"bob", 2}};

static const struct {
	int64_t tenant_id; /* 0: an image */
	const char *name, *parent, *state;
	uint64_t size;
	uint32_t thin_id;
	struct tp_label labels[2]; /* as many as have a key */
} volumes[] = {
    {1, "base", "", "committed", UINT64_C(1) << 30, 1, {{NULL, NULL}}},
    {1,
     "work",
     "base",
     "ready",
     UINT64_C(2) << 30,
     2,
     {{"containerd.io/gc.root", "2023-11-14"}, {"tier", "\"gold\"\n"}}},
    {2, "layer1", "", "ready", UINT64_C(1) << 20, 3, {{"bobs.secret", "bob only"}}},
    {0, "debian", "", "image", UINT64_C(4) << 30, 4, {{NULL, NULL}}},
};

static size_t volume_labels(int i)
{
	size_t n = 0;

	while (n < 2 && volumes[i].labels[n].key != NULL)
		n++;
	return n;
}

static char errmsg[512];
static enum tp_error errcode;

const char *ops_error_message(void)
{
	return errmsg;
}

enum tp_error ops_error_code(int r)
{
	return errcode != TP_ERROR_NONE ? errcode : tp_error_of_errno(r);
}

static int __attribute__((format(printf, 3, 4)))
fail_code(enum tp_error code, int r, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(errmsg, sizeof errmsg, fmt, ap);
	va_end(ap);
	errcode = code;
	return r;
}

#define fail(r, ...) fail_code(TP_ERROR_NONE, (r), __VA_ARGS__)

/* Every string an op gets is a C string: reading it all is what ASan checks here. */
static void check_string(const char *s)
{
	CHECK(s != NULL);
	CHECK(strlen(s) < 64 * 1024);
}

/* Admin-only operations: only ever on the admin socket. */
static void admin_only(void)
{
	CHECK(fake_ops_socket.admin);
}

/* A volume operation for P: on a tenant's socket exactly that socket's principal; on the
 * admin socket the host itself or a tenant named in the URL (ops_principal_for_tenant). */
static void check_principal(const struct principal *p)
{
	CHECK(p != NULL);
	if (!fake_ops_socket.admin) {
		CHECK(memcmp(p, &fake_ops_socket, sizeof *p) == 0);
		return;
	}
	CHECK(p->admin);
	CHECK(memchr(p->tenant, '\0', sizeof p->tenant) != NULL);
	if (p->tenant_id == 0) {
		CHECK(p->tenant[0] == '\0');
		return;
	}
	CHECK(p->tenant_id >= 1 && p->tenant_id <= 2);
	CHECK(strcmp(p->tenant, tenants[p->tenant_id - 1].name) == 0);
}

static int tenant_index(const char *name)
{
	if (!tp_name_valid(name))
		return fail_code(TP_ERROR_INVALID_NAME, -EINVAL,
		                 "invalid tenant name \"%.80s\": use 1-63 of a-z 0-9 . _ -, "
		                 "starting with a letter or digit",
		                 name);
	for (size_t i = 0; i < sizeof tenants / sizeof tenants[0]; i++)
		if (strcmp(tenants[i].name, name) == 0)
			return (int)i;
	return fail(-ENOENT, "no such tenant: %s", name);
}

static int volume_index(int64_t tenant_id, const char *name)
{
	for (size_t i = 0; i < sizeof volumes / sizeof volumes[0]; i++)
		if (volumes[i].tenant_id == tenant_id && strcmp(volumes[i].name, name) == 0)
			return (int)i;
	return -ENOENT;
}

static int own_volume(const struct principal *p, const char *name)
{
	int i;

	check_principal(p);
	check_string(name);
	if (!tp_name_valid(name))
		return fail_code(TP_ERROR_INVALID_NAME, -EINVAL,
		                 "invalid volume name \"%.80s\": use 1-63 of a-z 0-9 . _ -, "
		                 "starting with a letter or digit",
		                 name);
	i = volume_index(p->tenant_id, name);
	return i < 0 ? fail(-ENOENT, "no such volume: %s", name) : i;
}

static int check_size(uint64_t size)
{
	if (size < TP_SIZE_MIN || size > TP_SIZE_MAX || size % 512)
		return fail_code(TP_ERROR_INVALID_SIZE, -EINVAL,
		                 "invalid size %" PRIu64
		                 ": a multiple of 512 bytes from 64 KiB to 16 PiB",
		                 size);
	return 0;
}

/* Every label api.c hands an operation is valid, at most TP_LABELS_MAX, without a value
 * only where ALLOW_NULL (a patch, a filter), and no key twice but in a filter (FILTER). */
static void check_labels(const struct label_list *l, bool allow_null, bool filter)
{
	if (l == NULL)
		return;
	CHECK(l->l != NULL && l->n <= TP_LABELS_MAX);
	for (size_t i = 0; i < l->n; i++) {
		const char *k = l->l[i].key, *v = l->l[i].value;

		check_string(k);
		CHECK(allow_null || v != NULL);
		if (v != NULL)
			check_string(v);
		CHECK(tp_label_invalid(k, strlen(k), v, v ? strlen(v) : 0) == NULL);
		for (size_t j = 0; j < i && !filter; j++)
			CHECK(strcmp(k, l->l[j].key) != 0);
	}
}

/* V's labels: a copy of the N of L (NULL values left out), as ops.c makes them. */
static int set_view_labels(struct volume_view *v, const struct tp_label *l, size_t n)
{
	size_t len = 0, k = 0;
	char *p;

	for (size_t i = 0; i < n; i++)
		if (l[i].value != NULL)
			len += strlen(l[i].key) + strlen(l[i].value) + 2;
	v->labels = malloc(n * sizeof *v->labels + len + 1);
	if (v->labels == NULL)
		return -ENOMEM;
	p = (char *)(v->labels + n);
	for (size_t i = 0; i < n; i++) {
		if (l[i].value == NULL)
			continue;
		v->labels[k].key = strcpy(p, l[i].key);
		p += strlen(p) + 1;
		v->labels[k++].value = strcpy(p, l[i].value);
		p += strlen(p) + 1;
	}
	v->n_labels = k;
	return 0;
}

void ops_volume_view_clear(struct volume_view *view)
{
	if (view == NULL)
		return;
	free(view->labels);
	view->labels = NULL;
	view->n_labels = 0;
}

static void make_view(const struct principal *p, int i, struct volume_view *v)
{
	memset(v, 0, sizeof *v);
	snprintf(v->name, sizeof v->name, "%s%s", volumes[i].tenant_id ? "" : "images/",
	         volumes[i].name);
	snprintf(v->owner, sizeof v->owner, "%s",
	         volumes[i].tenant_id ? tenants[volumes[i].tenant_id - 1].name : "");
	snprintf(v->parent, sizeof v->parent, "%s", volumes[i].parent);
	v->size = volumes[i].size;
	v->used = volumes[i].size / 3;
	v->state = volumes[i].state;
	v->created = 1700000000;
	v->updated = 1700000300;
	v->writable = volumes[i].tenant_id == p->tenant_id && strcmp(v->state, "ready") == 0;
	v->thin_id = volumes[i].thin_id;
	/* Only the owner sees them; out of memory, a view without them. */
	if (volumes[i].tenant_id != 0 && volumes[i].tenant_id == p->tenant_id)
		set_view_labels(v, volumes[i].labels, volume_labels(i));
}

static void new_view(const struct principal *p, const char *name, const char *parent, uint64_t size,
                     struct volume_view *v)
{
	memset(v, 0, sizeof *v);
	snprintf(v->name, sizeof v->name, "%s", name);
	snprintf(v->owner, sizeof v->owner, "%s", p->tenant);
	snprintf(v->parent, sizeof v->parent, "%s", parent ? parent : "");
	v->size = size;
	v->state = "ready";
	v->created = 1700000001;
	v->updated = 1700000001;
	v->writable = true;
	v->thin_id = 9;
}

int ops_principal_for_tenant(const char *name, struct principal *ret_principal)
{
	int i;

	admin_only();
	check_string(name);
	if (!tp_name_valid(name))
		return fail(-ENOENT, "no such tenant: %.80s", name);
	i = tenant_index(name);
	if (i < 0)
		return i;
	memset(ret_principal, 0, sizeof *ret_principal);
	ret_principal->admin = true;
	ret_principal->tenant_id = tenants[i].id;
	snprintf(ret_principal->tenant, sizeof ret_principal->tenant, "%s", tenants[i].name);
	return 0;
}

/* Whether volume I has every label of FILTER. */
static bool matches(int i, const struct label_list *filter)
{
	for (size_t f = 0; f < filter->n; f++) {
		size_t k;

		for (k = 0; k < volume_labels(i); k++)
			if (strcmp(volumes[i].labels[k].key, filter->l[f].key) == 0 &&
			    (filter->l[f].value == NULL ||
			     strcmp(volumes[i].labels[k].value, filter->l[f].value) == 0))
				break;
		if (k == volume_labels(i))
			return false;
	}
	return true;
}

int ops_volume_list(const struct principal *p, const struct label_list *filter, ops_volume_fn fn,
                    void *opaque)
{
	struct volume_view view;
	int r;

	check_principal(p);
	check_labels(filter, true, true);
	for (size_t i = 0; i < sizeof volumes / sizeof volumes[0]; i++) {
		if (filter != NULL
		        ? volumes[i].tenant_id != p->tenant_id || !matches((int)i, filter)
		        : volumes[i].tenant_id != p->tenant_id &&
		              (p->tenant_id == 0 || volumes[i].tenant_id != 0))
			continue;
		make_view(p, (int)i, &view);
		r = fn(&view, opaque);
		ops_volume_view_clear(&view);
		if (r < 0)
			return r;
	}
	return 0;
}

int ops_volume_info(const struct principal *p, const char *name, struct volume_view *ret_view)
{
	int i = own_volume(p, name);

	if (i < 0)
		return i;
	make_view(p, i, ret_view);
	return 0;
}

/* Every fake volume has one snapshot, of tenant "bob". */
int ops_volume_children(const struct principal *p, const char *name, ops_children_fn fn,
                        void *opaque)
{
	int i = own_volume(p, name);

	return i < 0 ? i : fn("bob", 1, opaque);
}

int ops_volume_create(const struct principal *p, const char *name, uint64_t size,
                      const struct label_list *labels, struct volume_view *ret_view)
{
	int r = own_volume(p, name);

	fake_ops_body_used = true;
	check_labels(labels, false, false);
	if (r == -EINVAL)
		return r;
	if (r >= 0)
		return fail(-EEXIST, "volume %s exists", name);
	if ((r = check_size(size)) < 0)
		return r;
	if (size > (UINT64_C(1) << 40))
		return fail(-EDQUOT, "quota exceeded: at most 1 TiB in all for tenant %s",
		            p->tenant);
	new_view(p, name, NULL, size, ret_view);
	return labels ? set_view_labels(ret_view, labels->l, labels->n) : 0;
}

/* The volume REF names for P: its own, the image, or bob's volume granted to alice. */
static int resolve_ref(const struct principal *p, const char *ref)
{
	const char *slash;
	int i = -ENOENT;

	check_principal(p);
	check_string(ref);
	slash = strchr(ref, '/');
	if (slash == NULL)
		return own_volume(p, ref);
	if (strncmp(ref, "images/", 7) == 0)
		i = volume_index(0, slash + 1);
	else if (strncmp(ref, "bob/", 4) == 0 && p->tenant_id == 1)
		i = volume_index(2, slash + 1);
	return i < 0 ? fail(-ENOENT, "no such volume: %.130s", ref) : i;
}

int ops_volume_snapshot(const struct principal *p, const char *name, const char *parent,
                        uint64_t size, const struct label_list *labels,
                        struct volume_view *ret_view)
{
	int i, r;

	fake_ops_body_used = true;
	i = resolve_ref(p, parent);
	if (i < 0)
		return i;
	if (size == 0)
		size = volumes[i].size;
	if (size < volumes[i].size)
		return fail_code(TP_ERROR_INVALID_SIZE, -EINVAL,
		                 "invalid size %" PRIu64
		                 ": a snapshot of %s needs at least %" PRIu64 " bytes",
		                 size, parent, volumes[i].size);
	r = ops_volume_create(p, name, size, labels, ret_view);
	if (r == 0)
		snprintf(ret_view->parent, sizeof ret_view->parent, "%s", parent);
	return r;
}

/* Every fake volume differs from whatever it is compared with in two ranges: its first
 * 64 KiB hold data, and 128 KiB from its middle on read zeroes. */
int ops_volume_diff(const struct principal *p, const char *name, const char *from,
                    struct volume_change **ret_changes, size_t *ret_n, uint64_t *ret_size)
{
	struct volume_change *c;
	int i = own_volume(p, name), j;

	if (i < 0)
		return i;
	j = resolve_ref(p, from);
	if (j < 0)
		return j;
	c = calloc(2, sizeof *c);
	if (c == NULL)
		return -ENOMEM;
	c[0] = (struct volume_change){.offset = 0, .length = 65536, .data = true};
	c[1] = (struct volume_change){.offset = volumes[i].size / 2, .length = 131072};
	*ret_changes = c;
	*ret_n = 2;
	*ret_size = volumes[i].size;
	return 0;
}

/* A fake volume maps 192 KiB; a snapshot shares 128 KiB of it with its parent. */
int ops_volume_usage(const struct principal *p, const char *name, struct volume_usage *ret_usage)
{
	int i = own_volume(p, name);
	uint64_t shared;

	if (i < 0)
		return i;
	shared = volumes[i].parent[0] != '\0' ? 131072 : 0;
	*ret_usage =
	    (struct volume_usage){.mapped = 196608, .exclusive = 196608 - shared, .shared = shared};
	return 0;
}

int ops_volume_commit(const struct principal *p, const char *name, const char *new_name,
                      const struct label_list *labels, struct volume_view *ret_view)
{
	int i = own_volume(p, name);
	bool rename;

	if (new_name != NULL || labels != NULL)
		fake_ops_body_used = true;
	if (i < 0)
		return i;
	check_labels(labels, false, false);
	if (new_name != NULL) {
		check_string(new_name);
		if (!tp_name_valid(new_name))
			return fail_code(
			    TP_ERROR_INVALID_NAME, -EINVAL,
			    "invalid volume name \"%.80s\": use 1-63 of a-z 0-9 . _ -, "
			    "starting with a letter or digit",
			    new_name);
	}
	rename = new_name != NULL && strcmp(new_name, name) != 0;
	if (strcmp(volumes[i].state, "committed") == 0 && (rename || labels != NULL))
		return fail(-EROFS, "volume %s is read-only (committed)", name);
	if (rename && volume_index(p->tenant_id, new_name) >= 0)
		return fail(-EEXIST, "volume %s exists", new_name);
	make_view(p, i, ret_view);
	if (rename)
		snprintf(ret_view->name, sizeof ret_view->name, "%s", new_name);
	ret_view->state = "committed";
	ret_view->writable = false;
	if (labels != NULL) {
		ops_volume_view_clear(ret_view);
		return set_view_labels(ret_view, labels->l, labels->n);
	}
	return 0;
}

int ops_volume_set_labels(const struct principal *p, const char *name,
                          const struct label_list *patch, struct volume_view *ret_view)
{
	struct tp_label merged[2 + TP_LABELS_MAX];
	size_t n = 0, kept = 0;
	int i = own_volume(p, name);

	fake_ops_body_used = true;
	if (i < 0)
		return i;
	check_labels(patch, true, false);
	CHECK(patch != NULL);
	for (size_t k = 0; k < volume_labels(i); k++)
		merged[n++] = volumes[i].labels[k];
	for (size_t f = 0; f < patch->n; f++) {
		size_t k;

		for (k = 0; k < n && strcmp(merged[k].key, patch->l[f].key) != 0; k++)
			;
		if (k == n)
			n++;
		merged[k] = patch->l[f];
	}
	for (size_t k = 0; k < n; k++)
		kept += merged[k].value != NULL;
	if (kept > TP_LABELS_MAX)
		return fail(-EINVAL, "too many labels: volume %s would have %zu, at most %d", name,
		            kept, TP_LABELS_MAX);
	make_view(p, i, ret_view);
	ops_volume_view_clear(ret_view);
	return set_view_labels(ret_view, merged, n);
}

int ops_volume_resize(const struct principal *p, const char *name, uint64_t size,
                      struct volume_view *ret_view)
{
	int i = own_volume(p, name), r;

	fake_ops_body_used = true;
	if (i < 0)
		return i;
	if ((r = check_size(size)) < 0)
		return r;
	if (strcmp(volumes[i].state, "ready") != 0)
		return fail(-EROFS, "volume %s is read-only (committed)", name);
	if (size < volumes[i].size)
		return fail_code(TP_ERROR_INVALID_SIZE, -EINVAL,
		                 "invalid size %" PRIu64 ": volumes only grow (%s is %" PRIu64
		                 " bytes)",
		                 size, name, volumes[i].size);
	make_view(p, i, ret_view);
	ret_view->size = size;
	return 0;
}

int ops_volume_remove(const struct principal *p, const char *name)
{
	int i = own_volume(p, name);

	if (i < 0)
		return i;
	if (strcmp(volumes[i].name, "base") == 0)
		return fail(-EBUSY, "volume %s is busy: it has snapshots", name);
	return 0;
}

static void make_tenant_view(int i, struct tenant_view *t)
{
	memset(t, 0, sizeof *t);
	snprintf(t->name, sizeof t->name, "%s", tenants[i].name);
	t->uid = t->gid = 100000 * (uint32_t)tenants[i].id;
	t->nbd_uid = 200000 + (uint32_t)tenants[i].id;
	t->max_size = UINT64_C(1) << 40;
	t->volumes = 2;
	t->size = UINT64_C(3) << 30;
	t->used = UINT64_C(1) << 30;
	t->nbd = "running";
	t->created = 1600000000;
}

int ops_usage(const struct principal *p, struct tenant_view *ret_view)
{
	check_principal(p);
	if (p->tenant_id == 0)
		return fail(-ENOENT, "no such tenant");
	make_tenant_view((int)p->tenant_id - 1, ret_view);
	return 0;
}

static void apply_spec(const struct tenant_spec *s, struct tenant_view *t)
{
	if (s->has_uid)
		t->uid = s->uid;
	if (s->has_gid)
		t->gid = s->gid;
	if (s->has_max_volumes)
		t->max_volumes = s->max_volumes;
	if (s->has_max_size)
		t->max_size = s->max_size;
	if (s->has_max_used)
		t->max_used = s->max_used;
}

int ops_tenant_add(const struct tenant_spec *spec, struct tenant_view *ret_view)
{
	fake_ops_body_used = true;
	admin_only();
	check_string(spec->name);
	if (!tp_name_valid(spec->name))
		return fail_code(TP_ERROR_INVALID_NAME, -EINVAL,
		                 "invalid tenant name \"%.80s\": use 1-63 of a-z 0-9 . _ -, "
		                 "starting with a letter or digit",
		                 spec->name);
	if (strcmp(spec->name, "images") == 0)
		return fail_code(TP_ERROR_INVALID_NAME, -EINVAL,
		                 "invalid tenant name \"images\": reserved for images");
	if (tenant_index(spec->name) >= 0)
		return fail(-EEXIST, "tenant %s exists", spec->name);
	make_tenant_view(0, ret_view);
	snprintf(ret_view->name, sizeof ret_view->name, "%s", spec->name);
	ret_view->max_size = 0;
	apply_spec(spec, ret_view);
	return 0;
}

int ops_tenant_get(const char *name, struct tenant_view *ret_view)
{
	int i;

	admin_only();
	check_string(name);
	if ((i = tenant_index(name)) < 0)
		return i;
	make_tenant_view(i, ret_view);
	return 0;
}

int ops_tenant_list(struct tenant_view **ret_views, size_t *ret_n)
{
	struct tenant_view *views = calloc(2, sizeof *views);

	admin_only();
	if (views == NULL)
		return -ENOMEM;
	make_tenant_view(0, &views[0]);
	make_tenant_view(1, &views[1]);
	*ret_views = views;
	*ret_n = 2;
	return 0;
}

int ops_tenant_update(const struct tenant_spec *spec, struct tenant_view *ret_view)
{
	int i;

	fake_ops_body_used = true;
	admin_only();
	check_string(spec->name);
	if ((i = tenant_index(spec->name)) < 0)
		return i;
	make_tenant_view(i, ret_view);
	apply_spec(spec, ret_view);
	return 0;
}

int ops_tenant_remove(const char *name, bool force)
{
	int i;

	admin_only();
	check_string(name);
	if ((i = tenant_index(name)) < 0)
		return i;
	if (!force)
		return fail(-EBUSY,
		            "tenant %s is busy: it owns 2 volumes (use force to remove them)",
		            name);
	return 0;
}

int ops_pool_status(struct pool_view *ret_view)
{
	admin_only();
	memset(ret_view, 0, sizeof *ret_view);
	snprintf(ret_view->name, sizeof ret_view->name, "thinproxy-pool");
	ret_view->transaction_id = 42;
	ret_view->block_size = 65536;
	ret_view->data_used = UINT64_C(1) << 30;
	ret_view->data_total = UINT64_C(100) << 30;
	ret_view->meta_used = UINT64_C(1) << 20;
	ret_view->meta_total = UINT64_C(128) << 20;
	ret_view->meta_limit = UINT64_C(1) << 30;
	ret_view->meta_state = "ok";
	ret_view->mode = "rw";
	ret_view->min_free = UINT64_C(1) << 30;
	ret_view->volumes = 4;
	return 0;
}

static int image_view(int i, bool published_all, struct image_view *im)
{
	memset(im, 0, sizeof *im);
	make_view(&fake_ops_admin, i, &im->volume);
	im->published_all = published_all;
	if (!published_all) {
		im->published = calloc(1, sizeof *im->published);
		if (im->published == NULL)
			return -ENOMEM;
		snprintf(im->published[0], sizeof im->published[0], "alice");
		im->n_published = 1;
	}
	return 0;
}

static int image_by_name(const char *name)
{
	int i;

	check_string(name);
	if (!tp_name_valid(name))
		return fail_code(TP_ERROR_INVALID_NAME, -EINVAL, "invalid image name \"%.80s\"",
		                 name);
	i = volume_index(0, name);
	return i < 0 ? fail(-ENOENT, "no such image: %s", name) : i;
}

int ops_image_import(const char *name, const char *path, struct image_view *ret_view)
{
	fake_ops_body_used = true;
	admin_only();
	check_string(name);
	check_string(path);
	if (path[0] != '/')
		return fail(-EINVAL, "invalid image source: an absolute path on the host");
	if (!tp_name_valid(name))
		return fail_code(TP_ERROR_INVALID_NAME, -EINVAL,
		                 "invalid volume name \"%.80s\": use 1-63 of a-z 0-9 . _ -, "
		                 "starting with a letter or digit",
		                 name);
	if (volume_index(0, name) >= 0)
		return fail(-EEXIST, "volume %s exists", name);
	/* The real one opens PATH here; nothing is read in the fuzzer. */
	return image_view(3, false, ret_view);
}

int ops_image_publish(const char *name, const char *tenant, struct image_view *ret_view)
{
	int i, r;

	fake_ops_body_used = true;
	admin_only();
	if ((i = image_by_name(name)) < 0)
		return i;
	if (tenant) {
		check_string(tenant);
		if ((r = tenant_index(tenant)) < 0)
			return r;
	}
	return image_view(i, tenant == NULL, ret_view);
}

int ops_image_list(struct image_view **ret_views, size_t *ret_n)
{
	struct image_view *views = calloc(1, sizeof *views);

	admin_only();
	if (views == NULL)
		return -ENOMEM;
	if (image_view(3, false, &views[0]) < 0) {
		free(views);
		return -ENOMEM;
	}
	*ret_views = views;
	*ret_n = 1;
	return 0;
}

void ops_image_views_free(struct image_view *views, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(views[i].published);
	free(views);
}

int ops_image_remove(const char *name)
{
	int i;

	admin_only();
	i = image_by_name(name);
	return i < 0 ? i : 0;
}

static int grant_target(const struct grant_view *g)
{
	int owner, to;

	fake_ops_body_used = true;
	admin_only();
	CHECK(memchr(g->owner, '\0', sizeof g->owner) != NULL);
	CHECK(memchr(g->volume, '\0', sizeof g->volume) != NULL);
	CHECK(memchr(g->to, '\0', sizeof g->to) != NULL);
	if ((owner = tenant_index(g->owner)) < 0)
		return owner;
	if ((to = tenant_index(g->to)) < 0)
		return to;
	if (owner == to)
		return fail(-EINVAL, "invalid grant: %s already owns %s", g->to, g->volume);
	if (!tp_name_valid(g->volume))
		return fail_code(TP_ERROR_INVALID_NAME, -EINVAL, "invalid volume name \"%.80s\"",
		                 g->volume);
	if (volume_index(tenants[owner].id, g->volume) < 0)
		return fail(-ENOENT, "no such volume: %s/%s", g->owner, g->volume);
	return 0;
}

int ops_grant(const struct grant_view *g)
{
	return grant_target(g);
}

int ops_revoke(const struct grant_view *g)
{
	int r = grant_target(g);

	if (r == 0 && strcmp(g->volume, "layer1") != 0)
		return fail(-ENOENT, "no such grant: %s/%s to %s", g->owner, g->volume, g->to);
	return r;
}

int ops_grant_list(struct grant_view **ret_views, size_t *ret_n)
{
	struct grant_view *views = calloc(1, sizeof *views);

	admin_only();
	if (views == NULL)
		return -ENOMEM;
	snprintf(views[0].owner, sizeof views[0].owner, "bob");
	snprintf(views[0].volume, sizeof views[0].volume, "layer1");
	snprintf(views[0].to, sizeof views[0].to, "alice");
	*ret_views = views;
	*ret_n = 1;
	return 0;
}

int ops_metrics(char **ret_text)
{
	admin_only();
	*ret_text = strdup("# TYPE thinproxy_volumes gauge\nthinproxy_volumes 4\n");
	return *ret_text ? 0 : -ENOMEM;
}
