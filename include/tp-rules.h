/* The rules every thinproxy program applies to names and sizes a tenant sends.
 *
 * A name (tenant, volume, image) is 1 to 63 bytes of [a-z0-9._-], starting with a
 * letter or digit: no upper case, no '/', no NUL, no non-ASCII look-alikes, never "."
 * or "..". The same rule on every side means a name that passes here is safe in a
 * path, a URL, an SQL parameter and a log line alike.
 *
 * A size is a decimal integer of bytes with an optional binary suffix (K, M, G, T, P,
 * optionally followed by "iB" or "B"; lower case accepted), e.g. "10G" or "512MiB".
 *
 * A label is a KEY = VALUE pair of a volume's, free text chosen by its tenant (containerd's
 * labels, for one): the key 1 to 4095 bytes, key and value together at most 4096 (the
 * limit containerd puts on its own), both valid UTF-8 without a NUL byte, the key also
 * without control characters. At most 64 labels on a volume.
 */
#ifndef TP_RULES_H
#define TP_RULES_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define TP_NAME_MAX 63

/* Volume sizes: at least one 64 KiB chunk, at most 2^24 GiB (what dm-thin's 64-bit
 * sector counts and a 2^32-block pool can still describe sensibly). */
#define TP_SIZE_MIN (UINT64_C(64) << 10)
#define TP_SIZE_MAX (UINT64_C(1) << 54)

/* Is NAME a valid tenant, volume or image name? */
static inline bool tp_name_valid(const char *name)
{
	size_t i;

	if (name == NULL)
		return false;
	for (i = 0; name[i] != '\0'; i++) {
		char c = name[i];
		bool alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');

		if (i >= TP_NAME_MAX)
			return false;
		if (!alnum && (i == 0 || (c != '.' && c != '_' && c != '-')))
			return false;
	}
	return i > 0;
}

#define TP_LABELS_MAX      64
#define TP_LABEL_BYTES_MAX 4096 /* key and value together */

/* A label, or one entry of a change to a set of labels or of a filter by labels: where a
 * use says so, VALUE NULL means "remove KEY" (a patch) or "has KEY, whatever its value"
 * (a filter). */
struct tp_label {
	const char *key;
	const char *value;
};

/* The length of the UTF-8 sequence at S (at most LEN bytes) and its code point in
 * *RET_CP, or 0 if S does not start with a valid one (overlong forms, surrogates and
 * code points past U+10FFFF are not valid). */
static inline size_t tp_utf8_next(const char *s, size_t len, uint32_t *ret_cp)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t n;
	uint32_t cp;

	if (len == 0)
		return 0;
	if (u[0] < 0x80) {
		*ret_cp = u[0];
		return 1;
	}
	if (u[0] >= 0xc2 && u[0] <= 0xdf) {
		n = 2;
		cp = u[0] & 0x1f;
	} else if (u[0] >= 0xe0 && u[0] <= 0xef) {
		n = 3;
		cp = u[0] & 0x0f;
	} else if (u[0] >= 0xf0 && u[0] <= 0xf4) {
		n = 4;
		cp = u[0] & 0x07;
	} else {
		return 0;
	}
	if (len < n)
		return 0;
	for (size_t i = 1; i < n; i++) {
		if ((u[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (u[i] & 0x3f);
	}
	if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
	    (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	*ret_cp = cp;
	return n;
}

/* Why S (LEN bytes) cannot be a label's key (KEY) or value (!KEY), or NULL if it can. */
static inline const char *tp_label_text_invalid(const char *s, size_t len, bool key)
{
	uint32_t cp;
	size_t n;

	for (size_t i = 0; i < len; i += n) {
		n = tp_utf8_next(s + i, len - i, &cp);
		if (n == 0)
			return key ? "the key is not valid UTF-8" : "the value is not valid UTF-8";
		if (cp == 0)
			return key ? "the key contains a NUL byte"
			           : "the value contains a NUL byte";
		/* C0, DEL and C1 controls: nothing a key is named with, and what would move
		 * a terminal's cursor in a listing. */
		if (key && (cp < 0x20 || (cp >= 0x7f && cp <= 0x9f)))
			return "the key contains a control character";
	}
	return NULL;
}

/* Why KEY (KEY_LEN bytes) = VALUE (VALUE_LEN bytes; NULL for none, as in a removal or a
 * filter by key) is not a valid label, or NULL if it is one. */
static inline const char *tp_label_invalid(const char *key, size_t key_len, const char *value,
                                           size_t value_len)
{
	const char *why;

	if (key_len == 0)
		return "the key is empty";
	if (key_len > TP_LABEL_BYTES_MAX - 1)
		return "the key is over 4095 bytes";
	if (value != NULL && key_len + value_len > TP_LABEL_BYTES_MAX)
		return "key and value are over 4096 bytes together";
	why = tp_label_text_invalid(key, key_len, true);
	if (why == NULL && value != NULL)
		why = tp_label_text_invalid(value, value_len, false);
	return why;
}

/* Parse a size in bytes from S into *RET_SIZE. Returns 0, -EINVAL for anything that is
 * not a size, or -ERANGE if it overflows 64 bits. No bounds beyond that: callers check
 * TP_SIZE_MIN/TP_SIZE_MAX or their own. */
static inline int tp_parse_size(const char *s, uint64_t *ret_size)
{
	uint64_t v = 0;
	unsigned shift = 0;
	const char *p = s;

	if (s == NULL || *s < '0' || *s > '9')
		return -EINVAL;
	for (; *p >= '0' && *p <= '9'; p++) {
		if (v > (UINT64_MAX - (uint64_t)(*p - '0')) / 10)
			return -ERANGE;
		v = v * 10 + (uint64_t)(*p - '0');
	}
	switch (*p) {
	case '\0':
		break;
	case 'k':
	case 'K':
		shift = 10;
		break;
	case 'm':
	case 'M':
		shift = 20;
		break;
	case 'g':
	case 'G':
		shift = 30;
		break;
	case 't':
	case 'T':
		shift = 40;
		break;
	case 'p':
	case 'P':
		shift = 50;
		break;
	case 'b':
	case 'B':
		if (p[1] != '\0')
			return -EINVAL;
		break;
	default:
		return -EINVAL;
	}
	if (shift) {
		p++;
		if (p[0] == 'i' && (p[1] == 'B' || p[1] == 'b'))
			p += 2;
		else if (p[0] == 'B' || p[0] == 'b')
			p++;
		if (*p != '\0')
			return -EINVAL;
		if (v > (UINT64_MAX >> shift))
			return -ERANGE;
		v <<= shift;
	}
	*ret_size = v;
	return 0;
}

/* Format SIZE in human binary units ("1.5G", "512M", "100") into BUF. */
static inline const char *tp_format_size(uint64_t size, char *buf, size_t len)
{
	static const char units[] = "KMGTP";
	unsigned u = 0;
	uint64_t scale = 1;

	if (size < 1024) {
		snprintf(buf, len, "%" PRIu64, size);
		return buf;
	}
	while (u < 4 && size >= (scale << 20)) {
		scale <<= 10;
		u++;
	}
	scale <<= 10;
	if (size % scale == 0) {
		snprintf(buf, len, "%" PRIu64 "%c", size / scale, units[u]);
		return buf;
	}
	/* From 1023.95 units up, one decimal would round to "1024.0K" what is "1.0M". Below
	 * P, sizes are under 2^50 and the division exact, so this is printf's rounding. */
	if (u < 4 && size >= (20479 * scale + 19) / 20) {
		scale <<= 10;
		u++;
	}
	snprintf(buf, len, "%.1f%c", (double)size / (double)scale, units[u]);
	return buf;
}

#endif
