/* The merged tree: every layer of an image folded into one read-only view.
 *
 * The rules are OCI image-spec layer.md's, read as overlayfs reads them —
 * by path, layer over layer — and applied bottom layer first, as if each
 * layer were extracted over the previous ones:
 *
 *  - Upper wins.  An entry replaces whatever its path named below, whatever
 *    the types: a file replaces a directory (and with it the directory's
 *    whole subtree), a directory replaces a file.  Two directories do not
 *    replace each other: they merge, the children of both stay, and the
 *    metadata is the topmost layer's that has the directory.
 *  - Whiteouts.  ".wh.NAME" removes NAME of the lower layers; ".wh..wh..opq"
 *    removes every lower child of its directory.  Both act on lower layers
 *    only, wherever they sit in their tar: an entry of the same layer is
 *    never hidden by them.  That is why each layer is applied in two passes,
 *    first its whiteouts against the tree of the layers below, then its
 *    entries; the order inside the tar then cannot matter.  A whiteout of
 *    something that is not there is ignored (containerd does so), and no
 *    whiteout ever shows in the tree.  The directory holding a whiteout
 *    exists in that layer, so it is created if need be.
 *  - Implicit parents.  "a/b/c" in a layer whose tar has no "a/b" gets the
 *    lower layers' "a/b", or, if there is none, a directory with defaults
 *    (0755, root:root, mtime 0).  A later "a/b" entry fixes those.  An
 *    ancestor that is not a directory (a lower file "a") is replaced by such
 *    a directory: paths never resolve through symlinks here, unlike tar
 *    extraction, since a layer's symlink points into the final root, not
 *    into the layer being built.
 *  - Within one layer, the last entry for a path wins.
 *  - Hardlinks.  A hardlink entry names an earlier path; it is resolved when
 *    it is met, in the tree as it stands (same layer or below), and the new
 *    name shares that name's inode.  An inode is a layer entry, not a name,
 *    so it lives on when the name it was reached by is later whited out or
 *    replaced; nlink is counted at the end from the names that survived.
 *
 * Memory.  While building, a node is 24 bytes in one array, names live in
 * one arena, and an open-addressing table keyed by (parent, name) finds
 * children; removal only marks nodes dead, and the final pass drops them.
 * The published tree is rebuilt breadth-first so that each directory's
 * children are one contiguous, name-sorted run of node ids: lookups are a
 * binary search, readdir is a range, and a node costs 20 bytes plus its
 * name, an inode 12.  Metadata stays in the layer indexes, referred to by
 * (layer, entry). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/log.h"
#include "common/grow.h"
#include "layers/internal.h"

#define NONE UINT32_MAX

struct bnode {
	uint32_t parent;
	uint32_t name;        /* offset in b->names */
	uint32_t first_child; /* list through `next`, dead nodes included */
	uint32_t next;
	uint32_t inode;
	uint16_t name_len;
	uint8_t dead;
	uint8_t dir;
};

struct binode {
	uint32_t entry;
	uint16_t layer;       /* MLFS_TREE_IMPLICIT: a directory with defaults */
	uint16_t pad;
};

struct builder {
	struct mlfs_layer *const *layers;
	struct bnode *nodes;
	size_t n_nodes, cap_nodes;
	struct binode *inodes;
	size_t n_inodes, cap_inodes;
	char *names;
	size_t names_len, names_cap;
	uint32_t *slots;      /* node ids, NONE when empty */
	size_t n_slots, used;
	uint32_t *stack;
	size_t cap_stack;
};

struct tnode {
	uint32_t name;
	uint32_t parent;
	uint32_t child_start;
	uint32_t child_count;
	uint32_t inode;
};

struct tinode {
	uint32_t entry;
	uint16_t layer;
	uint16_t dir;
	uint32_t nlink;
};

struct mlfs_tree {
	struct mlfs_layer **layers;
	size_t n_layers;
	struct tnode *nodes;
	size_t n_nodes;
	struct tinode *inodes;
	size_t n_inodes;
	char *names;
	size_t names_len;
};

static int grow(void **arr, size_t *cap, size_t need, size_t elem)
{
	return mlfs_grow(arr, cap, need, elem, 256, NONE);
}

static size_t hash(uint32_t parent, const char *name, size_t len)
{
	uint64_t h = 1469598103934665603ull ^ parent;
	for (size_t i = 0; i < len; i++)
		h = (h ^ (unsigned char)name[i]) * 1099511628211ull;
	return (size_t)(h ^ (h >> 29));
}

static uint32_t lookup(const struct builder *b, uint32_t parent, const char *name, size_t len)
{
	size_t mask = b->n_slots - 1;
	for (size_t h = hash(parent, name, len) & mask; b->slots[h] != NONE; h = (h + 1) & mask) {
		const struct bnode *n = &b->nodes[b->slots[h]];
		if (!n->dead && n->parent == parent && n->name_len == len &&
		    !memcmp(b->names + n->name, name, len))
			return b->slots[h];
	}
	return NONE;
}

static void slot_put(struct builder *b, uint32_t id)
{
	const struct bnode *n = &b->nodes[id];
	size_t mask = b->n_slots - 1;
	size_t h = hash(n->parent, b->names + n->name, n->name_len) & mask;
	while (b->slots[h] != NONE)
		h = (h + 1) & mask;
	b->slots[h] = id;
	b->used++;
}

/* Dead nodes keep their slots until here, which keeps removal O(1). */
static int rehash(struct builder *b)
{
	size_t live = 0;
	for (size_t i = 1; i < b->n_nodes; i++)
		live += !b->nodes[i].dead;
	size_t n = 1024;
	while (n < 4 * (live + 1))
		n *= 2;
	uint32_t *s = malloc(n * sizeof *s);
	if (!s)
		return -ENOMEM;
	memset(s, 0xff, n * sizeof *s);
	free(b->slots);
	b->slots = s;
	b->n_slots = n;
	b->used = 0;
	for (size_t i = 1; i < b->n_nodes; i++)
		if (!b->nodes[i].dead)
			slot_put(b, (uint32_t)i);
	return 0;
}

static int new_inode(struct builder *b, uint16_t layer, uint32_t entry, uint32_t *out)
{
	int rc = grow((void **)&b->inodes, &b->cap_inodes, b->n_inodes + 1, sizeof *b->inodes);
	if (rc < 0)
		return rc;
	b->inodes[b->n_inodes] = (struct binode){ .entry = entry, .layer = layer };
	*out = (uint32_t)b->n_inodes++;
	return 0;
}

static int new_node(struct builder *b, uint32_t parent, const char *name, size_t len,
		    uint32_t inode, bool dir, uint32_t *out)
{
	int rc = grow((void **)&b->nodes, &b->cap_nodes, b->n_nodes + 1, sizeof *b->nodes);
	if (rc == 0)
		rc = grow((void **)&b->names, &b->names_cap, b->names_len + len + 1, 1);
	if (rc == 0 && (b->used + 1) * 2 > b->n_slots)
		rc = rehash(b);
	if (rc < 0)
		return rc;
	uint32_t id = (uint32_t)b->n_nodes++;
	b->nodes[id] = (struct bnode){
		.parent = parent,
		.name = (uint32_t)b->names_len,
		.first_child = NONE,
		.next = b->nodes[parent].first_child,
		.inode = inode,
		.name_len = (uint16_t)len,
		.dir = dir,
	};
	memcpy(b->names + b->names_len, name, len);
	b->names[b->names_len + len] = '\0';
	b->names_len += len + 1;
	b->nodes[parent].first_child = id;
	slot_put(b, id);
	*out = id;
	return 0;
}

static int implicit_dir(struct builder *b, uint32_t parent, const char *name, size_t len,
			uint32_t *out)
{
	uint32_t ino;
	int rc = new_inode(b, MLFS_TREE_IMPLICIT, 0, &ino);
	return rc < 0 ? rc : new_node(b, parent, name, len, ino, true, out);
}

/* Marks a node and everything under it dead. */
static int kill(struct builder *b, uint32_t id)
{
	size_t top = 0;
	int rc = grow((void **)&b->stack, &b->cap_stack, 1, sizeof *b->stack);
	if (rc < 0)
		return rc;
	b->stack[top++] = id;
	while (top) {
		uint32_t n = b->stack[--top];
		b->nodes[n].dead = 1;
		for (uint32_t c = b->nodes[n].first_child; c != NONE; c = b->nodes[c].next) {
			if (b->nodes[c].dead)
				continue;
			if ((rc = grow((void **)&b->stack, &b->cap_stack, top + 1, sizeof *b->stack)) < 0)
				return rc;
			b->stack[top++] = c;
		}
	}
	return 0;
}

/* The directory at path (len bytes): NONE when absent or not a directory,
 * unless create, which makes implicit directories and replaces non-dirs. */
static int walk_dir(struct builder *b, const char *path, size_t len, bool create, uint32_t *out)
{
	uint32_t cur = MLFS_TREE_ROOT;
	size_t i = 0;
	while (i < len) {
		const char *slash = memchr(path + i, '/', len - i);
		size_t n = slash ? (size_t)(slash - (path + i)) : len - i;
		uint32_t child = lookup(b, cur, path + i, n);
		int rc = 0;
		if (child != NONE && !b->nodes[child].dir) {
			if (!create) {
				*out = NONE;
				return 0;
			}
			rc = kill(b, child);
			child = NONE;
		}
		if (rc == 0 && child == NONE) {
			if (!create) {
				*out = NONE;
				return 0;
			}
			rc = implicit_dir(b, cur, path + i, n, &child);
		}
		if (rc < 0)
			return rc;
		cur = child;
		i += n + 1;
	}
	*out = cur;
	return 0;
}

static void split(const char *path, size_t len, size_t *dir_len, const char **base,
		  size_t *base_len)
{
	const char *slash = memrchr(path, '/', len);
	*dir_len = slash ? (size_t)(slash - path) : 0;
	*base = slash ? slash + 1 : path;
	*base_len = len - (size_t)(*base - path);
}

/* The node at path, any type, or NONE; never creates. */
static int resolve(struct builder *b, const char *path, uint32_t *out)
{
	size_t len = strlen(path), dir_len, base_len;
	const char *base;
	if (!len) {
		*out = MLFS_TREE_ROOT;
		return 0;
	}
	split(path, len, &dir_len, &base, &base_len);
	uint32_t dir;
	int rc = walk_dir(b, path, dir_len, false, &dir);
	*out = (rc == 0 && dir != NONE) ? lookup(b, dir, base, base_len) : NONE;
	return rc;
}

static int apply_whiteouts(struct builder *b, const struct mlfs_layer *l)
{
	for (size_t i = 0; i < l->n_ents; i++) {
		const struct mlfs_ient *e = &l->ents[i];
		uint32_t id;
		int rc = 0;
		if (e->kind == MLFS_ENTRY_WHITEOUT) {
			rc = resolve(b, l->arena + e->path, &id);
			if (rc == 0 && id != NONE && id != MLFS_TREE_ROOT)
				rc = kill(b, id);
		} else if (e->kind == MLFS_ENTRY_OPAQUE) {
			const char *p = l->arena + e->path;
			rc = walk_dir(b, p, strlen(p), false, &id);
			if (rc == 0 && id != NONE) {
				for (uint32_t c = b->nodes[id].first_child; c != NONE && rc == 0;
				     c = b->nodes[c].next)
					if (!b->nodes[c].dead)
						rc = kill(b, c);
				b->nodes[id].first_child = NONE;
			}
		}
		if (rc < 0)
			return rc;
	}
	return 0;
}

static int apply_entry(struct builder *b, uint16_t li, const struct mlfs_layer *l, uint32_t i)
{
	const struct mlfs_ient *e = &l->ents[i];
	const char *path = l->arena + e->path;
	size_t len = strlen(path), dir_len, base_len;
	const char *base;
	uint32_t parent, existing, id, ino;
	int rc;

	if (e->kind == MLFS_ENTRY_OPAQUE)
		return walk_dir(b, path, len, true, &id);
	split(path, len, &dir_len, &base, &base_len);
	if ((rc = walk_dir(b, path, dir_len, true, &parent)) < 0)
		return rc;
	if (e->kind == MLFS_ENTRY_WHITEOUT)
		return 0;
	if (len == 0) {
		/* The index lets only directories be the root. */
		b->inodes[b->nodes[MLFS_TREE_ROOT].inode] = (struct binode){ .entry = i, .layer = li };
		return 0;
	}
	existing = lookup(b, parent, base, base_len);

	if (e->kind == MLFS_ENTRY_DIR && existing != NONE && b->nodes[existing].dir) {
		b->inodes[b->nodes[existing].inode] = (struct binode){ .entry = i, .layer = li };
		return 0;
	}
	if (e->kind == MLFS_ENTRY_HARDLINK) {
		uint32_t target;
		if ((rc = resolve(b, l->arena + e->link, &target)) < 0)
			return rc;
		if (target == NONE || b->nodes[target].dir) {
			log_warn(MLFS_AREA_LAYERS, "hardlink \"%s\" -> \"%s\": %s, skipped", path,
				 l->arena + e->link, target == NONE ? "no such file" : "a directory");
			return 0;
		}
		if (target == existing)
			return 0;
		ino = b->nodes[target].inode;
	} else if ((rc = new_inode(b, li, i, &ino)) < 0) {
		return rc;
	}
	/* The lookup above saw the parent; a kill cannot move it. */
	if (existing != NONE && (rc = kill(b, existing)) < 0)
		return rc;
	return new_node(b, parent, base, base_len, ino, e->kind == MLFS_ENTRY_DIR, &id);
}

static int cmp_names(const void *x, const void *y, void *arg)
{
	const struct builder *b = arg;
	return strcmp(b->names + b->nodes[*(const uint32_t *)x].name,
		      b->names + b->nodes[*(const uint32_t *)y].name);
}

/* Breadth-first renumbering of the live nodes: each directory's children
 * get consecutive ids, in name order. */
static int publish(struct builder *b, struct mlfs_tree *t)
{
	size_t live = 0;
	for (size_t i = 0; i < b->n_nodes; i++)
		live += !b->nodes[i].dead;
	uint32_t *order = malloc(live * sizeof *order);
	uint32_t *imap = malloc((b->n_inodes ? b->n_inodes : 1) * sizeof *imap);
	t->nodes = malloc(live * sizeof *t->nodes);
	t->inodes = malloc(live * sizeof *t->inodes);
	t->names = malloc(b->names_len + 1);
	if (!order || !imap || !t->nodes || !t->inodes || !t->names) {
		free(order);
		free(imap);
		return -ENOMEM;
	}
	memset(imap, 0xff, b->n_inodes * sizeof *imap);
	size_t n_out = 1, n_ino = 0, names = 0;
	order[0] = MLFS_TREE_ROOT;
	t->nodes[0].parent = MLFS_TREE_ROOT;
	for (size_t k = 0; k < n_out; k++) {
		const struct bnode *bn = &b->nodes[order[k]];
		struct tnode *tn = &t->nodes[k];
		tn->name = (uint32_t)names;
		memcpy(t->names + names, b->names + bn->name, bn->name_len + 1u);
		names += bn->name_len + 1u;
		uint32_t *ino = &imap[bn->inode];
		if (*ino == NONE) {
			*ino = (uint32_t)n_ino++;
			const struct binode *bi = &b->inodes[bn->inode];
			t->inodes[*ino] = (struct tinode){ .entry = bi->entry, .layer = bi->layer,
							   .dir = bn->dir, .nlink = bn->dir ? 2 : 0 };
		}
		tn->inode = *ino;
		if (!bn->dir) {
			t->inodes[*ino].nlink++;
			tn->child_start = (uint32_t)n_out;
			tn->child_count = 0;
			continue;
		}
		size_t start = n_out;
		for (uint32_t c = bn->first_child; c != NONE; c = b->nodes[c].next) {
			if (b->nodes[c].dead)
				continue;
			order[n_out++] = c;
			t->inodes[*ino].nlink += b->nodes[c].dir;
		}
		qsort_r(order + start, n_out - start, sizeof *order, cmp_names, b);
		tn->child_start = (uint32_t)start;
		tn->child_count = (uint32_t)(n_out - start);
		for (size_t j = start; j < n_out; j++)
			t->nodes[j].parent = (uint32_t)k;
	}
	free(order);
	free(imap);
	t->n_nodes = n_out;
	t->n_inodes = n_ino;
	t->names_len = names;
	void *p;
	if ((p = realloc(t->inodes, n_ino * sizeof *t->inodes)))
		t->inodes = p;
	if ((p = realloc(t->names, names)))
		t->names = p;
	return 0;
}

static void builder_clear(struct builder *b)
{
	free(b->nodes);
	free(b->inodes);
	free(b->names);
	free(b->slots);
	free(b->stack);
}

int mlfs_tree_merge(struct mlfs_layer *const *layers, size_t n_layers, struct mlfs_tree **out,
		    struct mlfs_err *err)
{
	if (n_layers >= MLFS_TREE_IMPLICIT)
		return mlfs_err_set(err, E2BIG, "merge: %zu layers are too many", n_layers);
	struct builder b = { .layers = layers };
	struct mlfs_tree *t = calloc(1, sizeof *t);
	uint32_t root_ino;
	int rc = t ? 0 : -ENOMEM;
	if (rc == 0)
		rc = rehash(&b);
	if (rc == 0)
		rc = grow((void **)&b.nodes, &b.cap_nodes, 1, sizeof *b.nodes);
	if (rc == 0)
		rc = grow((void **)&b.names, &b.names_cap, 1, 1);
	if (rc == 0)
		rc = new_inode(&b, MLFS_TREE_IMPLICIT, 0, &root_ino);
	if (rc == 0) {
		b.nodes[0] = (struct bnode){ .first_child = NONE, .next = NONE, .inode = root_ino,
					     .dir = 1 };
		b.names[0] = '\0';
		b.names_len = 1;
		b.n_nodes = 1;
	}
	for (size_t li = 0; li < n_layers && rc == 0; li++) {
		const struct mlfs_layer *l = layers[li];
		rc = apply_whiteouts(&b, l);
		for (size_t i = 0; i < l->n_ents && rc == 0; i++)
			rc = apply_entry(&b, (uint16_t)li, l, (uint32_t)i);
	}
	if (rc == 0)
		rc = publish(&b, t);
	if (rc == 0) {
		t->layers = malloc((n_layers ? n_layers : 1) * sizeof *t->layers);
		if (!t->layers)
			rc = -ENOMEM;
		else if (n_layers)
			memcpy(t->layers, layers, n_layers * sizeof *t->layers);
		t->n_layers = n_layers;
	}
	builder_clear(&b);
	if (rc < 0) {
		mlfs_tree_free(t);
		return mlfs_err_set(err, -rc, "merging layers: %s", strerror(-rc));
	}
	*out = t;
	return 0;
}

void mlfs_tree_free(struct mlfs_tree *t)
{
	if (!t)
		return;
	free(t->layers);
	free(t->nodes);
	free(t->inodes);
	free(t->names);
	free(t);
}

size_t mlfs_tree_count(const struct mlfs_tree *t)
{
	return t->n_nodes;
}

size_t mlfs_tree_inode_count(const struct mlfs_tree *t)
{
	return t->n_inodes;
}

const char *mlfs_tree_name(const struct mlfs_tree *t, uint32_t node)
{
	return t->names + t->nodes[node].name;
}

uint32_t mlfs_tree_parent(const struct mlfs_tree *t, uint32_t node)
{
	return t->nodes[node].parent;
}

void mlfs_tree_children(const struct mlfs_tree *t, uint32_t node, uint32_t *first, uint32_t *count)
{
	*first = t->nodes[node].child_start;
	*count = t->nodes[node].child_count;
}

int mlfs_tree_lookup(const struct mlfs_tree *t, uint32_t parent, const char *name, uint32_t *out)
{
	const struct tnode *p = &t->nodes[parent];
	if (!t->inodes[p->inode].dir)
		return -ENOTDIR;
	size_t lo = p->child_start, hi = lo + p->child_count;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(name, t->names + t->nodes[mid].name);
		if (c == 0) {
			*out = (uint32_t)mid;
			return 0;
		}
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return -ENOENT;
}

int mlfs_tree_lookup_path(const struct mlfs_tree *t, const char *path, uint32_t *out)
{
	uint32_t cur = MLFS_TREE_ROOT;
	char name[256];
	while (*path) {
		while (*path == '/')
			path++;
		size_t n = strcspn(path, "/");
		if (!n)
			break;
		if (n >= sizeof name)
			return -ENAMETOOLONG;
		memcpy(name, path, n);
		name[n] = '\0';
		int rc = mlfs_tree_lookup(t, cur, name, &cur);
		if (rc < 0)
			return rc;
		path += n;
	}
	*out = cur;
	return 0;
}

uint32_t mlfs_tree_inode(const struct mlfs_tree *t, uint32_t node)
{
	return t->nodes[node].inode;
}

uint32_t mlfs_tree_nlink(const struct mlfs_tree *t, uint32_t node)
{
	return t->inodes[t->nodes[node].inode].nlink;
}

void mlfs_tree_entry(const struct mlfs_tree *t, uint32_t node, struct mlfs_entry *out,
		     unsigned *layer, size_t *entry)
{
	const struct tinode *i = &t->inodes[t->nodes[node].inode];
	if (layer)
		*layer = i->layer;
	if (entry)
		*entry = i->entry;
	if (i->layer == MLFS_TREE_IMPLICIT) {
		*out = (struct mlfs_entry){ .path = "", .kind = MLFS_ENTRY_DIR,
					    .mode = S_IFDIR | 0755 };
		return;
	}
	mlfs_layer_entry(t->layers[i->layer], i->entry, out);
}

size_t mlfs_tree_mem_bytes(const struct mlfs_tree *t)
{
	return sizeof *t + t->n_layers * sizeof *t->layers + t->n_nodes * sizeof *t->nodes +
	       t->n_inodes * sizeof *t->inodes + t->names_len;
}
