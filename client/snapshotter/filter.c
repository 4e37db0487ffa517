/* containerd's filter language (see filter.h): a scanner that tells fields, values,
 * quoted strings, separators and operators apart as containerd's does, a parser for
 * "selector (',' selector)*", and the match. */
#include <errno.h>
#include <regex.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tp-cleanup.h"
#include "filter.h"

enum op { OP_PRESENT, OP_EQUAL, OP_NOT_EQUAL, OP_MATCHES };

struct selector {
	char **path;
	size_t n_path;
	enum op op;
	char *value;
	regex_t re;
	bool re_ok; /* OP_MATCHES: the expression compiled */
};

/* Selectors that must all hold. */
struct all {
	struct selector *selectors;
	size_t n;
};

struct filter {
	struct all *any; /* one of these must hold; none at all: everything matches */
	size_t n;
};

enum token {
	T_EOF,
	T_QUOTED,
	T_VALUE,
	T_FIELD,
	T_SEPARATOR,
	T_OPERATOR,
	T_ILLEGAL,
	T_OTHER, /* a character that starts nothing */
};

struct scanner {
	const char *input;
	size_t len, pos; /* pos: the next byte */
	bool value;      /* after an operator, a plain word is a value */
	const char *error;
};

/* The code point at S (LEN bytes left) and its width in *RET_WIDTH; -1 for invalid
 * UTF-8 (width 1). */
static int32_t decode(const unsigned char *s, size_t len, size_t *ret_width)
{
	static const int32_t min[] = {0, 0, 0x80, 0x800, 0x10000};
	size_t width;
	int32_t c;

	*ret_width = 1;
	if (s[0] < 0x80)
		return s[0];
	if (s[0] >= 0xc2 && s[0] <= 0xdf)
		width = 2, c = s[0] & 0x1f;
	else if (s[0] >= 0xe0 && s[0] <= 0xef)
		width = 3, c = s[0] & 0x0f;
	else if (s[0] >= 0xf0 && s[0] <= 0xf4)
		width = 4, c = s[0] & 0x07;
	else
		return -1;
	if (len < width)
		return -1;
	for (size_t i = 1; i < width; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return -1;
		c = c << 6 | (s[i] & 0x3f);
	}
	if (c < min[width] || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
		return -1;
	*ret_width = width;
	return c;
}

/* The character classes of containerd's scanner: white space as Go's unicode.IsSpace,
 * field characters, quotes, operator characters. */
static bool is_space(int32_t c)
{
	return c == ' ' || (c >= '\t' && c <= '\r') || c == 0x85 || c == 0xa0 || c == 0x1680 ||
	       (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f ||
	       c == 0x205f || c == 0x3000;
}

static bool is_field_char(int32_t c)
{
	return c == '_' || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
	       (c >= '0' && c <= '9');
}

static bool is_quote(int32_t c)
{
	return c == '/' || c == '|' || c == '"';
}

static bool is_operator_char(int32_t c)
{
	return c == '=' || c == '!' || c == '~';
}

/* A character of a plain value: anything printable but a comma or a space. */
static bool is_value_char(int32_t c)
{
	if (c == ',' || is_space(c))
		return false;
	if (c < 0x80)
		return c > ' ' && c < 0x7f;
	return c >= 0xa0;
}

/* The character at the scanner's position and its width; -2 at the end, -1 if it is
 * not one (invalid UTF-8, NUL), with the scanner's error set. */
static int32_t peek(struct scanner *s, size_t *ret_width)
{
	int32_t c;

	*ret_width = 0;
	if (s->pos >= s->len)
		return -2;
	c = decode((const unsigned char *)s->input + s->pos, s->len - s->pos, ret_width);
	if (c == 0 || c < 0) {
		if (s->error == NULL)
			s->error = c == 0 ? "unexpected null" : "rune error";
		return -1;
	}
	return c;
}

/* Step past the characters that PRED accepts. */
static void skip_while(struct scanner *s, bool (*pred)(int32_t))
{
	size_t w;
	int32_t c;

	while ((c = peek(s, &w)) >= 0 && pred(c))
		s->pos += w;
}

/* A quoted string that began with QUOTE, up to its closing quote; escapes are checked
 * as they go by. */
static bool scan_quoted(struct scanner *s, int32_t quote)
{
	bool ok = true;
	size_t w;
	int32_t c;

	for (;;) {
		c = peek(s, &w);
		if (c == -2 || c == -1 || c == '\n') {
			s->error = "quoted literal not terminated";
			return false;
		}
		s->pos += w;
		if (c == quote)
			return ok;
		if (c != '\\')
			continue;
		c = peek(s, &w);
		if (c < 0) {
			s->error = "quoted literal not terminated";
			return false;
		}
		s->pos += w;
		if (strchr("abfnrtv\\", (int)c) != NULL || c == quote)
			continue;
		{
			int digits = 0, base = 16;

			if (c >= '0' && c <= '7')
				digits = 2, base = 8;
			else if (c == 'x')
				digits = 2;
			else if (c == 'u')
				digits = 4;
			else if (c == 'U')
				digits = 8;
			else {
				s->error = "illegal escape sequence";
				ok = false;
				continue;
			}
			for (; digits > 0; digits--) {
				c = peek(s, &w);
				if (c < 0 || !(base == 8 ? c >= '0' && c <= '7'
				                         : (c >= '0' && c <= '9') ||
				                               (c >= 'a' && c <= 'f') ||
				                               (c >= 'A' && c <= 'F')))
					break;
				s->pos += w;
			}
			if (digits > 0) {
				s->error = "illegal numeric escape sequence";
				ok = false;
			}
		}
	}
}

/* The next token, its text at *RET_START for *RET_LEN bytes. */
static enum token scan(struct scanner *s, size_t *ret_start, size_t *ret_len)
{
	size_t w;
	int32_t c;

	for (;;) {
		c = peek(s, &w);
		*ret_start = s->pos;
		*ret_len = 0;
		if (c == -2)
			return T_EOF;
		if (c == -1)
			return T_ILLEGAL;
		s->pos += w;
		if (!is_space(c))
			break;
	}
	if (is_quote(c)) {
		bool ok = scan_quoted(s, c);

		*ret_len = s->pos - *ret_start;
		return ok ? T_QUOTED : T_ILLEGAL;
	}
	if (c == ',' || c == '.') {
		s->value = false;
		*ret_len = 1;
		return T_SEPARATOR;
	}
	if (is_operator_char(c)) {
		skip_while(s, is_operator_char);
		s->value = true;
		*ret_len = s->pos - *ret_start;
		return T_OPERATOR;
	}
	if (s->value) {
		skip_while(s, is_value_char);
		s->value = false;
		*ret_len = s->pos - *ret_start;
		return T_VALUE;
	}
	if (is_field_char(c)) {
		skip_while(s, is_field_char);
		*ret_len = s->pos - *ret_start;
		return T_FIELD;
	}
	*ret_len = w;
	return T_OTHER;
}

/* The next token without taking it. */
static enum token lookahead(struct scanner *s, char *ret_char)
{
	struct scanner saved = *s;
	size_t start, len;
	enum token t = scan(s, &start, &len);

	*ret_char = len > 0 ? s->input[start] : '\0';
	*s = saved;
	return t;
}

/* Append the UTF-8 encoding of C to OUT (at *N). */
static void encode(int32_t c, char *out, size_t *n)
{
	if (c < 0x80) {
		out[(*n)++] = (char)c;
	} else if (c < 0x800) {
		out[(*n)++] = (char)(0xc0 | c >> 6);
		out[(*n)++] = (char)(0x80 | (c & 0x3f));
	} else if (c < 0x10000) {
		out[(*n)++] = (char)(0xe0 | c >> 12);
		out[(*n)++] = (char)(0x80 | ((c >> 6) & 0x3f));
		out[(*n)++] = (char)(0x80 | (c & 0x3f));
	} else {
		out[(*n)++] = (char)(0xf0 | c >> 18);
		out[(*n)++] = (char)(0x80 | ((c >> 12) & 0x3f));
		out[(*n)++] = (char)(0x80 | ((c >> 6) & 0x3f));
		out[(*n)++] = (char)(0x80 | (c & 0x3f));
	}
}

/* The value of hex digit C, or -1. */
static int hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* The string that quoted token Q (LEN bytes, quotes included) stands for, in Go's
 * string-literal escapes, in a new string *RET; -EINVAL if it is not a valid one. */
static int unquote(const char *q, size_t len, char **ret)
{
	char quote = q[0], *out;
	size_t n = 0, i = 1;

	if (len < 2 || q[len - 1] != quote)
		return -EINVAL;
	out = malloc(len * 2 + 1);
	if (out == NULL)
		return -ENOMEM;
	while (i < len - 1) {
		char c = q[i];

		if (c == quote || c == '\n')
			goto bad;
		if (c != '\\') {
			out[n++] = c;
			i++;
			continue;
		}
		if (i + 1 >= len - 1)
			goto bad;
		c = q[i + 1];
		i += 2;
		switch (c) {
		case 'a':
			out[n++] = '\a';
			break;
		case 'b':
			out[n++] = '\b';
			break;
		case 'f':
			out[n++] = '\f';
			break;
		case 'n':
			out[n++] = '\n';
			break;
		case 'r':
			out[n++] = '\r';
			break;
		case 't':
			out[n++] = '\t';
			break;
		case 'v':
			out[n++] = '\v';
			break;
		case '\\':
			out[n++] = '\\';
			break;
		case 'x':
		case 'u':
		case 'U': {
			int digits = c == 'x' ? 2 : c == 'u' ? 4 : 8;
			uint32_t v = 0; /* \U has 32 bits: unsigned */

			if (i + (size_t)digits > len - 1)
				goto bad;
			for (int d = 0; d < digits; d++) {
				int h = hex_value(q[i + (size_t)d]);

				if (h < 0)
					goto bad;
				v = v << 4 | (uint32_t)h;
			}
			i += (size_t)digits;
			if (c == 'x')
				out[n++] = (char)v; /* a byte, which may make invalid UTF-8 */
			else if (v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
				goto bad;
			else
				encode((int32_t)v, out, &n);
			break;
		}
		default:
			if (c >= '0' && c <= '7') {
				int v = c - '0';

				if (i + 2 > len - 1)
					goto bad;
				for (int d = 0; d < 2; d++) {
					if (q[i + (size_t)d] < '0' || q[i + (size_t)d] > '7')
						goto bad;
					v = v << 3 | (q[i + (size_t)d] - '0');
				}
				if (v > 255)
					goto bad;
				i += 2;
				out[n++] = (char)v;
			} else if (c == quote && (c == '"' || c == '/' || c == '|')) {
				out[n++] = c;
			} else {
				goto bad;
			}
		}
	}
	out[n] = '\0';
	*ret = out;
	return 0;
bad:
	free(out);
	return -EINVAL;
}

/* What a regular expression may cost regcomp, in regex_cost's units, and how long it may
 * be: a filter comes from containerd, and glibc's regcomp copies an expression once for
 * each repetition that a bound or a '+' asks for, which nesting multiplies ("a+++...+"
 * took gigabytes). containerd's own expressions (Go's RE2) cost nothing like that. */
#define REGEX_COST_MAX  4096
#define REGEX_DEPTH_MAX 32
#define REGEX_LEN_MAX   1024

/* Add B to *A, saturating at SIZE_MAX. */
static void add_sat(size_t *a, size_t b)
{
	*a = *a > SIZE_MAX - b ? SIZE_MAX : *a + b;
}

/* A times B, saturating at SIZE_MAX. */
static size_t mul_sat(size_t a, size_t b)
{
	return b != 0 && a > SIZE_MAX / b ? SIZE_MAX : a * b;
}

/* An upper bound on the nodes regcomp makes of the extended expression RE: an atom is one,
 * a group the sum of what it holds, x{m,n} counts x n times (or m, without n), x+ twice;
 * SIZE_MAX for what is too long, too deep or costs more than REGEX_COST_MAX. */
static size_t regex_cost(const char *re)
{
	size_t total[REGEX_DEPTH_MAX + 1], last[REGEX_DEPTH_MAX + 1];
	int depth = 0;

	if (strlen(re) > REGEX_LEN_MAX)
		return SIZE_MAX;
	total[0] = last[0] = 0;
	for (const char *p = re; *p != '\0'; p++) {
		size_t times = 0;

		switch (*p) {
		case '(':
			if (++depth > REGEX_DEPTH_MAX)
				return SIZE_MAX;
			total[depth] = last[depth] = 0;
			continue;
		case ')':
			if (depth == 0)
				break; /* a literal ')' */
			last[depth - 1] = total[depth];
			add_sat(&last[depth - 1], 1);
			depth--;
			add_sat(&total[depth], last[depth]);
			if (total[depth] > REGEX_COST_MAX)
				return SIZE_MAX;
			continue;
		case '|':
			last[depth] = 0;
			add_sat(&total[depth], 1);
			continue;
		case '+':
			times = 2;
			break;
		case '*':
		case '?':
			times = 1;
			break;
		case '{': {
			char *end;
			unsigned long m = strtoul(p + 1, &end, 10), n = m;

			if (*end == ',')
				n = end[1] == '}' ? m : strtoul(end + 1, &end, 10);
			if (*end == '}') {
				times = (n > m ? n : m) + 1;
				p = end;
			}
			break;
		}
		case '\\':
			if (p[1] != '\0')
				p++;
			break;
		case '[':
			/* A bracket expression is one atom: "[]...]" and "[^]...]" hold a ']'. */
			p++;
			if (*p == '^')
				p++;
			if (*p == ']')
				p++;
			while (*p != '\0' && *p != ']')
				p++;
			if (*p == '\0')
				return SIZE_MAX;
			break;
		}
		if (times > 0) {
			/* The last atom or group, repeated: TIMES copies where there was one. */
			add_sat(&total[depth], mul_sat(last[depth], times - 1));
			last[depth] = mul_sat(last[depth], times);
			add_sat(&total[depth], 1);
		} else {
			last[depth] = 1;
			add_sat(&total[depth], 1);
		}
		if (total[depth] > REGEX_COST_MAX)
			return SIZE_MAX;
	}
	/* An open group: regcomp refuses it, and the filter matches nothing. */
	return depth == 0 ? total[0] : 0;
}

struct parser {
	struct scanner s;
	char *reason;
	size_t reason_len;
};

static int parse_error(struct parser *p, size_t pos, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Say what is wrong at byte POS of the filter; returns -EINVAL. */
static int parse_error(struct parser *p, size_t pos, const char *fmt, ...)
{
	char message[160];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(message, sizeof message, fmt, ap);
	va_end(ap);
	snprintf(p->reason, p->reason_len, "invalid filter \"%s\" at byte %zu: %s", p->s.input, pos,
	         message);
	return -EINVAL;
}

/* The LEN bytes at S as a new string, or NULL. */
static char *copy(const char *s, size_t len)
{
	return strndup(s, len);
}

/* field := quoted ("..." only) | [A-Za-z0-9_]+ */
static int parse_field(struct parser *p, char **ret)
{
	size_t start, len;
	enum token t = scan(&p->s, &start, &len);
	int r;

	switch (t) {
	case T_FIELD:
		*ret = copy(p->s.input + start, len);
		return *ret != NULL ? 0 : -ENOMEM;
	case T_QUOTED:
		if (p->s.input[start] != '"')
			return parse_error(p, start, "invalid quote encountered");
		r = unquote(p->s.input + start, len, ret);
		return r == -EINVAL ? parse_error(p, start, "unquoting failed") : r;
	case T_ILLEGAL:
		return parse_error(p, start, "%s", p->s.error ? p->s.error : "illegal input");
	default:
		return parse_error(p, start, "expected field or quoted");
	}
}

/* Free what SEL holds. */
static void selector_free(struct selector *sel)
{
	for (size_t i = 0; i < sel->n_path; i++)
		free(sel->path[i]);
	free(sel->path);
	free(sel->value);
	if (sel->re_ok)
		regfree(&sel->re);
}

/* selector := fieldpath (operator value)? */
static int parse_selector(struct parser *p, struct selector *sel)
{
	size_t start, len;
	enum token t;
	char next;
	int r;

	/* fieldpath := field ('.' field)* */
	for (;;) {
		char **grown = reallocarray(sel->path, sel->n_path + 1, sizeof *grown);

		if (grown == NULL)
			return -ENOMEM;
		sel->path = grown;
		r = parse_field(p, &sel->path[sel->n_path]);
		if (r < 0)
			return r;
		sel->n_path++;
		if (lookahead(&p->s, &next) != T_SEPARATOR || next != '.')
			break;
		scan(&p->s, &start, &len);
	}

	t = lookahead(&p->s, &next);
	if (t == T_EOF || (t == T_SEPARATOR && next == ',')) {
		sel->op = OP_PRESENT;
		return 0;
	}
	t = scan(&p->s, &start, &len);
	if (t == T_ILLEGAL)
		return parse_error(p, start, "%s", p->s.error ? p->s.error : "illegal input");
	if (t != T_OPERATOR)
		return parse_error(p, start, "expected an operator (\"==\"|\"!=\"|\"~=\")");
	if (len == 2 && memcmp(p->s.input + start, "==", 2) == 0)
		sel->op = OP_EQUAL;
	else if (len == 2 && memcmp(p->s.input + start, "!=", 2) == 0)
		sel->op = OP_NOT_EQUAL;
	else if (len == 2 && memcmp(p->s.input + start, "~=", 2) == 0)
		sel->op = OP_MATCHES;
	else
		return parse_error(p, start, "unsupported operator \"%.*s\"", (int)len,
		                   p->s.input + start);

	t = scan(&p->s, &start, &len);
	switch (t) {
	case T_VALUE:
	case T_FIELD:
		sel->value = copy(p->s.input + start, len);
		if (sel->value == NULL)
			return -ENOMEM;
		break;
	case T_QUOTED:
		if (sel->op != OP_MATCHES && p->s.input[start] != '"')
			return parse_error(p, start, "invalid quote encountered");
		r = unquote(p->s.input + start, len, &sel->value);
		if (r == -EINVAL)
			return parse_error(p, start, "unquoting failed");
		if (r < 0)
			return r;
		break;
	case T_ILLEGAL:
		return parse_error(p, start, "%s", p->s.error ? p->s.error : "illegal input");
	default:
		return parse_error(p, start, "expected value or quoted");
	}
	if (sel->op == OP_MATCHES) {
		if (regex_cost(sel->value) > REGEX_COST_MAX)
			return parse_error(p, start, "regular expression too complex");
		sel->re_ok = regcomp(&sel->re, sel->value, REG_EXTENDED | REG_NOSUB) == 0;
	}
	return 0;
}

/* selectors := selector (',' selector)* */
static int parse_all(struct parser *p, struct all *all)
{
	for (;;) {
		struct selector *grown = reallocarray(all->selectors, all->n + 1, sizeof *grown);
		size_t start, len;
		enum token t;
		int r;

		if (grown == NULL)
			return -ENOMEM;
		all->selectors = grown;
		memset(&all->selectors[all->n], 0, sizeof *grown);
		all->n++;
		r = parse_selector(p, &all->selectors[all->n - 1]);
		if (r < 0)
			return r;
		t = scan(&p->s, &start, &len);
		if (t == T_EOF)
			return 0;
		if (t == T_ILLEGAL)
			return parse_error(p, start, "%s",
			                   p->s.error ? p->s.error : "illegal input");
		if (t != T_SEPARATOR || p->s.input[start] != ',')
			return parse_error(p, start, "unexpected input: %.*s", (int)len,
			                   p->s.input + start);
	}
}

void filter_free(struct filter *f)
{
	if (f == NULL)
		return;
	for (size_t i = 0; i < f->n; i++) {
		for (size_t j = 0; j < f->any[i].n; j++)
			selector_free(&f->any[i].selectors[j]);
		free(f->any[i].selectors);
	}
	free(f->any);
	free(f);
}

int filter_parse(const char *const *filters, size_t n, struct filter **ret_filter, char *reason,
                 size_t len)
{
	struct filter *f = calloc(1, sizeof *f);
	bool always = false;

	if (f == NULL)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		struct parser p = {.s = {.input = filters[i], .len = strlen(filters[i])},
		                   .reason = reason,
		                   .reason_len = len};
		struct all *grown;
		int r;

		/* An empty filter matches everything, and so does a list holding one. */
		if (filters[i][0] == '\0') {
			always = true;
			continue;
		}
		grown = reallocarray(f->any, f->n + 1, sizeof *grown);
		if (grown == NULL) {
			filter_free(f);
			return -ENOMEM;
		}
		f->any = grown;
		memset(&f->any[f->n], 0, sizeof *grown);
		f->n++;
		r = parse_all(&p, &f->any[f->n - 1]);
		if (r < 0) {
			filter_free(f);
			return r;
		}
	}
	if (always) {
		filter_free(f);
		f = calloc(1, sizeof *f);
		if (f == NULL)
			return -ENOMEM;
	}
	*ret_filter = f;
	return 0;
}

/* Whether the object FIELD describes satisfies SEL, as containerd's operators say:
 * presence, equality (of a present field), inequality (an absent field is ""), a match. */
static bool selector_match(const struct selector *sel, filter_field_fn *field, void *opaque)
{
	const char *value = NULL;
	bool present = field((const char *const *)sel->path, sel->n_path, &value, opaque);

	if (!present || value == NULL)
		value = "";
	switch (sel->op) {
	case OP_PRESENT:
		return present;
	case OP_EQUAL:
		return present && strcmp(value, sel->value) == 0;
	case OP_NOT_EQUAL:
		return strcmp(value, sel->value) != 0;
	case OP_MATCHES:
		return sel->re_ok && regexec(&sel->re, value, 0, NULL, 0) == 0;
	}
	return false;
}

bool filter_match(const struct filter *f, filter_field_fn *field, void *opaque)
{
	if (f->n == 0)
		return true;
	for (size_t i = 0; i < f->n; i++) {
		size_t j;

		for (j = 0; j < f->any[i].n; j++)
			if (!selector_match(&f->any[i].selectors[j], field, opaque))
				break;
		if (j == f->any[i].n)
			return true;
	}
	return false;
}
