/* One image layer, ready to read: where fetch/ meets layers/.
 *
 * A layer indexed before is opened from its cached index: no network, no
 * decompression.  Otherwise the blob is downloaded and indexed at the same
 * time: the download hands every byte to a pipe, and an indexer thread
 * decompresses from the other end as bytes arrive, so decompression (the
 * slower half, FIELD-NOTES) starts with the first bytes, not after the
 * last.  The pipe's fixed size is the back-pressure: the download never
 * runs more than a pipe's worth ahead, and no layer is held in memory.
 * Both sides verify the blob digest; the download's error, if any, is the
 * one reported, since it says why the indexer's stream ended early.
 *
 * The cache holds each layer once: the compressed blob is a means, dropped
 * once its layer is indexed and both digests matched (unless the user keeps
 * blobs), and one process at a time builds a given layer (the others wait
 * on its build lock, then open what it built).  With a cap, the cache is
 * made to fit before a layer is added (reserving its blob's size) and after
 * (mlfs_cache_enforce()). */
#include "fs/layerload.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/log.h"

#define PIPE_BYTES (1 << 20)

struct indexer {
	int fd;
	const struct mlfs_layer_opts *opts;
	struct mlfs_layer *layer;
	struct mlfs_err err;
	int r;
};

static void *index_thread(void *arg)
{
	struct indexer *x = arg;
	int r = mlfs_layer_open_fd(x->fd, x->opts, &x->layer, &x->err);
	__atomic_store_n(&x->r, r, __ATOMIC_RELEASE);
	/* Closing our end makes a download still writing fail with EPIPE
	 * instead of blocking forever on a pipe nobody reads. */
	close(x->fd);
	return NULL;
}

/* Failures of this machine (disk, memory, descriptors), not of the bytes. */
static bool resource_error(int r)
{
	return r == -ENOSPC || r == -EDQUOT || r == -ENOMEM || r == -EMFILE || r == -ENFILE || r == -EIO ||
	       r == -EROFS || r == -EACCES || r == -EPERM;
}

struct pipe_out {
	int fd;
	const struct indexer *x;
};

/* The download's sink.  When the indexer stopped reading, the answer tells
 * the blob fetch why, since that decides the fate of a partial download
 * the bytes came from: -EPIPE (the bytes were bad: a resumed prefix is
 * suspect), the indexer's own error when the machine failed (the prefix
 * is fine, keep it), -ECANCELED when the layer needs no more bytes. */
static int to_pipe(void *priv, const void *buf, size_t len)
{
	const struct pipe_out *o = priv;
	const char *p = buf;
	while (len) {
		ssize_t n = write(o->fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EPIPE) {
			/* The indexer set its result before it closed the pipe. */
			int r = __atomic_load_n(&o->x->r, __ATOMIC_ACQUIRE);
			return r == 0 ? -ECANCELED : resource_error(r) ? r : -EPIPE;
		}
		if (n < 0)
			return -errno;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static int fetch_and_index(struct mlfs_image *img, size_t i, const struct mlfs_layer_opts *o,
			   struct mlfs_layer **out, struct mlfs_err *err)
{
	int fds[2];
	if (pipe2(fds, O_CLOEXEC) < 0)
		return mlfs_err_set(err, errno, "cannot create a pipe: %s", strerror(errno));
	(void)fcntl(fds[1], F_SETPIPE_SZ, PIPE_BYTES);
	struct indexer x = { .fd = fds[0], .opts = o };
	pthread_t tid;
	if (pthread_create(&tid, NULL, index_thread, &x) != 0) {
		close(fds[0]);
		close(fds[1]);
		return mlfs_err_set(err, EAGAIN, "cannot start an indexer thread");
	}
	_cleanup_free_ char *path = NULL;
	struct pipe_out po = { fds[1], &x };
	int r = mlfs_image_layer_blob_observed(img, i, to_pipe, &po, &path, err);
	close(fds[1]); /* end of stream for the indexer */
	pthread_join(tid, NULL);
	if ((r == -EPIPE || (resource_error(r) && r == x.r)) && x.r < 0) {
		/* The indexer gave up first (a malformed layer, a full disk): its
		 * reason is the real one. */
		*err = x.err;
		return x.r;
	}
	if (r == -ECANCELED && x.r == 0) {
		/* The indexer found the layer indexed by another process meanwhile
		 * and stopped reading: its layer is good, the download not needed. */
		*out = x.layer;
		return 0;
	}
	if (r < 0) {
		mlfs_layer_free(x.layer);
		return r;
	}
	if (x.r < 0) {
		*err = x.err;
		mlfs_err_wrap(err, "layer %zu of %s", i + 1, img->canonical);
		return x.r;
	}
	/* Indexed and both digests matched: the data file is the layer now. */
	if (!img->keep_blobs && path && unlink(path) == 0)
		log_debug(MLFS_AREA_LAYERS, "layer %zu: blob %s dropped, its layer is indexed", i + 1, path);
	*out = x.layer;
	return 0;
}

static void report_evicted(void *priv, const struct mlfs_cache_item *it)
{
	(void)priv;
	log_info(MLFS_AREA_LAYERS, "cache: evicted %s %s (%" PRIu64 " bytes, unused since %" PRId64 ")",
		 it->kind == MLFS_CACHE_LAYER ? "layer" : it->kind == MLFS_CACHE_BLOB ? "blob" : "leftover",
		 it->path ? it->path : it->key, it->bytes, it->last_use);
}

void mlfs_image_layers_touch(struct mlfs_image *img)
{
	for (size_t i = 0; i < img->manifest->n_layers; i++) {
		const struct mlfs_descriptor *d = &img->manifest->layers[i];
		const char *diff_id = i < img->config->n_diff_ids ? img->config->diff_ids[i] : NULL;
		if (diff_id && !mlfs_descriptor_seekable(d))
			mlfs_cache_touch_key(img->cache_dir, diff_id);
		mlfs_cache_touch_key(img->cache_dir, d->digest);
	}
}

void mlfs_cache_enforce(struct mlfs_image *img, uint64_t reserve)
{
	/* One warning per process: a mount over its cap says so once, not per layer. */
	static atomic_bool warned;
	if (!img->cache_max)
		return;
	uint64_t total = 0;
	int r = mlfs_cache_fit(img->cache_dir, img->cache_max, reserve, report_evicted, NULL, &total);
	if (r == -ENOSPC && !atomic_exchange(&warned, true)) {
		uint64_t busy = mlfs_cache_bytes_in_use(img->cache_dir);
		if (busy)
			log_warn(MLFS_AREA_LAYERS, "cache %s: %" PRIu64 " bytes in use by live mounts and commands, "
				 "%" PRIu64 " of manifests and such, and %" PRIu64 " being added exceed cache-max "
				 "(%" PRIu64 "): going over the cap until they end", img->cache_dir, busy,
				 total > busy ? total - busy : 0, reserve, img->cache_max);
		else
			log_warn(MLFS_AREA_LAYERS, "cache %s: %" PRIu64 " bytes being added (and %" PRIu64 " of manifests "
				 "and such) exceed cache-max (%" PRIu64 ") with everything else evicted: going over "
				 "the cap until this ends", img->cache_dir, reserve, total, img->cache_max);
	} else if (r < 0 && r != -ENOSPC)
		log_warn(MLFS_AREA_LAYERS, "cache %s: cannot evict: %s", img->cache_dir, strerror(-r));
}

/* A seekable layer's source of bytes: Range requests on its blob. */
struct ranges {
	struct mlfs_image *img;
	size_t i;
};

static int ranges_read(void *priv, uint64_t off, size_t len, void *buf, struct mlfs_err *err)
{
	struct ranges *r = priv;
	return mlfs_image_layer_range(r->img, r->i, off, len, buf, err);
}

static int ranges_stream(void *priv, int (*sink)(void *sp, const void *buf, size_t len), void *sink_priv,
			 struct mlfs_err *err)
{
	struct ranges *r = priv;
	return mlfs_image_layer_stream(r->img, r->i, sink, sink_priv, err);
}

static bool ranges_distrust(void *priv)
{
	struct ranges *r = priv;
	return mlfs_image_layer_distrust(r->img, r->i);
}

bool mlfs_image_layer_seekable(const struct mlfs_image *img, size_t i)
{
	return mlfs_descriptor_seekable(&img->manifest->layers[i]);
}

/* The tree from the TOC alone, or -errno with err saying why not. */
static int open_seekable(struct mlfs_image *img, size_t i, const struct mlfs_layer_opts *o,
			 struct mlfs_layer **out, struct mlfs_err *err)
{
	const struct mlfs_descriptor *d = &img->manifest->layers[i];
	struct mlfs_seekable_desc sd = {
		.blob_digest = d->digest,
		.blob_size = (uint64_t)d->size,
		.zstd = d->media == MLFS_MEDIA_LAYER_ZSTD,
		.toc_digest = d->toc_digest,
		.zstd_toc_checksum = d->zstd_toc_checksum,
		.zstd_toc_position = d->zstd_toc_position,
	};
	struct ranges *r = malloc(sizeof *r);
	if (!r)
		return mlfs_err_set(err, ENOMEM, "out of memory");
	*r = (struct ranges){ img, i };
	struct mlfs_blob_ranges src = { ranges_read, r, free, ranges_stream, ranges_distrust };
	return mlfs_layer_open_seekable(o, &sd, &src, out, err);
}

int mlfs_image_layer_open(struct mlfs_image *img, size_t i, struct mlfs_layer **out, struct mlfs_err *err)
{
	const struct mlfs_descriptor *d = &img->manifest->layers[i];
	struct mlfs_layer_opts o = {
		.cache_dir = img->cache_dir,
		.diff_id = img->config->diff_ids[i],
		.blob_digest = d->digest,
		.estargz = d->toc_digest != NULL,
	};
	/* A layer indexed whole before has every byte: nothing beats that. */
	int r = mlfs_layer_open_cached(&o, out, err);
	if (r == 0)
		mlfs_image_progress(img, i, MLFS_PROGRESS_INDEXED, (uint64_t)d->size);
	if (r != -ENOENT)
		return r;
	if (mlfs_image_layer_seekable(img, i)) {
		struct mlfs_err serr = { 0 };
		r = open_seekable(img, i, &o, out, &serr);
		if (r == 0) {
			log_debug(MLFS_AREA_LAYERS, "layer %zu (%s): indexed from its TOC", i + 1, d->digest);
			return 0;
		}
		log_warn(MLFS_AREA_LAYERS, "layer %zu (%s): %s; fetching it whole instead", i + 1, d->digest,
			 serr.msg[0] ? serr.msg : strerror(-r));
	}
	/* One builder per layer: whoever waited here finds the layer built. */
	const char *key = o.diff_id ? o.diff_id : o.blob_digest;
	int lock = -1;
	r = mlfs_cache_lock_build(img->cache_dir, key, img->wait_s ? img->wait_s : 300, &img->cancelled, &lock);
	if (r == -ETIMEDOUT)
		return mlfs_err_set(err, ETIMEDOUT, "layer %zu of %s: another process has been building it for "
				    "too long (raise timeout=)", i + 1, img->canonical);
	if (r == -ECANCELED)
		return mlfs_err_set(err, ECANCELED, "layer %zu of %s: cancelled (unmounting)", i + 1, img->canonical);
	if (r < 0)
		log_warn(MLFS_AREA_LAYERS, "layer %zu: no build lock (%s): building it anyway", i + 1, strerror(-r));
	else if ((r = mlfs_layer_open_cached(&o, out, err)) != -ENOENT) {
		mlfs_cache_unlock_build(img->cache_dir, key, lock);
		if (r == 0) /* built by another process while we waited */
			mlfs_image_progress(img, i, MLFS_PROGRESS_INDEXED, (uint64_t)d->size);
		return r;
	}
	mlfs_cache_enforce(img, (uint64_t)d->size);
	log_debug(MLFS_AREA_LAYERS, "indexing layer %zu (%s) while it downloads", i + 1, d->digest);
	r = fetch_and_index(img, i, &o, out, err);
	if (r == -EAGAIN) {
		/* Cached bytes proved junk after the indexer had read them; they
		 * are gone now: once more, from byte 0 of the registry's blob. */
		log_warn(MLFS_AREA_LAYERS, "layer %zu: %s: indexing it again from the registry", i + 1, err->msg);
		memset(err, 0, sizeof *err);
		r = fetch_and_index(img, i, &o, out, err);
	}
	mlfs_cache_unlock_build(img->cache_dir, key, lock);
	if (r == 0)
		mlfs_cache_enforce(img, 0);
	return r;
}
