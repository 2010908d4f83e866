/* One base64 decoder for every Go-written field (see base64.h).  OpenSSL's
 * EVP_DecodeUpdate is not used: it skips more than Go does (spaces, tabs,
 * a PEM '-' line) and so would accept what containers/image refuses. */
#include "common/base64.h"

#include <stdint.h>

static int value(unsigned char ch)
{
	if (ch >= 'A' && ch <= 'Z')
		return ch - 'A';
	if (ch >= 'a' && ch <= 'z')
		return ch - 'a' + 26;
	if (ch >= '0' && ch <= '9')
		return ch - '0' + 52;
	return ch == '+' ? 62 : ch == '/' ? 63 : -1;
}

ssize_t mlfs_base64_decode(const char *in, size_t len, unsigned char *out)
{
	size_t o = 0, got = 0, pad = 0;
	uint32_t acc = 0;
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)in[i];
		if (ch == '\r' || ch == '\n')
			continue;
		int v = ch == '=' ? 0 : value(ch);
		/* '=' only in the last two places of the last group, and nothing after it */
		if (v < 0 || (pad && ch != '=') || (ch == '=' && got % 4 < 2))
			return -1;
		pad += ch == '=';
		acc = acc << 6 | (uint32_t)v;
		if (++got % 4 == 0) {
			out[o++] = (unsigned char)(acc >> 16);
			if (pad < 2)
				out[o++] = (unsigned char)(acc >> 8);
			if (pad < 1)
				out[o++] = (unsigned char)acc;
			acc = 0;
		}
	}
	return got % 4 ? -1 : (ssize_t)o;
}
