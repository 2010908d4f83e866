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
 * Where an archive ends.  Runtimes read layers with Go's archive/tar, which
 * takes as the end of an archive what libarchive calls damage: the stream
 * ending (or reaching its end-of-archive blocks) right after a PAX 'x' or
 * GNU 'L'/'K' header that has no entry left to describe, and the stream
 * ending inside the padding of the last entry's data.  Both are accepted
 * here, with a warning, and nothing else is: the bytes where libarchive
 * stopped are read again from a copy of the stream's recent bytes (the
 * block libarchive holds plus TAIL_MAX bytes before it), walked as Go's
 * reader would walk them, and taken as an end only when Go ends there too.
 * A zero block followed by anything but a second one or the stream's end
 * is an error for Go (and for us); what follows two zero blocks is never
 * looked at by either.  libarchive is more lenient than Go in one place
 * we keep: one zero block followed by other bytes ends its archive. */
#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "layers/internal.h"

#define TAIL_MAX (64u << 10)
#define BLOCK 512u

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
	/* The uncompressed stream's recent bytes: the block handed to libarchive
	 * last ([cur_start, cur_start + cur_len), owned by the outer reader) and
	 * a copy of up to TAIL_MAX bytes before it, byte o at tail[o % TAIL_MAX]. */
	const unsigned char *cur;
	size_t cur_len;
	uint64_t cur_start;
	unsigned char tail[TAIL_MAX];
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

/* Keeps the last TAIL_MAX bytes of the block libarchive is done with. */
static void keep_tail(struct mlfs_tar_reader *r)
{
	if (!r->cur_len)
		return;
	size_t n = r->cur_len < TAIL_MAX ? r->cur_len : TAIL_MAX;
	uint64_t o = r->cur_start + r->cur_len - n;
	const unsigned char *p = r->cur + r->cur_len - n;
	while (n) {
		size_t at = (size_t)(o % TAIL_MAX), k = TAIL_MAX - at < n ? TAIL_MAX - at : n;
		memcpy(r->tail + at, p, k);
		p += k;
		o += k;
		n -= k;
	}
	r->cur_start += r->cur_len;
	r->cur = NULL;
	r->cur_len = 0;
}

static la_ssize_t inner_read(struct archive *a, void *priv, const void **buf)
{
	struct mlfs_tar_reader *r = priv;
	if (r->outer_eof)
		return 0;
	keep_tail(r);
	for (;;) {
		size_t len = 0;
		la_int64_t off;
		int rc = archive_read_data_block(r->outer, buf, &len, &off);
		if (rc == ARCHIVE_EOF) {
			r->outer_eof = true;
			return 0;
		}
		if (rc < ARCHIVE_WARN) {
			archive_set_error(a, EIO, "decompressing: %s",
					  archive_error_string(r->outer) ?: "unknown error");
			return -1;
		}
		if (len == 0)
			continue;
		if (mlfs_hasher_update(r->diff_hash, *buf, len) < 0) {
			archive_set_error(a, EIO, "hashing failed");
			return -1;
		}
		r->cur = *buf;
		r->cur_len = len;
		return (la_ssize_t)len;
	}
}

/* Copies stream bytes [off, off + len) into buf, reading on (and hashing)
 * past what libarchive was given when needed: how many there were before
 * the stream's end, or -1 when they are no longer kept (or reading fails). */
static ssize_t raw_get(struct mlfs_tar_reader *r, uint64_t off, void *buf, size_t len)
{
	uint64_t lo = r->cur_start > TAIL_MAX ? r->cur_start - TAIL_MAX : 0;
	if (off < lo)
		return -1;
	size_t done = 0;
	while (done < len) {
		uint64_t o = off + done;
		if (o < r->cur_start) {
			size_t at = (size_t)(o % TAIL_MAX), k = TAIL_MAX - at;
			if (k > r->cur_start - o)
				k = (size_t)(r->cur_start - o);
			if (k > len - done)
				k = len - done;
			memcpy((char *)buf + done, r->tail + at, k);
			done += k;
		} else if (o < r->cur_start + r->cur_len) {
			size_t k = (size_t)(r->cur_start + r->cur_len - o);
			if (k > len - done)
				k = len - done;
			memcpy((char *)buf + done, r->cur + (o - r->cur_start), k);
			done += k;
		} else {
			const void *b;
			if (r->outer_eof)
				break;
			if (inner_read(r->inner, r, &b) < 0)
				return -1;
			/* A block wholly before off is not needed, but its tail may
			 * be: the copy happens on the next read. */
		}
	}
	return (ssize_t)done;
}

static bool all_zero(const unsigned char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return false;
	return true;
}

/* Go's archive/tar (reader.go): the header checksum is the sum of the
 * header's bytes with the checksum field as spaces, as unsigned or signed
 * bytes; numbers are base-256 when the first byte's top bit is set, else
 * octal with NULs and spaces around it. */
static bool header_ok(const unsigned char *h)
{
	char f[9] = { 0 };
	memcpy(f, h + 148, 8);
	char *p = f;
	while (p < f + 8 && (*p == ' ' || *p == '\0'))
		p++;
	char *end;
	unsigned long want = strtoul(p, &end, 8);
	if (end == p)
		return false;
	long us = 0, ss = 0;
	for (size_t i = 0; i < BLOCK; i++) {
		unsigned char c = i >= 148 && i < 156 ? ' ' : h[i];
		us += c;
		ss += (signed char)c;
	}
	return (long)want == us || (long)want == ss;
}

static int64_t header_size(const unsigned char *h)
{
	const unsigned char *f = h + 124;
	if (f[0] & 0x80) {
		uint64_t v = f[0] & 0x7f;
		for (int i = 1; i < 12; i++) {
			if (v >> 55)
				return -1;
			v = v << 8 | f[i];
		}
		return v > INT64_MAX ? -1 : (int64_t)v;
	}
	int i = 0, n = 12;
	while (i < n && (f[i] == ' ' || f[i] == 0))
		i++;
	while (n > i && (f[n - 1] == ' ' || f[n - 1] == 0))
		n--;
	int64_t v = 0;
	for (; i < n; i++) {
		if (f[i] < '0' || f[i] > '7' || v > (INT64_MAX >> 3))
			return -1;
		v = v * 8 + (f[i] - '0');
	}
	return v;
}

/* After libarchive failed on the header at `pos`: whether Go's reader
 * would end the archive there, having read only header-only meta entries
 * (PAX 'x', GNU long names 'L' and 'K') before its end. */
static bool meta_then_end(struct mlfs_tar_reader *r, uint64_t pos)
{
	unsigned char h[BLOCK];
	unsigned metas = 0;
	for (int depth = 0; depth < 64; depth++) {
		ssize_t n = raw_get(r, pos, h, BLOCK);
		if (n == 0)
			return metas > 0;           /* the stream ends at a block boundary */
		if (n < (ssize_t)BLOCK)
			return false;               /* a partial header: io.ErrUnexpectedEOF */
		if (all_zero(h, BLOCK)) {
			n = raw_get(r, pos + BLOCK, h, BLOCK);
			if (metas == 0)
				return false;
			return n == 0 || (n == (ssize_t)BLOCK && all_zero(h, BLOCK));
		}
		if (!header_ok(h) || (h[156] != 'x' && h[156] != 'L' && h[156] != 'K'))
			return false;
		int64_t size = header_size(h);
		if (size < 0 || size > (INT64_MAX >> 1))
			return false;
		metas++;
		pos += BLOCK + (((uint64_t)size + BLOCK - 1) & ~(uint64_t)(BLOCK - 1));
	}
	return false;
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

int mlfs_tar_reader_new(const struct mlfs_layer_source *src, struct mlfs_tar_reader **out)
{
	struct mlfs_tar_reader *r = calloc(1, sizeof *r);
	if (!r)
		return -ENOMEM;
	r->src = src;
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
	int ar = archive_read_next_header(r->inner, entry);
	if (ar == ARCHIVE_EOF)
		return 0;
	if (ar == ARCHIVE_WARN)
		log_warn(MLFS_AREA_LAYERS, "tar: %s", archive_error_string(r->inner) ?: "warning");
	else if (ar < ARCHIVE_WARN) {
		int rc = fail(r, r->inner, "reading tar");
		if (ar == ARCHIVE_FATAL && !r->src_err && pos >= 0 && meta_then_end(r, (uint64_t)pos)) {
			log_warn(MLFS_AREA_LAYERS, "tar: the archive ends after an extended header with no entry "
				 "to describe (at byte %lld): taken as its end, as Go's archive/tar does",
				 (long long)pos);
			r->msg[0] = '\0';
			r->ended = true;
			return 0;
		}
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
	if (ar < ARCHIVE_WARN)
		return fail(r, r->inner, "reading tar data");
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
	free(r);
}
