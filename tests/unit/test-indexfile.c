/* layers/: the persisted index — reuse without decompression, rebuild when damaged. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "layergen.h"
#include "tap.h"

struct counting {
	int fd;
	size_t reads;
	char buf[4096];
};

static int counting_read(void *priv, const void **buf, size_t *len)
{
	struct counting *c = priv;
	c->reads++;
	ssize_t n = read(c->fd, c->buf, sizeof c->buf);
	if (n < 0)
		return -errno;
	*buf = c->buf;
	*len = (size_t)n;
	return 0;
}

/* Opens through a source that counts its reads: 0 reads means the cached index served. */
static int open_counted(const char *cache, const char *file, const char *diff_id, const char *blob,
			struct mlfs_layer **l, size_t *reads)
{
	struct counting c = { .fd = open(file, O_RDONLY) };
	struct mlfs_layer_source src = { counting_read, &c };
	struct mlfs_layer_opts o = { .cache_dir = cache, .diff_id = diff_id, .blob_digest = blob };
	struct mlfs_err err = { 0 };
	int rc = mlfs_layer_open_source(&src, &o, l, &err);
	if (rc < 0)
		tap_diag("%s", err.msg);
	close(c.fd);
	*reads = c.reads;
	return rc;
}

static bool same(struct mlfs_layer *a, struct mlfs_layer *b)
{
	if (mlfs_layer_count(a) != mlfs_layer_count(b) || mlfs_layer_refused(a) != mlfs_layer_refused(b))
		return false;
	for (size_t i = 0; i < mlfs_layer_count(a); i++) {
		struct mlfs_entry x, y;
		mlfs_layer_entry(a, i, &x);
		mlfs_layer_entry(b, i, &y);
		if (strcmp(x.path, y.path) || x.kind != y.kind || x.mode != y.mode || x.uid != y.uid ||
		    x.gid != y.gid || x.mtime_sec != y.mtime_sec || x.mtime_nsec != y.mtime_nsec ||
		    x.size != y.size || x.rdev != y.rdev || x.data_off != y.data_off ||
		    (!x.link) != (!y.link) || (x.link && strcmp(x.link, y.link)) || x.n_xattrs != y.n_xattrs)
			return false;
		for (uint32_t j = 0; j < x.n_xattrs; j++) {
			const char *n1, *n2;
			const void *v1, *v2;
			size_t l1, l2;
			mlfs_layer_xattr(a, i, j, &n1, &v1, &l1);
			mlfs_layer_xattr(b, i, j, &n2, &v2, &l2);
			if (strcmp(n1, n2) || l1 != l2 || memcmp(v1, v2, l1))
				return false;
		}
		char b1[16] = { 0 }, b2[16] = { 0 };
		if (x.kind == MLFS_ENTRY_REG &&
		    (mlfs_layer_pread(a, i, b1, sizeof b1, 0) != mlfs_layer_pread(b, i, b2, sizeof b2, 0) ||
		     memcmp(b1, b2, sizeof b1)))
			return false;
	}
	return true;
}

static void flip(const char *path, long off)
{
	int fd = open(path, O_RDWR);
	unsigned char c;
	pread(fd, &c, 1, off);
	c ^= 0x40;
	pwrite(fd, &c, 1, off);
	close(fd);
}

int main(void)
{
	char *dir = lg_tmpdir();
	char cache[4096], file[4096], plain[4096], index[8192], data[8192];
	snprintf(cache, sizeof cache, "%s/cache", dir);
	snprintf(file, sizeof file, "%s/l.tar.zst", dir);
	snprintf(plain, sizeof plain, "%s/l.tar", dir);
	static const char val[] = "v\0al";
	const struct lg_entry ents[] = {
		{ .path = "etc", .type = 'd', .mode = 0700, .uid = 3 },
		{ .path = "etc/hosts", .data = "127.0.0.1 localhost\n", .mtime = 99, .nsec = 7 },
		{ .path = "etc/x", .data = "xattrs", .xname = "user.k", .xval = val, .xlen = 4 },
		{ .path = "etc/l", .type = 'l', .link = "hosts" },
		{ .path = "etc/h", .type = 'h', .link = "etc/hosts" },
		{ .path = "dev/zero", .type = 'c', .major = 1, .minor = 5 },
		{ .path = "../bad", .data = "" },
		{ .path = "etc/.wh.old", .data = "" },
	};
	lg_write(file, 'z', ents, sizeof ents / sizeof ents[0]);
	lg_write(plain, 'n', ents, sizeof ents / sizeof ents[0]);
	char diff_id[MLFS_DIGEST_MAX], blob[MLFS_DIGEST_MAX];
	lg_digest_file(plain, diff_id);
	lg_digest_file(file, blob);
	snprintf(index, sizeof index, "%s/index/sha256/%s", cache, diff_id + 7);
	snprintf(data, sizeof data, "%s/data/sha256/%s", cache, diff_id + 7);

	struct mlfs_layer *first = NULL, *l = NULL;
	size_t reads;
	tap_is_int(open_counted(cache, file, diff_id, blob, &first, &reads), 0, "first open indexes");
	tap_ok(reads > 0, "first open read the blob");
	tap_ok(access(index, F_OK) == 0 && access(data, F_OK) == 0, "index and data keyed by diff_id");

	tap_is_int(open_counted(cache, file, diff_id, blob, &l, &reads), 0, "second open");
	tap_is_int(reads, 0, "second open reads no blob byte");
	tap_ok(l && same(first, l), "cached index equals the built one");
	mlfs_layer_free(l);

	struct mlfs_layer_opts o = { .cache_dir = cache, .diff_id = diff_id };
	struct mlfs_err err;
	tap_is_int(mlfs_layer_open_cached(&o, &l, &err), 0, "open_cached finds it");
	mlfs_layer_free(l);
	o.diff_id = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
	tap_is_int(mlfs_layer_open_cached(&o, &l, &err), -ENOENT, "open_cached of an unknown layer");

	struct stat st;
	stat(index, &st);
	const struct {
		const char *what;
		long trunc;   /* new size, or -1 */
		long flip_at; /* byte to flip, or -1 */
	} damage[] = {
		{ "truncated index", st.st_size / 2, -1 },
		{ "index cut by one byte", st.st_size - 1, -1 },
		{ "empty index", 0, -1 },
		{ "flipped byte in an entry", -1, 140 },
		{ "flipped byte in the arena", -1, st.st_size - 80 },
		{ "flipped checksum", -1, st.st_size - 10 },
		{ "other version", -1, 8 },
	};
	for (size_t i = 0; i < sizeof damage / sizeof damage[0]; i++) {
		if (damage[i].trunc >= 0)
			truncate(index, damage[i].trunc);
		else
			flip(index, damage[i].flip_at);
		tap_is_int(open_counted(cache, file, diff_id, blob, &l, &reads), 0, damage[i].what);
		tap_ok(reads > 0, "%s: rebuilt from the blob", damage[i].what);
		tap_ok(l && same(first, l), "%s: rebuilt index equals the original", damage[i].what);
		mlfs_layer_free(l);
		tap_is_int(open_counted(cache, file, diff_id, blob, &l, &reads), 0, "reopen");
		tap_is_int(reads, 0, "the rebuilt index is reused");
		mlfs_layer_free(l);
	}

	/* An index whose data file vanished or shrank is not trusted either. */
	truncate(data, 3);
	tap_is_int(open_counted(cache, file, diff_id, blob, &l, &reads), 0, "short data file");
	tap_ok(reads > 0 && l && same(first, l), "short data file: rebuilt");
	mlfs_layer_free(l);
	unlink(data);
	tap_is_int(open_counted(cache, file, diff_id, blob, &l, &reads), 0, "missing data file");
	tap_ok(reads > 0 && l && same(first, l), "missing data file: rebuilt");
	mlfs_layer_free(l);

	/* An index renamed to another layer's name is refused by its key. */
	char other[8192];
	snprintf(other, sizeof other, "%s/index/sha256/%s", cache, blob + 7);
	link(index, other);
	o.diff_id = NULL;
	o.blob_digest = blob;
	tap_is_int(mlfs_layer_open_cached(&o, &l, &err), -ENOENT, "index under another key refused");

	mlfs_layer_free(first);
	lg_rmrf(dir);
	free(dir);
	return tap_done();
}
