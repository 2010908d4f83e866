/* Seekable layers: the entry table from the TOC, the bytes later.
 *
 * Two families of layer blobs carry a table of contents (TOC) that lists
 * every entry with where its bytes sit in the compressed blob, each chunk
 * compressed on its own so that it decompresses alone:
 *
 *   eStargz (tar+gzip)   every file's chunks are separate gzip members; the
 *                        TOC is a tar entry "stargz.index.json" in its own
 *                        gzip member near the end; the last 51 bytes are an
 *                        empty gzip member whose extra field "SG" holds the
 *                        TOC's offset as %016x + "STARGZ".  The manifest's
 *                        annotation containerd.io/snapshot/stargz/toc.digest
 *                        is the sha256 of the TOC JSON.
 *   zstd:chunked         every file's bytes are their own zstd frames; the
 *   (tar+zstd)           TOC is zstd-compressed JSON in a skippable frame;
 *                        the footer is another skippable frame with its
 *                        offset, lengths and the magic "GNUlInUx".  The
 *                        annotations give the position ("off:len:ulen:type")
 *                        and a checksum of the TOC.  stargz-snapshotter's
 *                        --zstdchunked writes the same frames with an
 *                        eStargz-style TOC (and also the toc.digest).
 *
 * What is trusted, and why.  The manifest is verified by digest, so its
 * annotations are; the TOC is used only after it hashed to one of them;
 * each chunk's bytes only after they hashed to the digest the TOC gives
 * (chunks.c).  A TOC without such an anchor (legacy stargz, a layer with no
 * annotation) is not used: the layer is streamed and verified whole.
 *
 * The entries go through the stream reader's own mlfs_index_add(), so
 * names, whiteouts, hardlinks and refusals are the same on both paths and
 * the merge cannot tell them apart; only the bytes are missing, each file
 * getting its place in a sparse data file.  The chunk table says which
 * compressed range fills which place. */
#include <archive.h>
#include <archive_entry.h>
#include <endian.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zstd.h>

#include "common/cleanup.h"
#include "common/grow.h"
#include "common/log.h"
#include "layers/internal.h"
#include "layers/toc.h"

#define TOC_MAX_COMPRESSED (64u << 20)
#define TOC_MAX (256u << 20)
#define NO_LEN UINT64_MAX                 /* a chunk's blob length, until derived */

static int fetch(const struct mlfs_blob_ranges *src, uint64_t off, size_t len, unsigned char **out,
		 struct mlfs_err *err)
{
	unsigned char *buf = malloc(len ? len : 1);
	if (!buf)
		return mlfs_err_set(err, ENOMEM, "out of memory for %zu bytes", len);
	int rc = src->read(src->priv, off, len, buf, err);
	if (rc < 0) {
		free(buf);
		return rc;
	}
	*out = buf;
	return 0;
}

static bool digest_is(const char *want, const void *buf, size_t len)
{
	char got[MLFS_DIGEST_MAX];
	return want && mlfs_digest_buf(buf, len, got) == 0 && !strcmp(got, want);
}

/* The JSON of an eStargz TOC: a gzip member holding one tar entry. */
static int gunzip_toc(const unsigned char *buf, size_t len, char **json, size_t *json_len, struct mlfs_err *err)
{
	struct archive *a = archive_read_new();
	if (!a)
		return mlfs_err_set(err, ENOMEM, "out of memory");
	archive_read_support_filter_gzip(a);
	archive_read_support_format_tar(a);
	int rc = -EBADMSG;
	struct archive_entry *ae;
	if (archive_read_open_memory(a, buf, len) != ARCHIVE_OK || archive_read_next_header(a, &ae) != ARCHIVE_OK) {
		mlfs_err_set(err, EBADMSG, "the TOC is not a gzip'ed tar entry: %s", archive_error_string(a) ?: "?");
		goto out;
	}
	const char *name = archive_entry_pathname(ae);
	la_int64_t size = archive_entry_size(ae);
	if (!name || strcmp(name, "stargz.index.json") || size < 0 || size > (la_int64_t)TOC_MAX) {
		mlfs_err_set(err, EBADMSG, "the TOC entry is \"%s\" of %lld bytes, not stargz.index.json",
			     name ? name : "", (long long)size);
		goto out;
	}
	char *j = malloc((size_t)size + 1);
	if (!j) {
		rc = mlfs_err_set(err, ENOMEM, "out of memory for a %lld-byte TOC", (long long)size);
		goto out;
	}
	la_ssize_t n = archive_read_data(a, j, (size_t)size);
	if (n != size) {
		free(j);
		mlfs_err_set(err, EBADMSG, "the TOC is truncated");
		goto out;
	}
	j[size] = '\0';
	*json = j;
	*json_len = (size_t)size;
	rc = 0;
out:
	archive_read_free(a);
	return rc;
}

static int estargz_toc(const struct mlfs_seekable_desc *d, const struct mlfs_blob_ranges *src, char **json,
		       size_t *json_len, uint64_t *toc_off, struct mlfs_err *err)
{
	if (d->blob_size < ESTARGZ_FOOTER_SIZE)
		return mlfs_err_set(err, EBADMSG, "too small for an eStargz footer");
	_cleanup_free_ unsigned char *tail = NULL, *toc = NULL;
	int rc = fetch(src, d->blob_size - ESTARGZ_FOOTER_SIZE, ESTARGZ_FOOTER_SIZE, &tail, err);
	if (rc < 0)
		return rc;
	size_t footer;
	bool legacy;
	if (estargz_footer_parse(tail, ESTARGZ_FOOTER_SIZE, toc_off, &footer, &legacy) < 0)
		return mlfs_err_set(err, EBADMSG, "no eStargz footer at the end of the blob");
	if (legacy)
		return mlfs_err_set(err, ENOTSUP, "a legacy stargz layer (its TOC has no digest to check)");
	if (*toc_off >= d->blob_size - footer || d->blob_size - footer - *toc_off > TOC_MAX_COMPRESSED)
		return mlfs_err_set(err, EBADMSG, "the footer's TOC offset %llu is out of range",
				    (unsigned long long)*toc_off);
	size_t len = (size_t)(d->blob_size - footer - *toc_off);
	if ((rc = fetch(src, *toc_off, len, &toc, err)) < 0)
		return rc;
	if ((rc = gunzip_toc(toc, len, json, json_len, err)) < 0)
		return rc;
	if (!digest_is(d->toc_digest, *json, *json_len)) {
		free(*json);
		*json = NULL;
		return mlfs_err_set(err, EBADMSG, "the TOC does not match its digest %s", d->toc_digest);
	}
	return 0;
}

static int zstd_toc(const struct mlfs_seekable_desc *d, const struct mlfs_blob_ranges *src, char **json,
		    size_t *json_len, uint64_t *toc_off, struct mlfs_err *err)
{
	uint64_t off, len, ulen, type = 1;
	_cleanup_free_ unsigned char *buf = NULL;
	int rc;
	if (d->zstd_toc_position) {
		if (zstd_position_parse(d->zstd_toc_position, &off, &len, &ulen, &type) < 0)
			return mlfs_err_set(err, EBADMSG, "unreadable zstd:chunked manifest position \"%s\"",
					    d->zstd_toc_position);
	} else {
		size_t tl = d->blob_size < ZSTD_FOOTER_MAX_SIZE ? (size_t)d->blob_size : ZSTD_FOOTER_MAX_SIZE;
		struct zstd_footer f;
		if ((rc = fetch(src, d->blob_size - tl, tl, &buf, err)) < 0)
			return rc;
		if (zstd_footer_parse(buf, tl, &f) < 0)
			return mlfs_err_set(err, EBADMSG, "no zstd:chunked footer at the end of the blob");
		off = f.toc_off;
		len = f.toc_len;
		ulen = f.toc_ulen;
		type = f.toc_type;
		free(steal_pointer(&buf));
	}
	if (type != 1)
		return mlfs_err_set(err, ENOTSUP, "zstd:chunked manifest of unknown type %llu", (unsigned long long)type);
	if (len == 0 || off > d->blob_size || len > d->blob_size - off || len > TOC_MAX_COMPRESSED || ulen > TOC_MAX)
		return mlfs_err_set(err, EBADMSG, "the TOC position %llu+%llu is out of range",
				    (unsigned long long)off, (unsigned long long)len);
	if ((rc = fetch(src, off, (size_t)len, &buf, err)) < 0)
		return rc;
	/* Which bytes the checksum covers differs between writers (the
	 * compressed manifest for containers/storage): accept a match on
	 * either, since each pins the TOC down; a present annotation that
	 * matches neither refuses it. */
	bool compressed_ok = digest_is(d->zstd_toc_checksum, buf, (size_t)len);
	char *j = malloc((size_t)ulen + 1);
	if (!j)
		return mlfs_err_set(err, ENOMEM, "out of memory for a %llu-byte TOC", (unsigned long long)ulen);
	size_t n = ZSTD_decompress(j, (size_t)ulen, buf, (size_t)len);
	if (ZSTD_isError(n) || n != ulen) {
		free(j);
		return mlfs_err_set(err, EBADMSG, "the TOC does not decompress to its %llu bytes: %s",
				    (unsigned long long)ulen, ZSTD_isError(n) ? ZSTD_getErrorName(n) : "wrong size");
	}
	j[n] = '\0';
	bool ok = (d->zstd_toc_checksum || d->toc_digest) &&
		  (!d->zstd_toc_checksum || compressed_ok || digest_is(d->zstd_toc_checksum, j, n)) &&
		  (!d->toc_digest || digest_is(d->toc_digest, j, n));
	if (!ok) {
		free(j);
		return mlfs_err_set(err, EBADMSG, "the TOC does not match its digest %s",
				    d->zstd_toc_checksum ? d->zstd_toc_checksum : d->toc_digest);
	}
	*json = j;
	*json_len = n;
	*toc_off = off;
	return 0;
}

static mode_t type_bits(enum toc_type t)
{
	switch (t) {
	case TOC_DIR: return AE_IFDIR;
	case TOC_SYMLINK: return AE_IFLNK;
	case TOC_CHAR: return AE_IFCHR;
	case TOC_BLOCK: return AE_IFBLK;
	case TOC_FIFO: return AE_IFIFO;
	default: return AE_IFREG;
	}
}

/* A TOC entry as the archive_entry the stream reader would have made. */
static void to_archive_entry(const struct toc_entry *t, struct archive_entry *ae)
{
	archive_entry_clear(ae);
	archive_entry_set_pathname(ae, t->name);
	archive_entry_set_filetype(ae, type_bits(t->type));
	archive_entry_set_perm(ae, t->mode & 07777);
	archive_entry_set_uid(ae, t->uid);
	archive_entry_set_gid(ae, t->gid);
	if (t->has_mtime)
		archive_entry_set_mtime(ae, (time_t)t->mtime, t->mtime_nsec);
	if (t->type == TOC_REG)
		archive_entry_set_size(ae, (la_int64_t)t->size);
	if (t->type == TOC_SYMLINK)
		archive_entry_set_symlink(ae, t->link ? t->link : "");
	if (t->type == TOC_HARDLINK && t->link)
		archive_entry_set_hardlink(ae, t->link);
	if (t->type == TOC_CHAR || t->type == TOC_BLOCK) {
		archive_entry_set_rdevmajor(ae, t->dev_major);
		archive_entry_set_rdevminor(ae, t->dev_minor);
	}
	for (uint32_t i = 0; i < t->n_xattrs; i++)
		archive_entry_xattr_add_entry(ae, t->xattrs[i].name, t->xattrs[i].value, t->xattrs[i].len);
}

struct builder {
	struct mlfs_layer *l;
	size_t cap_chunks, cap_bounds;
	uint64_t *bound;                /* per chunk: where its compressed bytes end at the latest */
	uint64_t file_end;              /* the file's endOffset, or UINT64_MAX */
	uint64_t file_off, file_size, covered; /* the regular file whose chunks follow */
	bool in_file;
	const char *file_name;
	struct mlfs_err *err;
};

static int add_chunk(struct builder *b, const struct toc_entry *t, size_t idx)
{
	struct mlfs_layer *l = b->l;
	uint64_t len = t->chunk_size ? t->chunk_size : b->file_size - t->chunk_offset;
	if (t->chunk_offset != b->covered || t->chunk_offset >= b->file_size || len == 0 ||
	    len > b->file_size - t->chunk_offset)
		return mlfs_err_set(b->err, EBADMSG, "TOC entry %zu (%s): chunk %llu+%llu does not continue the "
				    "file's %llu of %llu bytes", idx, t->name, (unsigned long long)t->chunk_offset,
				    (unsigned long long)len, (unsigned long long)b->covered,
				    (unsigned long long)b->file_size);
	int rc = mlfs_grow((void **)&l->chunks, &b->cap_chunks, l->n_chunks + 1, sizeof *l->chunks, 64,
			   UINT32_MAX);
	if (rc == 0)
		rc = mlfs_grow((void **)&b->bound, &b->cap_bounds, l->n_chunks + 1, sizeof *b->bound, 64,
			       UINT32_MAX);
	if (rc < 0)
		return mlfs_err_set(b->err, -rc, "too many chunks");
	b->bound[l->n_chunks] = b->file_end;
	struct mlfs_ichunk *c = &l->chunks[l->n_chunks];
	*c = (struct mlfs_ichunk){ .data_off = b->file_off + t->chunk_offset, .len = len,
				   .blob_off = t->offset, .inner_off = t->inner_offset };
	if (t->zeros) {
		c->blob_len = 0; /* a hole: the sparse data file has it already */
	} else {
		if (t->has_chunk_digest)
			memcpy(c->digest, t->chunk_digest, 32);
		else if (t->has_digest && len == b->file_size)
			memcpy(c->digest, t->digest, 32);
		else
			return mlfs_err_set(b->err, EBADMSG, "TOC entry %zu (%s): a chunk without a digest", idx,
					    t->name);
		/* containers/storage gives a file's compressed end (endOffset),
		 * not each chunk's: a chunk ends where the next one starts, and
		 * the file's last one at endOffset. */
		if (t->offset >= b->file_end)
			return mlfs_err_set(b->err, EBADMSG, "TOC entry %zu (%s): chunk offset past the file's end",
					    idx, t->name);
		c->blob_len = b->file_end != UINT64_MAX && len == b->file_size ? b->file_end - t->offset : NO_LEN;
	}
	l->n_chunks++;
	b->covered += len;
	return 0;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* eStargz gives where a chunk starts, not where it ends: the next chunk
 * (of any file) or the TOC does.  Then every range must lie before the TOC. */
static int finish_chunks(struct builder *b, uint64_t toc_off)
{
	struct mlfs_layer *l = b->l;
	_cleanup_free_ uint64_t *starts = malloc((l->n_chunks + 1) * sizeof *starts);
	if (!starts)
		return mlfs_err_set(b->err, ENOMEM, "out of memory");
	size_t n = 0;
	for (size_t i = 0; i < l->n_chunks; i++)
		if (l->chunks[i].blob_len)
			starts[n++] = l->chunks[i].blob_off;
	starts[n++] = toc_off;
	qsort(starts, n, sizeof *starts, cmp_u64);
	for (size_t i = 0; i < l->n_chunks; i++) {
		struct mlfs_ichunk *c = &l->chunks[i];
		if (c->blob_len == NO_LEN) {
			size_t lo = 0, hi = n;
			while (lo < hi) {
				size_t mid = lo + (hi - lo) / 2;
				if (starts[mid] <= c->blob_off)
					lo = mid + 1;
				else
					hi = mid;
			}
			if (lo == n)
				return mlfs_err_set(b->err, EBADMSG, "a chunk at blob offset %llu lies past the TOC",
						    (unsigned long long)c->blob_off);
			uint64_t end = starts[lo] < b->bound[i] ? starts[lo] : b->bound[i];
			c->blob_len = end - c->blob_off;
		}
		if (c->blob_len && (c->blob_off > toc_off || c->blob_len > toc_off - c->blob_off))
			return mlfs_err_set(b->err, EBADMSG, "a chunk at blob offset %llu runs into the TOC",
					    (unsigned long long)c->blob_off);
		if (c->blob_len > CHUNK_MAX_COMPRESSED)
			return mlfs_err_set(b->err, EFBIG, "a chunk of %llu compressed bytes is too large to fetch "
					    "on demand", (unsigned long long)c->blob_len);
	}
	return 0;
}

static bool end_file(struct builder *b, size_t idx)
{
	if (b->in_file && b->covered != b->file_size) {
		mlfs_err_set(b->err, EBADMSG, "TOC: %s has chunks for %llu of its %llu bytes", b->file_name,
			     (unsigned long long)b->covered, (unsigned long long)b->file_size);
		return false;
	}
	b->in_file = false;
	return true;
}

static int build_index(struct mlfs_layer *l, const struct toc *toc, uint64_t toc_off, struct mlfs_err *err)
{
	struct builder b = { .l = l, .err = err };
	struct archive_entry *ae = archive_entry_new();
	if (!ae)
		return mlfs_err_set(err, ENOMEM, "out of memory");
	int rc = 0;
	for (size_t i = 0; rc == 0 && i < toc->n; i++) {
		const struct toc_entry *t = &toc->entries[i];
		if (t->type == TOC_CHUNK) {
			if (!b.in_file || strcmp(t->name, b.file_name)) {
				/* A chunk of a refused file is refused with it. */
				if (b.in_file || !b.file_name || strcmp(t->name, b.file_name))
					rc = mlfs_err_set(err, EBADMSG, "TOC entry %zu: a chunk of %s follows no "
							  "file of that name", i, t->name);
				continue;
			}
			rc = add_chunk(&b, t, i);
			continue;
		}
		if (!end_file(&b, i)) {
			rc = -EBADMSG;
			break;
		}
		char path[MLFS_PATH_MAX];
		size_t plen;
		if (mlfs_path_normalize(t->name, path, &plen) == 0) {
			if (!strcmp(path, ".prefetch.landmark"))
				l->prefetch_end = t->offset ? t->offset : toc_off;
			else if (!strcmp(path, ".no.prefetch.landmark"))
				l->prefetch_end = 0;
		}
		size_t before = l->n_ents;
		to_archive_entry(t, ae);
		if ((rc = mlfs_index_add(l, ae, NULL, NULL)) < 0) {
			mlfs_err_set(err, -rc, "TOC entry %zu (%s): %s", i, t->name, strerror(-rc));
			break;
		}
		b.file_name = t->name;
		if (t->type == TOC_REG && t->size > 0 && l->n_ents > before &&
		    l->ents[l->n_ents - 1].kind == MLFS_ENTRY_REG) {
			if (t->end_offset && t->end_offset <= t->offset) {
				rc = mlfs_err_set(err, EBADMSG, "TOC entry %zu (%s): endOffset before offset", i,
						  t->name);
				break;
			}
			b.in_file = true;
			b.file_off = l->ents[l->n_ents - 1].data_off;
			b.file_size = t->size;
			b.file_end = t->end_offset ? t->end_offset : UINT64_MAX;
			b.covered = 0;
			rc = add_chunk(&b, t, i);
		}
	}
	if (rc == 0 && !end_file(&b, toc->n))
		rc = -EBADMSG;
	if (rc == 0)
		rc = finish_chunks(&b, toc_off);
	archive_entry_free(ae);
	free(b.bound);
	return rc;
}

int mlfs_toc_index(struct mlfs_layer *l, const char *json, size_t json_len, bool zstd, uint64_t data_end,
		   struct mlfs_err *err)
{
	struct toc *toc = NULL;
	char msg[256] = "";
	int rc = toc_parse(json, json_len, &toc, msg, sizeof msg);
	if (rc < 0)
		return mlfs_err_set(err, -rc, "unusable TOC: %s", msg);
	l->codec = zstd ? MLFS_CODEC_ZSTD : MLFS_CODEC_GZIP;
	l->hide_format_entries = true;
	l->prefetch_end = 0;
	rc = build_index(l, toc, data_end, err);
	toc_free(toc);
	if (rc == 0)
		mlfs_layer_shrink(l);
	return rc;
}

static int build(const struct mlfs_layer_opts *opts, const struct mlfs_seekable_desc *d,
		 const struct mlfs_blob_ranges *src, struct mlfs_layer *l, struct mlfs_err *err)
{
	_cleanup_free_ char *json = NULL;
	size_t json_len = 0;
	uint64_t toc_off = 0;
	int rc;
	if (d->zstd && (d->zstd_toc_position || d->zstd_toc_checksum || d->toc_digest))
		rc = zstd_toc(d, src, &json, &json_len, &toc_off, err);
	else if (!d->zstd && d->toc_digest)
		rc = estargz_toc(d, src, &json, &json_len, &toc_off, err);
	else
		return mlfs_err_set(err, ENOTSUP, "not a seekable layer");
	if (rc < 0)
		return rc;

	/* Chunk data ends where the TOC's container starts: its gzip member for
	 * eStargz, the 8-byte header of its skippable frame for zstd. */
	if (d->zstd && toc_off < 8)
		return mlfs_err_set(err, EBADMSG, "the TOC offset %llu is out of range", (unsigned long long)toc_off);
	rc = mlfs_toc_index(l, json, json_len, d->zstd, d->zstd ? toc_off - 8 : toc_off, err);
	if (rc < 0)
		return rc;
	rc = mlfs_store_sparse(opts->cache_dir, d->blob_digest, l->data_size, &l->data_fd);
	if (rc < 0)
		return mlfs_err_set(err, -rc, "layer %s: data file in %s: %s", d->blob_digest, opts->cache_dir,
				    strerror(-rc));
	_cleanup_free_ char *index_path = mlfs_store_path(opts->cache_dir, "index", d->blob_digest);
	int r2 = mlfs_store_mkdirs(opts->cache_dir, "index");
	if (r2 == 0)
		r2 = index_path ? mlfs_indexfile_save(l, index_path) : -ENOMEM;
	if (r2 < 0)
		log_warn(MLFS_AREA_LAYERS, "layer %s: index not saved: %s", d->blob_digest, strerror(-r2));
	return 0;
}

static void layer_freep(struct mlfs_layer **l) { mlfs_layer_free(*l); }

int mlfs_layer_open_seekable(const struct mlfs_layer_opts *opts, const struct mlfs_seekable_desc *d,
			     const struct mlfs_blob_ranges *src, struct mlfs_layer **out, struct mlfs_err *err)
{
	/* The source is ours from here on, whatever happens. */
	struct mlfs_blob_ranges own = *src;
	if (!opts || !opts->cache_dir || !d->blob_digest || mlfs_digest_validate(d->blob_digest) < 0) {
		if (own.release)
			own.release(own.priv);
		return mlfs_err_set(err, EINVAL, "seekable layer: bad arguments");
	}
	int rc = mlfs_layer_open_key(opts->cache_dir, d->blob_digest, &own, out, err);
	if (rc != -ENOENT)
		return rc; /* the cached index took the source, or failed and released it */
	_cleanup_(layer_freep) struct mlfs_layer *l = mlfs_layer_new();
	if (!l) {
		if (own.release)
			own.release(own.priv);
		return mlfs_err_set(err, ENOMEM, "out of memory");
	}
	snprintf(l->key, sizeof l->key, "%s", d->blob_digest);
	rc = build(opts, d, &own, l, err);
	if (rc == 0)
		rc = mlfs_chunks_attach(l, opts->cache_dir, &own);
	else if (own.release)
		own.release(own.priv);
	if (rc < 0)
		return rc;
	*out = steal_pointer(&l);
	return 0;
}
