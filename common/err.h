/* Errors: functions return 0 or -errno; setup paths the user sees also
 * fill a struct mlfs_err with one line that says what went wrong and what
 * to do.  Callers add context on the way up with mlfs_err_wrap(), so the
 * final line reads outermost-first: "pull 127.0.0.1:5000/x:1: manifest: 404 ...". */
#pragma once
#include <stddef.h>

#include "common/escape.h" /* mlfs_printable(), for quoting untrusted text in a message */

struct mlfs_err {
	int code;        /* positive errno, 0 when unset */
	char msg[1024];
};

/* Sets err (if not NULL) and returns -code, so callers can write
 * `return mlfs_err_set(err, ENOENT, "no such tag %s", tag);`. */
int mlfs_err_set(struct mlfs_err *err, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Prefixes "CONTEXT: " to the message already set; returns -err->code. */
int mlfs_err_wrap(struct mlfs_err *err, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

void mlfs_err_clear(struct mlfs_err *err);
