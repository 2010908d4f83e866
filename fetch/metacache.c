/* Manifests, indexes and configs in the cache, so that a remount asks the
 * network only for what a tag points at now, and `offline` not even that.
 *
 * They live apart from layer blobs, in <cache>/meta/sha256/<hex>, so that
 * evicting layers never needs to tell a manifest from a layer; written only
 * after hashing to their digest.  Being small, they are hashed again on
 * every read: a flipped bit on disk costs a refetch, never a wrong tree.
 * What a tag pointed at when last resolved sits in
 * <cache>/refs/<domain>/<path>/<tag or digest>: "<digest> <media type>\n". */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/tmpfile.h"
#include "fetch/internal.h"

static int mkdir_parents(char *path)
{
	for (char *p = path + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		int r = mkdir(path, 0755) < 0 && errno != EEXIST ? -errno : 0;
		*p = '/';
		if (r < 0)
			return r;
	}
	return 0;
}

/* Write-then-rename, so a reader never sees half a file. */
int mlfs_cache_write_atomic(const char *path, const void *buf, size_t len)
{
	_cleanup_free_ char *dup = strdup(path), *tmp = NULL;
	if (!dup || asprintf(&tmp, "%s.tmp.XXXXXX", path) < 0)
		return -ENOMEM;
	int r = mkdir_parents(dup);
	if (r < 0)
		return r;
	_cleanup_close_ int fd = mlfs_mkstemp_locked(tmp);
	if (fd < 0)
		return -errno;
	(void)flock(fd, LOCK_EX); /* a temp nobody holds is a crash's leftover */
	(void)fchmod(fd, 0644);
	const char *p = buf;
	while (len) {
		ssize_t n = write(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = -errno;
			unlink(tmp);
			return r;
		}
		p += n;
		len -= (size_t)n;
	}
	/* Durable before it is named: a crash must not leave a short file
	 * under a digest's name. */
	if (fsync(fd) < 0 || rename(tmp, path) < 0) {
		r = -errno;
		unlink(tmp);
		return r;
	}
	return 0;
}

int mlfs_cache_read_small(const char *path, size_t max, char **buf, size_t *len)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	struct stat st;
	if (fstat(fd, &st) < 0)
		return -errno;
	if ((uint64_t)st.st_size > max)
		return -EFBIG;
	char *b = malloc((size_t)st.st_size + 1);
	if (!b)
		return -ENOMEM;
	size_t got = 0;
	while (got < (size_t)st.st_size) {
		ssize_t n = read(fd, b + got, (size_t)st.st_size - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			free(b);
			return n < 0 ? -errno : -EIO;
		}
		got += (size_t)n;
	}
	b[got] = '\0';
	*buf = b;
	*len = got;
	return 0;
}

static char *meta_path(const char *cache_dir, const char *kind, const char *digest)
{
	char *p = NULL;
	if (mlfs_digest_validate(digest) < 0 ||
	    asprintf(&p, "%s/%s/sha256/%s", cache_dir, kind, digest + strlen("sha256:")) < 0)
		return NULL;
	return p;
}

char *mlfs_metacache_path(const char *cache_dir, const char *digest)
{
	return meta_path(cache_dir, "meta", digest);
}

int mlfs_metacache_put(const char *cache_dir, const struct mlfs_fetched *f)
{
	_cleanup_free_ char *path = meta_path(cache_dir, "meta", f->digest);
	if (!path)
		return -EINVAL;
	struct stat st;
	if (stat(path, &st) == 0 && (size_t)st.st_size == f->len)
		return 0;
	return mlfs_cache_write_atomic(path, f->body, f->len);
}

int mlfs_metacache_get(const char *cache_dir, const char *digest, enum mlfs_media media,
		       struct mlfs_fetched *out)
{
	_cleanup_free_ char *path = meta_path(cache_dir, "meta", digest);
	if (!path)
		return -EINVAL;
	char *buf;
	size_t len;
	int r = mlfs_cache_read_small(path, MLFS_MANIFEST_MAX, &buf, &len);
	if (r == -ENOENT) {
		/* Caches written before meta/ existed kept these among the blobs. */
		free(path);
		if (!(path = meta_path(cache_dir, "blobs", digest)))
			return -ENOMEM;
		r = mlfs_cache_read_small(path, MLFS_MANIFEST_MAX, &buf, &len);
	}
	if (r < 0)
		return r;
	char got[MLFS_DIGEST_MAX];
	if (mlfs_digest_buf(buf, len, got) < 0 || strcmp(got, digest)) {
		free(buf);
		unlink(path); /* corrupt: drop it so the next online run refetches */
		return -EBADMSG;
	}
	memset(out, 0, sizeof *out);
	out->body = buf;
	out->len = len;
	out->media = media;
	memcpy(out->digest, got, sizeof got);
	return 0;
}

static char *ref_path(const char *cache_dir, const struct mlfs_ref *ref)
{
	char *p = NULL;
	/* Reference parts are validated: no "..", no NUL; ':' and '@' are fine in names. */
	if (asprintf(&p, "%s/refs/%s/%s/%s", cache_dir, ref->domain, ref->path, mlfs_ref_reference(ref)) < 0)
		return NULL;
	return p;
}

int mlfs_metacache_put_ref(const char *cache_dir, const struct mlfs_ref *ref, const char *digest,
			   enum mlfs_media media)
{
	_cleanup_free_ char *path = ref_path(cache_dir, ref), *line = NULL;
	if (!path || asprintf(&line, "%s %s\n", digest, mlfs_media_string(media)) < 0)
		return -ENOMEM;
	return mlfs_cache_write_atomic(path, line, strlen(line));
}

int mlfs_metacache_get_ref(const char *cache_dir, const struct mlfs_ref *ref, char digest[MLFS_DIGEST_MAX],
			   enum mlfs_media *media)
{
	_cleanup_free_ char *path = ref_path(cache_dir, ref), *buf = NULL;
	size_t len;
	if (!path)
		return -ENOMEM;
	int r = mlfs_cache_read_small(path, 4096, &buf, &len);
	if (r < 0)
		return r;
	char d[MLFS_DIGEST_MAX + 1], m[256];
	if (sscanf(buf, "%72s %255s", d, m) != 2 || mlfs_digest_validate(d) < 0)
		return -EBADMSG;
	memcpy(digest, d, MLFS_DIGEST_MAX);
	*media = mlfs_media_from_string(m);
	return 0;
}
