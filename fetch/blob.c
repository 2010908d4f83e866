/* Blobs into the content-addressed cache: <cache>/blobs/sha256/<hex>.
 *
 * A blob's final name is only ever created by rename() after its bytes
 * hashed to its digest; it is hashed again whenever it is used all the
 * same (a disk, or a hand, may have changed it since), and dropped on a
 * mismatch.  The download goes to <hex>.partial, under an flock so that
 * two mounts of the same image never fetch the same blob twice: the second
 * waits (bounded), then finds the final file.  A partial file left by an
 * interrupted run is hashed and resumed with Range, not thrown away, unless
 * what it holds turns out not to be the blob's prefix: then it is dropped
 * and the download starts over from byte 0, once. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/dirs.h"
#include "common/cleanup.h"
#include "common/log.h"
#include "fetch/internal.h"

struct blob_sink {
	int fd;
	struct mlfs_hasher *hasher;
	int64_t have;
	int64_t size;
	mlfs_sink_fn observe;  /* optional: sees every byte, in order */
	void *priv;
	bool observer_failed;  /* the error came from observe(), not the network */
	const struct mlfs_progress *progress; /* may be NULL */
};

static void count(const struct mlfs_progress *p, enum mlfs_progress_event ev, size_t n)
{
	if (p && p->fn)
		p->fn(p->priv, p->layer, ev, n);
}

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
	count(s->progress, MLFS_PROGRESS_FETCHED, len);
	int r = mlfs_hasher_update(s->hasher, buf, len);
	if (r == 0 && s->observe && (r = s->observe(s->priv, buf, len)) != 0)
		s->observer_failed = true;
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
		count(s->progress, MLFS_PROGRESS_REUSED, (size_t)n);
		int r = mlfs_hasher_update(s->hasher, buf, (size_t)n);
		if (r == 0 && s->observe && (r = s->observe(s->priv, buf, (size_t)n)) != 0)
			s->observer_failed = true;
		if (r)
			return r;
	}
}

/* The blob already complete in the cache, hashed as it is read (and handed
 * to the observer): 1 when it was good and used, 0 when there is none or it
 * was bad and is gone before anyone saw it, -EAGAIN when it was bad after
 * the observer saw its bytes (the caller starts over). */
static int use_cached(const char *final, const struct mlfs_descriptor *desc, mlfs_sink_fn observe, void *priv,
		      const struct mlfs_progress *progress, struct mlfs_err *err)
{
	_cleanup_close_ int fd = open(final, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0 || st.st_size != desc->size)
		return 0; /* absent, or evicted between our looks: fetch it */
	struct mlfs_hasher *h;
	int r = mlfs_hasher_new(&h);
	if (r < 0)
		return mlfs_err_set(err, -r, "cannot hash");
	bool seen = false;
	char buf[1 << 16], got[MLFS_DIGEST_MAX] = "";
	for (;;) {
		ssize_t n = read(fd, buf, sizeof buf);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = mlfs_err_set(err, errno, "cannot read the cached blob %s: %s", final, strerror(errno));
			break;
		}
		if (n == 0) {
			r = mlfs_hasher_final(h, got);
			break;
		}
		if ((r = mlfs_hasher_update(h, buf, (size_t)n)) < 0)
			break;
		seen = true;
		count(progress, MLFS_PROGRESS_REUSED, (size_t)n);
		if (observe && (r = observe(priv, buf, (size_t)n)) != 0)
			break;
	}
	mlfs_hasher_free(h);
	if (r != 0)
		return r;
	if (!strcmp(got, desc->digest))
		return 1;
	log_warn(MLFS_AREA_FETCH, "the cached blob %s is corrupt (its bytes hash to %s): dropped", final, got);
	unlink(final);
	if (observe && seen)
		return mlfs_err_set(err, EAGAIN, "the cached blob %s was corrupt and is dropped", desc->digest);
	return 0;
}

/* The exclusive lock on <hex>.partial, as a fd, waiting at most wait_s for
 * another process's download; -EEXIST (fd -1) when that process finished
 * the blob while we waited. */
static int lock_partial(const struct mlfs_registry *reg, const char *partial, const char *final,
			const struct mlfs_descriptor *desc, unsigned wait_s, int *out, struct mlfs_err *err)
{
	/* The lock is on the inode, but rename and unlink go by name: a holder
	 * that finished (renamed) or gave up (unlinked) leaves us locking a file
	 * no longer called <hex>.partial.  Only the inode still under that name
	 * is ours to continue; otherwise open again. */
	struct timespec start;
	clock_gettime(CLOCK_MONOTONIC, &start);
	for (int tries = 0;; tries++) {
		_cleanup_close_ int fd = open(partial, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
		if (fd < 0)
			return mlfs_err_set(err, errno, "cannot write to the cache %s: %s", partial, strerror(errno));
		/* Polled: a holder on a registry that trickles bytes must not keep
		 * us past the timeout. */
		for (unsigned ms = 1; flock(fd, LOCK_EX | LOCK_NB) < 0; ms = ms < 200 ? ms * 2 : 200) {
			if (errno != EWOULDBLOCK && errno != EINTR)
				return mlfs_err_set(err, errno, "cannot lock %s: %s", partial, strerror(errno));
			if (mlfs_registry_cancelled(reg))
				return mlfs_err_set(err, ECANCELED, "waiting for %s: cancelled (unmounting)", desc->digest);
			struct timespec now;
			clock_gettime(CLOCK_MONOTONIC, &now);
			if ((int64_t)(now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000 >=
			    (int64_t)wait_s * 1000)
				return mlfs_err_set(err, ETIMEDOUT, "another process has been downloading %s for "
						    "%u s: gave up waiting (raise timeout=)", desc->digest, wait_s);
			struct timespec nap = { 0, (long)ms * 1000000L };
			nanosleep(&nap, NULL);
		}
		struct stat named, held, st;
		if (fstat(fd, &held) == 0 && stat(partial, &named) == 0 && held.st_dev == named.st_dev &&
		    held.st_ino == named.st_ino) {
			*out = steal_fd(&fd);
			return 0;
		}
		if (stat(final, &st) == 0 && st.st_size == desc->size)
			return -EEXIST; /* finished by the holder */
		if (tries >= 8)
			return mlfs_err_set(err, EBUSY, "%s keeps changing under us: another process?", partial);
	}
}

/* One attempt: -EAGAIN when bytes from the cache (a leftover partial, a
 * complete blob) proved wrong after the observer saw them, and were dropped. */
static int fetch_once(struct mlfs_registry *reg, const struct mlfs_descriptor *desc,
		      const char *dir, const char *final, const char *partial, unsigned wait_s,
		      mlfs_sink_fn observe, void *priv, const struct mlfs_progress *progress, struct mlfs_err *err)
{
	int r = use_cached(final, desc, observe, priv, progress, err);
	if (r != 0)
		return r < 0 ? r : 1;
	r = mlfs_mkdir_p(dir, 0755);
	if (r < 0)
		return mlfs_err_set(err, -r, "cannot create the cache directory %s: %s", dir, strerror(-r));
	_cleanup_close_ int fd = -1;
	r = lock_partial(reg, partial, final, desc, wait_s ? wait_s : 300, &fd, err);
	if (r == -EEXIST || r == 0) {
		/* Another process may have finished it while we waited for the lock. */
		int c = use_cached(final, desc, observe, priv, progress, err);
		if (c != 0)
			return c < 0 ? c : 1;
		if (r == -EEXIST)
			return mlfs_err_set(err, EAGAIN, "%s was replaced in the cache while we waited", desc->digest);
	}
	if (r < 0)
		return r;

	struct blob_sink s = { .fd = fd, .size = desc->size, .observe = observe, .priv = priv, .progress = progress };
	r = mlfs_hasher_new(&s.hasher);
	if (r < 0)
		return mlfs_err_set(err, -r, "cannot hash");
	/* A partial file longer than the blob can be is not a prefix of it:
	 * start over, before the observer sees any of it. */
	struct stat st;
	if (fstat(fd, &st) < 0 || (st.st_size > desc->size && ftruncate(fd, 0) < 0))
		r = -errno;
	if (r == 0)
		r = rehash_partial(&s);
	int64_t resumed = s.have;
	if (r < 0 && !s.observer_failed) {
		mlfs_hasher_free(s.hasher);
		return mlfs_err_set(err, -r, "cannot read the partial download %s", partial);
	}
	if (r == 0 && s.have > 0)
		log_info(MLFS_AREA_FETCH, "resuming %s at byte %lld", desc->digest, (long long)s.have);

	if (r == 0 && s.have < desc->size) {
		if (lseek(fd, s.have, SEEK_SET) < 0)
			r = -errno;
		else
			r = mlfs_registry_get_blob(reg, desc->digest, s.have, blob_write, &s, err);
	}
	/* Foreign and non-distributable layers live at their URLs, not in the
	 * registry: each is tried in turn (one refused by the address rule
	 * too: the next may be fine); the digest check below is the same. */
	bool from_registry = true;
	for (char **u = desc->urls; (r == -ENOENT || (r == -EPERM && !from_registry)) && u && *u; u++) {
		from_registry = false;
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
	bool mismatch = r == -EBADMSG || (r == 0 && strcmp(got, desc->digest));
	/* Some of these bytes may have come from a mirror, and they failed
	 * the digest or the consumer refused them (a tampered layer may break
	 * its compression before its hash is known): ask again, from the
	 * upstream only.  The checks below still drop what is here. */
	bool refused = s.observer_failed && r == -EPIPE && s.have > resumed;
	bool ask_again = (mismatch || refused) && from_registry && mlfs_registry_distrust(reg, desc->digest);
	if (refused && ask_again && resumed == 0) {
		unlink(partial);
		return mlfs_err_set(err, EAGAIN, "blob %s from a mirror was refused by its reader: dropped, asking "
				    "the upstream", desc->digest);
	}
	/* An observer that failed with -EPIPE refused the bytes; any other
	 * error (a full disk behind it) says nothing about them. */
	if (resumed > 0 && (mismatch || (s.observer_failed && r == -EPIPE))) {
		/* What an earlier run left may be junk (a proxy that once served
		 * garbage): a consumer choking on it, or a wrong digest, must not
		 * block this blob forever.  Drop it; the caller starts over. */
		unlink(partial);
		log_warn(MLFS_AREA_FETCH, "%s: the partial download left by an earlier run (%lld bytes) was not "
			 "usable: dropped, starting over", desc->digest, (long long)resumed);
		return mlfs_err_set(err, EAGAIN, "the partial download of %s was not usable and is dropped",
				    desc->digest);
	}
	if (mismatch) {
		unlink(partial);
		if (ask_again)
			return mlfs_err_set(err, EAGAIN, "blob %s from a mirror did not match its digest: dropped, "
					    "asking the upstream", desc->digest);
		if (r == -EBADMSG)
			return mlfs_err_set(err, EBADMSG, "blob %s is larger than the %lld bytes the manifest says",
					    desc->digest, (long long)desc->size);
		return mlfs_err_set(err, EBADMSG, "digest mismatch for blob %s: got %s: the registry served "
				    "corrupt data; nothing was cached", desc->digest, got);
	}
	if (r == -ENOSPC || r == -EDQUOT)
		return mlfs_err_set(err, -r, "cannot download %s: the cache %s is full (%s): free some space (mlfs "
				    "cache gc) or cap the cache with cache-max", desc->digest, dir, strerror(-r));
	if (r < 0) {
		/* Keep the partial file: the next run resumes from it. */
		if (err && !err->msg[0])
			mlfs_err_set(err, -r, "download of %s failed: %s", desc->digest, strerror(-r));
		return r;
	}
	if (fsync(fd) < 0 || rename(partial, final) < 0)
		return mlfs_err_set(err, errno, "cannot store %s in the cache: %s", final, strerror(errno));
	log_debug(MLFS_AREA_FETCH, "cached %s (%lld bytes)", desc->digest, (long long)desc->size);
	return 1;
}

int mlfs_blob_fetch_observed(struct mlfs_registry *reg, const struct mlfs_descriptor *desc,
			     const char *cache_dir, unsigned wait_s, mlfs_sink_fn observe, void *priv,
			     const struct mlfs_progress *progress, char **blob_path, struct mlfs_err *err)
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
	int r = fetch_once(reg, desc, dir, final, partial, wait_s, observe, priv, progress, err);
	/* Without an observer nobody saw the dropped bytes: start over here
	 * (a junk partial file, then a mirror's junk: twice at most). */
	for (int again = 0; r == -EAGAIN && !observe && again < 2; again++) {
		if (err)
			memset(err, 0, sizeof *err);
		r = fetch_once(reg, desc, dir, final, partial, wait_s, observe, priv, progress, err);
	}
	if (r < 0)
		return r;
	*blob_path = steal_pointer(&final);
	return 0;
}
