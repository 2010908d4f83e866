/* Go's archive/tar, walked alongside libarchive over a layer's tar stream.
 *
 * Runtimes read layers with Go's archive/tar, and libarchive reads some
 * archives otherwise.  So the bytes between the reader's two libarchive
 * readers (reader.c) are also walked as Go's reader walks them
 * (reader.go: readHeader, handleRegularFile, parsePAX, readOldGNUSparseMap):
 * the stream is handed to libarchive in pieces that end where Go expects a
 * header, each header block is looked at before libarchive sees it, and
 * nothing else is kept but the records of an extended header (at most 1 MiB,
 * Go's maxSpecialFileSize and libarchive's limit too) until they are parsed.
 * The walk is for two things:
 *
 *  - Numbers.  Go trims spaces and NULs on both sides of an octal field;
 *    libarchive's tar_atol skips spaces only and stops at the first NUL, so
 *    a size written "\0\0\0\0\0\0\0\0\0" "16\0" is 0 to it, and the entry's
 *    data is then parsed as the next header ("Damaged tar archive").  A
 *    header Go reads whose numbers (or checksum) libarchive would read
 *    differently is rewritten in the copy libarchive gets, numbers as
 *    plain octal and the checksum recomputed; the digests are of the
 *    original bytes.  A header Go refuses is left alone, and the walk stops
 *    there: from then on libarchive reads as it reads.
 *
 *  - Where an archive ends.  Go takes as the end of an archive what
 *    libarchive calls damage: the stream ending (or reaching its
 *    end-of-archive blocks) right after PAX 'x' or GNU 'L'/'K' headers that
 *    have no entry left to describe, and the stream ending inside the
 *    padding of the last entry's data (or of the last such header's
 *    records).  When libarchive fails on a chain of such headers, the walk,
 *    which remembers where the chain began, reads on to its verdict; the
 *    chain may be of any length, and nothing of it is kept.  A zero block
 *    followed by anything but a second one or the stream's end is an error
 *    for Go (and for us); what follows two zero blocks is never looked at
 *    by either.  libarchive is more lenient than Go in one place we keep:
 *    one zero block followed by other bytes ends its archive.
 *
 * The walk follows Go where libarchive and Go disagree on where a header
 * is (a hard link with a size, which libarchive reads data for in PAX
 * archives); it notices when libarchive's next header is not where it
 * expected one, and stops. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "layers/gowalk.h"

#define SPECIAL_MAX (1u << 20) /* Go's maxSpecialFileSize; libarchive's limit too */
#define PAX_KEEP (64u << 10)   /* a records buffer larger than this is freed after use */

void mlfs_gowalk_init(struct mlfs_gowalk *w)
{
	memset(w, 0, sizeof *w);
	w->on = true;
	w->pax_size = -1;
}

void mlfs_gowalk_free(struct mlfs_gowalk *w)
{
	free(w->rec);
	w->rec = NULL;
}

void mlfs_gowalk_stop(struct mlfs_gowalk *w, const char *fmt, ...)
{
	w->on = false;
	if (!fmt)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(w->why, sizeof w->why, fmt, ap);
	va_end(ap);
}

static bool all_zero(const unsigned char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return false;
	return true;
}

static uint64_t padded(uint64_t n)
{
	return (n + MLFS_TAR_BLOCK - 1) & ~(uint64_t)(MLFS_TAR_BLOCK - 1);
}

/* Go's parser.parseOctal: spaces and NULs trimmed from both ends, the rest
 * cut at a NUL, then strconv.ParseUint(s, 8, 64); false for ErrHeader. */
static bool go_octal(const unsigned char *f, size_t n, int64_t *v)
{
	size_t i = 0;
	while (i < n && (f[i] == ' ' || f[i] == 0))
		i++;
	while (n > i && (f[n - 1] == ' ' || f[n - 1] == 0))
		n--;
	uint64_t x = 0;
	for (; i < n && f[i]; i++) {
		if (f[i] < '0' || f[i] > '7' || x >> 61)
			return false;
		x = x << 3 | (uint64_t)(f[i] - '0');
	}
	*v = (int64_t)x;
	return true;
}

/* Go's parser.parseNumeric: base-256 (two's complement) when the first
 * byte's top bit is set, else octal. */
static bool go_numeric(const unsigned char *f, size_t n, int64_t *v)
{
	if (!(f[0] & 0x80))
		return go_octal(f, n, v);
	unsigned char inv = (f[0] & 0x40) ? 0xff : 0;
	uint64_t x = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = f[i] ^ inv;
		if (i == 0)
			c &= 0x7f;
		if (x >> 56)
			return false;
		x = x << 8 | c;
	}
	if (x >> 63)
		return false;
	*v = inv ? ~(int64_t)x : (int64_t)x;
	return true;
}

/* libarchive's tar_atol on a field whose first byte's top bit is clear
 * (tar_atol_base_n): spaces and tabs skipped, a '-', then octal digits up
 * to the first other byte, a NUL included.  Only compared with Go's value,
 * so an overflow need not be exact. */
static int64_t la_octal(const unsigned char *f, size_t n)
{
	size_t i = 0;
	while (i < n && (f[i] == ' ' || f[i] == '\t'))
		i++;
	bool neg = i < n && f[i] == '-';
	if (neg)
		i++;
	int64_t v = 0;
	for (; i < n && f[i] >= '0' && f[i] <= '7'; i++) {
		if (v > (INT64_MAX >> 3))
			return neg ? INT64_MIN : INT64_MAX;
		v = v * 8 + (f[i] - '0');
	}
	return neg ? -v : v;
}

/* The header's checksum with its checksum field as spaces, of its bytes
 * as unsigned or (old BSD and Solaris tars) signed. */
static long sum_unsigned(const unsigned char *h)
{
	long s = 8 * ' ';
	for (size_t i = 0; i < MLFS_TAR_BLOCK; i++)
		s += h[i];
	for (size_t i = 148; i < 156; i++)
		s -= h[i];
	return s;
}

static long sum_signed(const unsigned char *h)
{
	long s = 8 * ' ';
	for (size_t i = 0; i < MLFS_TAR_BLOCK; i++)
		s += (signed char)h[i];
	for (size_t i = 148; i < 156; i++)
		s -= (signed char)h[i];
	return s;
}

/* libarchive's checksum(): octal digits, spaces and NULs only, read by
 * tar_atol. */
static bool la_checksum_ok(const unsigned char *h, long us)
{
	for (size_t i = 148; i < 156; i++)
		if (h[i] != ' ' && h[i] && (h[i] < '0' || h[i] > '7'))
			return false;
	int64_t v = la_octal(h + 148, 8);
	return v == us || v == sum_signed(h);
}

/* strconv.ParseInt(s, 10, 64). */
static bool go_int(const char *s, size_t n, int64_t *v)
{
	size_t i = 0;
	bool neg = false;
	if (n && (s[0] == '+' || s[0] == '-'))
		neg = s[i++] == '-';
	if (i == n)
		return false;
	uint64_t x = 0;
	for (; i < n; i++) {
		if (s[i] < '0' || s[i] > '9' || x > (UINT64_MAX - 9) / 10)
			return false;
		x = x * 10 + (uint64_t)(s[i] - '0');
	}
	if (x > (uint64_t)INT64_MAX + neg)
		return false;
	*v = neg ? (int64_t)(0 - x) : (int64_t)x;
	return true;
}

static bool key_is(const char *k, size_t n, const char *want)
{
	return n == strlen(want) && !memcmp(k, want, n);
}

/* Go's parsePAX and parsePAXRecord over the gathered records: false where
 * Go refuses them.  Of their meaning only "size" matters to the walk. */
static bool pax_records(struct mlfs_gowalk *w)
{
	const char *s = w->rec;
	size_t len = w->rec_len;
	unsigned sparse = 0;
	if (!w->rec_global) {
		w->pax_size = -1;
		w->pax_size_bad = false;
	}
	while (len) {
		const char *sp = memchr(s, ' ', len);
		int64_t n;
		if (!sp || !go_int(s, (size_t)(sp - s), &n) || n < 5 || (uint64_t)n > len)
			return false;
		int64_t m = n - (sp - s + 1); /* the record's length after the space */
		if (m <= 0 || sp[m] != '\n')
			return false;
		const char *k = sp + 1, *eq = memchr(k, '=', (size_t)m - 1);
		if (!eq || eq == k)
			return false;
		size_t klen = (size_t)(eq - k), vlen = (size_t)m - 1 - klen - 1;
		const char *v = eq + 1;
		bool str = key_is(k, klen, "path") || key_is(k, klen, "linkpath") || key_is(k, klen, "uname") ||
			   key_is(k, klen, "gname");
		if (str ? memchr(v, 0, vlen) != NULL : memchr(k, 0, klen) != NULL)
			return false;
		if (key_is(k, klen, "GNU.sparse.offset") || key_is(k, klen, "GNU.sparse.numbytes")) {
			if (!key_is(k, klen, sparse % 2 ? "GNU.sparse.numbytes" : "GNU.sparse.offset") ||
			    memchr(v, ',', vlen))
				return false;
			sparse++;
		} else if (!w->rec_global && key_is(k, klen, "size")) {
			/* mergePAX keeps the header's size for an empty value. */
			w->pax_size = -1;
			w->pax_size_bad = vlen && !go_int(v, vlen, &w->pax_size);
		}
		s += n;
		len -= (size_t)n;
	}
	return true;
}

/* Copies the records of an extended header out of a piece [at, at + n) of
 * the stream, and parses them once whole. */
void mlfs_gowalk_records(struct mlfs_gowalk *w, uint64_t at, const unsigned char *p, size_t n)
{
	if (!w->on || w->rec_len >= w->rec_want)
		return;
	uint64_t o = w->rec_at + w->rec_len;
	if (o < at || o >= at + n)
		return;
	size_t k = (size_t)(at + n - o);
	if (k > w->rec_want - w->rec_len)
		k = w->rec_want - w->rec_len;
	memcpy(w->rec + w->rec_len, p + (o - at), k);
	w->rec_len += k;
	if (w->rec_len < w->rec_want)
		return;
	if (!pax_records(w))
		mlfs_gowalk_stop(w, "the extended header at byte %llu has malformed records",
			  (unsigned long long)(w->rec_at - MLFS_TAR_BLOCK));
	if (w->rec_cap > PAX_KEEP) {
		free(w->rec);
		w->rec = NULL;
		w->rec_cap = 0;
	}
}

static bool header_only(unsigned char type)
{
	return type >= '1' && type <= '6';
}

struct field {
	unsigned off, len;
	const char *name;
};

/* Reads the header in w->blk as Go's readHeader does, into its size; false
 * where Go fails.  Numbers that libarchive would read otherwise are
 * rewritten in place, and then the checksum. */
static bool go_header(struct mlfs_gowalk *w, uint64_t at, int64_t *size)
{
	unsigned char *h = w->blk;
	static const struct field fields[] = {
		{ 124, 12, "size" }, { 100, 8, "mode" }, { 108, 8, "uid" }, { 116, 8, "gid" },
		{ 136, 12, "mtime" }, { 329, 8, "devmajor" }, { 337, 8, "devminor" },
	};
	long us = sum_unsigned(h);
	int64_t sum;
	if (!go_octal(h + 148, 8, &sum) || (sum != us && sum != sum_signed(h))) {
		mlfs_gowalk_stop(w, "the header at byte %llu has a bad checksum", (unsigned long long)at);
		return false;
	}
	bool ustar = !memcmp(h + 257, "ustar\0", 6), gnu = !memcmp(h + 257, "ustar  \0", 8);
	size_t n = ustar || gnu ? sizeof fields / sizeof *fields : 5;
	int64_t v[sizeof fields / sizeof *fields];
	for (size_t i = 0; i < n; i++) {
		if (!go_numeric(h + fields[i].off, fields[i].len, &v[i])) {
			mlfs_gowalk_stop(w, "the header at byte %llu has a malformed %s field", (unsigned long long)at,
				  fields[i].name);
			return false;
		}
	}
	int64_t t;
	if (ustar && !memcmp(h + 508, "tar\0", 4) &&
	    (!go_numeric(h + 476, 12, &t) || !go_numeric(h + 488, 12, &t))) {
		mlfs_gowalk_stop(w, "the header at byte %llu has malformed times", (unsigned long long)at);
		return false;
	}
	bool fix = !la_checksum_ok(h, us);
	for (size_t i = 0; i < n; i++) {
		unsigned char *f = h + fields[i].off;
		if ((f[0] & 0x80) || la_octal(f, fields[i].len) == v[i] ||
		    (uint64_t)v[i] >> (3 * (fields[i].len - 1)))
			continue;
		/* Go read digits that libarchive did not: there were fewer than
		 * the field holds, so they fit with a NUL after them. */
		char o[13];
		snprintf(o, sizeof o, "%0*llo", (int)fields[i].len - 1, (unsigned long long)v[i]);
		memcpy(f, o, fields[i].len); /* the digits and the NUL */
		fix = true;
	}
	if (fix) {
		memset(h + 148, ' ', 8);
		us = sum_unsigned(h);
		char c[8];
		snprintf(c, sizeof c, "%06o", (unsigned)us & 0777777); /* at most 512 * 255 */
		memcpy(h + 148, c, 7); /* six digits, a NUL, and the space */
		if (!w->fixed_logged)
			log_warn(MLFS_AREA_LAYERS, "tar: the header at byte %llu writes its numbers with leading "
				 "NULs: read as Go's archive/tar reads them", (unsigned long long)at);
		w->fixed_logged = true;
	}
	*size = v[0];
	return true;
}

static void walk_header(struct mlfs_gowalk *w, uint64_t at)
{
	const unsigned char *h = w->blk;
	if (w->metas == 0)
		w->entry_start = at;
	if (all_zero(h, MLFS_TAR_BLOCK)) {
		if (!w->metas) {
			w->on = false; /* the end: libarchive finds it too */
			return;
		}
		w->kind = W_ZERO2;
		w->next = at + MLFS_TAR_BLOCK;
		return;
	}
	int64_t size;
	if (!go_header(w, at, &size))
		return;
	unsigned char type = h[156];
	if (!header_only(type) && size < 0) {
		mlfs_gowalk_stop(w, "the header at byte %llu has a negative size", (unsigned long long)at);
		return;
	}
	if (type == 'x' || type == 'g' || type == 'L' || type == 'K') {
		if (size > (int64_t)SPECIAL_MAX) {
			mlfs_gowalk_stop(w, "the %s header at byte %llu holds %lld bytes, more than 1 MiB",
				  type == 'L' || type == 'K' ? "GNU long name" : "extended", (unsigned long long)at,
				  (long long)size);
			return;
		}
		w->next = at + MLFS_TAR_BLOCK + padded((uint64_t)size);
		if (type == 'g') {
			/* An entry of its own for Go: the meta headers before it are spent. */
			w->metas = 0;
			w->pax_size = -1;
			w->pax_size_bad = false;
		} else {
			if (w->metas++ == 0)
				w->chain_start = at;
			w->meta_end = at + MLFS_TAR_BLOCK + (uint64_t)size;
		}
		if (type == 'x' || type == 'g') {
			if ((size_t)size > w->rec_cap) {
				char *p = realloc(w->rec, (size_t)size);
				if (!p) {
					mlfs_gowalk_stop(w, NULL);
					return;
				}
				w->rec = p;
				w->rec_cap = (size_t)size;
			}
			w->rec_at = at + MLFS_TAR_BLOCK;
			w->rec_len = 0;
			w->rec_want = (size_t)size;
			w->rec_global = type == 'g';
			if (size == 0)
				pax_records(w); /* no records: nothing to refuse */
		}
		return;
	}
	/* An entry: the meta headers before it describe it. */
	if (w->metas && w->pax_size_bad) {
		mlfs_gowalk_stop(w, "the entry at byte %llu has a malformed PAX size", (unsigned long long)at);
		return;
	}
	int64_t data = w->pax_size >= 0 ? w->pax_size : size;
	bool metas = w->metas > 0;
	w->metas = 0;
	w->pax_size = -1;
	w->pax_size_bad = false;
	if (type == '\0' && data > 0) {
		/* Go reads a '\0' entry whose name ends in '/' as a directory,
		 * with no data; the name may come from the headers before. */
		if (metas) {
			mlfs_gowalk_stop(w, NULL);
			return;
		}
		size_t len = strnlen((const char *)h, 100);
		if (len && h[len - 1] == '/')
			data = 0;
	}
	if (header_only(type))
		data = 0;
	if (data < 0 || (uint64_t)data > (UINT64_MAX >> 2)) {
		mlfs_gowalk_stop(w, "the entry at byte %llu has a size out of range", (unsigned long long)at);
		return;
	}
	if (type == 'S') {
		if (memcmp(h + 257, "ustar  \0", 8)) {
			mlfs_gowalk_stop(w, "the sparse entry at byte %llu is not in GNU format", (unsigned long long)at);
			return;
		}
		if (h[482]) {
			w->kind = W_SPARSE_EXT;
			w->after_ext = padded((uint64_t)data);
			w->next = at + MLFS_TAR_BLOCK;
			return;
		}
	}
	w->next = at + MLFS_TAR_BLOCK + padded((uint64_t)data);
}

/* The block at w->next is whole in w->blk. */
void mlfs_gowalk_block(struct mlfs_gowalk *w)
{
	uint64_t at = w->next;
	switch (w->kind) {
	case W_HEADER:
		walk_header(w, at);
		break;
	case W_SPARSE_EXT:
		w->next = at + MLFS_TAR_BLOCK;
		if (!w->blk[504]) {
			w->kind = W_HEADER;
			w->next += w->after_ext;
		}
		break;
	case W_ZERO2:
		if (all_zero(w->blk, MLFS_TAR_BLOCK))
			w->end_after_meta = true;
		else
			mlfs_gowalk_stop(w, "a zero block, then a header at byte %llu", (unsigned long long)at);
		w->on = false;
		break;
	}
}

/* The stream ends at `end`, w->have bytes into the block at w->next. */
void mlfs_gowalk_eof(struct mlfs_gowalk *w, uint64_t end)
{
	if (!w->on)
		return;
	w->on = false;
	if (!w->metas || w->have)
		return; /* without meta headers the end is libarchive's to find */
	/* readHeader: no byte of the next header (or of the block after a
	 * zero block) is an end; next: neither is a cut in the padding
	 * after the records (tryReadFull). */
	if ((w->kind == W_HEADER && end >= w->meta_end && end <= w->next) ||
	    (w->kind == W_ZERO2 && end == w->next))
		w->end_after_meta = true;
}
