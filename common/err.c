#include "common/err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "common/escape.h"

/* A message is one line on a terminal whatever went into it (a parser's
 * quote of the input, a server's text): it is built aside, then escaped
 * into place (mlfs_escape: pieces a caller escaped already stay as they are). */

int mlfs_err_set(struct mlfs_err *err, int code, const char *fmt, ...)
{
	if (code < 0)
		code = -code;
	if (err) {
		char raw[sizeof err->msg + 1];
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(raw, sizeof raw, fmt, ap);
		va_end(ap);
		mlfs_escape(raw, strlen(raw), 0, err->msg, sizeof err->msg);
		err->code = code;
	}
	return -code;
}

int mlfs_err_wrap(struct mlfs_err *err, const char *fmt, ...)
{
	if (!err)
		return -1;
	char prefix[512], clean[512], line[sizeof clean + sizeof err->msg + 2];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(prefix, sizeof prefix, fmt, ap);
	va_end(ap);
	mlfs_escape(prefix, strlen(prefix), 0, clean, sizeof clean);
	/* The context goes in front; the tail is what gets cut when the line
	 * is too long (marked "..." by the escaping copy). */
	snprintf(line, sizeof line, "%s: %s", clean, err->msg);
	mlfs_escape(line, strlen(line), 0, err->msg, sizeof err->msg);
	return -(err->code ? err->code : 1);
}

void mlfs_err_clear(struct mlfs_err *err)
{
	if (err) {
		err->code = 0;
		err->msg[0] = '\0';
	}
}
