/* A live mount's statistics, for `mlfs stat DIR`.
 *
 * Why a virtual xattr on the root (getxattr(DIR, "user.mlfs.stats")):
 * it reaches exactly the daemon that serves DIR, with the kernel's own
 * access checks — whoever may read DIR's root (its user, or everyone
 * with allow_other) may read its statistics, and nobody needs a
 * privilege, a socket path or a pid.  A Unix socket would need a place
 * on disk that outlives crashes and a permission scheme of its own.
 * The attribute is answered only by name and never listed, so tar
 * --xattrs, cp -a, rsync -X and getfattr -d (which copy what listxattr
 * lists) copy the image's own root attributes and nothing else; it is
 * answered without loading anything, so asking costs a mount that has
 * not fetched a layer yet nothing.  Its value is JSON, versioned, and
 * changes between two calls: a size query is answered with room to spare
 * (fs/ops.c), and mlfs stat asks once with a large buffer.
 *
 * The counters behind it cost the read path one relaxed atomic add per
 * read; the rest (layers loaded, chunk counts, the last error) is read
 * from the loader when asked. */
#include "fs/stats.h"

#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fs/fs.h"

void mlfs_stats_progress(void *priv, size_t layer, enum mlfs_progress_event ev, uint64_t n)
{
	struct mlfs_stats *s = priv;
	(void)layer;
	switch (ev) {
	case MLFS_PROGRESS_FETCHED:
		__atomic_fetch_add(&s->fetched, n, __ATOMIC_RELAXED);
		break;
	case MLFS_PROGRESS_REUSED:
		__atomic_fetch_add(&s->reused, n, __ATOMIC_RELAXED);
		break;
	case MLFS_PROGRESS_INDEXED:
		__atomic_fetch_add(&s->layers_cached, 1, __ATOMIC_RELAXED);
		break;
	}
}

static json_t *uint_json(uint64_t v)
{
	return json_integer(v > (uint64_t)INT64_MAX ? INT64_MAX : (json_int_t)v);
}

char *mlfs_stats_json(struct mlfs_fs *fs, size_t *len)
{
	const struct mlfs_image *img = fs->img;
	struct mlfs_stats *s = &fs->stats;
	size_t n = loader_layer_count(fs->loader), loaded = 0;
	struct mlfs_layer_stats sum = { 0 };
	for (size_t i = 0; i < n; i++) {
		const struct mlfs_layer *layer;
		if (!loader_layer_peek(fs->loader, i, &layer, NULL))
			continue;
		loaded++;
		struct mlfs_layer_stats st;
		mlfs_layer_stats(layer, &st);
		sum.chunks += st.chunks;
		sum.chunks_present += st.chunks_present;
		sum.chunks_fetched += st.chunks_fetched;
		sum.requests += st.requests;
	}
	char platform[128], error[1024];
	int64_t error_at = 0;
	mlfs_platform_format(&img->config->platform, platform, sizeof platform);
	loader_last_error(fs->loader, error, sizeof error, &error_at);
	for (char *c = error; *c; c++) /* paths from an image need not be UTF-8: JSON strings must */
		if ((unsigned char)*c < 0x20 || (unsigned char)*c >= 0x80)
			*c = '?';
	json_t *o = json_pack("{s:i, s:s, s:s, s:s, s:I, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, "
			      "s:o, s:o, s:o}",
			      "version", 1,
			      "reference", img->canonical,
			      "platform", platform,
			      "manifest", img->manifest_digest,
			      "pid", (json_int_t)getpid(),
			      "ready", json_boolean(loader_peek(fs->loader) != NULL),
			      "layers_total", uint_json(n),
			      "layers_loaded", uint_json(loaded),
			      "layers_from_cache", uint_json(__atomic_load_n(&s->layers_cached, __ATOMIC_RELAXED)),
			      "bytes_fetched", uint_json(__atomic_load_n(&s->fetched, __ATOMIC_RELAXED)),
			      "bytes_reused", uint_json(__atomic_load_n(&s->reused, __ATOMIC_RELAXED)),
			      "bytes_served", uint_json(__atomic_load_n(&s->served, __ATOMIC_RELAXED)),
			      "reads", uint_json(__atomic_load_n(&s->reads, __ATOMIC_RELAXED)),
			      "chunks_total", uint_json(sum.chunks),
			      "chunks_present", uint_json(sum.chunks_present),
			      "chunks_fetched", uint_json(sum.chunks_fetched),
			      "chunk_requests", uint_json(sum.requests),
			      "last_error", error[0] ? json_string(error) : json_null(),
			      "last_error_time", error[0] ? json_integer(error_at) : json_null());
	if (!o)
		return NULL;
	char *text = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
	json_decref(o);
	if (text)
		*len = strlen(text);
	return text;
}
