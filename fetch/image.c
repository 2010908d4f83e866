/* From a reference string to one platform's manifest and config.
 *
 * The order is the data's: the tag (or digest) answers with an index or a
 * manifest; an index is narrowed to one platform, whose manifest is then
 * fetched by digest (and so verified); the manifest names the config, a
 * small blob fetched by digest too.  Nothing here touches a layer.
 *
 * The trust policy is the first step and, when it wants signatures, the
 * step after the platform's manifest is known: until they verify
 * (policyverify.c) nothing of the image is kept in the cache, so a
 * refused image leaves no trace there, and the config is not even asked
 * for.  mount, inspect, export, pull and chroot all open images here. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <sys/stat.h>

#include "common/log.h"
#include "fetch/internal.h"

/* By digest: the cache first (content-addressed, re-verified), then the
 * registry, keeping what it sends. */
static int fetch_by_digest(struct mlfs_image *img, const struct mlfs_descriptor *d, bool small_blob,
			   struct mlfs_fetched *f, struct mlfs_err *err)
{
	int r = mlfs_metacache_get(img->cache_dir, d->digest, d->media, f);
	if (r == 0)
		return 0;
	if (img->offline)
		return mlfs_err_set(err, ENOENT, "%s of %s is not in the cache %s: mount once without offline",
				    d->digest, img->canonical, img->cache_dir);
	r = small_blob ? mlfs_registry_get_small_blob(img->reg, d, f, err)
		       : mlfs_registry_get_manifest(img->reg, d->digest, f, err);
	if (r == 0 && !img->hold && mlfs_metacache_put(img->cache_dir, f) < 0)
		log_warn(MLFS_AREA_FETCH, "cannot keep %s in the cache %s", d->digest, img->cache_dir);
	return r;
}

/* What the reference names now: asked of the registry (a tag may have
 * moved), or of the cache when offline. */
static int fetch_top(struct mlfs_image *img, struct mlfs_fetched *f, struct mlfs_err *err)
{
	if (img->offline) {
		struct mlfs_descriptor d = { 0 };
		int r = mlfs_metacache_get_ref(img->cache_dir, &img->ref, d.digest, &d.media);
		if (r < 0)
			return mlfs_err_set(err, ENOENT, "%s is not in the cache %s: mount once without offline",
					    img->canonical, img->cache_dir);
		return fetch_by_digest(img, &d, false, f, err);
	}
	int r = mlfs_registry_get_manifest(img->reg, mlfs_ref_reference(&img->ref), f, err);
	if (r < 0 || img->hold)
		return r;
	if (mlfs_metacache_put(img->cache_dir, f) < 0 ||
	    mlfs_metacache_put_ref(img->cache_dir, &img->ref, f->digest, f->media) < 0)
		log_warn(MLFS_AREA_FETCH, "cannot keep the manifest of %s in the cache %s", img->canonical,
			 img->cache_dir);
	return 0;
}

static int pick_platform(struct mlfs_image *img, const struct mlfs_fetched *top, struct mlfs_fetched *f,
			 struct mlfs_err *err)
{
	int r = mlfs_index_parse(top->body, top->len, top->media, &img->index, err);
	if (r < 0)
		return r;
	memcpy(img->index_digest, top->digest, sizeof img->index_digest);
	r = mlfs_platform_select(img->index, &img->want, &img->chosen, err);
	if (r < 0)
		return r;
	const struct mlfs_descriptor *d = &img->index->manifests[img->chosen];
	if (!mlfs_media_is_manifest(d->media))
		return mlfs_err_set(err, EPROTO, "the index entry %s is not an image manifest (nested indexes are "
				    "not supported)", d->digest);
	return fetch_by_digest(img, d, false, f, err);
}

/* The trust policy, decided from the reference alone before anything is
 * asked of the registry or the cache: "reject" needs nothing more.  When
 * signatures must be checked, *policy is kept for verify_signatures()
 * and img->hold set: nothing is kept in the cache until they verify. */
static int check_policy(struct mlfs_image *img, const struct mlfs_image_opts *opts, struct mlfs_policy **policy,
			struct mlfs_err *err)
{
	*policy = NULL;
	if (opts->insecure_policy) {
		log_debug(MLFS_AREA_FETCH, "%s: no policy check (insecure-policy)", img->canonical);
		return 0;
	}
	char *path = NULL;
	if (mlfs_policy_locate(opts->policy, &path) < 0)
		return mlfs_err_set(err, ENOMEM, "out of memory");
	if (!path) {
		log_debug(MLFS_AREA_FETCH, "%s: no policy file ($MLFS_POLICY, ~/.config/containers/policy.json, "
			  "/etc/containers/policy.json): every image is accepted", img->canonical);
		return 0;
	}
	int r = mlfs_policy_load(path, policy, err);
	free(path);
	if (r == 0)
		r = mlfs_policy_check(*policy, &img->ref, err);
	if (r > 0) {
		img->hold = true;
		return 0;
	}
	mlfs_policy_free(*policy);
	*policy = NULL;
	return r;
}

/* The manifest to mount is known (and the index it came from): the
 * policy's signature requirements are checked against them
 * (policyverify.c), then what was held back goes into the cache, the
 * signatures fetched over the network last (after the manifests they
 * sign: `cache gc` removes signatures whose manifest is gone).  Refused,
 * nothing is kept, and signatures a fresh fetch no longer finds (or no
 * longer accepts) are not kept any more either: offline must not accept
 * what online just refused for want of a signature. */
static int verify_signatures(struct mlfs_image *img, const struct mlfs_image_opts *opts,
			     const struct mlfs_policy *policy, const struct mlfs_fetched *top,
			     const struct mlfs_fetched *man, struct mlfs_err *err)
{
	struct mlfs_sig_keep keep = { 0 };
	struct mlfs_policy_subject s = { .ref = &img->ref, .manifest_digest = man->digest,
					 .index_digest = top->body ? top->digest : NULL,
					 .registries_d = opts->registries_d, .offline = img->offline,
					 .reg = img->reg, .cache_dir = img->cache_dir,
					 .keep = img->offline ? NULL : &keep };
	int r = mlfs_policy_verify(policy, &s, &img->signed_by, err);
	if (r < 0) {
		(void)mlfs_sig_keep_commit(img->cache_dir, &keep, false);
		mlfs_sig_keep_clear(&keep);
		return r;
	}
	img->hold = false;
	if (img->offline)
		return 0; /* read from the cache: already there */
	if ((top->body && mlfs_metacache_put(img->cache_dir, top) < 0) || mlfs_metacache_put(img->cache_dir, man) < 0 ||
	    mlfs_metacache_put_ref(img->cache_dir, &img->ref, top->body ? top->digest : man->digest,
				   top->body ? top->media : man->media) < 0)
		log_warn(MLFS_AREA_FETCH, "cannot keep the manifest of %s in the cache %s", img->canonical,
			 img->cache_dir);
	else if (mlfs_sig_keep_commit(img->cache_dir, &keep, true) < 0)
		log_warn(MLFS_AREA_FETCH, "cannot keep the signatures of %s in the cache %s for offline use",
			 img->canonical, img->cache_dir);
	mlfs_sig_keep_clear(&keep);
	return 0;
}

static void warn_platform_mismatch(const struct mlfs_image *img)
{
	if (mlfs_platform_rank(&img->want, &img->config->platform) >= 0)
		return;
	char want[128], have[128];
	mlfs_platform_format(&img->want, want, sizeof want);
	mlfs_platform_format(&img->config->platform, have, sizeof have);
	log_warn(MLFS_AREA_FETCH, "%s is a single-platform image for %s, not %s: using it as it is",
		 img->canonical, have, want);
}

/* One fully-qualified candidate, up to what its tag or digest names:
 * the policy, the endpoints, the top manifest.  *absent when the registry
 * has no such image (404, or the 401/403 registries give for a repository
 * one may not see): the next candidate may have it. */
static int open_candidate(struct mlfs_image *img, const char *reference, const struct mlfs_image_opts *opts,
			  struct mlfs_policy **policy, struct mlfs_fetched *top, bool *absent, struct mlfs_err *err)
{
	*absent = false;
	int r = mlfs_ref_parse(reference, &img->ref, err);
	if (r < 0)
		return r;
	if (!(img->canonical = mlfs_ref_canonical(&img->ref)))
		return mlfs_err_set(err, ENOMEM, "out of memory");
	r = check_policy(img, opts, policy, err);
	if (r < 0)
		return r;
	struct mlfs_endpoints eps = { 0 };
	struct mlfs_mirror_opts mopts = { .registries_conf = opts->registries_conf };
	r = mlfs_endpoints_for(&img->ref, &mopts, &eps, err);
	if (r == 0) {
		struct mlfs_registry_opts ropts = { .insecure = opts->insecure, .endpoints = &eps };
		r = mlfs_registry_new(&img->ref, &ropts, &img->reg, err);
	}
	mlfs_endpoints_clear(&eps);
	if (r < 0)
		return r;
	r = fetch_top(img, top, err);
	*absent = r == -ENOENT || r == -EACCES;
	return r;
}

static void forget_candidate(struct mlfs_image *img, struct mlfs_policy **policy)
{
	mlfs_ref_clear(&img->ref);
	free(img->canonical);
	img->canonical = NULL;
	mlfs_registry_free(img->reg);
	img->reg = NULL;
	mlfs_policy_free(*policy);
	*policy = NULL;
	img->hold = false;
}

/* A short name's candidates in order (shortname.c), until one has the
 * image: a manifest request each, at most.  Only "not there" moves on;
 * any other failure (network, a refused signature, a blocked registry)
 * is the answer, as a search through the rest could hide it. */
static int open_reference(struct mlfs_image *img, const char *reference, const struct mlfs_short_result *cands,
			  const struct mlfs_image_opts *opts, struct mlfs_policy **policy, struct mlfs_fetched *top,
			  struct mlfs_err *err)
{
	bool absent = false;
	int r = 0;
	size_t i;
	for (i = 0; i < cands->n; i++) {
		if (i)
			forget_candidate(img, policy);
		r = open_candidate(img, cands->candidates[i], opts, policy, top, &absent, err);
		if (r == 0 || !absent)
			break;
		if (i + 1 < cands->n)
			log_debug(MLFS_AREA_FETCH, "short name %s: not at %s (%s): trying the next search registry",
				  mlfs_printable(reference, (char[256]){ 0 }, 256), cands->candidates[i],
				  err ? err->msg : "not found");
	}
	if (r < 0 && !absent && cands->n > 1 && i < cands->n)
		mlfs_err_wrap(err, "short name %s: %s (unqualified-search registry %zu of %zu; the rest were not tried)",
			      mlfs_printable(reference, (char[256]){ 0 }, 256), cands->candidates[i], i + 1, cands->n);
	if (r < 0 && absent && cands->n > 1)
		mlfs_err_wrap(err, "short name %s: none of the %zu unqualified-search registries of %s has it; "
			      "the last one", mlfs_printable(reference, (char[256]){ 0 }, 256), cands->n, cands->origin);
	return r;
}

int mlfs_image_open(const char *reference, const struct mlfs_image_opts *opts, struct mlfs_image **out,
		    struct mlfs_err *err)
{
	static const struct mlfs_image_opts defaults = { 0 };
	if (!opts)
		opts = &defaults;
	struct mlfs_image *img = calloc(1, sizeof *img);
	if (!img)
		return mlfs_err_set(err, ENOMEM, "out of memory");
	struct mlfs_fetched top = { 0 }, man = { 0 }, cfg = { 0 };
	struct mlfs_policy *policy = NULL;
	struct mlfs_short_result cands = { 0 };
	struct mlfs_mirror_opts mopts = { .registries_conf = opts->registries_conf };
	int r = mlfs_shortname_resolve(reference, &mopts, &cands, err);
	if (r < 0)
		goto fail;
	img->cache_dir = mlfs_cache_dir_default(opts->cache_dir);
	if (!img->cache_dir) {
		r = mlfs_err_set(err, ENOENT, "cannot tell where the cache should be: set MLFS_CACHE or use --cache");
		goto fail;
	}
	r = opts->platform ? mlfs_platform_parse(opts->platform, &img->want, err) : mlfs_platform_host(&img->want);
	if (r < 0) {
		if (!opts->platform)
			mlfs_err_set(err, -r, "cannot tell this host's platform: choose one with --platform (or -o platform=)");
		goto fail;
	}
	img->offline = opts->offline;
	img->wait_s = opts->wait_s;
	img->cache_max = opts->cache_max;
	img->keep_blobs = opts->keep_blobs;
	img->progress = opts->progress;
	img->progress_priv = opts->progress_priv;
	r = open_reference(img, reference, &cands, opts, &policy, &top, err);
	mlfs_short_result_clear(&cands);
	if (r < 0)
		goto fail;
	if (mlfs_media_is_index(top.media)) {
		r = pick_platform(img, &top, &man, err);
		if (r < 0)
			goto fail;
	} else {
		man = top;
		memset(&top, 0, sizeof top);
	}
	if (policy) {
		r = verify_signatures(img, opts, policy, &top, &man, err);
		if (r < 0)
			goto fail;
	}
	memcpy(img->manifest_digest, man.digest, sizeof img->manifest_digest);
	r = mlfs_manifest_parse(man.body, man.len, man.media, &img->manifest, err);
	if (r < 0)
		goto fail;
	r = fetch_by_digest(img, &img->manifest->config, true, &cfg, err);
	if (r < 0)
		goto fail;
	r = mlfs_config_parse(cfg.body, cfg.len, &img->config, err);
	if (r < 0) {
		mlfs_err_wrap(err, "config %s", img->manifest->config.digest);
		goto fail;
	}
	if (img->manifest->n_layers > MLFS_MAX_LAYERS) {
		r = mlfs_err_set(err, E2BIG, "%s has %zu layers; at most %d are supported", img->canonical,
				 img->manifest->n_layers, MLFS_MAX_LAYERS);
		goto fail;
	}
	if (img->config->n_diff_ids != img->manifest->n_layers) {
		r = mlfs_err_set(err, EPROTO, "malformed image: the manifest has %zu layers but the config %zu diff_ids",
				 img->manifest->n_layers, img->config->n_diff_ids);
		goto fail;
	}
	if (!img->index)
		warn_platform_mismatch(img);
	mlfs_fetched_clear(&top);
	mlfs_fetched_clear(&man);
	mlfs_fetched_clear(&cfg);
	mlfs_policy_free(policy);
	*out = img;
	return 0;
fail:
	mlfs_short_result_clear(&cands);
	mlfs_policy_free(policy);
	mlfs_fetched_clear(&top);
	mlfs_fetched_clear(&man);
	mlfs_fetched_clear(&cfg);
	mlfs_image_free(img);
	return r;
}

void mlfs_image_cancel(struct mlfs_image *img)
{
	__atomic_store_n(&img->cancelled, true, __ATOMIC_RELEASE);
	if (img->reg)
		mlfs_registry_cancel(img->reg);
}

void mlfs_image_free(struct mlfs_image *img)
{
	if (!img)
		return;
	mlfs_ref_clear(&img->ref);
	free(img->canonical);
	free(img->cache_dir);
	mlfs_registry_free(img->reg);
	mlfs_index_free(img->index);
	mlfs_manifest_free(img->manifest);
	mlfs_config_free(img->config);
	free(img->signed_by);
	free(img);
}

void mlfs_image_progress(const struct mlfs_image *img, size_t i, enum mlfs_progress_event ev, uint64_t n)
{
	if (img->progress)
		img->progress(img->progress_priv, i, ev, n);
}

int mlfs_image_layer_blob(struct mlfs_image *img, size_t i, char **blob_path, struct mlfs_err *err)
{
	return mlfs_image_layer_blob_observed(img, i, NULL, NULL, blob_path, err);
}

int mlfs_image_layer_blob_observed(struct mlfs_image *img, size_t i, mlfs_sink_fn observe, void *priv,
				   char **blob_path, struct mlfs_err *err)
{
	if (i >= img->manifest->n_layers)
		return mlfs_err_set(err, EINVAL, "no layer %zu", i);
	const struct mlfs_descriptor *d = &img->manifest->layers[i];
	if (img->offline) {
		char *path = NULL;
		struct stat st;
		if (asprintf(&path, "%s/blobs/sha256/%s", img->cache_dir, d->digest + strlen("sha256:")) < 0)
			return mlfs_err_set(err, ENOMEM, "out of memory");
		bool cached = stat(path, &st) == 0 && st.st_size == d->size;
		free(path);
		if (!cached)
			return mlfs_err_set(err, ENOENT, "layer %zu (%s) of %s is not in the cache %s: run once "
					    "without offline", i + 1, d->digest, img->canonical, img->cache_dir);
		/* Cached: the fetch below reads it from there, without the network. */
	}
	struct mlfs_progress progress = { img->progress, img->progress_priv, i };
	int r = mlfs_blob_fetch_observed(img->reg, d, img->cache_dir, img->wait_s, observe, priv,
					 img->progress ? &progress : NULL, blob_path, err);
	if (r < 0)
		mlfs_err_wrap(err, "layer %zu of %s", i + 1, img->canonical);
	return r;
}

int mlfs_image_layer_range(struct mlfs_image *img, size_t i, uint64_t offset, size_t len, void *buf,
			   struct mlfs_err *err)
{
	if (i >= img->manifest->n_layers)
		return mlfs_err_set(err, EINVAL, "no layer %zu", i);
	const struct mlfs_descriptor *d = &img->manifest->layers[i];
	if (img->offline)
		return mlfs_err_set(err, ENOENT, "layer %zu (%s) of %s: bytes %llu+%zu are not in the cache "
				    "and the image was opened offline", i + 1, d->digest, img->canonical,
				    (unsigned long long)offset, len);
	if (d->size < 0 || offset > (uint64_t)d->size || len > (uint64_t)d->size - offset)
		return mlfs_err_set(err, EINVAL, "layer %zu of %s: range %llu+%zu is outside its %lld bytes",
				    i + 1, img->canonical, (unsigned long long)offset, len, (long long)d->size);
	if (__atomic_load_n(&img->ranges_refused, __ATOMIC_RELAXED))
		return mlfs_err_set(err, ERANGE, "%s does not serve byte ranges", img->ref.domain);
	int r = mlfs_registry_get_range(img->reg, d->digest, offset, len, buf, err);
	if (r == -ERANGE)
		__atomic_store_n(&img->ranges_refused, true, __ATOMIC_RELAXED);
	if (r == 0)
		mlfs_image_progress(img, i, MLFS_PROGRESS_FETCHED, len);
	return r;
}

/* A streamed blob's sink, counting what passes. */
struct counted_sink {
	const struct mlfs_image *img;
	size_t i;
	mlfs_sink_fn sink;
	void *priv;
};

static int count_and_sink(void *priv, const void *buf, size_t len)
{
	struct counted_sink *c = priv;
	mlfs_image_progress(c->img, c->i, MLFS_PROGRESS_FETCHED, len);
	return c->sink(c->priv, buf, len);
}

int mlfs_image_layer_stream(struct mlfs_image *img, size_t i, mlfs_sink_fn sink, void *priv, struct mlfs_err *err)
{
	if (i >= img->manifest->n_layers)
		return mlfs_err_set(err, EINVAL, "no layer %zu", i);
	const struct mlfs_descriptor *d = &img->manifest->layers[i];
	if (img->offline)
		return mlfs_err_set(err, ENOENT, "layer %zu (%s) of %s is not all in the cache and the image was "
				    "opened offline", i + 1, d->digest, img->canonical);
	struct counted_sink c = { img, i, sink, priv };
	int r = mlfs_registry_get_blob(img->reg, d->digest, 0, img->progress ? count_and_sink : sink,
				       img->progress ? (void *)&c : priv, err);
	if (r < 0)
		mlfs_err_wrap(err, "layer %zu of %s", i + 1, img->canonical);
	return r;
}

bool mlfs_image_layer_distrust(struct mlfs_image *img, size_t i)
{
	if (i >= img->manifest->n_layers || img->offline)
		return false;
	return mlfs_registry_distrust(img->reg, img->manifest->layers[i].digest);
}
