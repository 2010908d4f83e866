/* The cache's life: who uses a layer, when it was last used, what may go.
 *
 * Units.  A layer is the files under one key K (the diff_id of a layer
 * streamed whole, the blob digest of a seekable one):
 *     index/sha256/K    the entry table       (gone first)
 *     chunks/sha256/K   the present map       (gone second)
 *     data/sha256/K     the bytes             (gone last: it carries the lock)
 * A kept compressed blob (blobs/sha256/<hex>) is a unit of its own, and so
 * is each leftover: a <hex>.partial download, a *.tmp-* file being written.
 * Manifests, configs, tag records and the signatures kept for offline use
 * (meta/, refs/, sigs/) are tiny and belong to images, not to this LRU:
 * `mlfs cache gc` ages them out with their images.
 *
 * Locks (flock; they vanish with the process, so a crash never leaves one):
 *
 *   user of a layer     open(data) -> LOCK_SH -> nlink > 0 ? use : reopen
 *   writer of a file    LOCK_EX, then named *.tmp-* ... rename -> LOCK_SH
 *                       (mlfs_mkstemp_locked: no unlocked moment)
 *   evictor             open(data) -> LOCK_EX|LOCK_NB -> unlink index,
 *                       chunks, data -> close; EWOULDBLOCK means in use: skip
 *   cleaner of a temp   LOCK_EX|LOCK_NB on it: taken means its writer died
 *
 * Every process holds the shared lock for as long as it has the layer open
 * (a mount: until unmount), on the data fd it reads from anyway, so the
 * lock costs no extra descriptor.  The evictor never waits; a user waits
 * only for an evictor's unlinks.  A user whose lock came after an eviction
 * holds a nameless file (nlink 0): it drops the layer and builds it again.
 *
 * Last use is the data file's mtime: set when a layer is opened and when it
 * is closed (and by every chunk a seekable layer writes), never per read.
 *
 * Sizes are what the files occupy (st_blocks), so sparse data files of
 * seekable layers count the chunks they hold, not their length. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/grow.h"
#include "common/log.h"
#include "layers/internal.h"

static uint64_t on_disk(const struct stat *st)
{
	return (uint64_t)st->st_blocks * 512u;
}

static bool is_temp_name(const char *name)
{
	return strstr(name, ".tmp-") || strstr(name, ".tmp.");
}

static bool ends_with(const char *s, const char *suffix)
{
	size_t n = strlen(s), m = strlen(suffix);
	return n >= m && !strcmp(s + n - m, suffix);
}

/* "sha256:<64 hex>" from a cache file name, or false. */
static bool key_from_name(const char *name, char out[MLFS_DIGEST_MAX])
{
	if (strlen(name) != 64)
		return false;
	snprintf(out, MLFS_DIGEST_MAX, "sha256:%s", name);
	return mlfs_digest_validate(out) == 0;
}

int mlfs_cache_lock_shared(int fd)
{
	while (flock(fd, LOCK_SH) < 0) {
		if (errno != EINTR)
			return -errno;
	}
	struct stat st;
	if (fstat(fd, &st) < 0)
		return -errno;
	return st.st_nlink > 0 ? 0 : -ESTALE;
}

void mlfs_cache_touch(int fd)
{
	/* Best effort: a read-only cache still serves, it just ages wrongly. */
	(void)futimens(fd, NULL);
}

void mlfs_cache_touch_key(const char *cache_dir, const char *key)
{
	_cleanup_free_ char *p = mlfs_store_path(cache_dir, "data", key);
	if (p)
		(void)utimensat(AT_FDCWD, p, NULL, 0);
}

/* Takes an unwritten-by-anyone file: LOCK_EX without waiting on the inode
 * still named path.  The fd (caller closes) or -EBUSY / -ENOENT. */
static int take_exclusive(int dirfd, const char *name, int flags)
{
	int fd = openat(dirfd, name, flags | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return -errno;
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		int e = errno;
		close(fd);
		return e == EWOULDBLOCK ? -EBUSY : -e;
	}
	struct stat held, named;
	if (fstat(fd, &held) < 0 || fstatat(dirfd, name, &named, AT_SYMLINK_NOFOLLOW) < 0 ||
	    held.st_ino != named.st_ino || held.st_dev != named.st_dev) {
		close(fd);
		return -ENOENT; /* renamed or removed meanwhile: not ours to judge */
	}
	return fd;
}

/* ---- scanning ------------------------------------------------------------ */

struct scan {
	const char *cache_dir;
	struct mlfs_cache_item *items;
	size_t n, cap;
	struct mlfs_cache_usage *use;
};

static struct mlfs_cache_item *item_for(struct scan *s, enum mlfs_cache_kind kind, const char *key)
{
	if (kind == MLFS_CACHE_LAYER)
		for (size_t i = 0; i < s->n; i++)
			if (s->items[i].kind == kind && !strcmp(s->items[i].key, key))
				return &s->items[i];
	if (mlfs_grow((void **)&s->items, &s->cap, s->n + 1, sizeof *s->items, 64, SIZE_MAX) < 0)
		return NULL;
	struct mlfs_cache_item *it = &s->items[s->n++];
	memset(it, 0, sizeof *it);
	it->kind = kind;
	snprintf(it->key, sizeof it->key, "%s", key);
	return it;
}

static int add_leftover(struct scan *s, enum mlfs_cache_kind kind, const char *dir, const char *name,
			const struct stat *st)
{
	struct mlfs_cache_item *it = item_for(s, kind, "");
	if (!it || asprintf(&it->path, "%s/%s", dir, name) < 0) {
		if (it)
			it->path = NULL;
		return -ENOMEM;
	}
	it->bytes = on_disk(st);
	it->last_use = st->st_mtime;
	return 0;
}

/* One <kind>/sha256 directory. */
static int scan_dir(struct scan *s, const char *kind)
{
	_cleanup_free_ char *dir = NULL;
	if (asprintf(&dir, "%s/%s/sha256", s->cache_dir, kind) < 0)
		return -ENOMEM;
	DIR *d = opendir(dir);
	if (!d)
		return errno == ENOENT ? 0 : -errno;
	int rc = 0;
	struct dirent *de;
	while (rc == 0 && (de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		struct stat st;
		if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode))
			continue;
		uint64_t bytes = on_disk(&st);
		char key[MLFS_DIGEST_MAX];
		bool meta = !strcmp(kind, "meta") || !strcmp(kind, "sigs");
		if (is_temp_name(de->d_name)) {
			s->use->temp += bytes;
			rc = add_leftover(s, MLFS_CACHE_TEMP, dir, de->d_name, &st);
		} else if (ends_with(de->d_name, ".partial") && !meta) {
			s->use->partial += bytes;
			rc = add_leftover(s, MLFS_CACHE_PARTIAL, dir, de->d_name, &st);
		} else if (ends_with(de->d_name, ".lock")) {
			s->use->other += bytes;
			rc = add_leftover(s, MLFS_CACHE_LOCK, dir, de->d_name, &st);
		} else if (meta) {
			s->use->meta += bytes;
		} else if (!key_from_name(de->d_name, key)) {
			s->use->other += bytes; /* not ours: counted, never touched */
		} else if (!strcmp(kind, "blobs")) {
			s->use->blobs += bytes;
			struct mlfs_cache_item *it = item_for(s, MLFS_CACHE_BLOB, key);
			if (!it) {
				rc = -ENOMEM;
				break;
			}
			it->bytes = bytes;
			it->last_use = st.st_mtime;
		} else {
			struct mlfs_cache_item *it = item_for(s, MLFS_CACHE_LAYER, key);
			if (!it) {
				rc = -ENOMEM;
				break;
			}
			it->bytes += bytes;
			if (!strcmp(kind, "data")) {
				s->use->data += bytes;
				it->data_bytes = bytes;
				it->has_data = true;
				it->last_use = st.st_mtime;
			} else if (!strcmp(kind, "index")) {
				s->use->index += bytes;
				it->has_index = true;
			} else {
				s->use->chunks += bytes;
				it->has_chunks = true;
			}
		}
	}
	closedir(d);
	return rc;
}

/* refs/ is a tree (domain/path/tag): only its size and its temps matter here. */
static int scan_refs(struct scan *s, const char *dir, int depth)
{
	DIR *d = opendir(dir);
	if (!d)
		return errno == ENOENT ? 0 : -errno;
	int rc = 0;
	struct dirent *de;
	while (rc == 0 && (de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		struct stat st;
		if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			continue;
		if (S_ISDIR(st.st_mode) && depth < 64) {
			_cleanup_free_ char *sub = NULL;
			if (asprintf(&sub, "%s/%s", dir, de->d_name) < 0)
				rc = -ENOMEM;
			else
				rc = scan_refs(s, sub, depth + 1);
		} else if (S_ISREG(st.st_mode) && is_temp_name(de->d_name)) {
			s->use->temp += on_disk(&st);
			rc = add_leftover(s, MLFS_CACHE_TEMP, dir, de->d_name, &st);
		} else if (S_ISREG(st.st_mode)) {
			s->use->meta += on_disk(&st);
		}
	}
	closedir(d);
	return rc;
}

int mlfs_cache_scan(const char *cache_dir, struct mlfs_cache_item **items, size_t *n,
		    struct mlfs_cache_usage *use)
{
	struct mlfs_cache_usage u = { 0 };
	struct scan s = { .cache_dir = cache_dir, .use = &u };
	static const char *const kinds[] = { "data", "index", "chunks", "blobs", "meta", "sigs" };
	int rc = 0;
	for (size_t k = 0; rc == 0 && k < sizeof kinds / sizeof kinds[0]; k++)
		rc = scan_dir(&s, kinds[k]);
	_cleanup_free_ char *refs = NULL;
	if (rc == 0 && asprintf(&refs, "%s/refs", cache_dir) < 0)
		rc = -ENOMEM;
	if (rc == 0)
		rc = scan_refs(&s, refs, 0);
	if (rc < 0) {
		mlfs_cache_items_free(s.items, s.n);
		return rc;
	}
	u.total = u.data + u.index + u.chunks + u.blobs + u.partial + u.temp + u.meta + u.other;
	if (use)
		*use = u;
	*items = s.items;
	*n = s.n;
	return 0;
}

void mlfs_cache_items_free(struct mlfs_cache_item *items, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(items[i].path);
	free(items);
}

bool mlfs_cache_in_use(const char *cache_dir, const struct mlfs_cache_item *it)
{
	if (it->kind == MLFS_CACHE_BLOB)
		return false; /* read through open fds only: removing one never breaks a reader */
	_cleanup_free_ char *path = it->kind == MLFS_CACHE_LAYER ? mlfs_store_path(cache_dir, "data", it->key)
								  : strdup(it->path ? it->path : "");
	if (!path)
		return false;
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return false;
	if (flock(fd, LOCK_EX | LOCK_NB) < 0)
		return errno == EWOULDBLOCK;
	return false; /* the close drops the probe's lock */
}

uint64_t mlfs_cache_bytes_in_use(const char *cache_dir)
{
	struct mlfs_cache_item *items;
	size_t n;
	if (mlfs_cache_scan(cache_dir, &items, &n, NULL) < 0)
		return 0;
	uint64_t busy = 0;
	for (size_t i = 0; i < n; i++)
		if (items[i].kind != MLFS_CACHE_LOCK && mlfs_cache_in_use(cache_dir, &items[i]))
			busy += items[i].bytes;
	mlfs_cache_items_free(items, n);
	return busy;
}

/* ---- removing ------------------------------------------------------------ */

static int unlink_key(const char *cache_dir, const char *kind, const char *key)
{
	_cleanup_free_ char *p = mlfs_store_path(cache_dir, kind, key);
	if (!p)
		return -ENOMEM;
	return unlink(p) < 0 && errno != ENOENT ? -errno : 0;
}

static int evict_layer(const char *cache_dir, const char *key)
{
	_cleanup_free_ char *dir = NULL;
	if (asprintf(&dir, "%s/data/sha256", cache_dir) < 0)
		return -ENOMEM;
	_cleanup_close_ int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	_cleanup_close_ int fd = -1;
	if (dfd >= 0) {
		fd = take_exclusive(dfd, key + strlen("sha256:"), O_RDONLY);
		if (fd == -EBUSY)
			return -EBUSY;
		if (fd < 0 && fd != -ENOENT)
			return fd;
	}
	/* Index first: from here no new user starts on this layer; the map
	 * before the data, since a data file without a map is only refetched,
	 * while a map without its data would claim chunks nobody holds. */
	int rc = unlink_key(cache_dir, "index", key);
	if (rc == 0)
		rc = unlink_key(cache_dir, "chunks", key);
	/* A builder that found the index gone may have renamed a new data file
	 * over the name meanwhile: that one is in use, and not ours. */
	struct stat held, named;
	if (rc == 0 && fd >= 0 && fstat(fd, &held) == 0 &&
	    fstatat(dfd, key + strlen("sha256:"), &named, AT_SYMLINK_NOFOLLOW) == 0 &&
	    held.st_ino == named.st_ino && held.st_dev == named.st_dev)
		rc = unlinkat(dfd, key + strlen("sha256:"), 0) < 0 && errno != ENOENT ? -errno : 0;
	return rc;
}

static int remove_leftover(const char *path)
{
	_cleanup_free_ char *dir = strdup(path);
	if (!dir)
		return -ENOMEM;
	char *slash = strrchr(dir, '/');
	if (!slash)
		return -EINVAL;
	*slash = '\0';
	_cleanup_close_ int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return -errno;
	_cleanup_close_ int fd = take_exclusive(dfd, slash + 1, O_RDONLY);
	if (fd < 0)
		return fd;
	return unlinkat(dfd, slash + 1, 0) < 0 ? -errno : 0;
}

int mlfs_cache_remove(const char *cache_dir, const struct mlfs_cache_item *it)
{
	switch (it->kind) {
	case MLFS_CACHE_LAYER:
		return evict_layer(cache_dir, it->key);
	case MLFS_CACHE_BLOB: {
		_cleanup_free_ char *p = NULL;
		if (asprintf(&p, "%s/blobs/sha256/%s", cache_dir, it->key + strlen("sha256:")) < 0)
			return -ENOMEM;
		return unlink(p) < 0 && errno != ENOENT ? -errno : 0;
	}
	default:
		return it->path ? remove_leftover(it->path) : -EINVAL;
	}
}

/* ---- fitting under a cap ------------------------------------------------- */

static int by_last_use(const void *a, const void *b)
{
	const struct mlfs_cache_item *x = a, *y = b;
	/* Leftovers of crashed runs go before anything that was once useful. */
	bool lx = x->kind != MLFS_CACHE_LAYER && x->kind != MLFS_CACHE_BLOB;
	bool ly = y->kind != MLFS_CACHE_LAYER && y->kind != MLFS_CACHE_BLOB;
	if (lx != ly)
		return lx ? -1 : 1;
	return (x->last_use > y->last_use) - (x->last_use < y->last_use);
}

int mlfs_cache_fit(const char *cache_dir, uint64_t max, uint64_t reserve, mlfs_cache_report_fn report,
		   void *priv, uint64_t *total)
{
	struct mlfs_cache_item *items;
	size_t n;
	struct mlfs_cache_usage use;
	int rc = mlfs_cache_scan(cache_dir, &items, &n, &use);
	if (rc < 0)
		return rc;
	uint64_t have = use.total;
	if (n)
		qsort(items, n, sizeof *items, by_last_use);
	for (size_t i = 0; i < n && have + reserve > max; i++) {
		if (items[i].kind == MLFS_CACHE_LOCK)
			continue; /* empty files: nothing to gain */
		int r = mlfs_cache_remove(cache_dir, &items[i]);
		if (r == -EBUSY || r == -ENOENT)
			continue; /* in use, or taken by another evictor */
		if (r < 0) {
			log_warn(MLFS_AREA_LAYERS, "cache %s: cannot remove %s: %s", cache_dir,
				 items[i].path ? items[i].path : items[i].key, strerror(-r));
			continue;
		}
		have = have > items[i].bytes ? have - items[i].bytes : 0;
		if (report)
			report(priv, &items[i]);
	}
	mlfs_cache_items_free(items, n);
	if (total)
		*total = have;
	return have + reserve > max ? -ENOSPC : 0;
}

int mlfs_cache_clean_temps(const char *cache_dir, mlfs_cache_report_fn report, void *priv)
{
	struct mlfs_cache_item *items;
	size_t n;
	int rc = mlfs_cache_scan(cache_dir, &items, &n, NULL);
	if (rc < 0)
		return rc;
	for (size_t i = 0; i < n; i++) {
		if (items[i].kind != MLFS_CACHE_TEMP || mlfs_cache_remove(cache_dir, &items[i]) < 0)
			continue;
		log_info(MLFS_AREA_LAYERS, "removed %s, left by an interrupted run", items[i].path);
		if (report)
			report(priv, &items[i]);
	}
	mlfs_cache_items_free(items, n);
	return 0;
}

/* ---- the per-layer build lock ------------------------------------------- */

static int64_t elapsed_ms(const struct timespec *start)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	return (int64_t)(now.tv_sec - start->tv_sec) * 1000 + (now.tv_nsec - start->tv_nsec) / 1000000;
}

static char *lock_path(const char *cache_dir, const char *key)
{
	_cleanup_free_ char *index = mlfs_store_path(cache_dir, "index", key);
	char *path = NULL;
	if (!index || asprintf(&path, "%s.lock", index) < 0)
		return NULL;
	return path;
}

int mlfs_cache_lock_build(const char *cache_dir, const char *key, unsigned timeout_s, const bool *cancel, int *out)
{
	int rc = mlfs_store_mkdirs(cache_dir, "index");
	if (rc < 0)
		return rc;
	_cleanup_free_ char *path = lock_path(cache_dir, key);
	if (!path)
		return -ENOMEM;
	struct timespec start;
	clock_gettime(CLOCK_MONOTONIC, &start);
	/* The holder unlinks the file when done, so only the inode still
	 * under the name is the lock: one taken on an unlinked inode is
	 * dropped and the name opened again. */
	for (int tries = 0; tries < 64; tries++) {
		_cleanup_close_ int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
		if (fd < 0)
			return -errno;
		/* Polled, not blocking: a holder stuck on a registry that trickles
		 * bytes must not hold us past the timeout. */
		for (unsigned ms = 1; flock(fd, LOCK_EX | LOCK_NB) < 0; ms = ms < 200 ? ms * 2 : 200) {
			if (errno != EWOULDBLOCK && errno != EINTR)
				return -errno;
			if (timeout_s && elapsed_ms(&start) >= (int64_t)timeout_s * 1000)
				return -ETIMEDOUT;
			if (cancel && __atomic_load_n(cancel, __ATOMIC_ACQUIRE))
				return -ECANCELED;
			struct timespec nap = { 0, (long)ms * 1000000L };
			nanosleep(&nap, NULL);
		}
		struct stat held, named;
		if (fstat(fd, &held) == 0 && stat(path, &named) == 0 && held.st_ino == named.st_ino &&
		    held.st_dev == named.st_dev) {
			*out = steal_fd(&fd);
			return 0;
		}
	}
	return -EBUSY;
}

void mlfs_cache_unlock_build(const char *cache_dir, const char *key, int fd)
{
	if (fd < 0)
		return;
	/* Unlinked while still held: a lock file on disk means a crashed builder. */
	_cleanup_free_ char *path = lock_path(cache_dir, key);
	if (path)
		unlink(path);
	close(fd);
}

/* ---- verify -------------------------------------------------------------- */

static void layer_freep(struct mlfs_layer **l) { mlfs_layer_free(*l); }

int mlfs_cache_verify_layer(const char *cache_dir, const char *key, const char **why)
{
	_cleanup_free_ char *index = mlfs_store_path(cache_dir, "index", key);
	_cleanup_free_ char *data = mlfs_store_path(cache_dir, "data", key);
	_cleanup_(layer_freep) struct mlfs_layer *l = mlfs_layer_new();
	if (!index || !data || !l)
		return -ENOMEM;
	snprintf(l->key, sizeof l->key, "%s", key);
	int rc = mlfs_indexfile_load(l, index);
	if (rc == -ENOENT) {
		*why = "data without an index (an interrupted eviction or build)";
		return -EBADMSG;
	}
	if (rc == -EBADMSG) {
		*why = "index checksum or layout wrong";
		return rc;
	}
	if (rc < 0)
		return rc;
	struct stat st;
	if (stat(data, &st) < 0) {
		if (errno != ENOENT)
			return -errno;
		*why = "index without its data file";
		return -EBADMSG;
	}
	if ((uint64_t)st.st_size != l->data_size) {
		*why = "data file of the wrong size";
		return -EBADMSG;
	}
	if (l->codec != MLFS_CODEC_NONE && (rc = mlfs_chunks_check_map(l, cache_dir)) < 0) {
		if (rc != -EBADMSG)
			return rc;
		*why = "chunk map of another layout";
		return rc;
	}
	return 0;
}

int mlfs_cache_verify_blob(const char *cache_dir, const char *digest, const char **why)
{
	_cleanup_free_ char *path = NULL;
	if (asprintf(&path, "%s/blobs/sha256/%s", cache_dir, digest + strlen("sha256:")) < 0)
		return -ENOMEM;
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return -errno;
	struct mlfs_hasher *h;
	int r = mlfs_hasher_new(&h);
	if (r < 0)
		return r;
	char buf[1 << 16], got[MLFS_DIGEST_MAX] = "";
	for (;;) {
		ssize_t n = read(fd, buf, sizeof buf);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			r = n < 0 ? -errno : mlfs_hasher_final(h, got);
			break;
		}
		if ((r = mlfs_hasher_update(h, buf, (size_t)n)) < 0)
			break;
	}
	mlfs_hasher_free(h);
	if (r < 0)
		return r;
	if (strcmp(got, digest)) {
		*why = "its bytes do not hash to its name";
		return -EBADMSG;
	}
	return 0;
}
