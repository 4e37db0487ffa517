/* The rules every thinproxy program applies to names and sizes a tenant sends.
 *
 * A name (tenant, volume, image) is 1 to 63 bytes of [a-z0-9._-], starting with a
 * letter or digit: no upper case, no '/', no NUL, no non-ASCII look-alikes, never "."
 * or "..". The same rule on every side means a name that passes here is safe in a
 * path, a URL, an SQL parameter and a log line alike.
 *
 * A size is a decimal integer of bytes with an optional binary suffix (K, M, G, T, P,
 * optionally followed by "iB" or "B"; lower case accepted), e.g. "10G" or "512MiB".
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
