/* The one sanitiser for untrusted text on its way to a person: names from
 * a tar, strings from an image config, a registry's error text, a URL.
 * Logs, error messages and everything printed go through it, so none of
 * them can carry a terminal escape sequence, break a log line in two, or
 * reorder what is shown with bidi controls. */
#pragma once
#include <stddef.h>

/* Also escape '"' and '\\': for text shown between quotes, which then
 * reads back unambiguously. */
#define MLFS_ESC_QUOTES 1u

/* s[0..n) into buf (len > 0; always NUL-terminated).  Valid UTF-8 text is
 * kept; every other byte of a C0 control, DEL, a C1 control (raw or as
 * UTF-8 U+0080..U+009F), a bidi control or line/paragraph separator
 * (U+200E/F, U+2028/9, U+202A..E, U+2066..9), or of bytes that are not
 * valid UTF-8, becomes "\xNN".  Input that does not fit ends in "...".
 * Without MLFS_ESC_QUOTES escaping is idempotent: already escaped text
 * goes through unchanged.  Returns buf. */
const char *mlfs_escape(const char *s, size_t n, unsigned flags, char *buf, size_t len);

/* mlfs_escape() of a NUL-terminated string, no flags: for quoting a piece
 * of untrusted text in a message.  Returns buf. */
const char *mlfs_printable(const char *s, char *buf, size_t len);
