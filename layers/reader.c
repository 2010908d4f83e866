/* A layer blob as a stream of tar entries.
 *
 * Two libarchive readers are chained.  The outer one ("raw" format behind
 * the decompression filters) only decompresses: the filters bid on the
 * magic bytes, so a layer is decoded by what it is, not by what its media
 * type claims.  The inner one parses tar from the outer one's output.  The
 * chain exists because the diff_id is the digest of the uncompressed tar,
 * bytes that libarchive never shows a single reader's caller; between the
 * two readers every uncompressed byte passes through our hands once.
 *
 * Only the decompressors OCI and Docker layers use are enabled, and all of
 * them are linked in: archive_read_support_filter_all() would also accept
 * formats libarchive decodes by forking an external program, which a
 * daemon fed untrusted blobs has no business doing.
 *
 * Go's reader, walked alongside.  Runtimes read layers with Go's
 * archive/tar, and libarchive reads some archives otherwise.  So the bytes
 * between the two readers are also walked as Go's reader walks them
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
#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "layers/internal.h"

#define BLOCK 512u
#define SPECIAL_MAX (1u << 20) /* Go's maxSpecialFileSize; libarchive's limit too */
#define PAX_KEEP (64u << 10)   /* a records buffer larger than this is freed after use */

enum walk_kind {
	W_HEADER,      /* a header, or the first end-of-archive block */
	W_SPARSE_EXT,  /* an old GNU sparse header's extension block */
	W_ZERO2,       /* the block after a zero block that followed meta headers */
};

struct walk {
	bool on;               /* false once Go's reader has ended, failed or lost track */
	enum walk_kind kind;   /* what Go reads the block at `next` as */
	uint64_t next;         /* stream offset of the next block Go reads */
	size_t have;           /* bytes of that block gathered in blk */
	unsigned char blk[BLOCK];
	uint64_t after_ext;    /* W_SPARSE_EXT: the data and padding after the last extension block */
	/* An extended header's records, gathered from [rec_at, rec_at + rec_want). */
	char *rec;
	size_t rec_len, rec_want, rec_cap;
	uint64_t rec_at;
	bool rec_global;       /* a 'g' header's: parsed, then forgotten */
	int64_t pax_size;      /* the last 'x' header's "size" record, or -1 */
	bool pax_size_bad;     /* ... which Go cannot parse: the entry it describes fails */
	/* The meta headers ('x', 'L', 'K') read since the last entry. */
	unsigned metas;
	uint64_t chain_start;  /* where the first of them is */
	uint64_t meta_end;     /* where the records of the last one end */
	uint64_t entry_start;  /* where the headers of the entry being read begin */
	bool end_after_meta;   /* Go's reader ended cleanly right after them */
	bool fixed_logged;
	char why[160];         /* why Go's reader fails, when it does */
};

struct mlfs_tar_reader {
	const struct mlfs_layer_source *src;
	struct archive *outer; /* compressed -> uncompressed */
	struct archive *inner; /* uncompressed -> tar entries */
	struct mlfs_hasher *blob_hash;
	struct mlfs_hasher *diff_hash;
	int src_err;          /* the source's own -errno, kept across libarchive */
	bool src_eof;
	bool outer_eof;
	bool ended;           /* an end Go's reader accepts where libarchive failed */
	bool in_entry;        /* a header was returned: its data may be unread */
	/* The outer reader's current block: [ob_pos, ob_len) not yet handed on. */
	const unsigned char *ob;
	size_t ob_len, ob_pos;
	uint64_t fed;         /* uncompressed bytes handed to the inner reader */
	struct walk w;
	char msg[512];
};

static la_ssize_t outer_read(struct archive *a, void *priv, const void **buf)
{
	struct mlfs_tar_reader *r = priv;
	size_t len = 0;
	if (r->src_eof)
		return 0;
	int rc = r->src->read(r->src->priv, buf, &len);
	if (rc < 0) {
		r->src_err = rc;
		archive_set_error(a, -rc, "reading the blob: %s", strerror(-rc));
		return -1;
	}
	if (len == 0) {
		r->src_eof = true;
		return 0;
	}
	if (mlfs_hasher_update(r->blob_hash, *buf, len) < 0) {
		archive_set_error(a, EIO, "hashing failed");
		return -1;
	}
	return (la_ssize_t)len;
}

/* ---- Go's reader, one block at a time ---- */

static __attribute__((format(printf, 2, 3))) void walk_stop(struct walk *w, const char *fmt, ...)
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
	return (n + BLOCK - 1) & ~(uint64_t)(BLOCK - 1);
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
	for (size_t i = 0; i < BLOCK; i++)
		s += h[i];
	for (size_t i = 148; i < 156; i++)
		s -= h[i];
	return s;
}

static long sum_signed(const unsigned char *h)
{
	long s = 8 * ' ';
	for (size_t i = 0; i < BLOCK; i++)
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
static bool pax_records(struct walk *w)
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
static void walk_records(struct walk *w, uint64_t at, const unsigned char *p, size_t n)
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
		walk_stop(w, "the extended header at byte %llu has malformed records",
			  (unsigned long long)(w->rec_at - BLOCK));
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
static bool go_header(struct walk *w, uint64_t at, int64_t *size)
{
	unsigned char *h = w->blk;
	static const struct field fields[] = {
		{ 124, 12, "size" }, { 100, 8, "mode" }, { 108, 8, "uid" }, { 116, 8, "gid" },
		{ 136, 12, "mtime" }, { 329, 8, "devmajor" }, { 337, 8, "devminor" },
	};
	long us = sum_unsigned(h);
	int64_t sum;
	if (!go_octal(h + 148, 8, &sum) || (sum != us && sum != sum_signed(h))) {
		walk_stop(w, "the header at byte %llu has a bad checksum", (unsigned long long)at);
		return false;
	}
	bool ustar = !memcmp(h + 257, "ustar\0", 6), gnu = !memcmp(h + 257, "ustar  \0", 8);
	size_t n = ustar || gnu ? sizeof fields / sizeof *fields : 5;
	int64_t v[sizeof fields / sizeof *fields];
	for (size_t i = 0; i < n; i++) {
		if (!go_numeric(h + fields[i].off, fields[i].len, &v[i])) {
			walk_stop(w, "the header at byte %llu has a malformed %s field", (unsigned long long)at,
				  fields[i].name);
			return false;
		}
	}
	int64_t t;
	if (ustar && !memcmp(h + 508, "tar\0", 4) &&
	    (!go_numeric(h + 476, 12, &t) || !go_numeric(h + 488, 12, &t))) {
		walk_stop(w, "the header at byte %llu has malformed times", (unsigned long long)at);
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

static void walk_header(struct walk *w, uint64_t at)
{
	const unsigned char *h = w->blk;
	if (w->metas == 0)
		w->entry_start = at;
	if (all_zero(h, BLOCK)) {
		if (!w->metas) {
			w->on = false; /* the end: libarchive finds it too */
			return;
		}
		w->kind = W_ZERO2;
		w->next = at + BLOCK;
		return;
	}
	int64_t size;
	if (!go_header(w, at, &size))
		return;
	unsigned char type = h[156];
	if (!header_only(type) && size < 0) {
		walk_stop(w, "the header at byte %llu has a negative size", (unsigned long long)at);
		return;
	}
	if (type == 'x' || type == 'g' || type == 'L' || type == 'K') {
		if (size > (int64_t)SPECIAL_MAX) {
			walk_stop(w, "the %s header at byte %llu holds %lld bytes, more than 1 MiB",
				  type == 'L' || type == 'K' ? "GNU long name" : "extended", (unsigned long long)at,
				  (long long)size);
			return;
		}
		w->next = at + BLOCK + padded((uint64_t)size);
		if (type == 'g') {
			/* An entry of its own for Go: the meta headers before it are spent. */
			w->metas = 0;
			w->pax_size = -1;
			w->pax_size_bad = false;
		} else {
			if (w->metas++ == 0)
				w->chain_start = at;
			w->meta_end = at + BLOCK + (uint64_t)size;
		}
		if (type == 'x' || type == 'g') {
			if ((size_t)size > w->rec_cap) {
				char *p = realloc(w->rec, (size_t)size);
				if (!p) {
					walk_stop(w, NULL);
					return;
				}
				w->rec = p;
				w->rec_cap = (size_t)size;
			}
			w->rec_at = at + BLOCK;
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
		walk_stop(w, "the entry at byte %llu has a malformed PAX size", (unsigned long long)at);
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
			walk_stop(w, NULL);
			return;
		}
		size_t len = strnlen((const char *)h, 100);
		if (len && h[len - 1] == '/')
			data = 0;
	}
	if (header_only(type))
		data = 0;
	if (data < 0 || (uint64_t)data > (UINT64_MAX >> 2)) {
		walk_stop(w, "the entry at byte %llu has a size out of range", (unsigned long long)at);
		return;
	}
	if (type == 'S') {
		if (memcmp(h + 257, "ustar  \0", 8)) {
			walk_stop(w, "the sparse entry at byte %llu is not in GNU format", (unsigned long long)at);
			return;
		}
		if (h[482]) {
			w->kind = W_SPARSE_EXT;
			w->after_ext = padded((uint64_t)data);
			w->next = at + BLOCK;
			return;
		}
	}
	w->next = at + BLOCK + padded((uint64_t)data);
}

/* The block at w->next is whole in w->blk. */
static void walk_block(struct walk *w)
{
	uint64_t at = w->next;
	switch (w->kind) {
	case W_HEADER:
		walk_header(w, at);
		break;
	case W_SPARSE_EXT:
		w->next = at + BLOCK;
		if (!w->blk[504]) {
			w->kind = W_HEADER;
			w->next += w->after_ext;
		}
		break;
	case W_ZERO2:
		if (all_zero(w->blk, BLOCK))
			w->end_after_meta = true;
		else
			walk_stop(w, "a zero block, then a header at byte %llu", (unsigned long long)at);
		w->on = false;
		break;
	}
}

/* The stream ends at `end`, w->have bytes into the block at w->next. */
static void walk_eof(struct walk *w, uint64_t end)
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

/* ---- the inner reader's input ---- */

/* Hands the inner reader the next piece of the stream: up to the next
 * block Go reads as a header, or that block, gathered into w->blk (and
 * rewritten there when libarchive would misread it). */
static la_ssize_t inner_read(struct archive *a, void *priv, const void **buf)
{
	struct mlfs_tar_reader *r = priv;
	struct walk *w = &r->w;
	for (;;) {
		if (r->ob_pos == r->ob_len) {
			if (r->outer_eof)
				return 0;
			size_t len = 0;
			la_int64_t off;
			const void *b;
			int rc = archive_read_data_block(r->outer, &b, &len, &off);
			if (rc == ARCHIVE_EOF) {
				r->outer_eof = true;
				walk_eof(w, r->fed + w->have);
				if (!w->have)
					return 0;
				/* A partial block: libarchive gets it as it is. */
				size_t n = w->have;
				w->have = 0;
				*buf = w->blk;
				r->fed += n;
				return (la_ssize_t)n;
			}
			if (rc < ARCHIVE_WARN) {
				archive_set_error(a, EIO, "decompressing: %s",
						  archive_error_string(r->outer) ?: "unknown error");
				return -1;
			}
			if (len == 0)
				continue;
			if (mlfs_hasher_update(r->diff_hash, b, len) < 0) {
				archive_set_error(a, EIO, "hashing failed");
				return -1;
			}
			r->ob = b;
			r->ob_len = len;
			r->ob_pos = 0;
		}
		const unsigned char *p = r->ob + r->ob_pos;
		size_t n = r->ob_len - r->ob_pos;
		uint64_t at = r->fed + w->have;
		if (!w->on || w->next > at) {
			if (w->on && w->next - at < n)
				n = (size_t)(w->next - at);
			walk_records(w, at, p, n);
			r->ob_pos += n;
			r->fed += n;
			*buf = p;
			return (la_ssize_t)n;
		}
		size_t k = BLOCK - w->have < n ? BLOCK - w->have : n;
		memcpy(w->blk + w->have, p, k);
		w->have += k;
		r->ob_pos += k;
		if (w->have < BLOCK)
			continue;
		walk_block(w);
		w->have = 0;
		r->fed += BLOCK;
		*buf = w->blk;
		return BLOCK;
	}
}

/* After libarchive failed on the headers at `pos`: whether Go's reader
 * ends the archive there, having read only meta headers ('x', 'L', 'K')
 * before its end.  The walk reads on (hashing) until it knows. */
static bool meta_then_end(struct mlfs_tar_reader *r, uint64_t pos)
{
	struct walk *w = &r->w;
	while (w->on && w->metas && w->chain_start == pos && !r->outer_eof) {
		const void *b;
		if (inner_read(r->inner, r, &b) < 0)
			return false;
	}
	return w->end_after_meta && w->metas && w->chain_start == pos;
}

static int fail(struct mlfs_tar_reader *r, struct archive *a, const char *what)
{
	snprintf(r->msg, sizeof r->msg, "%s: %s", what,
		 (a && archive_error_string(a)) ? archive_error_string(a) : "unknown error");
	if (r->src_err)
		return r->src_err;
	if (a && archive_errno(a) == ENOMEM)
		return -ENOMEM;
	return -EBADMSG;
}

/* Where libarchive failed and Go's reader did too, what Go found wrong
 * says more than libarchive's "Damaged tar archive". */
static void go_too(struct mlfs_tar_reader *r)
{
	size_t len = strlen(r->msg);
	if (!r->src_err && r->w.why[0] && len < sizeof r->msg)
		snprintf(r->msg + len, sizeof r->msg - len, " (Go's archive/tar fails too: %s)", r->w.why);
}

int mlfs_tar_reader_new(const struct mlfs_layer_source *src, struct mlfs_tar_reader **out)
{
	struct mlfs_tar_reader *r = calloc(1, sizeof *r);
	if (!r)
		return -ENOMEM;
	r->src = src;
	r->w.on = true;
	r->w.pax_size = -1;
	int rc = mlfs_hasher_new(&r->blob_hash);
	if (rc == 0)
		rc = mlfs_hasher_new(&r->diff_hash);
	if (rc < 0)
		goto err;
	r->outer = archive_read_new();
	r->inner = archive_read_new();
	if (!r->outer || !r->inner) {
		rc = -ENOMEM;
		goto err;
	}
	archive_read_support_filter_gzip(r->outer);
	archive_read_support_filter_zstd(r->outer);
	archive_read_support_filter_xz(r->outer);
	archive_read_support_filter_bzip2(r->outer);
	archive_read_support_format_raw(r->outer);
	if (archive_read_open(r->outer, r, NULL, outer_read, NULL) != ARCHIVE_OK) {
		rc = fail(r, r->outer, "opening the layer");
		goto err;
	}
	struct archive_entry *e;
	int ar = archive_read_next_header(r->outer, &e);
	if (ar == ARCHIVE_EOF) {
		snprintf(r->msg, sizeof r->msg, "empty layer blob");
		rc = r->src_err ? r->src_err : -EBADMSG;
		goto err;
	}
	if (ar < ARCHIVE_WARN) {
		rc = fail(r, r->outer, "decompressing");
		goto err;
	}
	/* One filter plus the "none" at the bottom: a gzip inside a gzip is not a
	 * tar+gzip layer, and its diff_id would not describe the tar. */
	if (archive_filter_count(r->outer) > 2) {
		snprintf(r->msg, sizeof r->msg, "nested compression (%s over %s)",
			 archive_filter_name(r->outer, 0), archive_filter_name(r->outer, 1));
		rc = -EBADMSG;
		goto err;
	}
	archive_read_support_format_tar(r->inner);
	if (archive_read_open(r->inner, r, NULL, inner_read, NULL) != ARCHIVE_OK) {
		rc = fail(r, r->inner, "reading tar");
		goto err;
	}
	*out = r;
	return 0;
err:
	if (!r->msg[0])
		snprintf(r->msg, sizeof r->msg, "%s", strerror(-rc));
	/* The message is the caller's only clue; keep it by handing r back. */
	*out = r;
	return rc;
}

int mlfs_tar_reader_next(struct mlfs_tar_reader *r, struct archive_entry **entry)
{
	if (r->ended)
		return 0;
	/* Skipped here rather than inside next_header, so that where the next
	 * header starts is known even when libarchive fails on it (its
	 * header position is not readable after a fatal error). */
	if (r->in_entry) {
		r->in_entry = false;
		if (archive_read_data_skip(r->inner) < ARCHIVE_WARN)
			return fail(r, r->inner, "reading tar");
	}
	la_int64_t pos = archive_filter_bytes(r->inner, 0);
	/* libarchive's next header is where Go's is, or the two disagree on
	 * the entry before (and the walk has nothing more to fix). */
	struct walk *w = &r->w;
	if (w->on && w->kind == W_HEADER && (uint64_t)pos != w->next && (uint64_t)pos != w->entry_start) {
		log_debug(MLFS_AREA_LAYERS, "tar: libarchive reads a header at byte %lld, Go's archive/tar at "
			  "%llu: no more headers are rewritten", (long long)pos, (unsigned long long)w->next);
		walk_stop(w, NULL);
	}
	int ar = archive_read_next_header(r->inner, entry);
	if (ar == ARCHIVE_EOF)
		return 0;
	if (ar == ARCHIVE_WARN)
		log_warn(MLFS_AREA_LAYERS, "tar: %s", archive_error_string(r->inner) ?: "warning");
	else if (ar < ARCHIVE_WARN || ar == ARCHIVE_RETRY) {
		/* ARCHIVE_RETRY is a header that fails its checksum: bsdtar
		 * skips ahead to the next one that does not, Go fails. */
		int rc = fail(r, r->inner, "reading tar");
		if (ar == ARCHIVE_FATAL && !r->src_err && pos >= 0 && meta_then_end(r, (uint64_t)pos)) {
			log_warn(MLFS_AREA_LAYERS, "tar: the archive ends after an extended header with no entry "
				 "to describe (at byte %lld): taken as its end, as Go's archive/tar does",
				 (long long)pos);
			r->msg[0] = '\0';
			r->ended = true;
			return 0;
		}
		go_too(r);
		return rc;
	}
	r->in_entry = true;
	return 1;
}

int mlfs_tar_reader_data(struct mlfs_tar_reader *r, const void **buf, size_t *len, int64_t *off)
{
	la_int64_t o = 0;
	int ar = archive_read_data_block(r->inner, buf, len, &o);
	if (ar == ARCHIVE_EOF)
		return 0;
	/* All of the entry's data came, and then the stream ended inside its
	 * padding: libarchive's skip of the padding (advance_file_pointer)
	 * fails with "Truncated input file", a short data section fails with
	 * "Truncated tar archive" instead.  Go's reader ends there cleanly. */
	const char *why = archive_error_string(r->inner);
	if (ar == ARCHIVE_FATAL && r->outer_eof && !r->src_err && why &&
	    !strncmp(why, "Truncated input file", strlen("Truncated input file"))) {
		log_warn(MLFS_AREA_LAYERS, "tar: the archive ends inside the padding of its last entry: taken as "
			 "its end, as Go's archive/tar does");
		r->ended = true;
		return 0;
	}
	if (ar < ARCHIVE_WARN) {
		int rc = fail(r, r->inner, "reading tar data");
		go_too(r);
		return rc;
	}
	*off = o;
	return 1;
}

int mlfs_tar_reader_finish(struct mlfs_tar_reader *r, char diff_id[MLFS_DIGEST_MAX],
			   char blob_digest[MLFS_DIGEST_MAX])
{
	/* Padding after the end-of-archive blocks belongs to the diff_id, and
	 * whatever follows the compressed stream to the blob digest. */
	while (!r->outer_eof) {
		const void *buf;
		if (inner_read(r->inner, r, &buf) < 0)
			return fail(r, r->inner, "decompressing");
	}
	while (!r->src_eof) {
		const void *buf;
		if (outer_read(r->outer, r, &buf) < 0)
			return fail(r, r->outer, "reading");
	}
	int rc = mlfs_hasher_final(r->diff_hash, diff_id);
	if (rc == 0)
		rc = mlfs_hasher_final(r->blob_hash, blob_digest);
	return rc;
}

const char *mlfs_tar_reader_error(const struct mlfs_tar_reader *r)
{
	return r->msg[0] ? r->msg : "unknown error";
}

void mlfs_tar_reader_free(struct mlfs_tar_reader *r)
{
	if (!r)
		return;
	if (r->inner)
		archive_read_free(r->inner);
	if (r->outer)
		archive_read_free(r->outer);
	mlfs_hasher_free(r->blob_hash);
	mlfs_hasher_free(r->diff_hash);
	free(r->w.rec);
	free(r);
}
