/* Fuzz target: include/tp-rules.h, the name and size rules every program applies to what a
 * tenant sends. Each input is taken as one C string (up to its first NUL) and checked
 * against an independent reading of the rules:
 *   - tp_name_valid accepts exactly 1..63 bytes of [a-z0-9._-] that start with [a-z0-9];
 *   - tp_parse_size accepts exactly DIGITS[K|M|G|T|P[iB|B]] or DIGITS[B] (any case), with
 *     the value of DIGITS times the unit when that fits 64 bits, -ERANGE when it does not;
 *   - tp_format_size of every parsed size (and of the input's first 8 bytes as a number)
 *     fits its buffer, reads back exactly when it prints a whole number of units, and is
 *     within rounding of the size, in the largest unit that keeps it below 1024, otherwise. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tp-rules.h"

#define CHECK(cond)                       \
	do {                              \
		if (!(cond))              \
			__builtin_trap(); \
	} while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The name rule, written out again. */
static bool name_ok(const char *s)
{
	size_t n = strlen(s);

	if (n < 1 || n > TP_NAME_MAX)
		return false;
	if (!((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= '0' && s[0] <= '9')))
		return false;
	return strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789._-") == n;
}

/* The size grammar, written out again: 0 with *RET_VALUE, -EINVAL or -ERANGE. A run of
 * digits that overflows is -ERANGE whatever follows it; a bad suffix after digits that fit
 * is -EINVAL. */
static int size_ok(const char *s, uint64_t *ret_value)
{
	static const char units[] = "kmgtp";
	size_t digits = strspn(s, "0123456789");
	const char *suffix = s + digits, *rest, *u;
	unsigned __int128 v = 0;
	unsigned shift = 0;

	if (digits == 0)
		return -EINVAL;
	for (size_t i = 0; i < digits; i++) {
		v = v * 10 + (unsigned)(s[i] - '0');
		if (v > UINT64_MAX)
			return -ERANGE;
	}
	if (suffix[0] != '\0' && (suffix[0] | 0x20) == 'b') {
		if (suffix[1] != '\0')
			return -EINVAL;
	} else if (suffix[0] != '\0') {
		u = strchr(units, suffix[0] | 0x20);
		if (u == NULL || *u == '\0')
			return -EINVAL;
		shift = 10 * (unsigned)(u - units + 1);
		rest = suffix + 1;
		if (rest[0] == 'i' && (rest[1] | 0x20) == 'b')
			rest += 2;
		else if ((rest[0] | 0x20) == 'b')
			rest++;
		if (rest[0] != '\0')
			return -EINVAL;
	}
	if ((v << shift) > UINT64_MAX)
		return -ERANGE;
	*ret_value = (uint64_t)(v << shift);
	return 0;
}

/* Format SIZE and check what comes out. */
static void check_format(uint64_t size)
{
	char buf[32], *end;
	uint64_t back;
	size_t n;

	tp_format_size(size, buf, sizeof buf);
	n = strlen(buf);
	CHECK(n > 0 && n < sizeof buf);
	if (strchr(buf, '.') == NULL) {
		/* A whole number of units: reads back exactly. */
		CHECK(tp_parse_size(buf, &back) == 0);
		CHECK(back == size);
		return;
	}
	/* "%.1f" of the size in the largest unit (K..P) not above it. */
	{
		static const char units[] = "KMGTP";
		double m = strtod(buf, &end), scale;
		const char *u = strchr(units, *end);

		CHECK(u != NULL && *u != '\0' && end[1] == '\0');
		scale = (double)(UINT64_C(1) << (10 * (u - units + 1)));
		/* Within rounding of one decimal (and of double precision). */
		CHECK(m * scale >= (double)size - 0.05 * scale - (double)size * 1e-12);
		CHECK(m * scale <= (double)size + 0.05 * scale + (double)size * 1e-12);
		/* And in the right unit: never "1024.0K" for what is "1.0M". */
		CHECK(*u == 'P' || m < 1024.0);
		CHECK(m >= 1.0);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1);
	uint64_t v = UINT64_C(0xdeadbeef), want = 0, raw;
	int r, w;

	if (s == NULL)
		return 0;
	memcpy(s, data, size);
	s[size] = '\0';

	CHECK(tp_name_valid(s) == name_ok(s));
	if (tp_name_valid(s))
		CHECK(strlen(s) <= TP_NAME_MAX);

	r = tp_parse_size(s, &v);
	w = size_ok(s, &want);
	CHECK(r == 0 || r == -EINVAL || r == -ERANGE);
	CHECK(r == w);
	if (r == 0) {
		CHECK(v == want);
		check_format(v);
	} else {
		CHECK(v == UINT64_C(0xdeadbeef)); /* untouched on failure */
	}

	if (size >= sizeof raw) {
		memcpy(&raw, data, sizeof raw);
		check_format(raw);
		/* Into a buffer of any length: truncated, never overrun. */
		{
			size_t len = 1 + (size_t)(data[size - 1] % 24);
			char *small = malloc(len);

			if (small != NULL) {
				tp_format_size(raw, small, len);
				CHECK(strlen(small) < len);
				free(small);
			}
		}
	}
	free(s);
	return 0;
}
