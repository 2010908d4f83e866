/* mlfs export: an image's merged root filesystem as one tar (pax, so
 * xattrs and nanosecond mtimes survive) or as an mtree manifest.
 *
 * It runs the same path a mount does — resolve, fetch each layer's blob,
 * index it into the cache, merge — and then walks the tree depth first in
 * name order, so two exports of one image are byte-identical and a diff
 * against a reference extraction lines up.  A layer already indexed by an
 * earlier run is taken from the cache without fetching its blob. */
#include "fs/cli/cli.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "fs/cli/progress.h"
#include "fs/layerload.h"
#include "layers/layers.h"

#define EXPORT_JOBS 4

struct export {
	struct mlfs_image *img;
	struct mlfs_layer **layers;
	size_t n_layers;
	struct mlfs_tree *tree;
	struct archive *out;
	struct archive_entry *entry;
	uint32_t *first_name;  /* per inode: the node its bytes were written under */
	char *buf;
	const char *where;     /* "stdout" or the -o file, for messages */
	int fd;                /* what the archive writes to: stdout, the -o pipe or device, or tmp */
	char *tmp;             /* -o FILE: the temporary file beside it, renamed over it at the end */
};

/* "./a/b" for node; "." for the root. */
static void node_path(const struct mlfs_tree *t, uint32_t node, char *out, size_t cap)
{
	uint32_t chain[2048];
	size_t depth = 0;
	for (uint32_t n = node; n != MLFS_TREE_ROOT && depth < 2048; n = mlfs_tree_parent(t, n))
		chain[depth++] = n;
	size_t o = (size_t)snprintf(out, cap, ".");
	while (depth-- > 0 && o < cap)
		o += (size_t)snprintf(out + o, cap - o, "/%s", mlfs_tree_name(t, chain[depth]));
}

static int write_failed(struct export *x, struct mlfs_err *err)
{
	return mlfs_err_set(err, archive_errno(x->out) > 0 ? archive_errno(x->out) : EIO,
			    "writing %s: %s", x->where, archive_error_string(x->out) ?: "failed");
}

static int write_node(struct export *x, uint32_t node, struct mlfs_err *err)
{
	char path[8192], target[8192];
	struct mlfs_entry e;
	unsigned li;
	size_t ei;
	mlfs_tree_entry(x->tree, node, &e, &li, &ei);
	node_path(x->tree, node, path, sizeof path);

	struct archive_entry *ae = x->entry;
	archive_entry_clear(ae);
	archive_entry_set_pathname(ae, path);
	archive_entry_set_mode(ae, e.mode);
	archive_entry_set_uid(ae, e.uid);
	archive_entry_set_gid(ae, e.gid);
	archive_entry_set_mtime(ae, (time_t)e.mtime_sec, e.mtime_nsec);
	archive_entry_set_nlink(ae, mlfs_tree_nlink(x->tree, node));
	if (e.kind == MLFS_ENTRY_SYMLINK)
		archive_entry_set_symlink(ae, e.link);
	if (e.kind == MLFS_ENTRY_CHR || e.kind == MLFS_ENTRY_BLK)
		archive_entry_set_rdev(ae, (dev_t)e.rdev);
	if (li != MLFS_TREE_IMPLICIT) {
		for (uint32_t j = 0; j < e.n_xattrs; j++) {
			const char *name;
			const void *value;
			size_t len;
			mlfs_layer_xattr(x->layers[li], ei, j, &name, &value, &len);
			archive_entry_xattr_add_entry(ae, name, value, len);
		}
	}
	bool data = false;
	if (e.kind != MLFS_ENTRY_DIR) {
		uint32_t *first = &x->first_name[mlfs_tree_inode(x->tree, node)];
		if (*first != MLFS_TREE_NONE) {
			node_path(x->tree, *first, target, sizeof target);
			archive_entry_set_hardlink(ae, target);
			archive_entry_set_size(ae, 0);
		} else {
			*first = node;
			data = e.kind == MLFS_ENTRY_REG;
			archive_entry_set_size(ae, data ? (la_int64_t)e.size : 0);
		}
	}
	if (archive_write_header(x->out, ae) < ARCHIVE_WARN)
		return write_failed(x, err);
	for (uint64_t off = 0; data && off < e.size;) {
		ssize_t n = mlfs_layer_pread(x->layers[li], ei, x->buf, 1 << 20, off);
		if (n <= 0)
			return mlfs_err_set(err, n < 0 ? (int)-n : EIO, "reading %s from the cache: %s",
					    path, strerror(n < 0 ? (int)-n : EIO));
		if (archive_write_data(x->out, x->buf, (size_t)n) != n)
			return write_failed(x, err);
		off += (uint64_t)n;
	}
	return 0;
}

/* Depth first, children in name order: an explicit stack of (dir, next
 * child) so deep trees cost no recursion. */
static int write_tree(struct export *x, struct mlfs_err *err)
{
	struct frame {
		uint32_t next, end;
	};
	size_t cap = 64, top = 0;
	_cleanup_free_ struct frame *stack = malloc(cap * sizeof *stack);
	if (!stack)
		return mlfs_err_set(err, ENOMEM, "out of memory");
	int r = write_node(x, MLFS_TREE_ROOT, err);
	uint32_t first, count;
	mlfs_tree_children(x->tree, MLFS_TREE_ROOT, &first, &count);
	stack[top++] = (struct frame){ first, first + count };
	while (r == 0 && top) {
		struct frame *f = &stack[top - 1];
		if (f->next == f->end) {
			top--;
			continue;
		}
		uint32_t node = f->next++;
		if ((r = write_node(x, node, err)) < 0)
			break;
		mlfs_tree_children(x->tree, node, &first, &count);
		if (!count)
			continue;
		if (top == cap) {
			struct frame *p = realloc(stack, 2 * cap * sizeof *stack);
			if (!p)
				return mlfs_err_set(err, ENOMEM, "out of memory");
			stack = p;
			cap *= 2;
		}
		stack[top++] = (struct frame){ first, first + count };
	}
	return r;
}

/* Where -o FILE writes.  A regular file (or none yet) is written under a
 * temporary name beside it and renamed over it only once complete, so a
 * failed export never leaves half a tar under the name, nor destroys what
 * was there; a pipe or a character device (a terminal, /dev/null) is
 * written directly; anything else is refused rather than written into. */
static int open_file(struct export *x, const char *file, struct mlfs_err *err)
{
	struct stat st;
	if (stat(file, &st) == 0 && !S_ISREG(st.st_mode)) {
		if (!S_ISFIFO(st.st_mode) && !S_ISCHR(st.st_mode))
			return mlfs_err_set(err, EINVAL, "%s is not a regular file, a pipe or a terminal: "
					    "choose another -o", file);
		x->fd = open(file, O_WRONLY | O_CLOEXEC);
		if (x->fd < 0)
			return mlfs_err_set(err, errno, "cannot open %s: %s", file, strerror(errno));
		return 0;
	}
	if (asprintf(&x->tmp, "%s.mlfs-XXXXXX", file) < 0) {
		x->tmp = NULL;
		return mlfs_err_set(err, ENOMEM, "out of memory");
	}
	x->fd = mkostemp(x->tmp, O_CLOEXEC);
	if (x->fd < 0) {
		int e = errno;
		free(x->tmp);
		x->tmp = NULL;
		return mlfs_err_set(err, e, "cannot write beside %s: %s", file, strerror(e));
	}
	/* What a plain open(O_CREAT, 0666) would have made, not mkostemp's 0600. */
	mode_t mask = umask(0);
	umask(mask);
	(void)fchmod(x->fd, 0666 & ~mask);
	return 0;
}

static int open_output(struct export *x, const char *file, bool mtree, struct mlfs_err *err)
{
	x->out = archive_write_new();
	x->entry = archive_entry_new();
	if (!x->out || !x->entry)
		return mlfs_err_set(err, ENOMEM, "out of memory");
	if (mtree) {
		archive_write_set_format_mtree(x->out);
		if (archive_write_set_options(x->out, "!all,type,mode,uid,gid,size,sha256,link,time") <
		    ARCHIVE_WARN)
			return write_failed(x, err);
	} else {
		archive_write_set_format_pax(x->out);
	}
	archive_write_add_filter_none(x->out);
	if (!file && !mtree && isatty(STDOUT_FILENO))
		return mlfs_err_set(err, EINVAL, "refusing to write a tar to a terminal: use -o FILE "
				    "or redirect stdout");
	int r = file ? open_file(x, file, err) : 0;
	if (r < 0)
		return r;
	return archive_write_open_fd(x->out, file ? x->fd : STDOUT_FILENO) == ARCHIVE_OK ? 0 : write_failed(x, err);
}

/* Each layer indexed, and for a seekable one every chunk fetched (every
 * byte is read: many at a time rather than file by file). */
static int load_layers(struct export *x, struct cli_progress *progress, struct mlfs_err *err)
{
	for (size_t i = 0; i < x->n_layers; i++) {
		cli_progress_layer_begin(progress, i);
		int r = mlfs_image_layer_open(x->img, i, &x->layers[i], err);
		if (r < 0)
			return r;
		if ((r = mlfs_layer_fill(x->layers[i], false, EXPORT_JOBS, err)) < 0) {
			mlfs_err_wrap(err, "layer %zu of %s", i + 1, x->img->canonical);
			return r;
		}
		cli_progress_layer_end(progress, i);
	}
	return 0;
}

static int run(struct export *x, struct cli_image_args *a, struct mlfs_err *err)
{
	bool mtree = false;
	if (a->format && !strcmp(a->format, "mtree"))
		mtree = true;
	else if (a->format && strcmp(a->format, "tar"))
		return mlfs_err_set(err, EINVAL, "unknown format \"%s\": use tar or mtree", a->format);
	struct cli_progress *progress = cli_progress_new(cli_progress_mode(a->quiet), &a->opts);
	int r = mlfs_image_open(a->ref, &a->opts, &x->img, err);
	if (r < 0) {
		cli_progress_free(progress);
		return r;
	}
	x->n_layers = x->img->manifest->n_layers;
	if (x->img->config->n_diff_ids != x->n_layers) {
		cli_progress_free(progress);
		return mlfs_err_set(err, EPROTO, "%s: the manifest has %zu layers but the config %zu diff_ids",
				    x->img->canonical, x->n_layers, x->img->config->n_diff_ids);
	}
	mlfs_image_layers_touch(x->img);
	x->layers = calloc(x->n_layers ? x->n_layers : 1, sizeof *x->layers);
	if (!x->layers)
		r = mlfs_err_set(err, ENOMEM, "out of memory");
	cli_progress_start(progress, x->img);
	if (r == 0)
		r = load_layers(x, progress, err);
	/* The summary once the layers are in: writing the tree fetches nothing. */
	cli_progress_finish(progress, r == 0, "loaded");
	x->img->progress = NULL; /* a chunk read while writing must not reach it once freed */
	cli_progress_free(progress);
	if (r < 0)
		return r;
	if ((r = mlfs_tree_merge(x->layers, x->n_layers, &x->tree, err)) < 0)
		return r;
	size_t n_ino = mlfs_tree_inode_count(x->tree);
	x->first_name = malloc((n_ino ? n_ino : 1) * sizeof *x->first_name);
	x->buf = malloc(1 << 20);
	if (!x->first_name || !x->buf)
		return mlfs_err_set(err, ENOMEM, "out of memory");
	memset(x->first_name, 0xff, n_ino * sizeof *x->first_name);
	if ((r = open_output(x, a->output, mtree, err)) < 0)
		return r;
	if ((r = write_tree(x, err)) < 0)
		return r;
	if (archive_write_close(x->out) != ARCHIVE_OK)
		return write_failed(x, err);
	if (x->tmp && (fsync(x->fd) < 0 || rename(x->tmp, a->output) < 0))
		return mlfs_err_set(err, errno, "cannot write %s: %s", a->output, strerror(errno));
	free(x->tmp);
	x->tmp = NULL; /* renamed: nothing to clean up */
	return 0;
}

int mlfs_cmd_export(int argc, char **argv)
{
	struct cli_image_args a;
	int parsed = cli_parse_image_args(argc, argv, CLI_OUTPUT | CLI_FORMAT | CLI_LAYERS | CLI_PROGRESS, &a);
	if (parsed != 0)
		return parsed < 0 ? 2 : 0; /* 1: --help */
	cli_cache_startup(a.opts.cache_dir);
	struct mlfs_err err = { 0 };
	struct export x = { .where = a.output ? a.output : "stdout", .fd = -1 };
	int r = run(&x, &a, &err);
	if (x.out)
		archive_write_free(x.out);
	if (x.entry)
		archive_entry_free(x.entry);
	/* A half-written export must not pass for a whole one: only our own
	 * temporary file goes, never what -o named. */
	if (x.tmp)
		unlink(x.tmp);
	free(x.tmp);
	if (x.fd >= 0)
		close(x.fd);
	free(x.first_name);
	free(x.buf);
	mlfs_tree_free(x.tree);
	for (size_t i = 0; x.layers && i < x.n_layers; i++)
		mlfs_layer_free(x.layers[i]);
	free(x.layers);
	if (x.img)
		mlfs_cache_enforce(x.img, 0); /* our layers are free to go now */
	mlfs_image_free(x.img);
	/* The reader of our pipe has all it wanted (`| head`, `| tar -t |
	 * head`): end as cat and tar do, quietly, with SIGPIPE's status. */
	if (r == -EPIPE)
		return 128 + SIGPIPE;
	return r < 0 ? cli_fail(&err) : 0;
}
