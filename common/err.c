#include "common/err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* A message is one line on a terminal whatever went into it (a parser's
 * quote of the input, a server's text): control characters become spaces. */
static void one_line(char *msg)
{
	for (unsigned char *p = (unsigned char *)msg; *p; p++)
		if (*p < 0x20 || *p == 0x7f)
			*p = ' ';
}

int mlfs_err_set(struct mlfs_err *err, int code, const char *fmt, ...)
{
	if (code < 0)
		code = -code;
	if (err) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(err->msg, sizeof err->msg, fmt, ap);
		va_end(ap);
		one_line(err->msg);
		err->code = code;
	}
	return -code;
}

int mlfs_err_wrap(struct mlfs_err *err, const char *fmt, ...)
{
	if (!err)
		return -1;
	char prefix[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(prefix, sizeof prefix, fmt, ap);
	va_end(ap);

	/* Shift the message right and put the context in front; the tail is
	 * what gets cut when the line is too long. */
	size_t plen = strlen(prefix), mlen = strlen(err->msg), cap = sizeof err->msg - 1;
	if (plen + 2 > cap)
		plen = cap - 2;
	if (plen + 2 + mlen > cap)
		mlen = cap - plen - 2;
	memmove(err->msg + plen + 2, err->msg, mlen);
	memcpy(err->msg, prefix, plen);
	memcpy(err->msg + plen, ": ", 2);
	err->msg[plen + 2 + mlen] = '\0';
	one_line(err->msg);
	return -(err->code ? err->code : 1);
}

void mlfs_err_clear(struct mlfs_err *err)
{
	if (err) {
		err->code = 0;
		err->msg[0] = '\0';
	}
}

const char *mlfs_printable(const char *s, char *buf, size_t len)
{
	size_t i = 0, n = strlen(s);
	for (; i + 1 < len && i < n; i++)
		buf[i] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
	buf[i] = '\0';
	if (i < n && len > 4)
		memcpy(buf + len - 4, "...", 4);
	return buf;
}
