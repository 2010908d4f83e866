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
 * daemon fed untrusted blobs has no business doing. */
#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "layers/internal.h"

struct mlfs_tar_reader {
	const struct mlfs_layer_source *src;
	struct archive *outer; /* compressed -> uncompressed */
	struct archive *inner; /* uncompressed -> tar entries */
	struct mlfs_hasher *blob_hash;
	struct mlfs_hasher *diff_hash;
	int src_err;          /* the source's own -errno, kept across libarchive */
	bool src_eof;
	bool outer_eof;
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

static la_ssize_t inner_read(struct archive *a, void *priv, const void **buf)
{
	struct mlfs_tar_reader *r = priv;
	if (r->outer_eof)
		return 0;
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
		return (la_ssize_t)len;
	}
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
	int ar = archive_read_next_header(r->inner, entry);
	if (ar == ARCHIVE_EOF)
		return 0;
	if (ar == ARCHIVE_WARN)
		log_warn(MLFS_AREA_LAYERS, "tar: %s", archive_error_string(r->inner) ?: "warning");
	else if (ar < ARCHIVE_WARN)
		return fail(r, r->inner, "reading tar");
	return 1;
}

int mlfs_tar_reader_data(struct mlfs_tar_reader *r, const void **buf, size_t *len, int64_t *off)
{
	la_int64_t o = 0;
	int ar = archive_read_data_block(r->inner, buf, len, &o);
	if (ar == ARCHIVE_EOF)
		return 0;
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
