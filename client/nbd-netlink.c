/* The kernel's NBD device over generic netlink, with libnl-genl-3 (see nbd-netlink.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>

#include <linux/nbd-netlink.h>
#include <netlink/genl/ctrl.h>
#include <netlink/genl/genl.h>
#include <netlink/netlink.h>

#include "nbd-netlink.h"

struct nbd_nl {
	struct nl_sock *sk;
	int family;
};

/* What a transaction's answers said. */
struct answer {
	bool done;
	int err; /* the kernel's -errno, or 0 */
	int index;
	bool have_index;
	int status_index; /* which device's status is wanted */
	bool found, connected;
	/* For nbd_nl_dead_links(). */
	int dead_index;
	bool dead;
};

/* A libnl error (NLE_*, negative) as -errno, for failures that did not come from the
 * kernel's answer, which keeps its own errno. */
static int nl_errno(int nle)
{
	switch (-nle) {
	case NLE_NOMEM:
		return -ENOMEM;
	case NLE_AGAIN:
		return -EAGAIN;
	case NLE_INTR:
		return -EINTR;
	case NLE_OBJ_NOTFOUND:
		return -ENOENT;
	case NLE_PERM:
	case NLE_NOACCESS:
		return -EPERM;
	case NLE_BUSY:
		return -EBUSY;
	case NLE_INVAL:
		return -EINVAL;
	case NLE_NODEV:
		return -ENODEV;
	case NLE_OPNOTSUPP:
		return -EOPNOTSUPP;
	default:
		return -EIO;
	}
}

int nbd_nl_open(struct nbd_nl **ret_nl)
{
	struct nbd_nl *nl;
	int r;

	nl = calloc(1, sizeof *nl);
	if (nl == NULL)
		return -ENOMEM;
	nl->sk = nl_socket_alloc();
	if (nl->sk == NULL) {
		free(nl);
		return -ENOMEM;
	}
	r = genl_connect(nl->sk);
	if (r < 0) {
		nbd_nl_close(nl);
		return nl_errno(r);
	}
	/* Keepers exec nothing, but an attach must not leak this into anything. */
	fcntl(nl_socket_get_fd(nl->sk), F_SETFD, FD_CLOEXEC);
	nl->family = genl_ctrl_resolve(nl->sk, NBD_GENL_FAMILY_NAME);
	if (nl->family < 0) {
		r = nl->family == -NLE_OBJ_NOTFOUND ? -ENOENT : nl_errno(nl->family);
		nbd_nl_close(nl);
		return r;
	}
	*ret_nl = nl;
	return 0;
}

void nbd_nl_close(struct nbd_nl *nl)
{
	if (nl == NULL)
		return;
	nl_socket_free(nl->sk);
	free(nl);
}

/* The u32 attribute A, or false if it is not one. */
static bool get_u32(const struct nlattr *a, uint32_t *ret_value)
{
	if (a == NULL || nla_len(a) < (int)sizeof(uint32_t))
		return false;
	*ret_value = nla_get_u32(a);
	return true;
}

/* NBD_ATTR_DEVICE_LIST of a status answer: find the device asked for. */
static void parse_device_list(struct nlattr *list, struct answer *a)
{
	struct nlattr *item;
	int rem;

	nla_for_each_nested(item, list, rem)
	{
		struct nlattr *attrs[NBD_DEVICE_ATTR_MAX + 1];
		uint32_t index;

		if (nla_type(item) != NBD_DEVICE_ITEM ||
		    nla_parse_nested(attrs, NBD_DEVICE_ATTR_MAX, item, NULL) < 0)
			continue;
		if (!get_u32(attrs[NBD_DEVICE_INDEX], &index) || (int)index != a->status_index)
			continue;
		a->found = true;
		a->connected = attrs[NBD_DEVICE_CONNECTED] != NULL &&
		               nla_len(attrs[NBD_DEVICE_CONNECTED]) >= 1 &&
		               nla_get_u8(attrs[NBD_DEVICE_CONNECTED]) != 0;
	}
}

/* A message from the kernel: the answer to a request, or a notification. */
static int on_valid(struct nl_msg *msg, void *arg)
{
	struct nlattr *attrs[NBD_ATTR_MAX + 1];
	struct nlmsghdr *nlh = nlmsg_hdr(msg);
	struct genlmsghdr *gnlh = genlmsg_hdr(nlh);
	struct answer *a = arg;
	uint32_t index;

	if (genlmsg_parse(nlh, 0, attrs, NBD_ATTR_MAX, NULL) < 0)
		return NL_SKIP;
	switch (gnlh->cmd) {
	case NBD_CMD_CONNECT:
		if (get_u32(attrs[NBD_ATTR_INDEX], &index)) {
			a->index = (int)index;
			a->have_index = true;
		}
		break;
	case NBD_CMD_STATUS:
		if (attrs[NBD_ATTR_DEVICE_LIST] != NULL)
			parse_device_list(attrs[NBD_ATTR_DEVICE_LIST], a);
		break;
	case NBD_CMD_LINK_DEAD:
		if (get_u32(attrs[NBD_ATTR_INDEX], &index) && (int)index == a->dead_index)
			a->dead = true;
		break;
	}
	return NL_OK;
}

static int on_error(struct sockaddr_nl *nla, struct nlmsgerr *e, void *arg)
{
	struct answer *a = arg;

	(void)nla;
	a->err = e->error < 0 ? e->error : -EIO;
	a->done = true;
	return NL_STOP;
}

static int on_ack(struct nl_msg *msg, void *arg)
{
	struct answer *a = arg;

	(void)msg;
	a->done = true;
	return NL_STOP;
}

/* Send MSG (freed here) and read the answers into *A until the kernel's ack or error. */
static int transact(struct nbd_nl *nl, struct nl_msg *msg, struct answer *a)
{
	struct nl_cb *cb = nl_cb_alloc(NL_CB_DEFAULT);
	int r;

	if (cb == NULL) {
		nlmsg_free(msg);
		return -ENOMEM;
	}
	nl_cb_set(cb, NL_CB_VALID, NL_CB_CUSTOM, on_valid, a);
	nl_cb_set(cb, NL_CB_ACK, NL_CB_CUSTOM, on_ack, a);
	nl_cb_err(cb, NL_CB_CUSTOM, on_error, a);
	r = nl_send_auto(nl->sk, msg);
	nlmsg_free(msg);
	while (r >= 0 && !a->done)
		r = nl_recvmsgs(nl->sk, cb);
	nl_cb_put(cb);
	if (r < 0 && !a->done)
		return nl_errno(r);
	return a->err;
}

/* A request CMD to the family, or NULL if out of memory. */
static struct nl_msg *request(struct nbd_nl *nl, uint8_t cmd)
{
	struct nl_msg *msg = nlmsg_alloc();

	if (msg != NULL && genlmsg_put(msg, NL_AUTO_PORT, NL_AUTO_SEQ, nl->family, 0, 0, cmd,
	                               NBD_GENL_VERSION) == NULL) {
		nlmsg_free(msg);
		return NULL;
	}
	return msg;
}

/* NBD_ATTR_SOCKETS: one NBD_SOCK_ITEM with an NBD_SOCK_FD per socket. */
static int put_sockets(struct nl_msg *msg, const int *fds, size_t n_fds)
{
	struct nlattr *socks = nla_nest_start(msg, NBD_ATTR_SOCKETS);

	if (socks == NULL)
		return -ENOMEM;
	for (size_t i = 0; i < n_fds; i++) {
		struct nlattr *item = nla_nest_start(msg, NBD_SOCK_ITEM);

		if (item == NULL || nla_put_u32(msg, NBD_SOCK_FD, (uint32_t)fds[i]) < 0)
			return -ENOMEM;
		nla_nest_end(msg, item);
	}
	nla_nest_end(msg, socks);
	return 0;
}

int nbd_nl_connect(struct nbd_nl *nl, const struct nbd_nl_device *dev, int *ret_index)
{
	struct nl_msg *msg = request(nl, NBD_CMD_CONNECT);
	struct answer a = {0};
	int r;

	if (msg == NULL)
		return -ENOMEM;
	/* "Any free device" is the absence of an index: since Linux 5.19 the kernel refuses
	 * an explicit -1 as out of range. */
	if ((dev->index >= 0 && nla_put_u32(msg, NBD_ATTR_INDEX, (uint32_t)dev->index) < 0) ||
	    nla_put_u64(msg, NBD_ATTR_SIZE_BYTES, dev->size) < 0 ||
	    nla_put_u64(msg, NBD_ATTR_BLOCK_SIZE_BYTES, dev->block_size) < 0 ||
	    nla_put_u64(msg, NBD_ATTR_SERVER_FLAGS, dev->server_flags) < 0 ||
	    nla_put_u64(msg, NBD_ATTR_TIMEOUT, dev->timeout) < 0 ||
	    nla_put_u64(msg, NBD_ATTR_DEAD_CONN_TIMEOUT, dev->dead_conn_timeout) < 0 ||
	    (dev->backend != NULL &&
	     nla_put_string(msg, NBD_ATTR_BACKEND_IDENTIFIER, dev->backend) < 0) ||
	    put_sockets(msg, dev->fds, dev->n_fds) < 0) {
		nlmsg_free(msg);
		return -ENOMEM;
	}
	r = transact(nl, msg, &a);
	if (r < 0)
		return r;
	if (!a.have_index)
		return -EBADMSG;
	*ret_index = a.index;
	return 0;
}

int nbd_nl_reconfigure(struct nbd_nl *nl, int index, const char *backend, const int *fds,
                       size_t n_fds)
{
	struct nl_msg *msg = request(nl, NBD_CMD_RECONFIGURE);
	struct answer a = {0};

	if (msg == NULL)
		return -ENOMEM;
	if (nla_put_u32(msg, NBD_ATTR_INDEX, (uint32_t)index) < 0 ||
	    (backend != NULL && nla_put_string(msg, NBD_ATTR_BACKEND_IDENTIFIER, backend) < 0) ||
	    put_sockets(msg, fds, n_fds) < 0) {
		nlmsg_free(msg);
		return -ENOMEM;
	}
	return transact(nl, msg, &a);
}

int nbd_nl_disconnect(struct nbd_nl *nl, int index)
{
	struct nl_msg *msg = request(nl, NBD_CMD_DISCONNECT);
	struct answer a = {0};

	if (msg == NULL)
		return -ENOMEM;
	if (nla_put_u32(msg, NBD_ATTR_INDEX, (uint32_t)index) < 0) {
		nlmsg_free(msg);
		return -ENOMEM;
	}
	return transact(nl, msg, &a);
}

int nbd_nl_status(struct nbd_nl *nl, int index, bool *ret_connected)
{
	struct nl_msg *msg = request(nl, NBD_CMD_STATUS);
	struct answer a = {.status_index = index};
	int r;

	if (msg == NULL)
		return -ENOMEM;
	if (nla_put_u32(msg, NBD_ATTR_INDEX, (uint32_t)index) < 0) {
		nlmsg_free(msg);
		return -ENOMEM;
	}
	r = transact(nl, msg, &a);
	if (r < 0)
		return r;
	if (!a.found)
		return -ENODEV;
	*ret_connected = a.connected;
	return 0;
}

int nbd_nl_subscribe(struct nbd_nl *nl)
{
	int group, r;

	group = genl_ctrl_resolve_grp(nl->sk, NBD_GENL_FAMILY_NAME, NBD_GENL_MCAST_GROUP_NAME);
	if (group < 0)
		return nl_errno(group);
	/* A larger buffer makes an overflow unlikely when many connections die at once;
	 * one is still handled. */
	nl_socket_set_buffer_size(nl->sk, 1 << 18, 0);
	r = nl_socket_add_membership(nl->sk, group);
	if (r == 0)
		r = nl_socket_set_nonblocking(nl->sk);
	return r < 0 ? nl_errno(r) : 0;
}

int nbd_nl_fd(const struct nbd_nl *nl)
{
	return nl_socket_get_fd(nl->sk);
}

/* Notifications carry no sequence number of ours. */
static int any_seq(struct nl_msg *msg, void *arg)
{
	(void)msg;
	(void)arg;
	return NL_OK;
}

int nbd_nl_dead_links(struct nbd_nl *nl, int index, bool *ret_dead)
{
	struct nl_cb *cb = nl_cb_alloc(NL_CB_DEFAULT);
	struct answer a = {.dead_index = index};
	int r;

	if (cb == NULL)
		return -ENOMEM;
	nl_cb_set(cb, NL_CB_SEQ_CHECK, NL_CB_CUSTOM, any_seq, NULL);
	nl_cb_set(cb, NL_CB_VALID, NL_CB_CUSTOM, on_valid, &a);
	for (;;) {
		r = nl_recvmsgs(nl->sk, cb);
		if (r == -NLE_AGAIN) {
			r = 0;
			break;
		}
		/* ENOBUFS: the kernel dropped notifications we had no room for. Whatever
		 * else went wrong may have lost one too. */
		if (r == -NLE_NOMEM) {
			a.dead = true;
			continue;
		}
		if (r < 0) {
			a.dead = true;
			r = nl_errno(r);
			break;
		}
	}
	nl_cb_put(cb);
	*ret_dead = a.dead;
	return r;
}
