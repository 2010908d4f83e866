/* layers/merge.c: every rule of the merged tree (see the essay atop merge.c). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "layergen.h"
#include "tap.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))

struct fixture {
	char *dir;
	char cache[4096];
	struct mlfs_layer *layers[8];
	size_t n;
	struct mlfs_tree *tree;
};

static void layer(struct fixture *f, const struct lg_entry *ents, size_t n)
{
	char file[4096];
	struct mlfs_err err;
	snprintf(file, sizeof file, "%s/layer%zu.tar", f->dir, f->n);
	if (lg_write(file, 'n', ents, n) < 0 || lg_open(f->cache, file, NULL, NULL, &f->layers[f->n], &err) < 0) {
		tap_diag("layer %zu: %s", f->n, err.msg);
		abort();
	}
	f->n++;
}

static void merge(struct fixture *f)
{
	struct mlfs_err err;
	if (mlfs_tree_merge(f->layers, f->n, &f->tree, &err) < 0) {
		tap_diag("merge: %s", err.msg);
		abort();
	}
}

static void reset(struct fixture *f)
{
	mlfs_tree_free(f->tree);
	f->tree = NULL;
	for (size_t i = 0; i < f->n; i++)
		mlfs_layer_free(f->layers[i]);
	f->n = 0;
}

static void dump_node(const struct mlfs_tree *t, uint32_t node, char *prefix, char *out, size_t cap)
{
	uint32_t first, count;
	mlfs_tree_children(t, node, &first, &count);
	size_t plen = strlen(prefix);
	for (uint32_t c = first; c < first + count; c++) {
		struct mlfs_entry e;
		mlfs_tree_entry(t, c, &e, NULL, NULL);
		snprintf(prefix + plen, 4096 - plen, "%s%s", plen ? "/" : "", mlfs_tree_name(t, c));
		size_t o = strlen(out);
		snprintf(out + o, cap - o, "%s%s%s", o ? " " : "", prefix, e.kind == MLFS_ENTRY_DIR ? "/" : "");
		if (e.kind == MLFS_ENTRY_DIR)
			dump_node(t, c, prefix, out, cap);
		prefix[plen] = '\0';
	}
}

/* The tree as "a d/ d/x", depth first in name order. */
static const char *dump(const struct mlfs_tree *t)
{
	static char out[8192];
	char prefix[4096] = "";
	out[0] = '\0';
	dump_node(t, MLFS_TREE_ROOT, prefix, out, sizeof out);
	return out;
}

static bool get(struct fixture *f, const char *path, struct mlfs_entry *e, unsigned *layer)
{
	uint32_t node;
	if (mlfs_tree_lookup_path(f->tree, path, &node) < 0)
		return false;
	mlfs_tree_entry(f->tree, node, e, layer, NULL);
	return true;
}

static const char *content(struct fixture *f, const char *path)
{
	static char buf[256];
	uint32_t node;
	unsigned li;
	size_t ei;
	struct mlfs_entry e;
	memset(buf, 0, sizeof buf);
	if (mlfs_tree_lookup_path(f->tree, path, &node) < 0)
		return "(missing)";
	mlfs_tree_entry(f->tree, node, &e, &li, &ei);
	if (e.kind != MLFS_ENTRY_REG || mlfs_layer_pread(f->layers[li], ei, buf, sizeof buf - 1, 0) < 0)
		return "(not a file)";
	return buf;
}

static uint32_t node_of(struct fixture *f, const char *path)
{
	uint32_t n = MLFS_TREE_NONE;
	mlfs_tree_lookup_path(f->tree, path, &n);
	return n;
}

int main(void)
{
	struct fixture f = { .dir = lg_tmpdir() };
	snprintf(f.cache, sizeof f.cache, "%s/cache", f.dir);
	struct mlfs_entry e;
	unsigned li;

	/* Upper wins; file bytes come from the layer that won. */
	layer(&f, (struct lg_entry[]){ { .path = "a", .data = "one" }, { .path = "b", .data = "low" } }, 2);
	layer(&f, (struct lg_entry[]){ { .path = "a", .data = "two" } }, 1);
	merge(&f);
	tap_is_str(dump(f.tree), "a b", "upper wins: names");
	tap_is_str(content(&f, "a"), "two", "upper wins: bytes of the upper file");
	tap_is_str(content(&f, "b"), "low", "lower file shows through");
	reset(&f);

	/* Whiteouts remove lower files and whole directories, and never show. */
	layer(&f, (struct lg_entry[]){ { .path = "d/x", .data = "" }, { .path = "d/y", .data = "" },
				      { .path = "e/f/g", .data = "" }, { .path = "keep", .data = "" } }, 4);
	layer(&f, (struct lg_entry[]){ { .path = "d/.wh.x", .data = "" }, { .path = ".wh.e", .data = "" },
				      { .path = ".wh.missing", .data = "" }, { .path = "nodir/.wh.x", .data = "" },
				      { .path = "keep/.wh.x", .data = "" } }, 5);
	merge(&f);
	tap_is_str(dump(f.tree), "d/ d/y keep/ nodir/",
		   "whiteouts: file and dir removed, missing ignored, holder dirs exist, markers hidden");
	reset(&f);

	/* A whiteout hides lower layers only, wherever it sits in its tar. */
	layer(&f, (struct lg_entry[]){ { .path = "d/z", .data = "low" } }, 1);
	layer(&f, (struct lg_entry[]){ { .path = "d/z", .data = "same layer" }, { .path = "d/.wh.z", .data = "" },
				      { .path = "d/n", .data = "" } }, 3);
	merge(&f);
	tap_is_str(dump(f.tree), "d/ d/n d/z", "whiteout does not hide its own layer's entry");
	tap_is_str(content(&f, "d/z"), "same layer", "its own layer's file stays");
	reset(&f);

	/* Opaque directories. */
	layer(&f, (struct lg_entry[]){ { .path = "d", .type = 'd', .mode = 0700 }, { .path = "d/x", .data = "" },
				      { .path = "d/sub/y", .data = "" }, { .path = "o/x", .data = "" },
				      { .path = "other/x", .data = "" } }, 5);
	layer(&f, (struct lg_entry[]){ { .path = "d/n", .data = "" }, { .path = "d/.wh..wh..opq", .data = "" },
				      { .path = "o/.wh..wh..opq", .data = "" }, { .path = "new/.wh..wh..opq", .data = "" } }, 4);
	merge(&f);
	tap_is_str(dump(f.tree), "d/ d/n new/ o/ other/ other/x",
		   "opaque: lower children hidden, own kept even before the marker");
	tap_ok(get(&f, "d", &e, &li) && li == 0 && (e.mode & 07777) == 0700,
	       "opaque dir keeps its lower metadata when the layer has no entry for it");
	reset(&f);

	/* Opaque root. */
	layer(&f, (struct lg_entry[]){ { .path = "a", .data = "" }, { .path = "b/c", .data = "" } }, 2);
	layer(&f, (struct lg_entry[]){ { .path = "./.wh..wh..opq", .data = "" }, { .path = "z", .data = "" } }, 2);
	merge(&f);
	tap_is_str(dump(f.tree), "z", "opaque root hides every lower entry");
	reset(&f);

	/* File replaced by a directory and back. */
	layer(&f, (struct lg_entry[]){ { .path = "p", .data = "file" }, { .path = "q/r", .data = "" },
				      { .path = "q/s/t", .data = "" }, { .path = "u", .data = "" } }, 4);
	layer(&f, (struct lg_entry[]){ { .path = "p/inner", .data = "" }, { .path = "q", .data = "now a file" },
				      { .path = "u", .type = 'd', .mode = 0711 } }, 3);
	merge(&f);
	tap_is_str(dump(f.tree), "p/ p/inner q u/", "file <-> dir replacement");
	tap_ok(get(&f, "p", &e, &li) && li == MLFS_TREE_IMPLICIT && e.mode == (S_IFDIR | 0755) && e.uid == 0,
	       "a file replaced by an implicit parent gets defaults");
	tap_is_str(content(&f, "q"), "now a file", "dir replaced by file");
	tap_ok(get(&f, "u", &e, &li) && li == 1 && e.mode == (S_IFDIR | 0711), "file replaced by dir");
	reset(&f);

	/* Directory metadata from the topmost layer that has the directory. */
	layer(&f, (struct lg_entry[]){ { .path = "d", .type = 'd', .mode = 0700, .uid = 5 }, { .path = "d/a", .data = "" } }, 2);
	layer(&f, (struct lg_entry[]){ { .path = "d", .type = 'd', .mode = 0750, .uid = 6, .mtime = 77 },
				      { .path = "d/b", .data = "" } }, 2);
	layer(&f, (struct lg_entry[]){ { .path = "d/c", .data = "" } }, 1);
	merge(&f);
	tap_is_str(dump(f.tree), "d/ d/a d/b d/c", "directories merge");
	tap_ok(get(&f, "d", &e, &li) && li == 1 && e.mode == (S_IFDIR | 0750) && e.uid == 6 && e.mtime_sec == 77,
	       "dir metadata from the topmost layer having it");
	reset(&f);

	/* Implicit parents: defaults, fixed when the real entry comes. */
	layer(&f, (struct lg_entry[]){ { .path = "a/b/c", .data = "" }, { .path = "a", .type = 'd', .mode = 0700, .uid = 9 },
				      { .path = "x/y", .data = "" } }, 3);
	merge(&f);
	tap_ok(get(&f, "a/b", &e, &li) && li == MLFS_TREE_IMPLICIT && e.mode == (S_IFDIR | 0755) &&
	       e.uid == 0 && e.gid == 0, "implicit parent: 0755 root dir");
	tap_ok(get(&f, "a", &e, &li) && li == 0 && e.mode == (S_IFDIR | 0700) && e.uid == 9,
	       "implicit parent fixed by its later entry");
	tap_ok(get(&f, "", &e, &li) && li == MLFS_TREE_IMPLICIT && e.mode == (S_IFDIR | 0755), "implicit root");
	reset(&f);

	/* The root's own entry. */
	layer(&f, (struct lg_entry[]){ { .path = "./", .type = 'd', .mode = 0700 } }, 1);
	layer(&f, (struct lg_entry[]){ { .path = "x", .data = "" } }, 1);
	merge(&f);
	tap_ok(get(&f, "", &e, &li) && li == 0 && e.mode == (S_IFDIR | 0700), "root metadata from ./");
	reset(&f);

	/* Duplicates within a layer: last wins. */
	layer(&f, (struct lg_entry[]){ { .path = "f", .data = "one" }, { .path = "f", .data = "two" },
				      { .path = "g", .type = 'd' }, { .path = "g/x", .data = "" },
				      { .path = "g", .type = 'l', .link = "f" } }, 5);
	merge(&f);
	tap_is_str(content(&f, "f"), "two", "duplicate path: last wins");
	tap_ok(get(&f, "g", &e, NULL) && e.kind == MLFS_ENTRY_SYMLINK && !strcmp(e.link, "f"),
	       "duplicate path of another type: last wins");
	tap_is_str(dump(f.tree), "f g", "the earlier duplicate's children are gone");
	reset(&f);

	/* Hardlinks: one inode, right nlink, alive after a whiteout above. */
	layer(&f, (struct lg_entry[]){ { .path = "bin/f1", .data = "payload", .mode = 04755 },
				      { .path = "bin/h1", .type = 'h', .link = "bin/f1" },
				      { .path = "usr/h2", .type = 'h', .link = "./bin/f1" },
				      { .path = "dangling", .type = 'h', .link = "nothere" },
				      { .path = "todir", .type = 'h', .link = "bin" } }, 5);
	merge(&f);
	uint32_t f1 = node_of(&f, "bin/f1"), h1 = node_of(&f, "bin/h1"), h2 = node_of(&f, "usr/h2");
	tap_ok(f1 != MLFS_TREE_NONE && h1 != MLFS_TREE_NONE && h2 != MLFS_TREE_NONE, "hardlinked names exist");
	tap_ok(mlfs_tree_inode(f.tree, f1) == mlfs_tree_inode(f.tree, h1) &&
	       mlfs_tree_inode(f.tree, f1) == mlfs_tree_inode(f.tree, h2), "hardlinks share one inode");
	tap_is_int(mlfs_tree_nlink(f.tree, h2), 3, "nlink 3");
	tap_ok(get(&f, "usr/h2", &e, NULL) && e.kind == MLFS_ENTRY_REG && e.mode == (S_IFREG | 04755),
	       "a hardlink shows its target's metadata");
	tap_is_str(content(&f, "usr/h2"), "payload", "a hardlink reads its target's bytes");
	tap_is_str(dump(f.tree), "bin/ bin/f1 bin/h1 usr/ usr/h2", "dangling and directory hardlinks skipped");
	mlfs_tree_free(f.tree);
	layer(&f, (struct lg_entry[]){ { .path = "bin/.wh.f1", .data = "" }, { .path = "h3", .type = 'h', .link = "bin/h1" } }, 2);
	merge(&f);
	h1 = node_of(&f, "bin/h1"), h2 = node_of(&f, "usr/h2");
	uint32_t h3 = node_of(&f, "h3");
	tap_ok(node_of(&f, "bin/f1") == MLFS_TREE_NONE, "whited-out name gone");
	tap_ok(h1 != MLFS_TREE_NONE && h3 != MLFS_TREE_NONE && mlfs_tree_inode(f.tree, h1) == mlfs_tree_inode(f.tree, h2) &&
	       mlfs_tree_inode(f.tree, h1) == mlfs_tree_inode(f.tree, h3), "inode survives; link to a lower name joins it");
	tap_is_int(mlfs_tree_nlink(f.tree, h1), 3, "nlink counts surviving names");
	tap_is_str(content(&f, "h3"), "payload", "bytes still served");
	mlfs_tree_free(f.tree);
	layer(&f, (struct lg_entry[]){ { .path = "bin/h1", .data = "new" } }, 1);
	merge(&f);
	tap_ok(mlfs_tree_inode(f.tree, node_of(&f, "bin/h1")) != mlfs_tree_inode(f.tree, node_of(&f, "h3")),
	       "replacing one name breaks it out of the link set");
	tap_is_int(mlfs_tree_nlink(f.tree, node_of(&f, "h3")), 2, "nlink of the rest");
	tap_is_int(mlfs_tree_nlink(f.tree, node_of(&f, "bin/h1")), 1, "nlink of the new file");
	reset(&f);

	/* Directory nlink, lookups, sorted children. */
	layer(&f, (struct lg_entry[]){ { .path = "d/s1/x", .data = "" }, { .path = "d/s2", .type = 'd' },
				      { .path = "d/f", .data = "" }, { .path = "d/B", .data = "" } }, 4);
	merge(&f);
	tap_is_int(mlfs_tree_nlink(f.tree, node_of(&f, "d")), 4, "dir nlink = 2 + subdirs");
	tap_is_int(mlfs_tree_nlink(f.tree, MLFS_TREE_ROOT), 3, "root nlink");
	uint32_t out;
	tap_is_int(mlfs_tree_lookup(f.tree, node_of(&f, "d/f"), "x", &out), -ENOTDIR, "lookup in a file");
	tap_is_int(mlfs_tree_lookup(f.tree, node_of(&f, "d"), "nope", &out), -ENOENT, "lookup of a missing name");
	tap_is_int(mlfs_tree_lookup_path(f.tree, "/d//s1/./x", &out) == 0 ? 0 : -1, -1, "'.' is not a name");
	tap_is_int(mlfs_tree_lookup_path(f.tree, "/d//s1/x", &out), 0, "lookup_path tolerates slashes");
	tap_ok(mlfs_tree_parent(f.tree, node_of(&f, "d/s1/x")) == node_of(&f, "d/s1"), "parent");
	tap_is_str(dump(f.tree), "d/ d/B d/f d/s1/ d/s1/x d/s2/", "children sorted bytewise");
	reset(&f);

	lg_rmrf(f.dir);
	free(f.dir);
	return tap_done();
}
