/* One layer's life: found in the cache, or streamed, indexed and verified.
 *
 * The order of the steps is the safety argument.  Entries and file bytes
 * are collected while the stream is read, but nothing gets a final name
 * until the stream ended cleanly and both digests matched; only then is
 * the data file renamed into place, and only after that is the index
 * saved, so an index in the cache always has its verified data file next
 * to it.  A cached index that fails to load is removed and rebuilt from
 * the blob by the next open. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/log.h"
#include "layers/internal.h"

struct mlfs_layer *mlfs_layer_new(void)
{
	struct mlfs_layer *l = calloc(1, sizeof *l);
	if (l)
		l->data_fd = -1;
	return l;
}

void mlfs_layer_free(struct mlfs_layer *l)
{
	if (!l)
		return;
	mlfs_chunks_detach(l);
	free(l->chunks);
	mlfs_index_clear(l);
	if (l->data_fd >= 0) {
		if (l->key[0])
			mlfs_cache_touch(l->data_fd); /* last use: the end of this use */
		close(l->data_fd);
	}
	free(l);
}

static void layer_freep(struct mlfs_layer **l) { mlfs_layer_free(*l); }

static int check_opts(const struct mlfs_layer_opts *o, struct mlfs_err *err)
{
	if (!o || !o->cache_dir)
		return mlfs_err_set(err, EINVAL, "layer: no cache directory");
	if (o->diff_id && mlfs_digest_validate(o->diff_id) < 0)
		return mlfs_err_set(err, EINVAL, "layer: unusable diff_id \"%s\"", o->diff_id);
	if (o->blob_digest && mlfs_digest_validate(o->blob_digest) < 0)
		return mlfs_err_set(err, EINVAL, "layer: unusable digest \"%s\"", o->blob_digest);
	return 0;
}

static const char *key_of(const struct mlfs_layer_opts *o)
{
	return o->diff_id ? o->diff_id : o->blob_digest;
}

/* Arrays grown by doubling while indexing are trimmed, once, for the long
 * life of a mounted layer. */
void mlfs_layer_shrink(struct mlfs_layer *l)
{
	void *p;
	if (l->n_ents && (p = realloc(l->ents, l->n_ents * sizeof *l->ents))) {
		l->ents = p;
		l->cap_ents = l->n_ents;
	}
	if (l->n_xattrs && (p = realloc(l->xattrs, l->n_xattrs * sizeof *l->xattrs))) {
		l->xattrs = p;
		l->cap_xattrs = l->n_xattrs;
	}
	if (l->arena_len && (p = realloc(l->arena, l->arena_len))) {
		l->arena = p;
		l->arena_cap = l->arena_len;
	}
}

/* The cached index under key, with its data file; for a seekable layer
 * (src given) also its chunk table and present map.  -ENOENT when there is
 * none, or it is unusable (then removed, so the next open rebuilds it). */
int mlfs_layer_open_key(const char *cache_dir, const char *key, const struct mlfs_blob_ranges *src,
			struct mlfs_layer **out, struct mlfs_err *err)
{
	_cleanup_free_ char *index_path = mlfs_store_path(cache_dir, "index", key);
	_cleanup_free_ char *data_path = mlfs_store_path(cache_dir, "data", key);
	_cleanup_(layer_freep) struct mlfs_layer *l = mlfs_layer_new();
	if (!index_path || !data_path || !l)
		return mlfs_err_set(err, ENOMEM, "layer %s: out of memory", key);
	snprintf(l->key, sizeof l->key, "%s", key);

	int rc = mlfs_indexfile_load(l, index_path);
	if (rc == -ENOENT)
		return rc;
	if (rc == -ENOMEM)
		return mlfs_err_set(err, ENOMEM, "layer %s: out of memory", key);
	/* A seekable index without a way to fetch its chunks is of no use
	 * here, and a whole one needs none. */
	if (rc == 0 && (l->codec != MLFS_CODEC_NONE) != (src != NULL))
		return -ENOENT;
	if (rc == 0) {
		l->data_fd = open(data_path, (src ? O_RDWR : O_RDONLY) | O_CLOEXEC);
		if (l->data_fd < 0 && errno != ENOENT) {
			/* EMFILE, EACCES, ...: says nothing about the index, which stays. */
			return mlfs_err_set(err, errno, "layer %s: cannot open its cached data %s: %s", key,
					    data_path, strerror(errno));
		}
		rc = l->data_fd < 0 ? -EBADMSG : mlfs_cache_lock_shared(l->data_fd);
		if (rc == -ESTALE)
			return -ENOENT; /* evicted while we opened it: build it again */
		struct stat st;
		if (rc == 0 && (fstat(l->data_fd, &st) < 0 || (uint64_t)st.st_size != l->data_size))
			rc = -EBADMSG;
	}
	if (rc == 0 && src) {
		rc = mlfs_chunks_attach(l, cache_dir, src);
		if (rc < 0)
			return mlfs_err_set(err, rc == -ENOENT ? EIO : -rc, "layer %s: chunk map: %s", key,
					    strerror(-rc));
	}
	if (rc == -EBADMSG) {
		/* Proven unusable (checksum, size, no data file): only then removed. */
		log_warn(MLFS_AREA_LAYERS, "layer %s: cached index unusable (%s), rebuilding", key,
			 strerror(-rc));
		unlink(index_path);
		return -ENOENT;
	}
	if (rc < 0)
		return mlfs_err_set(err, -rc, "layer %s: cannot read its cached index %s: %s", key, index_path,
				    strerror(-rc));
	mlfs_cache_touch(l->data_fd);
	*out = steal_pointer(&l);
	return 0;
}

int mlfs_layer_open_cached(const struct mlfs_layer_opts *opts, struct mlfs_layer **out,
			   struct mlfs_err *err)
{
	int rc = check_opts(opts, err);
	if (rc < 0)
		return rc;
	const char *key = key_of(opts);
	if (!key)
		return -ENOENT;
	return mlfs_layer_open_key(opts->cache_dir, key, NULL, out, err);
}

static int build(const struct mlfs_layer_source *src, const struct mlfs_layer_opts *opts,
		 struct mlfs_layer *l, struct mlfs_err *err)
{
	const char *key = key_of(opts);
	const char *name = key ? key : "(unnamed)";
	struct mlfs_store *store = NULL;
	struct mlfs_tar_reader *r = NULL;
	char diff_id[MLFS_DIGEST_MAX], blob[MLFS_DIGEST_MAX];

	int rc = mlfs_store_begin(opts->cache_dir, key, &store);
	if (rc < 0) {
		mlfs_err_set(err, -rc, "layer %s: cache %s: %s", name, opts->cache_dir, strerror(-rc));
		goto out;
	}
	l->hide_format_entries = opts->estargz;
	rc = mlfs_tar_reader_new(src, &r);
	if (rc == 0)
		rc = mlfs_index_build(l, r, store);
	if (rc == 0)
		rc = mlfs_tar_reader_finish(r, diff_id, blob);
	if (rc < 0) {
		if (rc == -ENOSPC || rc == -EDQUOT)
			mlfs_err_set(err, -rc, "layer %s: the cache %s is full (%s): free some space (mlfs cache gc) "
				     "or cap the cache with cache-max", name, opts->cache_dir, strerror(-rc));
		else if (rc == -EFBIG || rc == -ENOMEM || rc == -EIO)
			mlfs_err_set(err, -rc, "layer %s: %s", name, strerror(-rc));
		else
			mlfs_err_set(err, -rc, "layer %s: %s", name,
				     r ? mlfs_tar_reader_error(r) : strerror(-rc));
		goto out;
	}
	if (opts->blob_digest && strcmp(blob, opts->blob_digest) != 0) {
		rc = mlfs_err_set(err, EBADMSG, "layer %s: blob digest mismatch: got %s", name, blob);
		goto out;
	}
	if (opts->diff_id && strcmp(diff_id, opts->diff_id) != 0) {
		rc = mlfs_err_set(err, EBADMSG, "layer %s: diff_id mismatch: uncompressed tar is %s",
				  name, diff_id);
		goto out;
	}
	rc = mlfs_store_commit(store, l->data_size, &l->data_fd);
	if (rc < 0) {
		mlfs_err_set(err, -rc, "layer %s: saving data: %s", name, strerror(-rc));
		goto out;
	}
	mlfs_layer_shrink(l);
	if (key) {
		snprintf(l->key, sizeof l->key, "%s", key);
		_cleanup_free_ char *index_path = mlfs_store_path(opts->cache_dir, "index", key);
		int r2 = mlfs_store_mkdirs(opts->cache_dir, "index");
		if (r2 == 0)
			r2 = index_path ? mlfs_indexfile_save(l, index_path) : -ENOMEM;
		/* The layer is verified and usable; only the next open pays. */
		if (r2 < 0)
			log_warn(MLFS_AREA_LAYERS, "layer %s: index not saved: %s", key, strerror(-r2));
	}
out:
	mlfs_tar_reader_free(r);
	mlfs_store_free(store);
	return rc;
}

int mlfs_layer_open_source(const struct mlfs_layer_source *src, const struct mlfs_layer_opts *opts,
			   struct mlfs_layer **out, struct mlfs_err *err)
{
	int rc = check_opts(opts, err);
	if (rc < 0)
		return rc;
	if (key_of(opts)) {
		rc = mlfs_layer_open_cached(opts, out, err);
		if (rc != -ENOENT)
			return rc;
	}
	_cleanup_(layer_freep) struct mlfs_layer *l = mlfs_layer_new();
	if (!l)
		return mlfs_err_set(err, ENOMEM, "layer: out of memory");
	rc = build(src, opts, l, err);
	if (rc < 0)
		return rc;
	*out = steal_pointer(&l);
	return 0;
}

struct fd_source {
	int fd;
	char buf[128 << 10];
};

static int fd_read(void *priv, const void **buf, size_t *len)
{
	struct fd_source *s = priv;
	for (;;) {
		ssize_t n = read(s->fd, s->buf, sizeof s->buf);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		*buf = s->buf;
		*len = (size_t)n;
		return 0;
	}
}

int mlfs_layer_open_fd(int fd, const struct mlfs_layer_opts *opts, struct mlfs_layer **out,
		       struct mlfs_err *err)
{
	_cleanup_free_ struct fd_source *s = malloc(sizeof *s);
	if (!s)
		return mlfs_err_set(err, ENOMEM, "layer: out of memory");
	s->fd = fd;
	struct mlfs_layer_source src = { fd_read, s };
	return mlfs_layer_open_source(&src, opts, out, err);
}

size_t mlfs_layer_count(const struct mlfs_layer *l)
{
	return l->n_ents;
}

size_t mlfs_layer_refused(const struct mlfs_layer *l)
{
	return (size_t)l->refused;
}

void mlfs_layer_entry(const struct mlfs_layer *l, size_t i, struct mlfs_entry *out)
{
	const struct mlfs_ient *e = &l->ents[i];
	bool dev = e->kind == MLFS_ENTRY_CHR || e->kind == MLFS_ENTRY_BLK;
	*out = (struct mlfs_entry){
		.path = l->arena + e->path,
		.kind = e->kind,
		.mode = e->mode,
		.uid = e->uid,
		.gid = e->gid,
		.mtime_sec = e->mtime,
		.mtime_nsec = e->mtime_nsec,
		.size = e->size,
		.rdev = dev ? e->data_off : 0,
		.data_off = dev ? 0 : e->data_off,
		.link = e->link == MLFS_NO_STR ? NULL : l->arena + e->link,
		.n_xattrs = e->n_xattrs,
		.stored = e->kind == MLFS_ENTRY_REG ? e->stored : 0,
	};
}

void mlfs_layer_xattr(const struct mlfs_layer *l, size_t i, uint32_t j, const char **name,
		      const void **value, size_t *len)
{
	const struct mlfs_ixattr *x = &l->xattrs[l->ents[i].xattr_first + j];
	*name = l->arena + x->name;
	*value = l->arena + x->value;
	*len = x->len;
}

int mlfs_layer_data_fd(const struct mlfs_layer *l)
{
	return l->data_fd;
}

bool mlfs_layer_is_seekable(const struct mlfs_layer *l)
{
	return l->cs != NULL;
}

int mlfs_layer_fetch(const struct mlfs_layer *l, size_t i, uint64_t off, uint64_t len, struct mlfs_err *err)
{
	const struct mlfs_ient *e = &l->ents[i];
	if (!l->cs || e->kind != MLFS_ENTRY_REG || off >= e->size)
		return 0;
	if (len > e->size - off)
		len = e->size - off;
	int rc = mlfs_chunks_ensure(l, e->data_off + off, len, err);
	if (rc > 0)
		mlfs_chunks_note_miss(l, i);
	return rc < 0 ? rc : 0;
}

ssize_t mlfs_layer_pread(const struct mlfs_layer *l, size_t i, void *buf, size_t len, uint64_t off)
{
	const struct mlfs_ient *e = &l->ents[i];
	if (e->kind != MLFS_ENTRY_REG)
		return -EINVAL;
	if (off >= e->size)
		return 0;
	if (len > e->size - off)
		len = (size_t)(e->size - off);
	int rc = mlfs_layer_fetch(l, i, off, len, NULL);
	if (rc < 0)
		return rc;
	size_t done = 0;
	while (done < len) {
		ssize_t n = pread(l->data_fd, (char *)buf + done, len - done,
				  (off_t)(e->data_off + off + done));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -EIO; /* the data file is shorter than its index says */
		done += (size_t)n;
	}
	return (ssize_t)done;
}

size_t mlfs_layer_mem_bytes(const struct mlfs_layer *l)
{
	return sizeof *l + l->cap_ents * sizeof *l->ents + l->cap_xattrs * sizeof *l->xattrs +
	       l->arena_cap + l->n_chunks * sizeof *l->chunks;
}
