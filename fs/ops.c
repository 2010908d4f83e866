/* The FUSE low-level callbacks: a read-only view of the merged tree.
 *
 * Inode numbers: the merged tree numbers inodes densely from 0 (the root),
 * hardlinked names sharing one; FUSE's are that plus one, so the root is
 * FUSE_ROOT_ID.  They are stable for the life of the mount because the
 * published view never changes, which is also why forget has nothing to
 * do and why entries and attributes can be cached by the kernel for as
 * long as it likes.
 *
 * Laziness: only the root's getattr (and statfs) can be answered before
 * the layers are there — with a short timeout, so the kernel asks again
 * once the real root is known.  Everything else waits for the view.
 *
 * Each handler ends in exactly one fuse_reply_*; errors become
 * fuse_reply_err() here and only here. */
#include "fs/fs.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "common/log.h"

#define FOREVER (86400.0 * 365) /* the image never changes under the mount */

static struct mlfs_fs *fs_of(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

/* A wait for the layers ends when the request is interrupted or the
 * session is shutting down (unmount must not wait for a slow download). */
static bool req_cancelled(void *priv)
{
	fuse_req_t req = priv;
	struct mlfs_fs *fs = fs_of(req);
	return fuse_req_interrupted(req) || (fs->se && fuse_session_exited(fs->se));
}

/* The view, waiting for it if needed; replies with the error itself. */
static const struct mlfs_view *view_or_reply(fuse_req_t req)
{
	const struct mlfs_view *v;
	int r = loader_wait(fs_of(req)->loader, req_cancelled, req, &v);
	if (r < 0) {
		fuse_reply_err(req, -r);
		return NULL;
	}
	return v;
}

/* ino -> node; 0 and reply ENOENT/ESTALE when it is not one of ours. */
static bool node_of(const struct mlfs_view *v, fuse_ino_t ino, uint32_t *node)
{
	if (ino < 1 || ino - 1 >= v->n_inodes)
		return false;
	*node = v->inode_node[ino - 1];
	return true;
}

static void fill_stat(const struct mlfs_view *v, uint32_t node, struct stat *st)
{
	struct mlfs_entry e;
	unsigned layer;
	size_t idx;
	mlfs_tree_entry(v->tree, node, &e, &layer, &idx);
	memset(st, 0, sizeof *st);
	st->st_ino = (ino_t)mlfs_tree_inode(v->tree, node) + 1;
	st->st_mode = e.mode;
	st->st_nlink = mlfs_tree_nlink(v->tree, node);
	st->st_uid = e.uid;
	st->st_gid = e.gid;
	st->st_rdev = (dev_t)e.rdev;
	st->st_size = e.kind == MLFS_ENTRY_REG ? (off_t)e.size
		      : e.kind == MLFS_ENTRY_SYMLINK && e.link ? (off_t)strlen(e.link) : 0;
	if (S_ISDIR(e.mode))
		st->st_size = 4096;
	st->st_blksize = 4096;
	st->st_blocks = (st->st_size + 511) / 512;
	st->st_mtim.tv_sec = e.mtime_sec;
	st->st_mtim.tv_nsec = e.mtime_nsec;
	st->st_atim = st->st_mtim;
	st->st_ctim = st->st_mtim;
}

static void reply_entry(fuse_req_t req, const struct mlfs_view *v, uint32_t node)
{
	struct fuse_entry_param ep = { 0 };
	fill_stat(v, node, &ep.attr);
	ep.ino = ep.attr.st_ino;
	ep.generation = 1;
	ep.attr_timeout = FOREVER;
	ep.entry_timeout = FOREVER;
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
	if (fs->prefetch)
		loader_start(fs->loader);
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	const struct mlfs_view *v = view_or_reply(req);
	if (!v)
		return;
	uint32_t pnode, node;
	if (!node_of(v, parent, &pnode)) {
		fuse_reply_err(req, ESTALE);
		return;
	}
	int r = mlfs_tree_lookup(v->tree, pnode, name, &node);
	if (r == -ENOENT) {
		/* A negative entry the kernel may cache as long as the rest. */
		struct fuse_entry_param ep = { .ino = 0, .entry_timeout = FOREVER };
		fuse_reply_entry(req, &ep);
		return;
	}
	if (r < 0) {
		fuse_reply_err(req, -r);
		return;
	}
	reply_entry(req, v, node);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct mlfs_fs *fs = fs_of(req);
	const struct mlfs_view *v = loader_peek(fs->loader);
	if (!v && ino == FUSE_ROOT_ID) {
		/* Answered without the layers: `stat DIR` must not fetch them. */
		struct stat st = { .st_ino = FUSE_ROOT_ID, .st_mode = S_IFDIR | 0755, .st_nlink = 2,
				   .st_size = 4096, .st_blksize = 4096 };
		fuse_reply_attr(req, &st, 0.0);
		return;
	}
	if (!v && !(v = view_or_reply(req)))
		return;
	uint32_t node;
	if (!node_of(v, ino, &node)) {
		fuse_reply_err(req, ESTALE);
		return;
	}
	struct stat st;
	fill_stat(v, node, &st);
	fuse_reply_attr(req, &st, FOREVER);
}

static void op_readlink(fuse_req_t req, fuse_ino_t ino)
{
	const struct mlfs_view *v = view_or_reply(req);
	if (!v)
		return;
	uint32_t node;
	struct mlfs_entry e;
	if (!node_of(v, ino, &node)) {
		fuse_reply_err(req, ESTALE);
		return;
	}
	unsigned layer;
	size_t idx;
	mlfs_tree_entry(v->tree, node, &e, &layer, &idx);
	if (e.kind != MLFS_ENTRY_SYMLINK || !e.link) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	fuse_reply_readlink(req, e.link);
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
static void do_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, bool plus)
{
	const struct mlfs_view *v = view_or_reply(req);
	if (!v)
		return;
	uint32_t node;
	if (!node_of(v, ino, &node)) {
		fuse_reply_err(req, ESTALE);
		return;
	}
	struct mlfs_entry e;
	unsigned layer;
	size_t idx;
	mlfs_tree_entry(v->tree, node, &e, &layer, &idx);
	if (!S_ISDIR(e.mode)) {
		fuse_reply_err(req, ENOTDIR);
		return;
	}
	uint32_t first, count;
	mlfs_tree_children(v->tree, node, &first, &count);
	char *buf = malloc(size ? size : 1);
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	size_t used = 0;
	for (off_t i = off; i < (off_t)count + 2; i++) {
		uint32_t child = 0;
		const char *name;
		struct fuse_entry_param ep = { 0 };
		if (i == 0) {
			name = ".";
			fill_stat(v, node, &ep.attr);
		} else if (i == 1) {
			name = "..";
			fill_stat(v, node == MLFS_TREE_ROOT ? node : mlfs_tree_parent(v->tree, node), &ep.attr);
		} else {
			child = first + (uint32_t)(i - 2);
			name = mlfs_tree_name(v->tree, child);
			fill_stat(v, child, &ep.attr);
		}
		size_t n;
		if (plus) {
			/* "." and ".." carry no lookup count: the kernel does not remember them. */
			if (i >= 2) {
				ep.ino = ep.attr.st_ino;
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
	do_readdir(req, ino, size, off, false);
}

static void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
			   struct fuse_file_info *fi)
{
	do_readdir(req, ino, size, off, true);
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

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
	const struct mlfs_view *v = view_or_reply(req);
	if (!v)
		return;
	uint32_t node;
	if (!node_of(v, ino, &node)) {
		fuse_reply_err(req, ESTALE);
		return;
	}
	struct mlfs_entry e;
	unsigned layer;
	size_t idx;
	mlfs_tree_entry(v->tree, node, &e, &layer, &idx);
	if (e.kind != MLFS_ENTRY_REG) {
		fuse_reply_err(req, S_ISDIR(e.mode) ? EISDIR : EINVAL);
		return;
	}
	if (off < 0 || (uint64_t)off >= e.size) {
		fuse_reply_buf(req, NULL, 0);
		return;
	}
	if ((uint64_t)size > e.size - (uint64_t)off)
		size = (size_t)(e.size - (uint64_t)off);
	/* Straight from the cache's data file: splice where the kernel allows. */
	struct fuse_bufvec bv = FUSE_BUFVEC_INIT(size);
	bv.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
	bv.buf[0].fd = mlfs_layer_data_fd(v->layers[layer]);
	bv.buf[0].pos = (off_t)e.data_off + off;
	fuse_reply_data(req, &bv, FUSE_BUF_SPLICE_MOVE);
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

static void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	const struct mlfs_view *v = view_or_reply(req);
	if (!v)
		return;
	uint32_t node;
	if (!node_of(v, ino, &node)) {
		fuse_reply_err(req, ESTALE);
		return;
	}
	struct mlfs_entry e;
	unsigned layer;
	size_t idx;
	mlfs_tree_entry(v->tree, node, &e, &layer, &idx);
	for (uint32_t j = 0; layer != MLFS_TREE_IMPLICIT && j < e.n_xattrs; j++) {
		const char *xn;
		const void *xv;
		size_t xl;
		mlfs_layer_xattr(v->layers[layer], idx, j, &xn, &xv, &xl);
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

static void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	const struct mlfs_view *v = view_or_reply(req);
	if (!v)
		return;
	uint32_t node;
	if (!node_of(v, ino, &node)) {
		fuse_reply_err(req, ESTALE);
		return;
	}
	struct mlfs_entry e;
	unsigned layer;
	size_t idx;
	mlfs_tree_entry(v->tree, node, &e, &layer, &idx);
	size_t total = 0;
	char *buf = NULL;
	for (int pass = 0; pass < 2; pass++) {
		size_t at = 0;
		for (uint32_t j = 0; layer != MLFS_TREE_IMPLICIT && j < e.n_xattrs; j++) {
			const char *xn;
			const void *xv;
			size_t xl;
			mlfs_layer_xattr(v->layers[layer], idx, j, &xn, &xv, &xl);
			size_t n = strlen(xn) + 1;
			if (buf)
				memcpy(buf + at, xn, n);
			at += n;
		}
		total = at;
		if (pass == 0) {
			if (size == 0) {
				fuse_reply_xattr(req, total);
				return;
			}
			if (size < total) {
				fuse_reply_err(req, ERANGE);
				return;
			}
			buf = malloc(total ? total : 1);
			if (!buf) {
				fuse_reply_err(req, ENOMEM);
				return;
			}
		}
	}
	fuse_reply_buf(req, buf, total);
	free(buf);
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
