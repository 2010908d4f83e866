/* Lookups before the merged tree exists.
 *
 * A name's merged entry is decided by the topmost layer that says anything
 * about it, so a lookup can be answered from the layers indexed so far, top
 * down, without waiting for the lower ones: the mount's first `cat` needs
 * only the layers above the file it reads.  For a path P in directory D,
 * each layer L from the top, once indexed, either
 *
 *   - has an entry for P: that is the answer (merge.c's "upper wins"; a
 *     directory's metadata is the topmost layer's too);
 *   - whites P out: it does not exist;
 *   - hides everything below it under D: an opaque marker on D or one of
 *     its ancestors (after this layer), a whiteout or a non-directory at D
 *     or an ancestor: it does not exist;
 *   - or says nothing about P, and the next layer down is asked.
 *
 * What this cannot decide cheaply goes to the merged tree (-EAGAIN): a
 * hardlink (its inode is another entry, possibly another layer's), and a
 * path that is only an implicit parent in a layer (its metadata may come
 * from further down).  The answers are the merged tree's own — an inode is
 * a (layer, entry) in both — which is what lets the kernel keep them. */
#include "fs/partial.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* [lo, hi) of sorted positions whose path is `path`. */
static void equal_range(const struct mlfs_layer *layer, const uint32_t *sorted, const char *path, size_t *lo,
			size_t *hi)
{
	size_t n = mlfs_layer_count(layer), a = 0, b = n;
	struct mlfs_entry e;
	while (a < b) {
		size_t m = a + (b - a) / 2;
		mlfs_layer_entry(layer, sorted[m], &e);
		if (strcmp(e.path, path) < 0)
			a = m + 1;
		else
			b = m;
	}
	*lo = a;
	b = n;
	while (a < b) {
		size_t m = a + (b - a) / 2;
		mlfs_layer_entry(layer, sorted[m], &e);
		if (strcmp(e.path, path) <= 0)
			a = m + 1;
		else
			b = m;
	}
	*hi = a;
}

/* Any entry below `dir` ("dir/..."): the first path >= "dir/" tells. */
static bool has_children(const struct mlfs_layer *layer, const uint32_t *sorted, const char *dir)
{
	char prefix[PATH_MAX_PARTIAL + 2];
	int n = snprintf(prefix, sizeof prefix, "%s/", dir);
	if (n < 0 || (size_t)n >= sizeof prefix)
		return true; /* cannot tell: let the caller fall back */
	size_t lo, hi;
	equal_range(layer, sorted, prefix, &lo, &hi);
	if (lo >= mlfs_layer_count(layer))
		return false;
	struct mlfs_entry e;
	mlfs_layer_entry(layer, sorted[lo], &e);
	return strncmp(e.path, prefix, (size_t)n) == 0;
}

struct said {
	unsigned entries; /* entries (not whiteouts); *entry is the last one */
	bool whiteout;    /* ".wh.NAME": hides NAME in the layers below */
	bool opaque;      /* ".wh..wh..opq" in it: hides its lower children */
};

/* What layer says about `path` itself.  Within a layer the last entry wins,
 * and whiteouts act on lower layers only, so an entry and a whiteout of
 * the same path in one layer mean: this entry, and nothing from below. */
static struct said about(const struct mlfs_layer *layer, const uint32_t *sorted, const char *path, size_t *entry)
{
	size_t lo, hi;
	equal_range(layer, sorted, path, &lo, &hi);
	struct said s = { 0 };
	for (size_t k = hi; k-- > lo;) {
		struct mlfs_entry e;
		mlfs_layer_entry(layer, sorted[k], &e);
		if (e.kind == MLFS_ENTRY_OPAQUE) {
			s.opaque = true;
		} else if (e.kind == MLFS_ENTRY_WHITEOUT) {
			s.whiteout = true;
		} else if (s.entries++ == 0) {
			*entry = sorted[k];
		}
	}
	return s;
}

enum hiding { SHOWS, HIDES, UNSURE };

/* Whether layer hides from the layers below it what lies under `dir`: an
 * opaque marker, a whiteout or a non-directory at dir or an ancestor.
 * Several entries for one of those paths in the layer are applied in tar
 * order, and an early one may have removed what a later one recreated:
 * too subtle to decide here. */
static enum hiding hides_below(const struct mlfs_layer *layer, const uint32_t *sorted, const char *dir,
				bool *nondir)
{
	char a[PATH_MAX_PARTIAL + 1];
	size_t len = strlen(dir), e = 0;
	*nondir = false;
	/* A root opaque marker hides everything below, but the ancestors
	 * must still be looked at: one may remove this layer's own entry. */
	enum hiding h = about(layer, sorted, "", &e).opaque ? HIDES : SHOWS;
	for (size_t k = 1; k <= len; k++) {
		if (dir[k] != '/' && dir[k] != '\0')
			continue;
		memcpy(a, dir, k);
		a[k] = '\0';
		struct said s = about(layer, sorted, a, &e);
		if (s.entries > 1)
			return UNSURE;
		if (s.opaque || s.whiteout)
			h = HIDES;
		if (s.entries) {
			struct mlfs_entry me;
			mlfs_layer_entry(layer, e, &me);
			/* A hardlink may be refused (its target a directory, or gone). */
			if (me.kind == MLFS_ENTRY_HARDLINK)
				return UNSURE;
			if (me.kind != MLFS_ENTRY_DIR)
				h = HIDES, *nondir = true;
		}
	}
	return h;
}

/* Entries of a layer ordered by path, equal paths by position, so the last
 * of equal paths (the one that wins inside a layer) is the last of its run. */
static int cmp_entries(const void *a, const void *b, void *priv)
{
	const struct mlfs_layer *layer = priv;
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	struct mlfs_entry ex, ey;
	mlfs_layer_entry(layer, x, &ex);
	mlfs_layer_entry(layer, y, &ey);
	int r = strcmp(ex.path, ey.path);
	return r ? r : (x > y) - (x < y);
}

uint32_t *partial_sort_layer(const struct mlfs_layer *layer)
{
	size_t n = mlfs_layer_count(layer);
	uint32_t *s = malloc((n ? n : 1) * sizeof *s);
	if (!s)
		return NULL;
	for (size_t i = 0; i < n; i++)
		s[i] = (uint32_t)i;
	qsort_r(s, n, sizeof *s, cmp_entries, (void *)layer);
	return s;
}

int partial_lookup(const struct partial_src *src, const char *dir, const char *name, unsigned *out_layer,
		   size_t *out_entry)
{
	char path[PATH_MAX_PARTIAL + 1];
	int n = dir[0] ? snprintf(path, sizeof path, "%s/%s", dir, name) : snprintf(path, sizeof path, "%s", name);
	if (n < 0 || (size_t)n >= sizeof path)
		return -EAGAIN;
	for (size_t i = src->n_layers; i-- > 0;) {
		const struct mlfs_layer *layer;
		const uint32_t *sorted;
		int r = src->layer(src->priv, i, &layer, &sorted);
		if (r < 0)
			return r;
		size_t e = 0;
		struct said s = about(layer, sorted, path, &e);
		bool nondir_ancestor;
		enum hiding h = hides_below(layer, sorted, dir, &nondir_ancestor);
		if (h == UNSURE || s.entries > 1)
			return -EAGAIN;
		bool children = has_children(layer, sorted, path);
		if (s.entries) {
			struct mlfs_entry me;
			mlfs_layer_entry(layer, e, &me);
			/* A hardlink's inode is another entry; a non-directory with
			 * entries (or an opaque marker) under it becomes an implicit
			 * directory; a non-directory ancestor in the same layer may
			 * come after the entry in the tar and remove it. */
			if (me.kind == MLFS_ENTRY_HARDLINK || ((children || s.opaque) && me.kind != MLFS_ENTRY_DIR) ||
			    nondir_ancestor)
				return -EAGAIN;
			*out_layer = (unsigned)i;
			*out_entry = e;
			return 0;
		}
		/* An opaque marker or entries below it make the path a directory
		 * of this layer, its metadata maybe from further down. */
		if (s.opaque || children)
			return -EAGAIN;
		if (s.whiteout)
			return -ENOENT;
		/* Nothing about the path here; whatever hides the lower layers
		 * under dir (this layer's own entries were just looked at) ends it. */
		if (h == HIDES)
			return -ENOENT;
	}
	return -ENOENT;
}
