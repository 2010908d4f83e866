#include "common/escape.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

/* Length of the valid UTF-8 sequence at p (at most avail bytes), 0 when
 * there is none: overlong forms, surrogates and code points past U+10FFFF
 * are not valid (RFC 3629). */
static size_t utf8_len(const unsigned char *p, size_t avail)
{
	unsigned char c = p[0];
	size_t n;
	unsigned char lo = 0x80, hi = 0xbf;
	if (c >= 0xc2 && c <= 0xdf)
		n = 2;
	else if (c >= 0xe0 && c <= 0xef)
		n = 3, lo = c == 0xe0 ? 0xa0 : 0x80, hi = c == 0xed ? 0x9f : 0xbf;
	else if (c >= 0xf0 && c <= 0xf4)
		n = 4, lo = c == 0xf0 ? 0x90 : 0x80, hi = c == 0xf4 ? 0x8f : 0xbf;
	else
		return 0;
	if (avail < n || p[1] < lo || p[1] > hi)
		return 0;
	for (size_t i = 2; i < n; i++)
		if (p[i] < 0x80 || p[i] > 0xbf)
			return 0;
	return n;
}

/* Valid UTF-8 that a terminal or a log viewer still acts on. */
static bool utf8_control(const unsigned char *p, size_t n)
{
	if (n == 2)
		return p[0] == 0xc2 && p[1] <= 0x9f; /* C1: U+0080..U+009F (CSI is U+009B) */
	if (n == 3 && p[0] == 0xe2 && p[1] == 0x80)
		return p[2] == 0x8e || p[2] == 0x8f || (p[2] >= 0xa8 && p[2] <= 0xae);
	if (n == 3 && p[0] == 0xe2 && p[1] == 0x81)
		return p[2] >= 0xa6 && p[2] <= 0xa9;
	return false;
}

/* The output of the input unit at s[i]: its bytes in unit (16 bytes), its
 * length returned, the input bytes it covers in *adv. */
static size_t escape_unit(const unsigned char *in, size_t n, size_t i, unsigned flags, char *unit, size_t *adv)
{
	unsigned char c = in[i];
	*adv = 1;
	if (c >= 0x20 && c < 0x7f) {
		if ((flags & MLFS_ESC_QUOTES) && (c == '"' || c == '\\'))
			return (size_t)snprintf(unit, 16, "\\x%02x", c);
		unit[0] = (char)c;
		return 1;
	}
	size_t u = c >= 0x80 ? utf8_len(in + i, n - i) : 0;
	if (u && !utf8_control(in + i, u)) {
		memcpy(unit, in + i, u);
		*adv = u;
		return u;
	}
	/* One byte at a time: the rest of a bad sequence is looked at again. */
	return (size_t)snprintf(unit, 16, "\\x%02x", c);
}

const char *mlfs_escape(const char *s, size_t n, unsigned flags, char *buf, size_t len)
{
	const unsigned char *in = (const unsigned char *)s;
	char unit[16];
	size_t o = 0, i = 0, adv, limit = len - 1, total = 0;
	/* Whether it all fits decides whether room is kept for "...". */
	for (i = 0; i < n && total <= limit; i += adv)
		total += escape_unit(in, n, i, flags, unit, &adv);
	size_t room = total <= limit ? limit : (limit >= 3 ? limit - 3 : 0);
	for (i = 0; i < n; i += adv) {
		size_t ulen = escape_unit(in, n, i, flags, unit, &adv);
		if (o + ulen > room)
			break;
		memcpy(buf + o, unit, ulen);
		o += ulen;
	}
	if (i < n && limit >= 3) {
		memcpy(buf + o, "...", 3);
		o += 3;
	}
	buf[o] = '\0';
	return buf;
}

const char *mlfs_printable(const char *s, char *buf, size_t len)
{
	return mlfs_escape(s, strlen(s), 0, buf, len);
}
