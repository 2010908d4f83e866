/* The layer cache's files: data/sha256/<hex> and index/sha256/<hex>.
 *
 * A layer's regular files are written, decompressed, into one data file
 * while the stream is indexed, so that serving a read later is a plain
 * pread (or an fd-backed FUSE reply) at a recorded offset.  The file is
 * built under a temporary name and renamed into place only after both
 * digests of the layer matched: a name in the cache is a verified one, and
 * a failure leaves nothing behind.  Two processes racing on one layer each
 * write their own temp file; the renames replace identical content. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/tmpfile.h"
#include "layers/internal.h"

/* A rename is durable only once its directory is: without this a crash
 * right after a load could lose the just-named file (and pay a download). */
void mlfs_store_sync_dir(const char *path)
{
	char dir[PATH_MAX];
	if (snprintf(dir, sizeof dir, "%s", path) >= (int)sizeof dir)
		return;
	char *slash = strrchr(dir, '/');
	if (!slash)
		return;
	*slash = '\0';
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd >= 0) {
		(void)fsync(fd);
		close(fd);
	}
}

struct mlfs_store {
	int fd;
	char *tmp_path;   /* NULL for an unnamed file */
	char *final_path;
};

char *mlfs_store_path(const char *cache_dir, const char *kind, const char *key)
{
	const char *colon = strchr(key, ':');
	char *p = NULL;
	if (!colon)
		return NULL;
	if (asprintf(&p, "%s/%s/%.*s/%s", cache_dir, kind, (int)(colon - key), key, colon + 1) < 0)
		return NULL;
	return p;
}

static int mkdir_one(const char *path)
{
	if (mkdir(path, 0755) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

int mlfs_store_mkdirs(const char *cache_dir, const char *kind)
{
	char path[PATH_MAX];
	int rc = mkdir_one(cache_dir);
	if (rc < 0)
		return rc;
	snprintf(path, sizeof path, "%s/%s", cache_dir, kind);
	if ((rc = mkdir_one(path)) < 0)
		return rc;
	snprintf(path, sizeof path, "%s/%s/sha256", cache_dir, kind);
	return mkdir_one(path);
}

int mlfs_store_begin(const char *cache_dir, const char *key, struct mlfs_store **out)
{
	int rc = mlfs_store_mkdirs(cache_dir, "data");
	if (rc < 0)
		return rc;
	struct mlfs_store *s = calloc(1, sizeof *s);
	if (!s)
		return -ENOMEM;
	s->fd = -1;
	if (!key) {
		char dir[PATH_MAX];
		snprintf(dir, sizeof dir, "%s/data/sha256", cache_dir);
		s->fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
		if (s->fd < 0) {
			rc = -errno;
			free(s);
			return rc;
		}
		*out = s;
		return 0;
	}
	s->final_path = mlfs_store_path(cache_dir, "data", key);
	if (!s->final_path || asprintf(&s->tmp_path, "%s.tmp-XXXXXX", s->final_path) < 0) {
		s->tmp_path = NULL;
		mlfs_store_free(s);
		return -ENOMEM;
	}
	s->fd = mlfs_mkstemp_locked(s->tmp_path);
	/* Held while written: a temp file nobody holds is a crash's leftover. */
	if (s->fd >= 0)
		(void)flock(s->fd, LOCK_EX);
	if (s->fd < 0) {
		rc = -errno;
		free(s->tmp_path);
		s->tmp_path = NULL;
		mlfs_store_free(s);
		return rc;
	}
	*out = s;
	return 0;
}

int mlfs_store_pwrite(struct mlfs_store *s, const void *buf, size_t len, uint64_t off)
{
	const char *p = buf;
	while (len) {
		if (off > (uint64_t)INT64_MAX - len)
			return -EFBIG;
		ssize_t n = pwrite(s->fd, p, len, (off_t)off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

int mlfs_store_commit(struct mlfs_store *s, uint64_t size, int *fd)
{
	if (size > (uint64_t)INT64_MAX)
		return -EFBIG;
	/* A trailing sparse file leaves the end unwritten; the size makes it a hole. */
	if (ftruncate(s->fd, (off_t)size) < 0)
		return -errno;
	if (s->tmp_path) {
		/* Synced before the rename so a crash never leaves a name with holes
		 * where data should be. */
		if (fdatasync(s->fd) < 0)
			return -errno;
		if (rename(s->tmp_path, s->final_path) < 0)
			return -errno;
		free(s->tmp_path);
		s->tmp_path = NULL;
		mlfs_store_sync_dir(s->final_path);
		/* From writer to user: nobody can have it yet, so this never waits. */
		if (flock(s->fd, LOCK_SH) < 0)
			return -errno;
	}
	*fd = steal_fd(&s->fd);
	return 0;
}

void mlfs_store_free(struct mlfs_store *s)
{
	if (!s)
		return;
	if (s->tmp_path)
		unlink(s->tmp_path);
	if (s->fd >= 0)
		close(s->fd);
	free(s->tmp_path);
	free(s->final_path);
	free(s);
}

int mlfs_store_write_file(const char *path, const void *buf, size_t len)
{
	_cleanup_free_ char *tmp = NULL;
	if (asprintf(&tmp, "%s.tmp-XXXXXX", path) < 0)
		return -ENOMEM;
	_cleanup_close_ int fd = mlfs_mkstemp_locked(tmp);
	if (fd < 0)
		return -errno;
	(void)flock(fd, LOCK_EX);
	const char *p = buf;
	size_t left = len;
	int rc = 0;
	while (left) {
		ssize_t n = write(fd, p, left);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			rc = -errno;
			break;
		}
		p += n;
		left -= (size_t)n;
	}
	if (rc == 0 && fdatasync(fd) < 0)
		rc = -errno;
	if (rc == 0 && rename(tmp, path) < 0)
		rc = -errno;
	if (rc < 0)
		unlink(tmp);
	else
		mlfs_store_sync_dir(path);
	return rc;
}

int mlfs_store_sparse(const char *cache_dir, const char *key, uint64_t size, int *out)
{
	if (size > (uint64_t)INT64_MAX)
		return -EFBIG;
	int rc = mlfs_store_mkdirs(cache_dir, "data");
	if (rc < 0)
		return rc;
	_cleanup_free_ char *path = mlfs_store_path(cache_dir, "data", key);
	_cleanup_free_ char *tmp = NULL;
	if (!path || asprintf(&tmp, "%s.tmp-XXXXXX", path) < 0)
		return -ENOMEM;
	/* The same blob always makes the same layout, so a data file already
	 * there (another mount's, or one whose index was lost) is this one,
	 * with whatever chunks it holds: keep it. */
	for (int tries = 0; tries < 4; tries++) {
		int fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
		struct stat st;
		bool replace = false;
		if (fd >= 0) {
			rc = mlfs_cache_lock_shared(fd);
			if (rc == 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && (uint64_t)st.st_size == size) {
				mlfs_cache_touch(fd);
				*out = fd;
				return 0;
			}
			close(fd);
			if (rc == -ESTALE)
				continue; /* evicted as we came: look again */
			if (rc < 0)
				return rc;
			replace = true;
		} else if (errno != ENOENT) {
			return -errno;
		}
		char *t = strdup(tmp);
		if (!t)
			return -ENOMEM;
		fd = mlfs_mkstemp_locked(t);
		if (fd < 0) {
			rc = -errno;
			free(t);
			return rc;
		}
		/* Shared at once: it is ours to use as soon as it has its name. */
		(void)flock(fd, LOCK_SH);
		if (ftruncate(fd, (off_t)size) < 0) {
			rc = -errno;
			goto fail;
		}
		/* A new data file holds no chunk yet: a map left from one that
		 * vanished (or had another size) must not say otherwise. */
		char *map = mlfs_store_path(cache_dir, "chunks", key);
		if (map)
			unlink(map);
		free(map);
		if (replace) {
			if (rename(t, path) < 0) {
				rc = -errno;
				goto fail;
			}
			free(t);
			*out = fd;
			return 0;
		}
		if (link(t, path) == 0) {
			unlink(t);
			free(t);
			*out = fd;
			return 0;
		}
		rc = errno == EEXIST ? -EAGAIN : -errno;
	fail:
		unlink(t);
		free(t);
		close(fd);
		if (rc != -EAGAIN)
			return rc;
		/* Another process created it first: take theirs. */
	}
	return -EBUSY;
}
