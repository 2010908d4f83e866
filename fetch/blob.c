/* Blobs into the content-addressed cache: <cache>/blobs/sha256/<hex>.
 *
 * A blob's final name is only ever created by rename() after its bytes
 * hashed to its digest, so a file under that name is trusted without
 * hashing it again.  The download goes to <hex>.partial, under an flock
 * so that two mounts of the same image never fetch the same blob twice:
 * the second waits, then finds the final file.  A partial file left by an
 * interrupted run is hashed and resumed with Range, not thrown away. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/log.h"
#include "fetch/internal.h"

static int mkdir_p(const char *path)
{
	char buf[4096];
	if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
		return -ENAMETOOLONG;
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buf, 0755) < 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(buf, 0755) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

struct blob_sink {
	int fd;
	struct mlfs_hasher *hasher;
	int64_t have;
	int64_t size;
	mlfs_sink_fn observe;  /* optional: sees every byte, in order */
	void *priv;
};

static int blob_write(void *priv, const void *buf, size_t len)
{
	struct blob_sink *s = priv;
	if (s->have + (int64_t)len > s->size)
		return -EBADMSG; /* longer than the descriptor says: stop now, not at the end */
	const char *p = buf;
	size_t left = len;
	while (left) {
		ssize_t n = write(s->fd, p, left);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		left -= (size_t)n;
	}
	s->have += (int64_t)len;
	int r = mlfs_hasher_update(s->hasher, buf, len);
	if (r == 0 && s->observe)
		r = s->observe(s->priv, buf, len);
	return r;
}

/* Feeds the bytes a previous run left in the partial file to the hasher. */
static int rehash_partial(struct blob_sink *s)
{
	char buf[1 << 16];
	if (lseek(s->fd, 0, SEEK_SET) < 0)
		return -errno;
	for (;;) {
		ssize_t n = read(s->fd, buf, sizeof buf);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return 0;
		s->have += n;
		int r = mlfs_hasher_update(s->hasher, buf, (size_t)n);
		if (r == 0 && s->observe)
			r = s->observe(s->priv, buf, (size_t)n);
		if (r)
			return r;
	}
}

/* A blob found complete in the cache: the observer still gets every byte. */
static int observe_file(const char *path, mlfs_sink_fn observe, void *priv)
{
	if (!observe)
		return 0;
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	char buf[1 << 16];
	for (;;) {
		ssize_t n = read(fd, buf, sizeof buf);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return 0;
		int r = observe(priv, buf, (size_t)n);
		if (r)
			return r;
	}
}

int mlfs_blob_fetch(struct mlfs_registry *reg, const char *path, const struct mlfs_descriptor *desc,
		    const char *cache_dir, char **blob_path, struct mlfs_err *err)
{
	return mlfs_blob_fetch_observed(reg, path, desc, cache_dir, NULL, NULL, blob_path, err);
}

int mlfs_blob_fetch_observed(struct mlfs_registry *reg, const char *path, const struct mlfs_descriptor *desc,
			     const char *cache_dir, mlfs_sink_fn observe, void *priv, char **blob_path,
			     struct mlfs_err *err)
{
	if (mlfs_digest_validate(desc->digest) < 0)
		return mlfs_err_set(err, EINVAL, "blob digest \"%s\" is not a sha256 digest", desc->digest);
	if (desc->size < 0)
		return mlfs_err_set(err, EINVAL, "blob %s has a negative size", desc->digest);
	const char *hex = desc->digest + strlen("sha256:");
	_cleanup_free_ char *dir = NULL, *final = NULL, *partial = NULL;
	if (asprintf(&dir, "%s/blobs/sha256", cache_dir) < 0 || asprintf(&final, "%s/%s", dir, hex) < 0 ||
	    asprintf(&partial, "%s/%s.partial", dir, hex) < 0)
		return mlfs_err_set(err, ENOMEM, "out of memory");

	struct stat st;
	int r;
	if (stat(final, &st) == 0 && st.st_size == desc->size) {
		if ((r = observe_file(final, observe, priv)) < 0)
			return mlfs_err_set(err, -r, "cannot read the cached blob %s", final);
		*blob_path = steal_pointer(&final);
		return r;
	}
	r = mkdir_p(dir);
	if (r < 0)
		return mlfs_err_set(err, -r, "cannot create the cache directory %s: %s", dir, strerror(-r));

	/* The lock is on the inode, but rename and unlink go by name: a holder
	 * that finished (renamed) or gave up (unlinked) leaves us locking a file
	 * no longer called <hex>.partial.  Only the inode still under that name
	 * is ours to continue; otherwise open again. */
	_cleanup_close_ int fd = -1;
	for (int tries = 0;; tries++) {
		fd = open(partial, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
		if (fd < 0)
			return mlfs_err_set(err, errno, "cannot write to the cache %s: %s", partial, strerror(errno));
		if (flock(fd, LOCK_EX) < 0)
			return mlfs_err_set(err, errno, "cannot lock %s: %s", partial, strerror(errno));
		struct stat named, held;
		if (fstat(fd, &held) == 0 && stat(partial, &named) == 0 && held.st_dev == named.st_dev &&
		    held.st_ino == named.st_ino)
			break;
		close(fd);
		fd = -1;
		if (stat(final, &st) == 0 && st.st_size == desc->size)
			break; /* finished by the holder: taken below */
		if (tries >= 8)
			return mlfs_err_set(err, EBUSY, "%s keeps changing under us: another process?", partial);
	}
	/* Another process may have finished it while we waited for the lock. */
	if (stat(final, &st) == 0 && st.st_size == desc->size) {
		if ((r = observe_file(final, observe, priv)) < 0)
			return mlfs_err_set(err, -r, "cannot read the cached blob %s", final);
		*blob_path = steal_pointer(&final);
		return r;
	}

	if (fd < 0)
		return mlfs_err_set(err, EBUSY, "%s vanished from the cache while we waited", final);

	struct blob_sink s = { .fd = fd, .size = desc->size, .observe = observe, .priv = priv };
	r = mlfs_hasher_new(&s.hasher);
	if (r < 0)
		return mlfs_err_set(err, -r, "cannot hash");
	/* A partial file longer than the blob can be is not a prefix of it:
	 * start over, before the observer sees any of it. */
	if (fstat(fd, &st) < 0 || (st.st_size > desc->size && ftruncate(fd, 0) < 0))
		r = -errno;
	if (r == 0)
		r = rehash_partial(&s);
	if (r < 0) {
		mlfs_hasher_free(s.hasher);
		return mlfs_err_set(err, -r, "cannot read the partial download %s", partial);
	}
	if (s.have > 0)
		log_info(MLFS_AREA_FETCH, "resuming %s at byte %lld", desc->digest, (long long)s.have);

	if (s.have < desc->size) {
		if (lseek(fd, s.have, SEEK_SET) < 0)
			r = -errno;
		else
			r = mlfs_registry_get_blob(reg, path, desc->digest, s.have, blob_write, &s, err);
	}
	/* Foreign and non-distributable layers live at their URLs, not in the
	 * registry: each is tried in turn; the digest check below is the same. */
	for (char **u = desc->urls; r == -ENOENT && u && *u; u++) {
		log_info(MLFS_AREA_FETCH, "%s is not in the registry: trying %s", desc->digest, *u);
		if (lseek(fd, s.have, SEEK_SET) < 0)
			r = -errno;
		else
			r = mlfs_registry_get_url(reg, *u, s.have, blob_write, &s, err);
	}
	if (r == -ENOENT && !desc->urls && desc->media_type &&
	    (strstr(desc->media_type, "foreign") || strstr(desc->media_type, "nondistributable")))
		mlfs_err_set(err, ENOENT, "layer %s is a foreign layer (%s) that the registry does not have, and its "
			     "descriptor names no URL to fetch it from", desc->digest, desc->media_type);
	char got[MLFS_DIGEST_MAX] = "";
	if (r == 0)
		r = mlfs_hasher_final(s.hasher, got);
	mlfs_hasher_free(s.hasher);

	if (r == 0 && s.have < desc->size) {
		/* A clean but short answer: what we have may still be a good prefix. */
		return mlfs_err_set(err, EIO, "blob %s ended after %lld of %lld bytes: run again to resume",
				    desc->digest, (long long)s.have, (long long)desc->size);
	}
	if (r == -EBADMSG || (r == 0 && strcmp(got, desc->digest))) {
		unlink(partial);
		if (r == -EBADMSG)
			return mlfs_err_set(err, EBADMSG, "blob %s is larger than the %lld bytes the manifest says",
					    desc->digest, (long long)desc->size);
		return mlfs_err_set(err, EBADMSG, "digest mismatch for blob %s: got %s: the registry served "
				    "corrupt data; nothing was cached", desc->digest, got);
	}
	if (r < 0) {
		/* Keep the partial file: the next run resumes from it. */
		if (err && !err->msg[0])
			mlfs_err_set(err, -r, "download of %s failed: %s", desc->digest, strerror(-r));
		return r;
	}
	if (fsync(fd) < 0 || rename(partial, final) < 0)
		return mlfs_err_set(err, errno, "cannot store %s in the cache: %s", final, strerror(errno));
	log_debug(MLFS_AREA_FETCH, "cached %s (%lld bytes)", desc->digest, (long long)desc->size);
	*blob_path = steal_pointer(&final);
	return 0;
}
