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
 * Go's reader is walked alongside (gowalk.c): the stream is handed to
 * libarchive in pieces that end where Go expects a header, so that a header
 * libarchive would misread is rewritten first and an end Go accepts is
 * told from damage. */
#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "layers/gowalk.h"
#include "layers/internal.h"

#define BLOCK MLFS_TAR_BLOCK

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
	struct mlfs_gowalk w;
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

/* ---- the inner reader's input ---- */

/* Hands the inner reader the next piece of the stream: up to the next
 * block Go reads as a header, or that block, gathered into w->blk (and
 * rewritten there when libarchive would misread it). */
static la_ssize_t inner_read(struct archive *a, void *priv, const void **buf)
{
	struct mlfs_tar_reader *r = priv;
	struct mlfs_gowalk *w = &r->w;
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
				mlfs_gowalk_eof(w, r->fed + w->have);
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
			mlfs_gowalk_records(w, at, p, n);
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
		mlfs_gowalk_block(w);
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
	struct mlfs_gowalk *w = &r->w;
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
	mlfs_gowalk_init(&r->w);
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
	struct mlfs_gowalk *w = &r->w;
	if (w->on && w->kind == W_HEADER && (uint64_t)pos != w->next && (uint64_t)pos != w->entry_start) {
		log_debug(MLFS_AREA_LAYERS, "tar: libarchive reads a header at byte %lld, Go's archive/tar at "
			  "%llu: no more headers are rewritten", (long long)pos, (unsigned long long)w->next);
		mlfs_gowalk_stop(w, NULL);
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
	mlfs_gowalk_free(&r->w);
	free(r);
}
