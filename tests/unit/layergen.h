/* Test layers generated at test time with libarchive's writer, so that
 * every case states its tar entries next to its expectations. */
#pragma once
#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/digest.h"
#include "layers/layers.h"

#define LG_UNUSED __attribute__((unused))

struct lg_entry {
	const char *path;
	char type;            /* f file, d dir, l symlink, h hardlink, c chr, b blk, p fifo */
	unsigned mode;        /* permission bits; 0: 0644 / 0755 */
	const char *data;     /* file contents (NUL-terminated) */
	const char *link;     /* symlink or hardlink target */
	long long uid, gid;
	long long mtime;
	long nsec;
	const char *xname;    /* one xattr */
	const void *xval;
	size_t xlen;
	unsigned major, minor;
	size_t data_len;      /* when data has NULs: its length */
};

/* filter: 'n' none, 'g' gzip, 'z' zstd. */
static LG_UNUSED int lg_write(const char *file, char filter, const struct lg_entry *ents, size_t n)
{
	struct archive *a = archive_write_new();
	struct archive_entry *e = archive_entry_new();
	archive_write_set_format_pax(a);
	if (filter == 'g')
		archive_write_add_filter_gzip(a);
	else if (filter == 'z')
		archive_write_add_filter_zstd(a);
	if (archive_write_open_filename(a, file) != ARCHIVE_OK) {
		fprintf(stderr, "# %s\n", archive_error_string(a));
		return -1;
	}
	for (size_t i = 0; i < n; i++) {
		const struct lg_entry *x = &ents[i];
		archive_entry_clear(e);
		archive_entry_set_pathname(e, x->path);
		unsigned mode = x->mode;
		size_t len = x->data ? (x->data_len ? x->data_len : strlen(x->data)) : 0;
		switch (x->type) {
		case 'd': archive_entry_set_filetype(e, AE_IFDIR); mode = mode ? mode : 0755; break;
		case 'l': archive_entry_set_filetype(e, AE_IFLNK); archive_entry_set_symlink(e, x->link); mode = 0777; break;
		case 'h': archive_entry_set_filetype(e, AE_IFREG); archive_entry_set_hardlink(e, x->link); len = 0; break;
		case 'c': archive_entry_set_filetype(e, AE_IFCHR); archive_entry_set_rdevmajor(e, x->major); archive_entry_set_rdevminor(e, x->minor); break;
		case 'b': archive_entry_set_filetype(e, AE_IFBLK); archive_entry_set_rdevmajor(e, x->major); archive_entry_set_rdevminor(e, x->minor); break;
		case 'p': archive_entry_set_filetype(e, AE_IFIFO); break;
		default: archive_entry_set_filetype(e, AE_IFREG); break;
		}
		archive_entry_set_perm(e, mode ? mode : 0644);
		archive_entry_set_uid(e, x->uid);
		archive_entry_set_gid(e, x->gid);
		archive_entry_set_mtime(e, (time_t)x->mtime, x->nsec);
		if (x->type == 'f' || x->type == 0)
			archive_entry_set_size(e, (la_int64_t)len);
		if (x->xname)
			archive_entry_xattr_add_entry(e, x->xname, x->xval, x->xlen);
		if (archive_write_header(a, e) != ARCHIVE_OK) {
			fprintf(stderr, "# %s: %s\n", x->path, archive_error_string(a));
			return -1;
		}
		if (len && archive_write_data(a, x->data, len) != (la_ssize_t)len)
			return -1;
	}
	archive_entry_free(e);
	int rc = archive_write_close(a) == ARCHIVE_OK ? 0 : -1;
	archive_write_free(a);
	return rc;
}

static LG_UNUSED int lg_digest_file(const char *file, char out[MLFS_DIGEST_MAX])
{
	struct mlfs_hasher *h;
	char buf[65536];
	int fd = open(file, O_RDONLY);
	if (fd < 0 || mlfs_hasher_new(&h) < 0)
		return -1;
	ssize_t n;
	while ((n = read(fd, buf, sizeof buf)) > 0)
		mlfs_hasher_update(h, buf, (size_t)n);
	close(fd);
	int rc = mlfs_hasher_final(h, out);
	mlfs_hasher_free(h);
	return rc;
}

static LG_UNUSED int lg_open(const char *cache, const char *file, const char *diff_id,
			     const char *blob, struct mlfs_layer **out, struct mlfs_err *err)
{
	int fd = open(file, O_RDONLY);
	if (fd < 0)
		return -errno;
	struct mlfs_layer_opts o = { .cache_dir = cache, .diff_id = diff_id, .blob_digest = blob };
	int rc = mlfs_layer_open_fd(fd, &o, out, err);
	close(fd);
	return rc;
}

static LG_UNUSED int lg_write_bytes(const char *file, const void *buf, size_t len)
{
	int fd = open(file, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0)
		return -1;
	ssize_t n = write(fd, buf, len);
	close(fd);
	return n == (ssize_t)len ? 0 : -1;
}

static LG_UNUSED int lg_truncate(const char *file, double fraction)
{
	struct stat st;
	if (stat(file, &st) < 0)
		return -1;
	return truncate(file, (off_t)((double)st.st_size * fraction));
}

/* Number of names in dir (subdir of the cache, e.g. "data/sha256"). */
static LG_UNUSED int lg_count_files(const char *cache, const char *sub)
{
	char path[4096];
	snprintf(path, sizeof path, "%s/%s", cache, sub);
	DIR *d = opendir(path);
	if (!d)
		return 0;
	int n = 0;
	struct dirent *de;
	while ((de = readdir(d)))
		n += de->d_name[0] != '.';
	closedir(d);
	return n;
}

static LG_UNUSED int lg_rm_one(const char *p, const struct stat *st, int flag, struct FTW *f)
{
	(void)st; (void)flag; (void)f;
	return remove(p);
}

static LG_UNUSED void lg_rmrf(const char *dir)
{
	nftw(dir, lg_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static LG_UNUSED char *lg_tmpdir(void)
{
	const char *t = getenv("TMPDIR");
	char *p;
	if (asprintf(&p, "%s/mlfs-test-XXXXXX", t ? t : "/tmp") < 0 || !mkdtemp(p))
		abort();
	return p;
}
