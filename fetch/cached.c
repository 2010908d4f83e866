/* The images a cache knows, read back from what resolving them left:
 * refs/<domain>/<path>/<tag or digest> says what a reference pointed at,
 * and meta/ holds that index or manifest, the platform manifests that were
 * used and their configs.  Nothing here touches the network: this is what
 * `mlfs cache ls`, `rm` and `gc` see. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/grow.h"
#include "fetch/internal.h"

bool mlfs_descriptor_seekable(const struct mlfs_descriptor *d)
{
	return (d->media == MLFS_MEDIA_LAYER_GZIP && d->toc_digest) ||
	       (d->media == MLFS_MEDIA_LAYER_ZSTD && (d->toc_digest || d->zstd_toc_checksum));
}

struct list {
	const char *cache_dir;
	struct mlfs_cached_image *v;
	size_t n, cap;
};

static struct mlfs_cached_image *add(struct list *l, const char *reference, const char *ref_file,
				     const struct stat *st, const char *top)
{
	if (mlfs_grow((void **)&l->v, &l->cap, l->n + 1, sizeof *l->v, 16, SIZE_MAX) < 0)
		return NULL;
	struct mlfs_cached_image *im = &l->v[l->n];
	memset(im, 0, sizeof *im);
	im->reference = strdup(reference);
	im->ref_file = strdup(ref_file);
	if (!im->reference || !im->ref_file) {
		free(im->reference);
		free(im->ref_file);
		return NULL;
	}
	im->resolved = st->st_mtime;
	snprintf(im->top_digest, sizeof im->top_digest, "%s", top);
	l->n++;
	return im;
}

/* One platform manifest (kept in meta/) with its config. */
static int fill_manifest(struct list *l, struct mlfs_cached_image *im, const char *digest, enum mlfs_media media,
			 const struct mlfs_descriptor *from_index)
{
	struct mlfs_fetched f = { 0 }, c = { 0 };
	struct mlfs_manifest *m = NULL;
	struct mlfs_config *cfg = NULL;
	snprintf(im->manifest_digest, sizeof im->manifest_digest, "%s", digest);
	int r = mlfs_metacache_get(l->cache_dir, digest, media, &f);
	if (r == 0)
		r = mlfs_manifest_parse(f.body, f.len, media, &m, NULL);
	if (r == 0) {
		snprintf(im->config_digest, sizeof im->config_digest, "%s", m->config.digest);
		if (mlfs_metacache_get(l->cache_dir, m->config.digest, m->config.media, &c) == 0)
			(void)mlfs_config_parse(c.body, c.len, &cfg, NULL);
		im->layers = calloc(m->n_layers ? m->n_layers : 1, sizeof *im->layers);
		if (!im->layers)
			r = -ENOMEM;
	}
	for (size_t i = 0; r == 0 && i < m->n_layers; i++) {
		struct mlfs_cached_layer *cl = &im->layers[i];
		memcpy(cl->digest, m->layers[i].digest, sizeof cl->digest);
		cl->size = m->layers[i].size;
		cl->seekable = mlfs_descriptor_seekable(&m->layers[i]);
		if (cfg && i < cfg->n_diff_ids)
			memcpy(cl->diff_id, cfg->diff_ids[i], sizeof cl->diff_id);
		im->n_layers++;
	}
	if (r == 0) {
		const struct mlfs_platform *p = from_index && from_index->has_platform ? &from_index->platform
						: cfg ? &cfg->platform : NULL;
		if (p)
			mlfs_platform_format(p, im->platform, sizeof im->platform);
	}
	mlfs_config_free(cfg);
	mlfs_manifest_free(m);
	mlfs_fetched_clear(&c);
	mlfs_fetched_clear(&f);
	return r;
}

static int read_ref(const char *path, char digest[MLFS_DIGEST_MAX], enum mlfs_media *media)
{
	char buf[512] = "";
	FILE *f = fopen(path, "re");
	if (!f)
		return -errno;
	size_t n = fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	buf[n] = '\0';
	char d[MLFS_DIGEST_MAX + 1], m[256];
	if (sscanf(buf, "%72s %255s", d, m) != 2 || mlfs_digest_validate(d) < 0)
		return -EBADMSG;
	memcpy(digest, d, MLFS_DIGEST_MAX);
	*media = mlfs_media_from_string(m);
	return 0;
}

/* One refs/ file: an entry per platform manifest the cache holds (a
 * platform never mounted has none), or one bare entry when even the
 * reference's own manifest is gone. */
static int one_ref(struct list *l, const char *path, const char *rel, const struct stat *st)
{
	/* rel is "<domain>/<path>/<tag or digest>": the last '/' splits it. */
	const char *last = strrchr(rel, '/');
	if (!last || !strchr(rel, '/') || last == strchr(rel, '/'))
		return 0; /* not a reference's file */
	_cleanup_free_ char *reference = NULL;
	bool by_digest = !strncmp(last + 1, "sha256:", 7);
	if (asprintf(&reference, "%.*s%c%s", (int)(last - rel), rel, by_digest ? '@' : ':', last + 1) < 0)
		return -ENOMEM;
	char top[MLFS_DIGEST_MAX];
	enum mlfs_media media = MLFS_MEDIA_UNKNOWN;
	if (read_ref(path, top, &media) < 0)
		return 0; /* a torn or foreign file: not an image */
	size_t before = l->n;
	if (mlfs_media_is_index(media)) {
		struct mlfs_fetched f = { 0 };
		struct mlfs_index *idx = NULL;
		if (mlfs_metacache_get(l->cache_dir, top, media, &f) == 0 &&
		    mlfs_index_parse(f.body, f.len, media, &idx, NULL) == 0) {
			for (size_t i = 0; i < idx->n_manifests; i++) {
				const struct mlfs_descriptor *d = &idx->manifests[i];
				struct stat mst;
				_cleanup_free_ char *mp = mlfs_metacache_path(l->cache_dir, d->digest);
				if (!mp || stat(mp, &mst) < 0)
					continue;
				struct mlfs_cached_image *im = add(l, reference, path, st, top);
				if (!im)
					break;
				(void)fill_manifest(l, im, d->digest, d->media, d);
			}
		}
		mlfs_index_free(idx);
		mlfs_fetched_clear(&f);
	} else {
		struct mlfs_cached_image *im = add(l, reference, path, st, top);
		if (im)
			(void)fill_manifest(l, im, top, media, NULL);
	}
	if (l->n == before && !add(l, reference, path, st, top))
		return -ENOMEM;
	return 0;
}

static int walk(struct list *l, const char *dir, const char *rel, int depth)
{
	DIR *d = opendir(dir);
	if (!d)
		return errno == ENOENT ? 0 : -errno;
	int r = 0;
	struct dirent *de;
	while (r == 0 && (de = readdir(d))) {
		if (de->d_name[0] == '.' && (!de->d_name[1] || (de->d_name[1] == '.' && !de->d_name[2])))
			continue;
		if (strstr(de->d_name, ".tmp."))
			continue; /* a write in progress, or a crash's leftover */
		_cleanup_free_ char *path = NULL, *sub = NULL;
		if (asprintf(&path, "%s/%s", dir, de->d_name) < 0 ||
		    asprintf(&sub, "%s%s%s", rel, *rel ? "/" : "", de->d_name) < 0) {
			r = -ENOMEM;
			break;
		}
		struct stat st;
		if (lstat(path, &st) < 0)
			continue;
		if (S_ISDIR(st.st_mode) && depth < 64)
			r = walk(l, path, sub, depth + 1);
		else if (S_ISREG(st.st_mode))
			r = one_ref(l, path, sub, &st);
	}
	closedir(d);
	return r;
}

int mlfs_cached_images(const char *cache_dir, struct mlfs_cached_image **out, size_t *n)
{
	struct list l = { .cache_dir = cache_dir };
	_cleanup_free_ char *refs = NULL;
	if (asprintf(&refs, "%s/refs", cache_dir) < 0)
		return -ENOMEM;
	int r = walk(&l, refs, "", 0);
	if (r < 0) {
		mlfs_cached_images_free(l.v, l.n);
		return r;
	}
	*out = l.v;
	*n = l.n;
	return 0;
}

void mlfs_cached_images_free(struct mlfs_cached_image *v, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(v[i].reference);
		free(v[i].ref_file);
		free(v[i].layers);
	}
	free(v);
}

int mlfs_metacache_drop(const char *cache_dir, const char *digest)
{
	_cleanup_free_ char *p = mlfs_metacache_path(cache_dir, digest);
	if (!p)
		return -EINVAL;
	return unlink(p) < 0 ? -errno : 0;
}
