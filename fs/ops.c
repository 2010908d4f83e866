/* The FUSE low-level callbacks: a read-only view of the merged tree.
 *
 * Inode numbers.  An inode of the merged tree is one layer entry (the
 * topmost that names the path; for hardlinks the entry they all share),
 * so its FUSE number is made of that.  The entries of all layers are
 * numbered in a row from FIRST_ENTRY_INO, top layer first: entry e of
 * layer L is FIRST_ENTRY_INO + (entries of the layers above L) + e.  An
 * early answer from layer L (fs/partial.c) comes only once every layer
 * above L is indexed — lookups go down from the top — so its number is
 * known then, and it is the number the merged tree gives later.  The root
 * is FUSE_ROOT_ID, and a directory no layer describes (an implicit parent,
 * only ever answered from the tree) comes after all entries: + its node.
 * Numbers stay below 2^32 for any image of fewer than about four billion
 * entries, so 32-bit programs built without large-file support can
 * stat() and readdir() the mount (a number above 2^32 is EOVERFLOW for
 * them) — what overlayfs's xino gives its layers, here by counting.  A
 * number never changes for the life of the mount: forget has nothing to
 * do, and the kernel may cache entries and attributes for as long as it
 * likes.
 *
 * Laziness.  Before the merged tree exists, lookup, getattr, read,
 * readlink and the xattr calls are answered from the single layer entry
 * an inode is — with short timeouts, since a link count needs the whole
 * tree — and the root's getattr with a placeholder.  Listings wait for
 * the tree.
 *
 * Waiting.  A request that needs a layer or the tree not published yet is
 * parked with the loader (loader_park) as a `struct call`, and this
 * thread returns to libfuse; when what it needs is published, the
 * loader's waker thread runs the same handler again from the start (it
 * may park again, on the next layer down).  Handlers are written so that
 * running again is always right: they only read published, immutable
 * state.  So no FUSE thread ever sleeps on the loader.
 *
 * Each handler ends in exactly one fuse_reply_*; errors become
 * fuse_reply_err() here and only here. */
#include "fs/fs.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "common/log.h"
#include "fs/layerload.h"
#include "fs/partial.h"

#define FOREVER (86400.0 * 365) /* the image never changes under the mount */
#define EARLY_ENTRY_S 1.0       /* an early answer is final, but its link count is not */
#define FIRST_ENTRY_INO 2        /* after FUSE_ROOT_ID */

static struct mlfs_fs *fs_of(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

/* A request as it arrived: what parking keeps to run it again. */
enum op { OP_LOOKUP, OP_GETATTR, OP_READLINK, OP_READDIR, OP_READDIRPLUS, OP_READ, OP_GETXATTR, OP_LISTXATTR };

struct call {
	fuse_req_t req;
	enum op op;
	fuse_ino_t ino; /* lookup: the parent */
	size_t size;
	off_t off;
	const char *name; /* lookup, getxattr; a parked call's own copy */
};

static void run(const struct call *c);

/* A parked request's wait ends when it is interrupted or the session is
 * shutting down (unmount must not wait for a slow download). */
static bool call_cancelled(void *priv)
{
	const struct call *c = priv;
	struct mlfs_fs *fs = fs_of(c->req);
	return fuse_req_interrupted(c->req) || (fs->se && fuse_session_exited(fs->se));
}

static void resume(void *priv, int status)
{
	struct call *c = priv;
	if (status < 0)
		fuse_reply_err(c->req, -status);
	else
		run(c);
	free(c);
}

/* Hands the call to the loader until layer `need` (or LOADER_VIEW) is
 * published; the reply comes from resume(). */
static void park(const struct call *c, size_t need)
{
	size_t nlen = c->name ? strlen(c->name) + 1 : 0;
	struct call *p = malloc(sizeof *p + nlen);
	if (!p) {
		fuse_reply_err(c->req, ENOMEM);
		return;
	}
	*p = *c;
	if (nlen)
		p->name = memcpy(p + 1, c->name, nlen);
	int r = loader_park(fs_of(c->req)->loader, need, call_cancelled, resume, p);
	if (r == 1)
		return;
	free(p);
	if (r == 0)
		run(c); /* published in the meantime */
	else
		fuse_reply_err(c->req, -r);
}

/* One inode, from the merged tree or (early) from its layer entry. */
struct ref {
	fuse_ino_t ino;
	const struct mlfs_view *v;    /* NULL: an early answer, no tree yet */
	uint32_t node;                /* with v */
	const struct mlfs_layer *layer; /* NULL for the root and implicit directories */
	size_t entry;
	struct mlfs_entry e;
};

/* Entries of the layers above `layer`, from the published layers (an
 * answer from `layer` means they all are); false if one is not. */
static bool entries_above(struct loader *l, size_t layer, uint64_t *above)
{
	*above = 0;
	for (size_t k = loader_layer_count(l); k-- > layer + 1;) {
		const struct mlfs_layer *p;
		if (!loader_layer_peek(l, k, &p, NULL))
			return false;
		*above += mlfs_layer_count(p);
	}
	return true;
}

static fuse_ino_t ino_of_entry(uint64_t above, size_t entry)
{
	return FIRST_ENTRY_INO + above + entry;
}

static fuse_ino_t ino_of_node(const struct mlfs_view *v, uint32_t node)
{
	if (node == MLFS_TREE_ROOT)
		return FUSE_ROOT_ID;
	struct mlfs_entry e;
	unsigned layer;
	size_t entry;
	mlfs_tree_entry(v->tree, node, &e, &layer, &entry);
	if (layer == MLFS_TREE_IMPLICIT)
		return FIRST_ENTRY_INO + v->n_entries + node;
	return ino_of_entry(v->entries_above[layer], entry);
}

static void ref_from_node(struct ref *r, const struct mlfs_view *v, uint32_t node)
{
	unsigned layer;
	r->v = v;
	r->node = node;
	mlfs_tree_entry(v->tree, node, &r->e, &layer, &r->entry);
	r->layer = layer == MLFS_TREE_IMPLICIT ? NULL : v->layers[layer];
	r->ino = ino_of_node(v, node);
}

/* ino -> node in a published view; false if it names nothing there. */
static bool node_of(const struct mlfs_view *v, fuse_ino_t ino, uint32_t *node)
{
	if (ino == FUSE_ROOT_ID) {
		*node = MLFS_TREE_ROOT;
		return true;
	}
	if (ino < FIRST_ENTRY_INO)
		return false;
	uint64_t n = ino - FIRST_ENTRY_INO;
	if (n >= v->n_entries) {
		n -= v->n_entries;
		if (n >= mlfs_tree_count(v->tree))
			return false;
		*node = (uint32_t)n;
		return true;
	}
	for (size_t layer = v->n_layers; layer-- > 0;) {
		uint64_t entry = n - v->entries_above[layer];
		if (entry < mlfs_layer_count(v->layers[layer])) {
			*node = v->entry_node[layer][entry];
			return *node != UINT32_MAX;
		}
	}
	return false;
}

/* ino -> (layer, entry) from the layers published so far, top down; false
 * when it is not an entry of one of those (an implicit directory, or a
 * layer below one still loading: the tree will tell). */
static bool entry_of(struct loader *l, fuse_ino_t ino, const struct mlfs_layer **layer, size_t *entry)
{
	if (ino < FIRST_ENTRY_INO)
		return false;
	uint64_t n = ino - FIRST_ENTRY_INO, above = 0;
	for (size_t k = loader_layer_count(l); k-- > 0;) {
		const struct mlfs_layer *p;
		if (!loader_layer_peek(l, k, &p, NULL))
			return false;
		size_t count = mlfs_layer_count(p);
		if (n - above < count) {
			*layer = p;
			*entry = (size_t)(n - above);
			return true;
		}
		above += count;
	}
	return false;
}

/* The ref for the call's inode: from the tree when there is one; early,
 * from its layer, when that layer is indexed and early is allowed; else
 * the call is parked until the tree is published.  False when the call
 * was answered (an error) or parked. */
static bool resolve(const struct call *c, bool early, struct ref *r)
{
	fuse_req_t req = c->req;
	fuse_ino_t ino = c->ino;
	struct mlfs_fs *fs = fs_of(req);
	memset(r, 0, sizeof *r);
	r->ino = ino;
	const struct mlfs_view *v = loader_peek(fs->loader);
	if (!v && early && ino == FUSE_ROOT_ID && c->op != OP_GETXATTR && c->op != OP_LISTXATTR &&
	    !fs->all_seekable) {
		/* A placeholder: `stat DIR` must not fetch layers, and a lookup
		 * in the root only needs to know it is one.  With only TOCs to
		 * fetch (loading since mount) the real one is near.  Not for
		 * the xattr calls: the root's are the image's (its topmost "./"
		 * entry), and the placeholder's empty list would be wrong. */
		r->e = (struct mlfs_entry){ .path = "", .kind = MLFS_ENTRY_DIR, .mode = S_IFDIR | 0755 };
		return true;
	}
	if (!v && early && entry_of(fs->loader, ino, &r->layer, &r->entry)) {
		mlfs_layer_entry(r->layer, r->entry, &r->e);
		return true;
	}
	if (!v) {
		park(c, LOADER_VIEW);
		return false;
	}
	uint32_t node;
	if (!node_of(v, ino, &node)) {
		fuse_reply_err(req, ESTALE);
		return false;
	}
	ref_from_node(r, v, node);
	return true;
}

/* ctime: the image's "created" time for every inode.  A layer has no
 * ctime to give, and one stable value means the root's placeholder (before
 * the layers are in) and its real attributes agree on it, which is what
 * `tar` checks to decide a directory "changed as we read it". */
static void fill_stat(const struct mlfs_fs *fs, const struct ref *r, struct stat *st)
{
	const struct mlfs_entry *e = &r->e;
	memset(st, 0, sizeof *st);
	st->st_ino = r->ino;
	st->st_mode = e->mode;
	/* Without the tree: 1 for a file, 2 for a directory, until it is known. */
	st->st_nlink = r->v ? mlfs_tree_nlink(r->v->tree, r->node) : S_ISDIR(e->mode) ? 2 : 1;
	st->st_uid = e->uid;
	st->st_gid = e->gid;
	st->st_rdev = (dev_t)e->rdev;
	st->st_size = e->kind == MLFS_ENTRY_REG ? (off_t)e->size
		      : e->kind == MLFS_ENTRY_SYMLINK && e->link ? (off_t)strlen(e->link) : 0;
	if (S_ISDIR(e->mode))
		st->st_size = 4096;
	st->st_blksize = 4096;
	/* A sparse file's holes take no room: its blocks are its data's. */
	st->st_blocks = e->kind == MLFS_ENTRY_REG ? (blkcnt_t)((e->stored + 511) / 512) : (st->st_size + 511) / 512;
	st->st_mtim.tv_sec = e->mtime_sec;
	st->st_mtim.tv_nsec = e->mtime_nsec;
	st->st_atim = st->st_mtim;
	st->st_ctim = st->st_mtim;
	if (fs->img->config->has_created) {
		st->st_ctim.tv_sec = (time_t)fs->img->config->created;
		st->st_ctim.tv_nsec = 0;
	}
}

static double attr_timeout(const struct ref *r)
{
	return r->v ? FOREVER : 0.0;
}

static void reply_entry(fuse_req_t req, const struct ref *r)
{
	struct fuse_entry_param ep = { 0 };
	fill_stat(fs_of(req), r, &ep.attr);
	ep.ino = r->ino;
	ep.generation = 1;
	ep.attr_timeout = attr_timeout(r);
	ep.entry_timeout = r->v ? FOREVER : EARLY_ENTRY_S;
	fuse_reply_entry(req, &ep);
}

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
	struct mlfs_fs *fs = userdata;
	/* Kernel-side caching is what makes a warm walk native speed (FIELD-NOTES):
	 * with no-open the kernel stops sending open/release and keeps page and
	 * directory caches; symlinks are cached too. */
	fs->no_open = (conn->capable & FUSE_CAP_NO_OPEN_SUPPORT) != 0;
	fs->no_opendir = (conn->capable & FUSE_CAP_NO_OPENDIR_SUPPORT) != 0;
	if (conn->capable & FUSE_CAP_CACHE_SYMLINKS)
		conn->want |= FUSE_CAP_CACHE_SYMLINKS;
	if (conn->capable & FUSE_CAP_SPLICE_WRITE)
		conn->want |= FUSE_CAP_SPLICE_WRITE;
	if (conn->capable & FUSE_CAP_SPLICE_MOVE)
		conn->want |= FUSE_CAP_SPLICE_MOVE;
	conn->want &= ~(unsigned)FUSE_CAP_WRITEBACK_CACHE;
	/* With every layer seekable, loading is a few small TOC requests: do it
	 * now, so the first listing is ready and prioritised files come early. */
	bool seekable = fs->img->manifest->n_layers > 0;
	for (size_t i = 0; i < fs->img->manifest->n_layers; i++)
		seekable &= mlfs_image_layer_seekable(fs->img, i);
	fs->all_seekable = seekable;
	if (fs->prefetch || seekable)
		loader_start(fs->loader);
}

/* partial_lookup's layers: the published ones; -EINPROGRESS names the
 * first that is not, for the lookup to park on. */
struct published_layers {
	struct loader *loader;
	size_t missing;
};

static int peek_layer(void *priv, size_t i, const struct mlfs_layer **layer, const uint32_t **sorted)
{
	struct published_layers *pl = priv;
	if (loader_layer_peek(pl->loader, i, layer, sorted))
		return 0;
	pl->missing = i;
	return -EINPROGRESS;
}

static void do_lookup(const struct call *call)
{
	fuse_req_t req = call->req;
	fuse_ino_t parent = call->ino;
	const char *name = call->name;
	struct mlfs_fs *fs = fs_of(req);
	struct ref p;
	if (!resolve(call, true, &p))
		return;
	if (!p.v) {
		/* Early: the parent is one layer entry (or the root, resolve()
		 * waited otherwise): ask the layers indexed so far, top down. */
		if (p.e.kind != MLFS_ENTRY_DIR && parent != FUSE_ROOT_ID) {
			fuse_reply_err(req, ENOTDIR);
			return;
		}
		unsigned layer;
		size_t entry;
		struct published_layers pl = { fs->loader, 0 };
		struct partial_src src = { loader_layer_count(fs->loader), peek_layer, &pl };
		int rc = partial_lookup(&src, parent == FUSE_ROOT_ID ? "" : p.e.path, name, &layer, &entry);
		if (rc == -EINPROGRESS) {
			park(call, pl.missing);
			return;
		}
		if (rc == 0) {
			uint64_t above;
			entries_above(fs->loader, layer, &above); /* partial_lookup went through them all */
			struct ref c = { .ino = ino_of_entry(above, entry) };
			loader_layer_peek(fs->loader, layer, &c.layer, NULL);
			c.entry = entry;
			mlfs_layer_entry(c.layer, entry, &c.e);
			reply_entry(req, &c);
			return;
		}
		if (rc != -EAGAIN) {
			fuse_reply_err(req, -rc); /* not a cached negative entry: the tree may differ */
			return;
		}
		if (!resolve(call, false, &p))
			return;
	}
	uint32_t node;
	int rc = mlfs_tree_lookup(p.v->tree, p.node, name, &node);
	if (rc == -ENOENT) {
		/* A negative entry the kernel may cache as long as the rest. */
		struct fuse_entry_param ep = { .ino = 0, .entry_timeout = FOREVER };
		fuse_reply_entry(req, &ep);
		return;
	}
	if (rc < 0) {
		fuse_reply_err(req, -rc);
		return;
	}
	struct ref c;
	ref_from_node(&c, p.v, node);
	reply_entry(req, &c);
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	do_lookup(&(struct call){ .req = req, .op = OP_LOOKUP, .ino = parent, .name = name });
}

static void do_getattr(const struct call *c)
{
	struct ref r;
	if (!resolve(c, true, &r))
		return;
	struct stat st;
	fill_stat(fs_of(c->req), &r, &st);
	fuse_reply_attr(c->req, &st, attr_timeout(&r));
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	do_getattr(&(struct call){ .req = req, .op = OP_GETATTR, .ino = ino });
}

static void do_readlink(const struct call *c)
{
	fuse_req_t req = c->req;
	struct ref r;
	if (!resolve(c, true, &r))
		return;
	if (r.e.kind != MLFS_ENTRY_SYMLINK || !r.e.link) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	fuse_reply_readlink(req, r.e.link);
}

static void op_readlink(fuse_req_t req, fuse_ino_t ino)
{
	do_readlink(&(struct call){ .req = req, .op = OP_READLINK, .ino = ino });
}

static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct mlfs_fs *fs = fs_of(req);
	if (fs->no_opendir) {
		fuse_reply_err(req, ENOSYS); /* and the kernel caches every directory */
		return;
	}
	fi->cache_readdir = 1;
	fi->keep_cache = 1;
	fuse_reply_open(req, fi);
}

/* offsets: 1 is ".", 2 is "..", 3 + i is the i-th child; 0 is the start. */
static void do_readdir(const struct call *call)
{
	fuse_req_t req = call->req;
	size_t size = call->size;
	off_t off = call->off;
	bool plus = call->op == OP_READDIRPLUS;
	struct ref d;
	if (!resolve(call, false, &d))
		return;
	if (d.e.kind != MLFS_ENTRY_DIR) {
		fuse_reply_err(req, ENOTDIR);
		return;
	}
	const struct mlfs_view *v = d.v;
	uint32_t first, count;
	mlfs_tree_children(v->tree, d.node, &first, &count);
	char *buf = malloc(size ? size : 1);
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	size_t used = 0;
	for (off_t i = off; i < (off_t)count + 2; i++) {
		const char *name;
		struct ref c;
		if (i == 0) {
			name = ".";
			c = d;
		} else if (i == 1) {
			name = "..";
			ref_from_node(&c, v, d.node == MLFS_TREE_ROOT ? d.node : mlfs_tree_parent(v->tree, d.node));
		} else {
			uint32_t child = first + (uint32_t)(i - 2);
			name = mlfs_tree_name(v->tree, child);
			ref_from_node(&c, v, child);
		}
		struct fuse_entry_param ep = { 0 };
		fill_stat(fs_of(req), &c, &ep.attr);
		size_t n;
		if (plus) {
			/* "." and ".." carry no lookup count: the kernel does not remember them. */
			if (i >= 2) {
				ep.ino = c.ino;
				ep.generation = 1;
				ep.attr_timeout = ep.entry_timeout = FOREVER;
			}
			n = fuse_add_direntry_plus(req, buf + used, size - used, name, &ep, i + 1);
		} else {
			n = fuse_add_direntry(req, buf + used, size - used, name, &ep.attr, i + 1);
		}
		if (n > size - used)
			break;
		used += n;
	}
	fuse_reply_buf(req, buf, used);
	free(buf);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
	do_readdir(&(struct call){ .req = req, .op = OP_READDIR, .ino = ino, .size = size, .off = off });
}

static void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
			   struct fuse_file_info *fi)
{
	do_readdir(&(struct call){ .req = req, .op = OP_READDIRPLUS, .ino = ino, .size = size, .off = off });
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	if ((fi->flags & O_ACCMODE) != O_RDONLY) {
		fuse_reply_err(req, EROFS);
		return;
	}
	if (fs_of(req)->no_open) {
		fuse_reply_err(req, ENOSYS); /* no more opens: page cache kept for every file */
		return;
	}
	fi->keep_cache = 1;
	fuse_reply_open(req, fi);
}

static void do_read(const struct call *c)
{
	fuse_req_t req = c->req;
	size_t size = c->size;
	off_t off = c->off;
	struct ref r;
	if (!resolve(c, true, &r))
		return;
	if (r.e.kind != MLFS_ENTRY_REG || !r.layer) {
		fuse_reply_err(req, r.e.kind == MLFS_ENTRY_DIR ? EISDIR : EINVAL);
		return;
	}
	if (off < 0 || (uint64_t)off >= r.e.size) {
		fuse_reply_buf(req, NULL, 0);
		return;
	}
	if ((uint64_t)size > r.e.size - (uint64_t)off)
		size = (size_t)(r.e.size - (uint64_t)off);
	/* A seekable layer's chunks come on first read; a warm read takes no lock. */
	struct mlfs_err err = { 0 };
	int rc = mlfs_layer_fetch(r.layer, r.entry, (uint64_t)off, size, &err);
	if (rc < 0) {
		log_error(MLFS_AREA_FS, "reading %s: %s", r.e.path, err.msg[0] ? err.msg : strerror(-rc));
		char msg[sizeof err.msg + 64];
		snprintf(msg, sizeof msg, "reading /%s: %s", r.e.path, err.msg[0] ? err.msg : strerror(-rc));
		loader_note_error(fs_of(req)->loader, msg);
		fuse_reply_err(req, EIO);
		return;
	}
	if (mlfs_layer_take_fill_hint(r.layer))
		loader_fill_async(fs_of(req)->loader, r.layer);
	/* Straight from the cache's data file: splice where the kernel allows. */
	struct fuse_bufvec bv = FUSE_BUFVEC_INIT(size);
	bv.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
	bv.buf[0].fd = mlfs_layer_data_fd(r.layer);
	bv.buf[0].pos = (off_t)r.e.data_off + off;
	struct mlfs_stats *stats = &fs_of(req)->stats; /* the reply frees req */
	if (fuse_reply_data(req, &bv, FUSE_BUF_SPLICE_MOVE) == 0)
		mlfs_stats_served(stats, size);
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
	do_read(&(struct call){ .req = req, .op = OP_READ, .ino = ino, .size = size, .off = off });
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
	const struct mlfs_view *v = loader_peek(fs_of(req)->loader);
	struct statvfs s = { .f_bsize = 4096, .f_frsize = 4096, .f_namemax = 255 };
	if (v) {
		s.f_blocks = (v->total_bytes + 4095) / 4096;
		s.f_files = v->n_inodes;
	}
	s.f_flag = ST_RDONLY;
	fuse_reply_statfs(req, &s);
}

static void do_getxattr(const struct call *c)
{
	fuse_req_t req = c->req;
	const char *name = c->name;
	size_t size = c->size;
	struct ref r;
	if (!resolve(c, true, &r))
		return;
	for (uint32_t j = 0; r.layer && j < r.e.n_xattrs; j++) {
		const char *xn;
		const void *xv;
		size_t xl;
		mlfs_layer_xattr(r.layer, r.entry, j, &xn, &xv, &xl);
		if (strcmp(xn, name))
			continue;
		if (size == 0)
			fuse_reply_xattr(req, xl);
		else if (size < xl)
			fuse_reply_err(req, ERANGE);
		else
			fuse_reply_buf(req, xv, xl);
		return;
	}
	fuse_reply_err(req, ENODATA);
}

/* The mount's statistics (fs/stats.c): the root only, asked by name,
 * before anything is resolved, so asking never starts a load.  A size
 * query gets room to spare: the counters may grow before the read that
 * follows it (getfattr's way), which then gets the value's own length. */
static void reply_stats(fuse_req_t req, size_t size)
{
	size_t len = 0;
	char *text = mlfs_stats_json(fs_of(req), &len);
	if (!text)
		fuse_reply_err(req, ENOMEM);
	else if (size == 0)
		fuse_reply_xattr(req, len + 256);
	else if (size < len)
		fuse_reply_err(req, ERANGE);
	else
		fuse_reply_buf(req, text, len);
	free(text);
}

static void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	if (ino == FUSE_ROOT_ID && !strcmp(name, MLFS_STATS_XATTR)) {
		reply_stats(req, size);
		return;
	}
	do_getxattr(&(struct call){ .req = req, .op = OP_GETXATTR, .ino = ino, .name = name, .size = size });
}

static void do_listxattr(const struct call *c)
{
	fuse_req_t req = c->req;
	size_t size = c->size;
	struct ref r;
	if (!resolve(c, true, &r))
		return;
	/* One pass: names go into the buffer while it has room, and the total
	 * tells the size query (size 0) or ERANGE. */
	char *buf = size ? malloc(size) : NULL;
	if (size && !buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	size_t total = 0;
	for (uint32_t j = 0; r.layer && j < r.e.n_xattrs; j++) {
		const char *xn;
		const void *xv;
		size_t xl;
		mlfs_layer_xattr(r.layer, r.entry, j, &xn, &xv, &xl);
		size_t n = strlen(xn) + 1;
		if (total + n <= size)
			memcpy(buf + total, xn, n);
		total += n;
	}
	if (size == 0)
		fuse_reply_xattr(req, total);
	else if (total > size)
		fuse_reply_err(req, ERANGE);
	else
		fuse_reply_buf(req, buf, total);
	free(buf);
}

static void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	do_listxattr(&(struct call){ .req = req, .op = OP_LISTXATTR, .ino = ino, .size = size });
}

static void run(const struct call *c)
{
	switch (c->op) {
	case OP_LOOKUP:
		do_lookup(c);
		break;
	case OP_GETATTR:
		do_getattr(c);
		break;
	case OP_READLINK:
		do_readlink(c);
		break;
	case OP_READDIR:
	case OP_READDIRPLUS:
		do_readdir(c);
		break;
	case OP_READ:
		do_read(c);
		break;
	case OP_GETXATTR:
		do_getxattr(c);
		break;
	case OP_LISTXATTR:
		do_listxattr(c);
		break;
	}
}

static void op_access(fuse_req_t req, fuse_ino_t ino, int mask)
{
	fuse_reply_err(req, mask & W_OK ? EROFS : 0);
}

static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	fuse_reply_none(req); /* inodes live as long as the mount */
}

static void op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
	fuse_reply_none(req);
}

/* Anything that would change the tree. */
static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
		       struct fuse_file_info *fi)
{
	fuse_reply_err(req, EROFS);
}

static void op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev)
{
	fuse_reply_err(req, EROFS);
}

static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	fuse_reply_err(req, EROFS);
}

static void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	fuse_reply_err(req, EROFS);
}

static void op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
	fuse_reply_err(req, EROFS);
}

static void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
		      const char *newname, unsigned int flags)
{
	fuse_reply_err(req, EROFS);
}

static void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
	fuse_reply_err(req, EROFS);
}

static void op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		      struct fuse_file_info *fi)
{
	fuse_reply_err(req, EROFS);
}

static void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value, size_t size,
			int flags)
{
	fuse_reply_err(req, EROFS);
}

static void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	fuse_reply_err(req, EROFS);
}

const struct fuse_lowlevel_ops mlfs_ops = {
	.init = op_init,
	.lookup = op_lookup,
	.forget = op_forget,
	.forget_multi = op_forget_multi,
	.getattr = op_getattr,
	.readlink = op_readlink,
	.opendir = op_opendir,
	.readdir = op_readdir,
	.readdirplus = op_readdirplus,
	.open = op_open,
	.read = op_read,
	.statfs = op_statfs,
	.getxattr = op_getxattr,
	.listxattr = op_listxattr,
	.access = op_access,
	.setattr = op_setattr,
	.mknod = op_mknod,
	.mkdir = op_mkdir,
	.unlink = op_unlink,
	.rmdir = op_unlink,
	.symlink = op_symlink,
	.rename = op_rename,
	.link = op_link,
	.create = op_create,
	.setxattr = op_setxattr,
	.removexattr = op_removexattr,
};
