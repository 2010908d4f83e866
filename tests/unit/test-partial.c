/* fs/partial.c against layers/merge.c: for random layer stacks (files,
 * directories, symlinks, hardlinks, whiteouts, opaque markers, type changes
 * across layers), every early lookup answer must be the merged tree's own
 * (layer, entry), or an honest "ask the tree" (-EAGAIN) — never a different
 * entry, never ENOENT for something that exists or the reverse. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fs/partial.h"
#include "layergen.h"
#include "tap.h"

#define MAX_LAYERS 4
#define MAX_ENTS 8

static const char *const names[] = {
	"a", "a/b", "a/b/c", "a/x", "d", "d/e", "d/e/f", "g",
};
#define N_NAMES (sizeof names / sizeof names[0])

struct stack {
	struct mlfs_layer *layers[MAX_LAYERS];
	uint32_t *sorted[MAX_LAYERS];
	size_t n;
};

static void dump_stack(const struct stack *s)
{
	for (size_t l = 0; l < s->n; l++) {
		char line[1024];
		size_t o = 0;
		for (size_t i = 0; i < mlfs_layer_count(s->layers[l]); i++) {
			struct mlfs_entry e;
			mlfs_layer_entry(s->layers[l], i, &e);
			o += (size_t)snprintf(line + o, sizeof line - o, " %s:%d%s%s", e.path, e.kind, e.link ? "->" : "",
					      e.link ? e.link : "");
			if (o >= sizeof line)
				break;
		}
		tap_diag("  layer %zu:%s", l, line);
	}
}

static int get_layer(void *priv, size_t i, const struct mlfs_layer **layer, const uint32_t **sorted)
{
	struct stack *s = priv;
	*layer = s->layers[i];
	*sorted = s->sorted[i];
	return 0;
}

/* One random entry; whiteouts and opaque markers as their tar names. */
static void random_entry(unsigned *seed, struct lg_entry *e, char *buf, size_t cap, const char *files[],
			 size_t n_files)
{
	const char *p = names[rand_r(seed) % N_NAMES];
	memset(e, 0, sizeof *e);
	e->mtime = 1700000000;
	if (rand_r(seed) % 12 == 0) {
		/* The root itself: its own entry, or an opaque marker on it. */
		e->path = rand_r(seed) % 2 ? "./" : "./.wh..wh..opq";
		e->type = e->path[2] ? 'f' : 'd';
		return;
	}
	switch (rand_r(seed) % 7) {
	case 0:
	case 1:
		e->path = p;
		e->type = 'f';
		e->data = "x";
		break;
	case 2:
	case 3:
		e->path = p;
		e->type = 'd';
		break;
	case 4:
		e->path = p;
		e->type = 'l';
		e->link = "/target";
		break;
	case 5: {
		const char *slash = strrchr(p, '/');
		if (slash)
			snprintf(buf, cap, "%.*s/.wh.%s", (int)(slash - p), p, slash + 1);
		else
			snprintf(buf, cap, ".wh.%s", p);
		e->path = buf;
		e->type = 'f';
		break;
	}
	default:
		if (n_files && rand_r(seed) % 2) {
			e->path = p;
			e->type = 'h';
			e->link = files[rand_r(seed) % n_files];
		} else {
			snprintf(buf, cap, "%s/.wh..wh..opq", p);
			e->path = buf;
			e->type = 'f';
		}
		break;
	}
}

int main(void)
{
	char tmpl[] = "/tmp/mlfs-test-partial-XXXXXX";
	char *dir = mkdtemp(tmpl);
	if (!dir)
		return 1;
	unsigned seed = 20261127;
	size_t stacks = 0, asked = 0, early = 0, deferred = 0, wrong = 0, absent_ok = 0;
	for (int round = 0; round < 400; round++) {
		struct stack s = { .n = 1 + (size_t)(rand_r(&seed) % MAX_LAYERS) };
		bool ok = true;
		for (size_t l = 0; l < s.n && ok; l++) {
			struct lg_entry ents[MAX_ENTS];
			char bufs[MAX_ENTS][64];
			const char *files[MAX_ENTS];
			size_t n_files = 0, n = 1 + (size_t)(rand_r(&seed) % MAX_ENTS);
			for (size_t k = 0; k < n; k++) {
				random_entry(&seed, &ents[k], bufs[k], sizeof bufs[k], files, n_files);
				if (ents[k].type == 'f' && !strstr(ents[k].path, ".wh."))
					files[n_files++] = ents[k].path;
			}
			char file[4096];
			struct mlfs_err err = { 0 };
			snprintf(file, sizeof file, "%s/layer-%d-%zu.tar", dir, round, l);
			ok = lg_write(file, 'n', ents, n) == 0 &&
			     lg_open(dir, file, NULL, NULL, &s.layers[l], &err) == 0 &&
			     (s.sorted[l] = partial_sort_layer(s.layers[l])) != NULL;
			unlink(file);
		}
		struct mlfs_tree *tree = NULL;
		struct mlfs_err err = { 0 };
		if (!ok || mlfs_tree_merge(s.layers, s.n, &tree, &err) < 0) {
			/* Layers libarchive or the indexer refuse are not this test's business. */
			for (size_t l = 0; l < s.n; l++) {
				mlfs_layer_free(s.layers[l]);
				free(s.sorted[l]);
			}
			continue;
		}
		stacks++;
		struct partial_src src = { s.n, get_layer, &s };
		for (size_t k = 0; k < N_NAMES; k++) {
			const char *path = names[k];
			const char *slash = strrchr(path, '/');
			char parent[64] = "";
			if (slash)
				snprintf(parent, sizeof parent, "%.*s", (int)(slash - path), path);
			/* Only what the FUSE side would ask early: the parent is the root
			 * or a directory that is itself one layer entry. */
			uint32_t pnode;
			if (parent[0]) {
				if (mlfs_tree_lookup_path(tree, parent, &pnode) < 0)
					continue;
				struct mlfs_entry pe;
				unsigned pl;
				size_t pi;
				mlfs_tree_entry(tree, pnode, &pe, &pl, &pi);
				if (pl == MLFS_TREE_IMPLICIT || pe.kind != MLFS_ENTRY_DIR)
					continue;
			}
			unsigned layer = 0;
			size_t entry = 0;
			int r = partial_lookup(&src, parent, slash ? slash + 1 : path, &layer, &entry);
			uint32_t node;
			int t = mlfs_tree_lookup_path(tree, path, &node);
			asked++;
			if (r == -EAGAIN) {
				deferred++;
				continue;
			}
			if (t < 0) {
				if (r != -ENOENT) {
					wrong++;
					tap_diag("round %d: %s: tree says absent, early says %d (layer %u entry %zu)", round,
						 path, r, layer, entry);
					dump_stack(&s);
				} else {
					absent_ok++;
				}
				continue;
			}
			struct mlfs_entry te;
			unsigned tl;
			size_t ti;
			mlfs_tree_entry(tree, node, &te, &tl, &ti);
			if (r != 0 || tl != layer || ti != entry) {
				wrong++;
				tap_diag("round %d: %s: tree says layer %u entry %zu, early says %d (layer %u entry %zu)",
					 round, path, tl, ti, r, layer, entry);
				dump_stack(&s);
			} else {
				early++;
			}
		}
		mlfs_tree_free(tree);
		for (size_t l = 0; l < s.n; l++) {
			mlfs_layer_free(s.layers[l]);
			free(s.sorted[l]);
		}
	}
	tap_ok(stacks > 300, "random stacks merged: %zu", stacks);
	tap_is_int(wrong, 0, "early answers that differ from the merged tree");
	tap_ok(early > asked / 5, "answered early: %zu of %zu (%zu absent, %zu left to the tree)", early, asked,
	       absent_ok, deferred);
	tap_ok(absent_ok > 0, "early ENOENT answers checked: %zu", absent_ok);
	char cmd[4200];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		tap_diag("could not remove %s", dir);
	return tap_done();
}
