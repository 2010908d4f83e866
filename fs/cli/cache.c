/* mlfs cache ls|du|gc|rm|verify: the shared cache, for a person at a shell.
 *
 * Two views of one directory meet here: fetch/ knows the images (which
 * reference, platform and layers were resolved), layers/ knows the units
 * on disk (a layer's index, map and data; kept blobs; leftovers), who holds
 * them and when they were last used.  A layer is listed under every image
 * that has it and removed only when no other cached image does (rm) or
 * when nobody holds it (gc, eviction).  Every removal prints one line. */
#include "fs/cli/cli.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "fs/cli/units.h"
#include "layers/layers.h"

struct cache {
	char *dir;
	struct mlfs_cache_item *items;   /* sorted by kind, then key */
	size_t n_items;
	struct mlfs_cache_usage use;
	struct mlfs_cached_image *images;
	size_t n_images;
};

static int cmp_item(const void *a, const void *b)
{
	const struct mlfs_cache_item *x = a, *y = b;
	if (x->kind != y->kind)
		return (int)x->kind - (int)y->kind;
	return strcmp(x->key, y->key);
}

static void cache_clear(struct cache *c)
{
	mlfs_cache_items_free(c->items, c->n_items);
	mlfs_cached_images_free(c->images, c->n_images);
	free(c->dir);
	memset(c, 0, sizeof *c);
}

static int cache_load(struct cache *c, const char *option)
{
	memset(c, 0, sizeof *c);
	c->dir = mlfs_cache_dir_default(option);
	if (!c->dir) {
		fprintf(stderr, "mlfs: error: cannot tell where the cache is: set MLFS_CACHE or use --cache\n");
		return -ENOENT;
	}
	int r = mlfs_cache_scan(c->dir, &c->items, &c->n_items, &c->use);
	if (r == 0)
		r = mlfs_cached_images(c->dir, &c->images, &c->n_images);
	if (r < 0) {
		fprintf(stderr, "mlfs: error: cannot read the cache %s: %s\n", c->dir, strerror(-r));
		cache_clear(c);
		return r;
	}
	if (c->n_items) /* an empty cache has no array: NULL is not for qsort */
		qsort(c->items, c->n_items, sizeof *c->items, cmp_item);
	return 0;
}

static struct mlfs_cache_item *find(const struct cache *c, enum mlfs_cache_kind kind, const char *key)
{
	if (!key[0] || !c->n_items)
		return NULL;
	struct mlfs_cache_item probe = { .kind = kind };
	snprintf(probe.key, sizeof probe.key, "%s", key);
	return bsearch(&probe, c->items, c->n_items, sizeof *c->items, cmp_item);
}

/* The layer unit an image's layer is kept under: its diff_id when it was
 * streamed whole, its blob digest when seekable (or streamed without a
 * known diff_id). */
static struct mlfs_cache_item *layer_unit(const struct cache *c, const struct mlfs_cached_layer *l)
{
	struct mlfs_cache_item *it = l->seekable ? NULL : find(c, MLFS_CACHE_LAYER, l->diff_id);
	return it ? it : find(c, MLFS_CACHE_LAYER, l->digest);
}

static void format_time(int64_t t, char *buf, size_t len)
{
	struct tm tm;
	time_t tt = (time_t)t;
	if (t <= 0 || !localtime_r(&tt, &tm) || !strftime(buf, len, "%Y-%m-%d %H:%M", &tm))
		snprintf(buf, len, "-");
}

static const char *kind_name(enum mlfs_cache_kind k)
{
	switch (k) {
	case MLFS_CACHE_LAYER: return "layer";
	case MLFS_CACHE_BLOB: return "blob";
	case MLFS_CACHE_PARTIAL: return "partial download";
	case MLFS_CACHE_TEMP: return "temporary file";
	case MLFS_CACHE_LOCK: return "lock file";
	}
	return "file";
}

static void print_removed(const struct mlfs_cache_item *it, const char *why)
{
	char size[32], when[32];
	mlfs_format_size(it->bytes, size, sizeof size);
	format_time(it->last_use, when, sizeof when);
	if (it->kind == MLFS_CACHE_LAYER || it->kind == MLFS_CACHE_BLOB)
		printf("removed %s %s (%s, last used %s)%s%s\n", kind_name(it->kind), it->key, size, when,
		       why ? ": " : "", why ? why : "");
	else
		printf("removed %s %s (%s)%s%s\n", kind_name(it->kind), it->path, size, why ? ": " : "",
		       why ? why : "");
	fflush(stdout);
}

static void report_removed(void *priv, const struct mlfs_cache_item *it)
{
	print_removed(it, priv);
}

/* ---- argument parsing shared by the subcommands -------------------------- */

struct cache_args {
	const char *cache;
	bool json;
	bool have_max;
	uint64_t max;
	bool have_age;
	int64_t older_than;
	int first_ref;  /* argv index of the first positional argument */
};

enum { A_CACHE = 1, A_JSON = 2, A_MAX = 4, A_AGE = 8, A_REFS = 16 };

#define USAGE "usage: mlfs cache ls [--json] | du [--json] | gc [--max SIZE] [--older-than DURATION] | " \
	      "rm REF... | verify   (each with [--cache DIR])\n"

/* 0, 1 when --help printed the usage, or -EINVAL. */
static int parse_args(int argc, char **argv, unsigned allowed, struct cache_args *a)
{
	static const struct option longopts[] = {
		{ "cache", required_argument, NULL, 'c' },
		{ "json", no_argument, NULL, 'j' },
		{ "max", required_argument, NULL, 'm' },
		{ "older-than", required_argument, NULL, 'a' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	memset(a, 0, sizeof *a);
	optind = 1;
	int ch;
	while ((ch = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (ch) {
		case 'h':
			printf(USAGE);
			return 1;
		case 'c': a->cache = optarg; break;
		case 'j':
			if (!(allowed & A_JSON))
				goto usage;
			a->json = true;
			break;
		case 'm':
			if (!(allowed & A_MAX))
				goto usage;
			if (cli_cache_max(optarg, "--max", &a->max) < 0)
				return -EINVAL;
			a->have_max = true;
			break;
		case 'a':
			if (!(allowed & A_AGE))
				goto usage;
			if (mlfs_parse_duration(optarg, &a->older_than) < 0) {
				fprintf(stderr, "mlfs: error: --older-than=%s: give a duration such as 90m, 12h, 30d "
					"or 2w\n", optarg);
				return -EINVAL;
			}
			a->have_age = true;
			break;
		default:
			goto usage;
		}
	}
	a->first_ref = optind;
	if ((allowed & A_REFS) ? optind >= argc : optind != argc)
		goto usage;
	return 0;
usage:
	fprintf(stderr, USAGE);
	return -EINVAL;
}

/* ---- ls ------------------------------------------------------------------ */

struct image_use {
	uint64_t bytes;
	int64_t last_use;
	bool in_use;
	size_t cached_layers;
};

static void image_use(const struct cache *c, const struct mlfs_cached_image *im, struct image_use *u)
{
	memset(u, 0, sizeof *u);
	u->last_use = im->resolved;
	for (size_t i = 0; i < im->n_layers; i++) {
		const struct mlfs_cached_layer *l = &im->layers[i];
		bool dup = false;
		for (size_t j = 0; j < i && !dup; j++)
			dup = !strcmp(im->layers[j].digest, l->digest);
		if (dup)
			continue; /* the same layer twice in one image is stored once */
		const struct mlfs_cache_item *it = layer_unit(c, l);
		const struct mlfs_cache_item *blob = find(c, MLFS_CACHE_BLOB, l->digest);
		if (it && it->has_data) {
			u->cached_layers++;
			u->bytes += it->bytes;
			if (it->last_use > u->last_use)
				u->last_use = it->last_use;
			if (!u->in_use && mlfs_cache_in_use(c->dir, it))
				u->in_use = true;
		}
		if (blob)
			u->bytes += blob->bytes;
	}
}

static const char *layer_state(const struct cache *c, const struct mlfs_cached_layer *l, uint64_t *bytes)
{
	const struct mlfs_cache_item *it = layer_unit(c, l);
	const struct mlfs_cache_item *blob = find(c, MLFS_CACHE_BLOB, l->digest);
	*bytes = (it ? it->bytes : 0) + (blob ? blob->bytes : 0);
	if (it && it->has_data && it->has_index)
		return l->seekable ? "chunks" : "indexed";
	if (blob)
		return "blob";
	return "absent";
}

/* Signatures kept for offline use, over the manifest or its index. */
static int kept_signatures(const struct cache *c, const struct mlfs_cached_image *im)
{
	int n = 0, r;
	if (im->manifest_digest[0] && (r = mlfs_sigcache_count(c->dir, im->manifest_digest)) > 0)
		n += r;
	if (im->top_digest[0] && strcmp(im->top_digest, im->manifest_digest) &&
	    (r = mlfs_sigcache_count(c->dir, im->top_digest)) > 0)
		n += r;
	return n;
}

static int cmd_ls(struct cache *c, const struct cache_args *a, int argc, char **argv)
{
	json_t *arr = a->json ? json_array() : NULL;
	if (!a->json && c->n_images)
		printf("%-44s %-14s %-19s %10s  %-16s %s\n", "REFERENCE", "PLATFORM", "MANIFEST", "SIZE", "LAST USE",
		       "IN USE");
	for (size_t i = 0; i < c->n_images; i++) {
		const struct mlfs_cached_image *im = &c->images[i];
		struct image_use u;
		image_use(c, im, &u);
		char size[32], when[32];
		mlfs_format_size(u.bytes, size, sizeof size);
		format_time(u.last_use, when, sizeof when);
		int sigs = kept_signatures(c, im);
		if (!a->json) {
			printf("%-44s %-14s %-19.19s %10s  %-16s %s\n", im->reference, im->platform[0] ? im->platform : "-",
			       im->manifest_digest[0] ? im->manifest_digest : "-", size, when, u.in_use ? "yes" : "no");
			if (sigs > 0)
				printf("  signatures: %d kept for offline use\n", sigs);
			for (size_t j = 0; j < im->n_layers; j++) {
				uint64_t b;
				const char *state = layer_state(c, &im->layers[j], &b);
				mlfs_format_size(b, size, sizeof size);
				printf("  layer %-71s %10s  %s\n", im->layers[j].digest, size, state);
			}
			continue;
		}
		json_t *layers = json_array();
		for (size_t j = 0; j < im->n_layers; j++) {
			uint64_t b;
			const char *state = layer_state(c, &im->layers[j], &b);
			json_array_append_new(layers, json_pack("{s:s, s:s, s:I, s:I, s:s, s:b}", "digest",
							       im->layers[j].digest, "diff_id", im->layers[j].diff_id,
							       "size", (json_int_t)im->layers[j].size, "bytes_on_disk",
							       (json_int_t)b, "state", state, "seekable",
							       im->layers[j].seekable));
		}
		json_array_append_new(arr, json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:b, s:i, s:o}", "reference",
						     im->reference, "platform", im->platform, "digest",
						     im->manifest_digest, "index_digest",
						     strcmp(im->top_digest, im->manifest_digest) ? im->top_digest : "",
						     "config_digest", im->config_digest, "bytes_on_disk",
						     (json_int_t)u.bytes, "last_use", (json_int_t)u.last_use, "in_use",
						     u.in_use, "signatures_kept", sigs > 0 ? sigs : 0, "layers", layers));
	}
	if (a->json) {
		json_dumpf(arr, stdout, JSON_INDENT(2) | JSON_ENSURE_ASCII);
		putchar('\n');
		json_decref(arr);
	} else if (!c->n_images) {
		printf("no images in %s\n", c->dir);
	}
	return 0;
}

/* ---- du ------------------------------------------------------------------ */

static int cmd_du(struct cache *c, const struct cache_args *a, int argc, char **argv)
{
	const struct { const char *name; uint64_t v; } rows[] = {
		{ "data", c->use.data }, { "index", c->use.index }, { "chunks", c->use.chunks },
		{ "blobs", c->use.blobs }, { "partial", c->use.partial }, { "temp", c->use.temp },
		{ "meta", c->use.meta }, { "other", c->use.other }, { "total", c->use.total },
	};
	if (a->json) {
		json_t *o = json_object();
		for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
			json_object_set_new(o, rows[i].name, json_integer((json_int_t)rows[i].v));
		json_dumpf(o, stdout, JSON_INDENT(2) | JSON_ENSURE_ASCII);
		putchar('\n');
		json_decref(o);
	} else {
		for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
			char size[32];
			mlfs_format_size(rows[i].v, size, sizeof size);
			printf("%-8s %12s\n", rows[i].name, size);
		}
	}
	return 0;
}

/* ---- removing images' layers and metadata -------------------------------- */

static bool other_image_has(const struct cache *c, const bool *going, const struct mlfs_cache_item *it)
{
	for (size_t i = 0; i < c->n_images; i++) {
		if (going[i])
			continue;
		for (size_t j = 0; j < c->images[i].n_layers; j++) {
			const struct mlfs_cached_layer *l = &c->images[i].layers[j];
			if (!strcmp(l->digest, it->key) || !strcmp(l->diff_id, it->key))
				return true;
		}
	}
	return false;
}

static bool other_image_names(const struct cache *c, const bool *going, const char *digest)
{
	for (size_t i = 0; i < c->n_images; i++)
		if (!going[i] && (!strcmp(c->images[i].top_digest, digest) ||
				  !strcmp(c->images[i].manifest_digest, digest) ||
				  !strcmp(c->images[i].config_digest, digest)))
			return true;
	return false;
}

static bool ref_file_kept(const struct cache *c, const bool *going, const char *ref_file)
{
	for (size_t i = 0; i < c->n_images; i++)
		if (!going[i] && !strcmp(c->images[i].ref_file, ref_file))
			return true;
	return false;
}

/* Forgets the images marked in `going`: their references, manifests and
 * configs that no other image shares.  Their layers are the caller's. */
static void forget_images(const struct cache *c, const bool *going)
{
	for (size_t i = 0; i < c->n_images; i++) {
		const struct mlfs_cached_image *im = &c->images[i];
		if (!going[i])
			continue;
		const char *digests[] = { im->config_digest, im->manifest_digest, im->top_digest };
		for (size_t d = 0; d < 3; d++) {
			bool seen = false;
			for (size_t e = 0; e < d; e++)
				seen |= !strcmp(digests[e], digests[d]);
			if (!digests[d][0] || seen || other_image_names(c, going, digests[d]))
				continue;
			if (mlfs_metacache_drop(c->dir, digests[d]) == 0)
				printf("removed %s %s of %s\n", d == 0 ? "config" : "manifest", digests[d], im->reference);
			int sigs = d == 0 ? 0 : mlfs_sigcache_drop(c->dir, digests[d]);
			if (sigs > 0)
				printf("removed the signatures of %s kept for offline use (%d file%s)\n", digests[d], sigs,
				       sigs > 1 ? "s" : "");
		}
		if (!ref_file_kept(c, going, im->ref_file) && unlink(im->ref_file) == 0)
			printf("removed reference %s\n", im->reference);
	}
}

/* Removes the layers (and blobs) of the images marked in `going` that no
 * other cached image has.  An image that keeps a layer because it is in
 * use stays known (unmarked), so the same rm can finish the job after its
 * users end.  The number of layers kept. */
static size_t remove_layers(const struct cache *c, bool *going)
{
	size_t busy = 0;
	for (size_t i = 0; i < c->n_images; i++) {
		if (!going[i])
			continue;
		size_t busy_before = busy;
		for (size_t j = 0; j < c->images[i].n_layers; j++) {
			const struct mlfs_cached_layer *l = &c->images[i].layers[j];
			struct mlfs_cache_item *units[3] = {
				find(c, MLFS_CACHE_LAYER, l->diff_id), find(c, MLFS_CACHE_LAYER, l->digest),
				find(c, MLFS_CACHE_BLOB, l->digest),
			};
			for (size_t u = 0; u < 3; u++) {
				struct mlfs_cache_item *it = units[u];
				if (!it || it->bytes == UINT64_MAX || other_image_has(c, going, it))
					continue;
				int r = mlfs_cache_remove(c->dir, it);
				if (r == -EBUSY) {
					printf("kept %s %s: in use by a live mount or command\n", kind_name(it->kind), it->key);
					busy++;
				} else if (r == 0) {
					print_removed(it, NULL);
				} else if (r != -ENOENT) {
					printf("could not remove %s %s: %s\n", kind_name(it->kind), it->key, strerror(-r));
				}
				it->bytes = UINT64_MAX; /* handled: not again for another image */
			}
		}
		if (busy > busy_before) {
			going[i] = false;
			printf("kept %s (%s): in use; run this again once it is unmounted\n", c->images[i].reference,
			       c->images[i].platform[0] ? c->images[i].platform : "-");
		}
	}
	return busy;
}

static char *ref_key(const char *arg)
{
	struct mlfs_ref ref;
	struct mlfs_err err = { 0 };
	if (mlfs_ref_parse(arg, &ref, &err) < 0) {
		fprintf(stderr, "mlfs: error: %s\n", err.msg);
		return NULL;
	}
	char *s = NULL;
	if (asprintf(&s, "%s/%s%c%s", ref.domain, ref.path, ref.digest ? '@' : ':', mlfs_ref_reference(&ref)) < 0)
		s = NULL;
	mlfs_ref_clear(&ref);
	return s;
}

/* Marks the cached images `arg` names: a short name may be cached under
 * any of the names registries.conf resolves it to.  The first key, for
 * messages, into *shown (malloc'd); false when none is cached. */
static bool mark_ref(struct cache *c, const char *arg, bool *going, char **shown, int *status)
{
	char **cands = NULL;
	struct mlfs_err err = { 0 };
	*shown = NULL;
	if (mlfs_ref_candidates(arg, &cands, &err) < 0) {
		fprintf(stderr, "mlfs: error: %s\n", err.msg);
		*status = 1;
		return true;
	}
	bool found = false;
	for (size_t k = 0; cands[k]; k++) {
		char *key = ref_key(cands[k]);
		if (!key) {
			*status = 1;
			continue;
		}
		for (size_t j = 0; j < c->n_images; j++)
			if (!strcmp(c->images[j].reference, key))
				found = going[j] = true;
		if (!*shown)
			*shown = key;
		else
			free(key);
	}
	mlfs_ref_candidates_free(cands);
	return found || !*shown;
}

static int cmd_rm(struct cache *c, const struct cache_args *a, int argc, char **argv)
{
	bool *going = calloc(c->n_images ? c->n_images : 1, sizeof *going);
	int status = going ? 0 : 1;
	for (int i = a->first_ref; going && i < argc; i++) {
		_cleanup_free_ char *key = NULL;
		if (!mark_ref(c, argv[i], going, &key, &status)) {
			fprintf(stderr, "mlfs: error: %s is not in the cache %s (see mlfs cache ls)\n", key, c->dir);
			status = 1;
		}
	}
	if (going) {
		if (remove_layers(c, going))
			status = 1;
		forget_images(c, going);
	}
	free(going);
	return status;
}

/* ---- gc ------------------------------------------------------------------ */

#define META_KEEP_S (30 * 86400) /* metadata of images whose layers are all gone */

static int cmd_gc(struct cache *c, const struct cache_args *args, int argc, char **argv)
{
	struct cache_args a_copy = *args, *a = &a_copy;
	if (!a->have_max) {
		const char *env = getenv("MLFS_CACHE_MAX");
		if (env && *env) {
			if (cli_cache_max(env, "$MLFS_CACHE_MAX", &a->max) < 0)
				return 2;
			a->have_max = a->max > 0; /* 0 is no cap, as for every other command */
		}
	}
	int64_t now = (int64_t)time(NULL);
	/* What crashed runs left, and layers half there (an eviction or a
	 * build cut short): nothing any live process holds. */
	for (size_t i = 0; i < c->n_items; i++) {
		struct mlfs_cache_item *it = &c->items[i];
		const char *why = NULL;
		if (it->kind == MLFS_CACHE_TEMP || it->kind == MLFS_CACHE_PARTIAL || it->kind == MLFS_CACHE_LOCK)
			why = "left by an interrupted run";
		else if (it->kind == MLFS_CACHE_LAYER && !(it->has_index && it->has_data))
			why = "incomplete";
		else if (a->have_age && (it->kind == MLFS_CACHE_LAYER || it->kind == MLFS_CACHE_BLOB) &&
			 it->last_use < now - a->older_than)
			why = "unused for longer than --older-than";
		if (!why)
			continue;
		int r = mlfs_cache_remove(c->dir, it);
		if (r == 0)
			print_removed(it, why);
		else if (r == -EBUSY && (it->kind == MLFS_CACHE_LAYER || it->kind == MLFS_CACHE_BLOB))
			printf("kept %s %s: in use by a live mount or command\n", kind_name(it->kind), it->key);
		else if (r != -EBUSY && r != -ENOENT)
			printf("could not remove %s: %s\n", it->path ? it->path : it->key, strerror(-r));
	}
	int status = 0;
	if (a->have_max) {
		uint64_t total = 0;
		int r = mlfs_cache_fit(c->dir, a->max, 0, report_removed, "least recently used", &total);
		uint64_t busy = r == -ENOSPC ? mlfs_cache_bytes_in_use(c->dir) : 0;
		if (busy) {
			char size[32], held[32];
			mlfs_format_size(total, size, sizeof size);
			mlfs_format_size(busy, held, sizeof held);
			printf("cache still holds %s: %s of it in use by live mounts or commands\n", size, held);
		} else if (r == -ENOSPC) {
			char size[32];
			mlfs_format_size(total, size, sizeof size);
			printf("cache still holds %s of manifests and tags: they go with their images "
			       "(--older-than)\n", size);
		} else if (r < 0) {
			fprintf(stderr, "mlfs: error: cannot evict from %s: %s\n", c->dir, strerror(-r));
			status = 1;
		}
	}
	/* Images whose every layer is gone keep their manifests a while (a
	 * remount by tag skips the resolve round trip): until they are old. */
	cache_clear(c);
	if (cache_load(c, a->cache) < 0)
		return 1;
	int64_t keep = a->have_age ? a->older_than : META_KEEP_S;
	bool *going = calloc(c->n_images ? c->n_images : 1, sizeof *going);
	for (size_t i = 0; going && i < c->n_images; i++) {
		struct image_use u;
		image_use(c, &c->images[i], &u);
		going[i] = !u.cached_layers && c->images[i].resolved < now - keep;
	}
	if (going)
		forget_images(c, going);
	free(going);
	/* Signatures whose manifest went some other way (removed by hand,
	 * found damaged): nothing could use them. */
	int orphans = mlfs_sigcache_sweep(c->dir);
	if (orphans > 0)
		printf("removed %d file%s of signatures whose manifest is no longer cached\n", orphans,
		       orphans > 1 ? "s" : "");
	char size[32];
	mlfs_format_size(c->use.total, size, sizeof size);
	printf("cache %s: %s\n", c->dir, size);
	return status;
}

/* ---- verify -------------------------------------------------------------- */

static void report_signatures(void *priv, const char *path, const char *why)
{
	(void)priv;
	printf("removed kept signatures %s: %s\n", path, why);
}

static int cmd_verify(struct cache *c, const struct cache_args *a, int argc, char **argv)
{
	size_t good = 0, bad = 0;
	for (size_t i = 0; i < c->n_items; i++) {
		struct mlfs_cache_item *it = &c->items[i];
		const char *why = NULL;
		if (it->kind == MLFS_CACHE_LAYER && it->has_data && !it->has_index) {
			/* What a kill during an eviction or a build leaves: not
			 * damage, and gone unless someone is still building it. */
			if (mlfs_cache_remove(c->dir, it) == 0)
				print_removed(it, "left by an interrupted run");
			continue;
		}
		if (it->kind == MLFS_CACHE_LAYER) {
			int r = mlfs_cache_verify_layer(c->dir, it->key, &why);
			if (r < 0 && r != -EBADMSG) {
				printf("could not check layer %s: %s\n", it->key, strerror(-r));
				continue;
			}
		} else if (it->kind == MLFS_CACHE_BLOB) {
			int r = mlfs_cache_verify_blob(c->dir, it->key, &why);
			if (r == -ENOENT)
				continue;
			if (r < 0 && r != -EBADMSG) {
				printf("could not check blob %s: %s\n", it->key, strerror(-r));
				continue;
			}
		} else {
			continue;
		}
		if (!why) {
			good++;
			continue;
		}
		bad++;
		int r = mlfs_cache_remove(c->dir, it);
		if (r == 0)
			print_removed(it, why);
		else
			printf("broken %s %s: %s; %s\n", kind_name(it->kind), it->key, why,
			       r == -EBUSY ? "in use, left until its users end" : strerror(-r));
	}
	printf("verified %zu layers and blobs in %s: %zu sound, %zu broken\n", good + bad, c->dir, good, bad);
	size_t sig_good = 0, sig_bad = 0;
	int r = mlfs_sigcache_verify(c->dir, report_signatures, NULL, &sig_good, &sig_bad);
	if (r < 0)
		printf("could not check the kept signatures: %s\n", strerror(-r));
	else if (sig_good + sig_bad)
		printf("verified %zu file%s of signatures kept for offline use: %zu sound, %zu broken\n",
		       sig_good + sig_bad, sig_good + sig_bad > 1 ? "s" : "", sig_good, sig_bad);
	return bad || sig_bad ? 1 : 0;
}

int mlfs_cmd_cache(int argc, char **argv)
{
	static const struct {
		const char *name;
		unsigned allowed;
		int (*run)(struct cache *c, const struct cache_args *a, int argc, char **argv);
	} subs[] = {
		{ "ls", A_CACHE | A_JSON, cmd_ls },
		{ "du", A_CACHE | A_JSON, cmd_du },
		{ "gc", A_CACHE | A_MAX | A_AGE, cmd_gc },
		{ "rm", A_CACHE | A_REFS, cmd_rm },
		{ "verify", A_CACHE, cmd_verify },
	};
	for (size_t i = 0; argc >= 2 && i < sizeof subs / sizeof subs[0]; i++) {
		if (strcmp(argv[1], subs[i].name))
			continue;
		struct cache_args a;
		int parsed = parse_args(argc - 1, argv + 1, subs[i].allowed, &a);
		if (parsed != 0)
			return parsed < 0 ? 2 : 0; /* 1: --help */
		struct cache c;
		if (cache_load(&c, a.cache) < 0)
			return 1;
		int status = subs[i].run(&c, &a, argc - 1, argv + 1);
		cache_clear(&c);
		return status;
	}
	if (argc == 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
		printf(USAGE);
		return 0;
	}
	fprintf(stderr, USAGE);
	return 2;
}
