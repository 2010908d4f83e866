/* common/escape.c: the one sanitiser for untrusted text (tar names, config
 * strings, servers' text, URLs) on its way to logs, messages and the
 * terminal. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/escape.h"
#include "tap.h"

static const char *esc(const char *s, unsigned flags, size_t len)
{
	static char buf[512];
	return mlfs_escape(s, strlen(s), flags, buf, len);
}

int main(void)
{
	static const struct {
		const char *in, *want;
	} cases[] = {
		{ "plain text / path:tag@sha256", "plain text / path:tag@sha256" },
		{ "a\nb\rc\td", "a\\x0ab\\x0dc\\x09d" },
		{ "\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m" },
		{ "del\x7f", "del\\x7f" },
		{ "csi-raw\x9b" "2J", "csi-raw\\x9b2J" },               /* 8-bit C1, not UTF-8 */
		{ "csi-utf8\xc2\x9b" "2J", "csi-utf8\\xc2\\x9b2J" },     /* U+009B */
		{ "nbsp\xc2\xa0ok", "nbsp\xc2\xa0ok" },                 /* U+00A0 is text */
		{ "caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x90\xb3", "caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x90\xb3" },
		{ "rlo\xe2\x80\xae" "cod.exe", "rlo\\xe2\\x80\\xaecod.exe" }, /* U+202E */
		{ "lri\xe2\x81\xa6x", "lri\\xe2\\x81\\xa6x" },           /* U+2066 */
		{ "ls\xe2\x80\xa8x", "ls\\xe2\\x80\\xa8x" },             /* U+2028 */
		{ "lrm\xe2\x80\x8ex", "lrm\\xe2\\x80\\x8ex" },           /* U+200E */
		{ "overlong\xc0\xaf", "overlong\\xc0\\xaf" },
		{ "surrogate\xed\xa0\x80", "surrogate\\xed\\xa0\\x80" },
		{ "past-max\xf4\x90\x80\x80", "past-max\\xf4\\x90\\x80\\x80" },
		{ "cut\xe6\x97", "cut\\xe6\\x97" },                      /* a sequence the string ends in */
		{ "lone\x80", "lone\\x80" },
		{ "q\"b\\", "q\"b\\" },                                  /* quotes only with the flag */
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		const char *got = esc(cases[i].in, 0, 512);
		tap_is_str(got, cases[i].want, "escape case");
		/* Idempotent: what is escaped goes through unchanged again. */
		char again[512];
		tap_is_str(mlfs_escape(got, strlen(got), 0, again, sizeof again), got, "  idempotent");
	}
	tap_is_str(esc("q\"b\\", MLFS_ESC_QUOTES, 512), "q\\x22b\\x5c", "quotes and backslash with the flag");
	char nul[] = { 'a', '\0', 'b' };
	char buf[16];
	tap_is_str(mlfs_escape(nul, 3, 0, buf, sizeof buf), "a\\x00b", "a NUL inside n bytes is escaped");

	/* Cut at the buffer, with "..." and never inside an escape or a
	 * UTF-8 sequence; the output never exceeds len - 1. */
	tap_is_str(esc("abcdefghij", 0, 8), "abcd...", "cut with ...");
	tap_is_str(esc("abcdefg", 0, 8), "abcdefg", "exact fit, no ...");
	tap_is_str(esc("ab\x1b" "cdef", 0, 8), "ab...", "no half escape");
	tap_is_str(esc("a\xe6\x97\xa5\xe6\x97\xa5xyz", 0, 9), "a\xe6\x97\xa5...", "no half UTF-8 sequence");
	tap_is_str(esc("abc", 0, 1), "", "len 1: empty");
	tap_is_str(esc("abcdef", 0, 3), "", "too small for ...: empty");
	srand(7);
	for (int round = 0; round < 2000; round++) {
		char in[64], out[40];
		size_t n = (size_t)(rand() % (int)sizeof in);
		for (size_t k = 0; k < n; k++)
			in[k] = (char)(rand() % 256);
		size_t len = 1 + (size_t)(rand() % (int)sizeof out);
		mlfs_escape(in, n, (unsigned)(rand() % 2), out, len);
		bool ok = strlen(out) < len;
		for (const unsigned char *p = (const unsigned char *)out; *p; p++)
			if (*p < 0x20 || *p == 0x7f || (*p >= 0x80 && *p <= 0x9f && (p == (const unsigned char *)out ||
											p[-1] != 0xc2 ? 0 : 1)))
				ok = false;
		if (!ok) {
			tap_ok(false, "random round %d: %s", round, out);
			break;
		}
	}
	tap_ok(true, "random inputs: never a control byte, never past the buffer");
	return tap_done();
}
