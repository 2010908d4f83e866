/* layers/cache.c: the cache's life.  Real layers are built into temporary
 * caches from generated tars, then: what a scan finds and what it counts;
 * a layer held open (LOCK_SH on its data fd) is in use and never removed,
 * by this process or another; eviction in last-use order, only as far as
 * needed, leftovers first, -ENOSPC when what is held is over the cap;
 * temp files removed only when their writer is gone; one builder per
 * layer; and verify's verdicts on damaged layers. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "layergen.h"
#include "tap.h"

static char *root; /* every cache and tar of this run lives under it */

/* ---- helpers --------------------------------------------------------------- */

struct lay {
	char name[32];
	char tar[4096];
	char key[MLFS_DIGEST_MAX];
	char file[64];  /* the one regular file's path in the layer */
	char *content;
	size_t len;
};

/* A layer of one directory and one file of len bytes, its tar under root;
 * keyed by its digest (uncompressed: diff_id and blob digest are one), so
 * it persists in the cache. */
static void lay_make(struct lay *y, const char *name, size_t len)
{
	memset(y, 0, sizeof *y);
	snprintf(y->name, sizeof y->name, "%s", name);
	snprintf(y->tar, sizeof y->tar, "%s/%s.tar", root, name);
	snprintf(y->file, sizeof y->file, "d/%s", name);
	y->len = len;
	y->content = malloc(len + 1);
	if (!y->content)
		abort();
	for (size_t i = 0; i < len; i++)
		y->content[i] = (char)('a' + (i * 7 + (unsigned char)name[0] + strlen(name)) % 26);
	y->content[len] = '\0';
	struct lg_entry ents[] = {
		{ .path = "d/", .type = 'd' },
		{ .path = y->file, .data = y->content, .data_len = len },
	};
	if (lg_write(y->tar, 'n', ents, 2) < 0 || lg_digest_file(y->tar, y->key) < 0)
		abort();
}

static void lay_free(struct lay *y)
{
	free(y->content);
	y->content = NULL;
}

/* Opens (the cached index, else builds) the layer. */
static struct mlfs_layer *lay_open(const char *cache, const struct lay *y)
{
	struct mlfs_layer *l = NULL;
	struct mlfs_err err = { 0 };
	int rc = lg_open(cache, y->tar, y->key, y->key, &l, &err);
	if (rc < 0) {
		tap_diag("open %s: %d %s", y->name, rc, err.msg);
		return NULL;
	}
	return l;
}

static int lay_open_cached(const char *cache, const struct lay *y, struct mlfs_layer **l)
{
	struct mlfs_err err = { 0 };
	struct mlfs_layer_opts o = { .cache_dir = cache, .diff_id = y->key };
	*l = NULL;
	return mlfs_layer_open_cached(&o, l, &err);
}

/* Whether the layer's file reads back as written. */
static bool lay_reads(const struct mlfs_layer *l, const struct lay *y)
{
	if (!l)
		return false;
	for (size_t i = 0; i < mlfs_layer_count(l); i++) {
		struct mlfs_entry e;
		mlfs_layer_entry(l, i, &e);
		if (strcmp(e.path, y->file))
			continue;
		char *buf = malloc(y->len + 16);
		ssize_t n = buf ? mlfs_layer_pread(l, i, buf, y->len + 16, 0) : -1;
		bool ok = n == (ssize_t)y->len && !memcmp(buf, y->content, y->len);
		/* and a piece from the middle */
		if (ok && y->len > 100)
			ok = mlfs_layer_pread(l, i, buf, 10, y->len / 2) == 10 &&
			     !memcmp(buf, y->content + y->len / 2, 10);
		free(buf);
		return ok;
	}
	return false;
}

static void kpath(char *buf, size_t len, const char *cache, const char *kind, const char *key)
{
	snprintf(buf, len, "%s/%s/sha256/%.64s", cache, kind, key + strlen("sha256:"));
}

static bool has(const char *cache, const char *kind, const char *key)
{
	char p[4096];
	kpath(p, sizeof p, cache, kind, key);
	return access(p, F_OK) == 0;
}

static bool exists(const char *path)
{
	return access(path, F_OK) == 0;
}

static uint64_t on_disk(const char *path)
{
	struct stat st;
	return lstat(path, &st) == 0 ? (uint64_t)st.st_blocks * 512u : 0;
}

static uint64_t key_on_disk(const char *cache, const char *kind, const char *key)
{
	char p[4096];
	kpath(p, sizeof p, cache, kind, key);
	return on_disk(p);
}

static uint64_t du_sum;
static int du_one(const char *p, const struct stat *st, int flag, struct FTW *f)
{
	(void)p; (void)f;
	if (flag == FTW_F && S_ISREG(st->st_mode))
		du_sum += (uint64_t)st->st_blocks * 512u;
	return 0;
}

/* st_blocks * 512 over every regular file of the cache. */
static uint64_t du(const char *cache)
{
	du_sum = 0;
	nftw(cache, du_one, 16, FTW_PHYS);
	return du_sum;
}

static void set_mtime(const char *path, time_t t)
{
	struct timespec ts[2] = { { t, 0 }, { t, 0 } };
	if (utimensat(AT_FDCWD, path, ts, AT_SYMLINK_NOFOLLOW) < 0)
		tap_diag("utimensat %s: %s", path, strerror(errno));
}

static void set_key_mtime(const char *cache, const char *key, time_t t)
{
	char p[4096];
	kpath(p, sizeof p, cache, "data", key);
	set_mtime(p, t);
}

static void mkdirs(const char *cache, const char *sub)
{
	char p[4096];
	snprintf(p, sizeof p, "%s", cache);
	mkdir(p, 0755);
	char *s = strdup(sub);
	for (char *tok = strtok(s, "/"); tok; tok = strtok(NULL, "/")) {
		size_t n = strlen(p);
		snprintf(p + n, sizeof p - n, "/%s", tok);
		mkdir(p, 0755);
	}
	free(s);
}

/* A file of len bytes (a recognisable pattern) at cache/sub. */
static void put_file(const char *cache, const char *sub, size_t len, char *out, size_t outlen)
{
	char *dir = strdup(sub);
	char *slash = strrchr(dir, '/');
	if (slash) {
		*slash = '\0';
		mkdirs(cache, dir);
	}
	free(dir);
	char p[4096];
	snprintf(p, sizeof p, "%s/%s", cache, sub);
	char *buf = malloc(len + 1);
	for (size_t i = 0; i < len; i++)
		buf[i] = (char)('A' + i % 23);
	if (lg_write_bytes(p, buf, len) < 0)
		tap_diag("cannot write %s", p);
	free(buf);
	if (out)
		snprintf(out, outlen, "%s", p);
}

static const struct mlfs_cache_item *find_item(const struct mlfs_cache_item *items, size_t n,
					       enum mlfs_cache_kind kind, const char *key_or_path)
{
	for (size_t i = 0; i < n; i++) {
		if (items[i].kind != kind)
			continue;
		if ((kind == MLFS_CACHE_LAYER || kind == MLFS_CACHE_BLOB) && !strcmp(items[i].key, key_or_path))
			return &items[i];
		if (items[i].path && !strcmp(items[i].path, key_or_path))
			return &items[i];
	}
	return NULL;
}

/* Scans and runs one call on the unit of that kind and key/path: in_use
 * ('u': 1/0) or remove ('r': its result); -1000 when the scan misses it. */
static int on_unit(const char *cache, enum mlfs_cache_kind kind, const char *key_or_path, char what)
{
	struct mlfs_cache_item *items;
	size_t n;
	if (mlfs_cache_scan(cache, &items, &n, NULL) < 0)
		return -2000;
	const struct mlfs_cache_item *it = find_item(items, n, kind, key_or_path);
	int r = -1000;
	if (it)
		r = what == 'u' ? mlfs_cache_in_use(cache, it) : mlfs_cache_remove(cache, it);
	mlfs_cache_items_free(items, n);
	return r;
}

/* What a fit or a clean reported removed, in order. */
struct removed {
	int n;
	enum mlfs_cache_kind kind[64];
	char id[64][1024]; /* key, or path */
};

static void record(void *priv, const struct mlfs_cache_item *it)
{
	struct removed *r = priv;
	if (r->n >= 64)
		return;
	r->kind[r->n] = it->kind;
	snprintf(r->id[r->n], sizeof r->id[r->n], "%s", it->path ? it->path : it->key);
	r->n++;
}

static int removed_at(const struct removed *r, const char *id)
{
	for (int i = 0; i < r->n; i++)
		if (!strcmp(r->id[i], id))
			return i;
	return -1;
}

static double now_s(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static char *cache_at(const char *name)
{
	char *p;
	if (asprintf(&p, "%s/%s", root, name) < 0)
		abort();
	return p;
}

/* A child's verdict: its exit status (0 ok), or 100+signal. */
static int wait_child(pid_t pid)
{
	int st;
	if (waitpid(pid, &st, 0) < 0)
		return -1;
	return WIFEXITED(st) ? WEXITSTATUS(st) : 100 + WTERMSIG(st);
}

/* ---- fdatasync, watched ---------------------------------------------------
 * (This binary's fdatasync and unlink take the place of libc's, for the
 * library code linked into it too; each does the real system call.)
 * Every writer of a cache file syncs its *.tmp-* file before the rename
 * that names it.  Here, while hook_cache is set, each such sync first runs
 * a cleaner over the cache, as another process starting up would
 * (cli_cache_startup): a temp file whose writer is alive must survive. */
static const char *hook_cache;
static int hook_syncs, hook_index_syncs;
static struct removed hook_removed;

int fdatasync(int fd)
{
	if (hook_cache) {
		char link[64], path[4096];
		snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
		ssize_t n = readlink(link, path, sizeof path - 1);
		if (n > 0) {
			path[n] = '\0';
			/* A temp made unnamed and named later (mlfs_mkstemp_locked)
			 * reads back as "<dir>/#<inode> (deleted)" here. */
			if (strstr(path, ".tmp-") || strstr(path, "/#")) {
				hook_syncs++;
				hook_index_syncs += strstr(path, "/index/sha256/") != NULL;
				mlfs_cache_clean_temps(hook_cache, record, &hook_removed);
			}
		}
	}
	return (int)syscall(SYS_fdatasync, fd);
}

/* ---- unlink, watched --------------------------------------------------------
 * While unlink_hook_lay is set, the first unlink of that layer's index
 * (an evictor's first step) is followed at once by a builder of the same
 * layer, as a mount that just found the index gone would start one: the
 * evictor's remaining steps then run against what the builder made. */
static const struct lay *unlink_hook_lay;
static const char *unlink_hook_cache;
static struct mlfs_layer *unlink_hook_built;

int unlink(const char *path)
{
	int r = (int)syscall(SYS_unlinkat, AT_FDCWD, path, 0);
	const struct lay *y = unlink_hook_lay;
	if (r == 0 && y && strstr(path, "/index/sha256/") && strstr(path, y->key + strlen("sha256:")) &&
	    !strchr(strrchr(path, '/'), '.')) {
		int e = errno;
		unlink_hook_lay = NULL;
		unlink_hook_built = lay_open(unlink_hook_cache, y);
		errno = e;
	}
	return r;
}

/* ---- scan, in use, remove ------------------------------------------------- */

static void test_scan_and_remove(void)
{
	char *cache = cache_at("scan");
	struct lay a, b, c;
	lay_make(&a, "alpha", 20000);
	lay_make(&b, "bravo", 40000);
	lay_make(&c, "charlie", 7000);
	struct mlfs_layer *la = lay_open(cache, &a), *lb = lay_open(cache, &b), *lc = lay_open(cache, &c);
	tap_ok(la && lb && lc, "three layers built into the cache");
	tap_ok(lay_reads(la, &a) && lay_reads(lb, &b) && lay_reads(lc, &c), "and read back");
	mlfs_layer_free(la);
	mlfs_layer_free(lb);
	mlfs_layer_free(lc);
	la = lb = lc = NULL;

	/* The other kinds of unit, and what is counted but never a unit. */
	char chunks_a[4096], blob[4096], blob_key[MLFS_DIGEST_MAX], partial[4096], lock[4096], temp[4096];
	char meta[4096], ref[4096], junk[4096], blobsrc[4096];
	{
		char sub[256];
		snprintf(sub, sizeof sub, "chunks/sha256/%.64s", a.key + 7);
		put_file(cache, sub, 4096, chunks_a, sizeof chunks_a); /* a chunk map: a unit's third file */
	}
	snprintf(blobsrc, sizeof blobsrc, "%s/blobsrc", root);
	put_file(root, "blobsrc", 5000, NULL, 0);
	lg_digest_file(blobsrc, blob_key);
	{
		char sub[256];
		snprintf(sub, sizeof sub, "blobs/sha256/%.64s", blob_key + 7);
		put_file(cache, sub, 5000, blob, sizeof blob);
		snprintf(sub, sizeof sub, "blobs/sha256/%.64s.partial",
			 "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef");
		put_file(cache, sub, 3000, partial, sizeof partial);
		snprintf(sub, sizeof sub, "index/sha256/%.64s.lock", c.key + 7);
		put_file(cache, sub, 0, lock, sizeof lock);
		snprintf(sub, sizeof sub, "data/sha256/%.64s.tmp-Ab12Cd", b.key + 7);
		put_file(cache, sub, 2000, temp, sizeof temp);
	}
	put_file(cache, "meta/sha256/fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210", 300,
		 meta, sizeof meta);
	put_file(cache, "refs/registry.example/library/app/latest", 80, ref, sizeof ref);
	put_file(cache, "data/sha256/README", 10, junk, sizeof junk);

	struct mlfs_cache_item *items;
	size_t n;
	struct mlfs_cache_usage use;
	tap_is_int(mlfs_cache_scan(cache, &items, &n, &use), 0, "scan");
	tap_is_int(n, 7, "3 layers, a blob, a partial, a lock, a temp");
	struct lay *lays[] = { &a, &b, &c };
	uint64_t data = 0, index = 0;
	for (int i = 0; i < 3; i++) {
		const struct mlfs_cache_item *it = find_item(items, n, MLFS_CACHE_LAYER, lays[i]->key);
		uint64_t d = key_on_disk(cache, "data", lays[i]->key), x = key_on_disk(cache, "index", lays[i]->key);
		uint64_t ch = i == 0 ? on_disk(chunks_a) : 0;
		data += d;
		index += x;
		char dp[4096];
		kpath(dp, sizeof dp, cache, "data", lays[i]->key);
		struct stat st;
		stat(dp, &st);
		bool ok = it && it->has_index && it->has_data && it->has_chunks == (i == 0) && it->bytes > 0 &&
			  d > 0 && x > 0 && it->bytes == d + x + ch && it->data_bytes == d &&
			  it->last_use == st.st_mtime && it->path == NULL;
		tap_ok(ok, "layer %s: index, data%s; %llu bytes on disk; last use the data's mtime", lays[i]->name,
		       i == 0 ? ", chunk map" : "", it ? (unsigned long long)it->bytes : 0ull);
	}
	const struct mlfs_cache_item *it = find_item(items, n, MLFS_CACHE_BLOB, blob_key);
	tap_ok(it && it->bytes == on_disk(blob) && it->bytes > 0, "the kept blob, by its digest");
	it = find_item(items, n, MLFS_CACHE_PARTIAL, partial);
	tap_ok(it && !it->key[0] && it->bytes == on_disk(partial), "the partial download, by its path");
	it = find_item(items, n, MLFS_CACHE_LOCK, lock);
	tap_ok(it && it->bytes == 0, "the build lock left by a crash");
	it = find_item(items, n, MLFS_CACHE_TEMP, temp);
	tap_ok(it && it->bytes == on_disk(temp), "the temp file");
	tap_is_int(use.data, data, "usage: data");
	tap_is_int(use.index, index, "usage: index");
	tap_is_int(use.chunks, on_disk(chunks_a), "usage: chunks");
	tap_is_int(use.blobs, on_disk(blob), "usage: blobs");
	tap_is_int(use.partial, on_disk(partial), "usage: partial");
	tap_is_int(use.temp, on_disk(temp), "usage: temp");
	tap_is_int(use.meta, on_disk(meta) + on_disk(ref), "usage: meta (meta/ and refs/)");
	tap_is_int(use.other, on_disk(junk), "usage: other (not ours)");
	tap_is_int(use.total, du(cache), "usage total == st_blocks * 512 over every file");
	tap_is_int(use.total, use.data + use.index + use.chunks + use.blobs + use.partial + use.temp + use.meta +
				      use.other, "total is the sum of the kinds");
	mlfs_cache_items_free(items, n);
	{
		struct mlfs_cache_usage u2;
		tap_ok(mlfs_cache_scan(cache, &items, &n, NULL) == 0 && n == 7, "scan without usage");
		mlfs_cache_items_free(items, n);
		char *none = cache_at("no-such-cache");
		tap_ok(mlfs_cache_scan(none, &items, &n, &u2) == 0 && n == 0 && u2.total == 0,
		       "a cache that does not exist: empty");
		mlfs_cache_items_free(items, n);
		/* BUG (layers/cache.c, mlfs_cache_fit): with nothing scanned, items is
		 * NULL and qsort(NULL, 0, ...) is undefined (UBSan reports it). */
		uint64_t left = 1;
		tap_ok(mlfs_cache_fit(none, 0, 0, NULL, NULL, &left) == 0 && left == 0,
		       "fit on a cache that does not exist: 0, nothing left");
		tap_is_int(mlfs_cache_fit(none, 0, 1, NULL, NULL, &left), -ENOSPC, "but not with a reserve over the cap");
		free(none);
	}

	/* Held: a layer open in this process holds LOCK_SH on its data fd. */
	tap_is_int(lay_open_cached(cache, &a, &la), 0, "alpha opened from the cache");
	tap_is_int(on_unit(cache, MLFS_CACHE_LAYER, a.key, 'u'), 1, "held alpha is in use");
	tap_is_int(on_unit(cache, MLFS_CACHE_LAYER, b.key, 'u'), 0, "bravo, not open, is not");
	tap_is_int(on_unit(cache, MLFS_CACHE_LAYER, a.key, 'r'), -EBUSY, "remove held alpha: -EBUSY");
	tap_ok(has(cache, "index", a.key) && has(cache, "data", a.key) && exists(chunks_a),
	       "held alpha keeps index, chunk map and data");
	tap_ok(lay_reads(la, &a), "held alpha still reads");
	tap_is_int(on_unit(cache, MLFS_CACHE_LAYER, a.key, 'u'), 1, "probing did not drop the holder's lock");

	tap_is_int(on_unit(cache, MLFS_CACHE_LAYER, b.key, 'r'), 0, "remove bravo");
	tap_ok(!has(cache, "index", b.key) && !has(cache, "data", b.key), "bravo's index and data gone");
	tap_is_int(lay_open_cached(cache, &b, &lb), -ENOENT, "bravo: open_cached after eviction is -ENOENT");
	tap_ok((lb = lay_open(cache, &b)) && lay_reads(lb, &b), "bravo rebuilt from its tar, reads");
	tap_ok(has(cache, "index", b.key) && has(cache, "data", b.key), "and is cached again");
	mlfs_layer_free(lb);
	lb = NULL;

	mlfs_layer_free(la);
	la = NULL;
	tap_is_int(on_unit(cache, MLFS_CACHE_LAYER, a.key, 'u'), 0, "alpha closed: not in use");
	tap_is_int(on_unit(cache, MLFS_CACHE_LAYER, a.key, 'r'), 0, "closed alpha removable");
	tap_ok(!has(cache, "index", a.key) && !has(cache, "data", a.key) && !exists(chunks_a),
	       "alpha's index, chunk map and data gone");
	tap_is_int(on_unit(cache, MLFS_CACHE_LAYER, a.key, 'r'), -1000, "and no longer scanned");
	tap_is_int(lay_open_cached(cache, &a, &la), -ENOENT, "alpha: open_cached after eviction is -ENOENT");
	tap_ok((la = lay_open(cache, &a)) && lay_reads(la, &a), "alpha rebuilt, reads");
	mlfs_layer_free(la);
	la = NULL;

	/* A unit gone between scan and remove (another evictor). */
	{
		tap_is_int(mlfs_cache_scan(cache, &items, &n, NULL), 0, "scan again");
		const struct mlfs_cache_item *ic = find_item(items, n, MLFS_CACHE_LAYER, c.key);
		const struct mlfs_cache_item *tmp = find_item(items, n, MLFS_CACHE_TEMP, temp);
		tap_ok(ic && tmp, "charlie and the temp scanned");
		if (ic && tmp) {
			tap_is_int(mlfs_cache_remove(cache, ic), 0, "charlie removed");
			int r = mlfs_cache_remove(cache, ic);
			tap_ok(r == 0 || r == -ENOENT, "charlie removed again: nothing to do (%d)", r);
			tap_is_int(mlfs_cache_remove(cache, tmp), 0, "unheld temp removed");
			tap_is_int(mlfs_cache_remove(cache, tmp), -ENOENT, "temp removed again: -ENOENT");
		}
		mlfs_cache_items_free(items, n);
	}

	/* Blobs: never "in use" (read through open fds), removable. */
	{
		const char *why = NULL;
		tap_is_int(mlfs_cache_verify_blob(cache, blob_key, &why), 0, "kept blob verifies");
		tap_is_int(on_unit(cache, MLFS_CACHE_BLOB, blob_key, 'u'), 0, "blob not in use");
		int fd = open(blob, O_RDONLY);
		flock(fd, LOCK_SH);
		tap_is_int(on_unit(cache, MLFS_CACHE_BLOB, blob_key, 'r'), 0, "blob removed, even while read");
		char got[16] = { 0 };
		tap_ok(pread(fd, got, 3, 0) == 3 && !memcmp(got, "ABC", 3), "its reader reads on");
		close(fd);
		tap_ok(!exists(blob), "blob gone");
	}

	/* Leftovers: held by a live writer means in use. */
	{
		int fd = open(partial, O_RDWR);
		tap_ok(fd >= 0 && flock(fd, LOCK_EX) == 0, "partial held, as a download holds it");
		tap_is_int(on_unit(cache, MLFS_CACHE_PARTIAL, partial, 'u'), 1, "held partial in use");
		tap_is_int(on_unit(cache, MLFS_CACHE_PARTIAL, partial, 'r'), -EBUSY, "held partial: -EBUSY");
		tap_ok(exists(partial), "held partial kept");
		close(fd);
		tap_is_int(on_unit(cache, MLFS_CACHE_PARTIAL, partial, 'u'), 0, "released partial not in use");
		tap_is_int(on_unit(cache, MLFS_CACHE_PARTIAL, partial, 'r'), 0, "released partial removed");
		tap_ok(!exists(partial), "partial gone");
		tap_is_int(on_unit(cache, MLFS_CACHE_LOCK, lock, 'r'), 0, "stale lock removed");
		tap_ok(!exists(lock), "lock gone");
	}
	tap_ok(exists(meta) && exists(ref) && exists(junk), "meta, refs and foreign files never touched");

	lay_free(&a);
	lay_free(&b);
	lay_free(&c);
	free(cache);
}

/* ---- fit: eviction order, stopping, leftovers first, held layers -------- */

static void test_fit(void)
{
	char *cache = cache_at("fit");
	struct lay l[5];
	const char *names[] = { "one", "two", "three", "four", "five" };
	for (int i = 0; i < 5; i++)
		lay_make(&l[i], names[i], 30000 + 1000 * (size_t)i);
	for (int i = 0; i < 4; i++) {
		struct mlfs_layer *x = lay_open(cache, &l[i]);
		tap_ok(x != NULL, "layer %s built", l[i].name);
		mlfs_layer_free(x);
	}
	char blob[4096], blob_key[MLFS_DIGEST_MAX], sub[256];
	snprintf(blob_key, sizeof blob_key, "sha256:%064d", 7);
	snprintf(sub, sizeof sub, "blobs/sha256/%.64s", blob_key + 7);
	put_file(cache, sub, 30000, blob, sizeof blob);

	/* Last use: one, two, the blob, three, four (oldest first); set after
	 * the closes, which mark the layers used. */
	time_t now = time(NULL);
	set_key_mtime(cache, l[0].key, now - 5000);
	set_key_mtime(cache, l[1].key, now - 4000);
	set_mtime(blob, now - 3500);
	set_key_mtime(cache, l[2].key, now - 3000);
	set_key_mtime(cache, l[3].key, now - 2000);

	uint64_t bytes[4];
	for (int i = 0; i < 4; i++)
		bytes[i] = key_on_disk(cache, "index", l[i].key) + key_on_disk(cache, "data", l[i].key);
	uint64_t bblob = on_disk(blob);
	uint64_t t = du(cache), left = 0;
	struct removed r = { 0 };

	tap_is_int(mlfs_cache_fit(cache, t, 0, record, &r, &left), 0, "fit at exactly the total: 0");
	tap_ok(r.n == 0 && left == t, "nothing removed");
	tap_is_int(mlfs_cache_fit(cache, UINT64_MAX, 0, NULL, NULL, NULL), 0, "fit under no real cap");

	memset(&r, 0, sizeof r);
	tap_is_int(mlfs_cache_fit(cache, t - bytes[0], 0, record, &r, &left), 0, "fit: one layer over");
	tap_ok(r.n == 1 && removed_at(&r, l[0].key) == 0, "only the least recently used went (%d removed)", r.n);
	tap_is_int(left, t - bytes[0], "bytes left reported");
	tap_is_int(left, du(cache), "and they are what is on disk");
	tap_ok(!has(cache, "data", l[0].key) && !has(cache, "index", l[0].key), "one: index and data gone");
	tap_ok(has(cache, "data", l[1].key) && has(cache, "data", l[2].key) && has(cache, "data", l[3].key),
	       "the others stay");

	/* The reserve counts as if already there. */
	t = du(cache);
	memset(&r, 0, sizeof r);
	tap_is_int(mlfs_cache_fit(cache, t, bytes[1] + 1, record, &r, &left), 0, "fit with a reserve");
	tap_ok(r.n == 2 && removed_at(&r, l[1].key) == 0 && removed_at(&r, blob_key) == 1,
	       "two, then the blob: by last use, across kinds, and no further");
	tap_is_int(left, t - bytes[1] - bblob, "bytes left");
	tap_ok(has(cache, "data", l[2].key) && has(cache, "data", l[3].key) && !exists(blob),
	       "three and four stay, the blob is gone");

	/* Leftovers go first, however new; build locks are skipped. */
	char temp[4096], partial[4096], lock[4096];
	snprintf(sub, sizeof sub, "data/sha256/%.64s.tmp-Zz9Yy8", l[3].key + 7);
	put_file(cache, sub, 16384, temp, sizeof temp);
	snprintf(sub, sizeof sub, "blobs/sha256/%064d.partial", 9);
	put_file(cache, sub, 16384, partial, sizeof partial);
	snprintf(sub, sizeof sub, "index/sha256/%.64s.lock", l[2].key + 7);
	put_file(cache, sub, 0, lock, sizeof lock);
	set_mtime(partial, now - 10);
	t = du(cache);
	memset(&r, 0, sizeof r);
	tap_is_int(mlfs_cache_fit(cache, t - on_disk(temp) - on_disk(partial), 0, record, &r, &left), 0,
		   "fit: leftovers' worth over");
	tap_ok(r.n == 2 && removed_at(&r, partial) == 0 && removed_at(&r, temp) == 1,
	       "the partial and the temp went, oldest first, before any older layer");
	tap_ok(!exists(temp) && !exists(partial) && exists(lock), "gone; the empty lock file stays");
	tap_ok(has(cache, "data", l[2].key) && has(cache, "data", l[3].key), "layers untouched");
	tap_is_int(left, du(cache), "bytes left");

	/* Held layers are never touched: -ENOSPC when they alone are over. */
	struct mlfs_layer *held = NULL;
	tap_is_int(lay_open_cached(cache, &l[3], &held), 0, "four held open");
	struct mlfs_layer *x = lay_open(cache, &l[4]);
	tap_ok(x != NULL, "five built");
	mlfs_layer_free(x);
	memset(&r, 0, sizeof r);
	tap_is_int(mlfs_cache_fit(cache, 1, 0, record, &r, &left), -ENOSPC, "fit to 1 byte: -ENOSPC");
	tap_ok(r.n == 2 && removed_at(&r, l[2].key) == 0 && removed_at(&r, l[4].key) == 1,
	       "three then five evicted (%d removed)", r.n);
	tap_ok(has(cache, "index", l[3].key) && has(cache, "data", l[3].key), "held four keeps index and data");
	tap_is_int(left, du(cache), "what is left reported");
	tap_is_int(left, bytes[3], "which is four's");
	tap_ok(lay_reads(held, &l[3]), "held four still reads");
	memset(&r, 0, sizeof r);
	tap_is_int(mlfs_cache_fit(cache, bytes[3], 1, record, &r, NULL), -ENOSPC,
		   "a reserve on top of what is held: -ENOSPC");
	tap_is_int(r.n, 0, "nothing removed");
	tap_is_int(mlfs_cache_fit(cache, bytes[3], 0, NULL, NULL, NULL), 0, "held exactly at the cap: 0");

	mlfs_layer_free(held);
	memset(&r, 0, sizeof r);
	tap_is_int(mlfs_cache_fit(cache, 0, 0, record, &r, &left), 0, "released: fit to 0");
	tap_ok(r.n == 1 && left == 0 && !has(cache, "data", l[3].key) && !has(cache, "index", l[3].key),
	       "four evicted, nothing left");
	tap_ok(exists(lock), "the lock file still there (0 bytes)");
	tap_is_int(lay_open_cached(cache, &l[3], &held), -ENOENT, "four: open_cached after eviction is -ENOENT");
	tap_ok((held = lay_open(cache, &l[3])) && lay_reads(held, &l[3]), "four rebuilt, reads");
	mlfs_layer_free(held);

	for (int i = 0; i < 5; i++)
		lay_free(&l[i]);
	free(cache);
}

/* ---- eviction by another process -------------------------------------- */

static void test_race(void)
{
	char *cache = cache_at("race");
	struct lay h, g;
	lay_make(&h, "held", 50000);
	lay_make(&g, "gone", 50000);
	struct mlfs_layer *lh = lay_open(cache, &h), *lg = lay_open(cache, &g);
	tap_ok(lh && lg, "two layers built");
	mlfs_layer_free(lg);
	mlfs_layer_free(lh);
	tap_is_int(lay_open_cached(cache, &h, &lh), 0, "one reopened from the cache, held");

	/* Another process fits the cache to nothing. */
	fflush(stdout);
	pid_t pid = fork();
	if (pid == 0) {
		uint64_t left = 0;
		int rc = mlfs_cache_fit(cache, 0, 0, NULL, NULL, &left);
		_exit(rc == -ENOSPC && left > 0 ? 0 : 1);
	}
	tap_is_int(wait_child(pid), 0, "evictor in a child: -ENOSPC, bytes left");
	tap_ok(has(cache, "index", h.key) && has(cache, "data", h.key), "the held layer survived");
	tap_ok(!has(cache, "index", g.key) && !has(cache, "data", g.key), "the other one was evicted");
	struct stat st;
	tap_ok(fstat(mlfs_layer_data_fd(lh), &st) == 0 && st.st_nlink == 1, "held data file still named");
	tap_ok(lay_reads(lh, &h), "held layer reads the right bytes");
	mlfs_layer_free(lh);

	/* The other way round: a child holds the layer, this process evicts. */
	int go[2], ready[2];
	if (pipe(go) < 0 || pipe(ready) < 0)
		abort();
	fflush(stdout);
	pid = fork();
	if (pid == 0) {
		close(go[1]);
		close(ready[0]);
		struct mlfs_layer *l;
		int rc = lay_open_cached(cache, &h, &l);
		char c = rc == 0 ? 'y' : 'n';
		if (write(ready[1], &c, 1) != 1 || rc < 0)
			_exit(2);
		if (read(go[0], &c, 1) != 1)
			_exit(3);
		bool ok = lay_reads(l, &h);
		mlfs_layer_free(l);
		_exit(ok ? 0 : 1);
	}
	close(go[0]);
	close(ready[1]);
	char c = 0;
	tap_ok(read(ready[0], &c, 1) == 1 && c == 'y', "a child holds the layer");
	uint64_t left = 0;
	tap_is_int(mlfs_cache_fit(cache, 0, 0, NULL, NULL, &left), -ENOSPC, "fit to 0 here: -ENOSPC");
	tap_ok(has(cache, "index", h.key) && has(cache, "data", h.key), "the child's layer survived");
	if (write(go[1], "g", 1) != 1)
		tap_diag("write to the child failed");
	tap_is_int(wait_child(pid), 0, "the child read the right bytes after the eviction attempt");
	close(go[1]);
	close(ready[0]);
	tap_is_int(mlfs_cache_fit(cache, 0, 0, NULL, NULL, &left), 0, "child gone: fit to 0 succeeds");

	/* Users and an evictor at once: a user never reads wrong bytes, and
	 * after an eviction it finds -ENOENT and builds again. */
	fflush(stdout);
	pid = fork();
	if (pid == 0) {
		double end = now_s() + 0.2;
		int wrong = 0, failed = 0, rebuilt = 0, cached = 0;
		while (now_s() < end && !wrong) {
			struct mlfs_layer *l;
			int rc = lay_open_cached(cache, &g, &l);
			if (rc == -ENOENT) {
				l = lay_open(cache, &g);
				rebuilt++;
			} else if (rc == 0) {
				cached++;
			}
			if (!l)
				failed++; /* an open that failed: reported, not judged here */
			else if (!lay_reads(l, &g))
				wrong++;
			mlfs_layer_free(l);
		}
		printf("# user: %d opens from the cache, %d builds, %d failed opens\n", cached, rebuilt, failed);
		fflush(stdout);
		_exit(wrong ? 1 : 0);
	}
	int fits = 0, evicted = 0, failed = 0;
	for (;;) {
		int wst;
		pid_t w = waitpid(pid, &wst, WNOHANG);
		if (w == pid) {
			tap_ok(WIFEXITED(wst) && WEXITSTATUS(wst) == 0, "a user racing an evictor always read right bytes");
			break;
		}
		struct removed r = { 0 };
		int rc = mlfs_cache_fit(cache, 0, 0, record, &r, NULL);
		fits++;
		evicted += r.n;
		failed += rc != 0 && rc != -ENOSPC;
		struct timespec nap = { 0, 2000000 };
		nanosleep(&nap, NULL);
	}
	tap_diag("evictor: %d fits, %d evictions", fits, evicted);
	tap_ok(failed == 0 && fits > 0, "every fit returned 0 or -ENOSPC");

	/* An evictor that has locked and unlinked the index, and a builder
	 * that found the index gone and built the layer again before the
	 * evictor's last unlink: the data file the builder named and holds
	 * is in use, and must not lose its name. */
	{
		struct lay e;
		lay_make(&e, "echo", 30000);
		struct mlfs_layer *le = lay_open(cache, &e);
		tap_ok(le && lay_reads(le, &e), "echo built");
		mlfs_layer_free(le);
		unlink_hook_cache = cache;
		unlink_hook_built = NULL;
		unlink_hook_lay = &e;
		int rc = on_unit(cache, MLFS_CACHE_LAYER, e.key, 'r');
		unlink_hook_lay = NULL;
		le = unlink_hook_built;
		tap_ok(le != NULL, "a builder ran between the evictor's unlinks (remove: %d)", rc);
		tap_ok(lay_reads(le, &e), "the builder's layer reads");
		struct stat est;
		/* BUG (layers/cache.c, evict_layer): after its LOCK_EX on the old
		 * data inode and the index unlink, it unlinks data/sha256/<key>
		 * by name without checking that the name still is the inode it
		 * locked; a builder's rename put a new, held data file there. */
		tap_ok(le && fstat(mlfs_layer_data_fd(le), &est) == 0 && est.st_nlink == 1,
		       "the builder's held data file keeps its name");
		const char *why = NULL;
		rc = mlfs_cache_verify_layer(cache, e.key, &why);
		tap_ok(rc == 0, "the cache holds the rebuilt layer whole (verify: %d %s)", rc, rc ? why : "");
		tap_is_int(on_unit(cache, MLFS_CACHE_LAYER, e.key, 'u'), 1, "and sees it in use");
		mlfs_layer_free(le);
		lay_free(&e);
	}
	lay_free(&h);
	lay_free(&g);
	free(cache);
}

/* ---- temps ----------------------------------------------------------------- */

static void test_clean_temps(void)
{
	char *cache = cache_at("temps");
	struct lay k;
	lay_make(&k, "kept", 10000);
	struct mlfs_layer *l = lay_open(cache, &k);
	tap_ok(l != NULL, "a layer built");
	mlfs_layer_free(l);

	char held_child[4096], held_ex[4096], held_sh[4096], free_data[4096], free_ref[4096], free_meta[4096];
	char partial[4096], lock[4096], sub[256];
	snprintf(sub, sizeof sub, "blobs/sha256/%.64s.tmp-child1", k.key + 7);
	put_file(cache, sub, 3000, held_child, sizeof held_child);

	/* First the child, so it holds no lock of ours. */
	int go[2], ready[2];
	if (pipe(go) < 0 || pipe(ready) < 0)
		abort();
	fflush(stdout);
	pid_t pid = fork();
	if (pid == 0) {
		close(go[1]);
		close(ready[0]);
		int fd = open(held_child, O_RDWR);
		char c = fd >= 0 && flock(fd, LOCK_EX) == 0 ? 'y' : 'n';
		if (write(ready[1], &c, 1) != 1)
			_exit(2);
		(void)!read(go[0], &c, 1);
		_exit(0);
	}
	close(go[0]);
	close(ready[1]);
	char c = 0;
	tap_ok(read(ready[0], &c, 1) == 1 && c == 'y', "a child writes a temp (LOCK_EX)");

	snprintf(sub, sizeof sub, "index/sha256/%.64s.tmp-Held01", k.key + 7);
	put_file(cache, sub, 3000, held_ex, sizeof held_ex);
	snprintf(sub, sizeof sub, "data/sha256/%064d.tmp-Share1", 5);
	put_file(cache, sub, 3000, held_sh, sizeof held_sh);
	snprintf(sub, sizeof sub, "data/sha256/%.64s.tmp-Free01", k.key + 7);
	put_file(cache, sub, 3000, free_data, sizeof free_data);
	put_file(cache, "refs/registry.example/app/latest.tmp.Qw3Er4", 50, free_ref, sizeof free_ref);
	put_file(cache, "meta/sha256/0000000000000000000000000000000000000000000000000000000000000001.tmp.Zx5Cv6",
		 50, free_meta, sizeof free_meta);
	snprintf(sub, sizeof sub, "blobs/sha256/%064d.partial", 3);
	put_file(cache, sub, 3000, partial, sizeof partial);
	snprintf(sub, sizeof sub, "index/sha256/%064d.lock", 3);
	put_file(cache, sub, 0, lock, sizeof lock);
	int fd_ex = open(held_ex, O_RDWR), fd_sh = open(held_sh, O_RDWR);
	tap_ok(flock(fd_ex, LOCK_EX) == 0 && flock(fd_sh, LOCK_SH) == 0,
	       "temps held here: LOCK_EX (a writer), LOCK_SH (a sparse data file being named)");

	struct removed r = { 0 };
	tap_is_int(mlfs_cache_clean_temps(cache, record, &r), 0, "clean temps");
	tap_ok(r.n == 3 && removed_at(&r, free_data) >= 0 && removed_at(&r, free_ref) >= 0 &&
		       removed_at(&r, free_meta) >= 0 && r.kind[0] == MLFS_CACHE_TEMP,
	       "the three unheld temps reported removed (%d)", r.n);
	tap_ok(!exists(free_data) && !exists(free_ref) && !exists(free_meta), "and gone");
	tap_ok(exists(held_ex) && exists(held_sh), "the temps held here stay");
	tap_ok(exists(held_child), "the temp held by the child stays");
	tap_ok(exists(partial) && exists(lock), "partials and locks are not temps");
	tap_ok(has(cache, "index", k.key) && has(cache, "data", k.key), "the layer untouched");

	close(fd_ex);
	close(fd_sh);
	memset(&r, 0, sizeof r);
	tap_is_int(mlfs_cache_clean_temps(cache, record, &r), 0, "clean again, our locks released");
	tap_ok(r.n == 2 && !exists(held_ex) && !exists(held_sh) && exists(held_child),
	       "ours removed, the child's stays");
	kill(pid, SIGKILL);
	tap_is_int(wait_child(pid), 100 + SIGKILL, "the child, a writer, killed");
	close(go[1]);
	close(ready[0]);
	memset(&r, 0, sizeof r);
	tap_is_int(mlfs_cache_clean_temps(cache, record, &r), 0, "clean after the writer died");
	tap_ok(r.n == 1 && !exists(held_child), "its temp removed");
	tap_ok(has(cache, "index", k.key) && has(cache, "data", k.key) && exists(partial), "the rest untouched");
	memset(&r, 0, sizeof r);
	tap_ok(mlfs_cache_clean_temps(cache, record, &r) == 0 && r.n == 0, "nothing left to clean");
	char *none = cache_at("no-such-cache");
	tap_is_int(mlfs_cache_clean_temps(none, NULL, NULL), 0, "a cache that does not exist: 0");
	free(none);

	/* A cleaner (another mlfs starting) runs while a layer is written: at
	 * each sync of a temp file, before its rename.  Every temp file a
	 * live writer has open must survive; the layer must end up cached. */
	struct lay w;
	lay_make(&w, "written", 20000);
	memset(&hook_removed, 0, sizeof hook_removed);
	hook_syncs = hook_index_syncs = 0;
	hook_cache = cache;
	l = lay_open(cache, &w);
	hook_cache = NULL;
	tap_ok(l && lay_reads(l, &w), "layer built while a cleaner ran at each sync");
	mlfs_layer_free(l);
	tap_ok(hook_syncs >= 2 && hook_index_syncs >= 1, "the cleaner ran at the data's and the index's sync (%d, %d)",
	       hook_syncs, hook_index_syncs);
	tap_ok(has(cache, "data", w.key), "its data file is cached");
	/* BUG (layers/indexfile.c, mlfs_indexfile_save): the index's temp file
	 * is created with mkostemp but never flocked, against the protocol in
	 * layers/cache.c ("writer of a file: mkostemp(*.tmp-*) -> LOCK_EX"), so
	 * a cleaner takes it for a crash's leftover and unlinks it mid-write;
	 * the rename then fails and the index is not saved. */
	tap_is_int(hook_removed.n, 0, "no temp file of a live writer removed");
	if (hook_removed.n)
		tap_diag("removed: %s", hook_removed.id[0]);
	tap_ok(has(cache, "index", w.key), "its index is cached");
	lay_free(&w);

	lay_free(&k);
	free(cache);
}

/* ---- the build lock --------------------------------------------------------- */

struct lock_result {
	int rc;
	double elapsed;
	bool named; /* the fd held is the file under the lock's name */
};

static bool fd_is_named(int fd, const char *path)
{
	struct stat a, b;
	return fstat(fd, &a) == 0 && stat(path, &b) == 0 && a.st_ino == b.st_ino && a.st_dev == b.st_dev;
}

/* In a child: lock_build(key, timeout_s) once, started when the monotonic
 * clock's fraction of a second is in [align, align + 0.6] (if align >= 0), then
 * (if ok) holds the lock hold_s seconds and releases it, or (crash) exits
 * holding it. */
static pid_t lock_child(const char *cache, const char *key, unsigned timeout_s, double align, bool crash,
			int inherited, int *rfd)
{
	int p[2];
	if (pipe(p) < 0)
		abort();
	fflush(stdout);
	pid_t pid = fork();
	if (pid == 0) {
		close(p[0]);
		/* The parent's lock fd, shared by fork: not this builder's lock. */
		if (inherited >= 0)
			close(inherited);
		if (align >= 0) {
			/* Start with the clock's fraction of a second in
			 * [align, align + 0.6]: at once, or after at most 0.4 s. */
			double t = now_s(), frac = t - (double)(long long)t;
			double wait = frac < align ? align - frac : frac > align + 0.6 ? 1 + align - frac : 0;
			struct timespec nap = { 0, (long)(wait * 1e9) };
			nanosleep(&nap, NULL);
		}
		struct lock_result res = { 0 };
		char path[4096];
		kpath(path, sizeof path, cache, "index", key);
		strcat(path, ".lock");
		int fd = -1;
		double t0 = now_s();
		res.rc = mlfs_cache_lock_build(cache, key, timeout_s, NULL, &fd);
		res.elapsed = now_s() - t0;
		res.named = res.rc == 0 && fd_is_named(fd, path);
		if (write(p[1], &res, sizeof res) != (ssize_t)sizeof res)
			_exit(2);
		if (res.rc == 0 && !crash)
			mlfs_cache_unlock_build(cache, key, fd);
		_exit(0);
	}
	close(p[1]);
	*rfd = p[0];
	return pid;
}

static bool lock_read(int rfd, struct lock_result *res)
{
	bool ok = read(rfd, res, sizeof *res) == (ssize_t)sizeof *res;
	close(rfd);
	return ok;
}

static void test_lock_build(void)
{
	char *cache = cache_at("locks");
	const char *key = "sha256:abababababababababababababababababababababababababababababababab";
	const char *key2 = "sha256:cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd";
	char path[4096], path2[4096];
	kpath(path, sizeof path, cache, "index", key);
	strcat(path, ".lock");
	kpath(path2, sizeof path2, cache, "index", key2);
	strcat(path2, ".lock");

	int fd = -1;
	tap_is_int(mlfs_cache_lock_build(cache, key, 1, NULL, &fd), 0, "lock taken (the cache made on the way)");
	tap_ok(fd >= 0 && exists(path) && fd_is_named(fd, path), "held on the file index/sha256/<hex>.lock");
	tap_is_int(on_unit(cache, MLFS_CACHE_LOCK, path, 'u'), 1, "a held build lock is in use");
	tap_is_int(on_unit(cache, MLFS_CACHE_LOCK, path, 'r'), -EBUSY, "and cannot be removed");

	/* Released: the holder removes the file; the next builder goes at once. */
	int fd2 = -1, rfd;
	struct lock_result res;
	tap_is_int(mlfs_cache_lock_build(cache, key2, 1, NULL, &fd2), 0, "another key's lock taken");
	mlfs_cache_unlock_build(cache, key2, fd2);
	tap_ok(!exists(path2), "unlock removes the lock file");
	tap_ok(exists(path), "not the other key's");
	pid_t pid = lock_child(cache, key2, 1, -1, false, fd, &rfd);
	tap_ok(lock_read(rfd, &res), "next builder answered");
	tap_ok(res.rc == 0 && res.named && res.elapsed < 0.5, "next builder takes it at once (%d, %.3f s)", res.rc,
	       res.elapsed);
	tap_is_int(wait_child(pid), 0, "and releases it");
	tap_ok(!exists(path2), "no lock file left");

	/* A waiter whose file is unlinked under it by the release opens the
	 * name again: it must end up holding the named file. */
	tap_is_int(mlfs_cache_lock_build(cache, key2, 1, NULL, &fd2), 0, "lock taken again");
	pid = lock_child(cache, key2, 2, -1, false, fd2, &rfd);
	struct timespec nap = { 0, 50 * 1000000L };
	nanosleep(&nap, NULL);
	mlfs_cache_unlock_build(cache, key2, fd2);
	tap_ok(lock_read(rfd, &res), "waiter answered");
	tap_ok(res.rc == 0 && res.named, "waiter got the lock on the named file after the release (%d)", res.rc);
	tap_is_int(wait_child(pid), 0, "waiter exits");

	/* A builder killed while holding it leaves the file, not the lock. */
	pid = lock_child(cache, key2, 1, -1, true, -1, &rfd);
	tap_ok(lock_read(rfd, &res) && res.rc == 0, "a builder takes it and dies");
	tap_is_int(wait_child(pid), 0, "died");
	tap_ok(exists(path2), "its lock file is left");
	tap_is_int(on_unit(cache, MLFS_CACHE_LOCK, path2, 'u'), 0, "a crashed builder's lock is not in use");
	double t0 = now_s();
	tap_is_int(mlfs_cache_lock_build(cache, key2, 1, NULL, &fd2), 0, "and is taken at once");
	tap_ok(now_s() - t0 < 0.5 && fd_is_named(fd2, path2), "on the file left");
	mlfs_cache_unlock_build(cache, key2, fd2);
	mlfs_cache_unlock_build(cache, key2, -1); /* nothing held: nothing done */
	tap_ok(!exists(path2), "released");

	mlfs_cache_unlock_build(cache, key, fd);
	tap_ok(!exists(path), "first lock released, its file removed");
	free(cache);
}

/* A second builder waits timeout_s, then gives up.  Started well into a
 * second of the monotonic clock, to see that it waits the whole second,
 * not only until the clock's seconds change.  Started first, and judged
 * last: the other tests run while it waits. */
static struct {
	char *cache;
	const char *key;
	int fd, rfd;
	pid_t pid;
} timed;

static void test_lock_timeout_start(void)
{
	timed.cache = cache_at("lock-timeout");
	timed.key = "sha256:efefefefefefefefefefefefefefefefefefefefefefefefefefefefefefefef";
	timed.fd = -1;
	tap_is_int(mlfs_cache_lock_build(timed.cache, timed.key, 1, NULL, &timed.fd), 0, "a build lock held");
	timed.pid = lock_child(timed.cache, timed.key, 1, 0.3, false, timed.fd, &timed.rfd);
}

static void test_lock_timeout_finish(void)
{
	struct lock_result res = { 0 };
	tap_ok(lock_read(timed.rfd, &res), "second builder answered");
	tap_is_int(wait_child(timed.pid), 0, "second builder exits");
	tap_is_int(res.rc, -ETIMEDOUT, "second builder: -ETIMEDOUT while the lock is held");
	tap_ok(res.elapsed < 1.5, "gave up in time (%.3f s)", res.elapsed);
	/* BUG (layers/cache.c, mlfs_cache_lock_build): the timeout compares
	 * whole seconds of CLOCK_MONOTONIC (now.tv_sec - start.tv_sec), so a
	 * wait that starts at x.3 to x.9 s gives up soon after (x+1).0 s:
	 * after 0.1 to 0.9 s, not timeout_s = 1 s. */
	tap_ok(res.elapsed >= 0.95, "waited timeout_s = 1 s before giving up (%.3f s)", res.elapsed);
	mlfs_cache_unlock_build(timed.cache, timed.key, timed.fd);
	int fd = -1;
	double t0 = now_s();
	tap_is_int(mlfs_cache_lock_build(timed.cache, timed.key, 1, NULL, &fd), 0, "released: taken at once");
	tap_ok(now_s() - t0 < 0.5, "at once");
	mlfs_cache_unlock_build(timed.cache, timed.key, fd);
	free(timed.cache);
}

/* ---- verify ---------------------------------------------------------------- */

static void test_verify(void)
{
	char *cache = cache_at("verify");
	struct lay v;
	lay_make(&v, "victor", 25000);
	struct mlfs_layer *l = lay_open(cache, &v);
	tap_ok(l != NULL, "layer built");
	mlfs_layer_free(l);
	char index[4096], data[4096];
	kpath(index, sizeof index, cache, "index", v.key);
	kpath(data, sizeof data, cache, "data", v.key);
	const char *why = NULL;
	tap_is_int(mlfs_cache_verify_layer(cache, v.key, &why), 0, "a sound layer verifies");

	/* One byte flipped in the index, anywhere. */
	struct stat st;
	stat(index, &st);
	size_t len = (size_t)st.st_size;
	unsigned char *saved = malloc(len);
	int fd = open(index, O_RDONLY);
	tap_ok(fd >= 0 && read(fd, saved, len) == (ssize_t)len, "index read (%zu bytes)", len);
	close(fd);
	size_t offs[] = { 3, len / 2, len - 1 };
	for (size_t i = 0; i < 3; i++) {
		unsigned char *b = malloc(len);
		memcpy(b, saved, len);
		b[offs[i]] ^= 0x01;
		lg_write_bytes(index, b, len);
		free(b);
		why = NULL;
		int r = mlfs_cache_verify_layer(cache, v.key, &why);
		tap_ok(r == -EBADMSG && why && strstr(why, "index"), "index byte %zu of %zu flipped: -EBADMSG, \"%s\"",
		       offs[i], len, why ? why : "(null)");
	}
	lg_write_bytes(index, saved, len);
	tap_is_int(mlfs_cache_verify_layer(cache, v.key, &why), 0, "index restored: sound");
	lg_write_bytes(index, saved, len / 2);
	why = NULL;
	tap_ok(mlfs_cache_verify_layer(cache, v.key, &why) == -EBADMSG && why && strstr(why, "index"),
	       "index truncated: -EBADMSG, \"%s\"", why ? why : "(null)");
	lg_write_bytes(index, saved, len);

	/* Data of the wrong size. */
	lg_truncate(data, 0.5);
	why = NULL;
	tap_ok(mlfs_cache_verify_layer(cache, v.key, &why) == -EBADMSG && why && strstr(why, "size"),
	       "data truncated: -EBADMSG, \"%s\"", why ? why : "(null)");
	(void)!truncate(data, 25000 * 2);
	why = NULL;
	tap_ok(mlfs_cache_verify_layer(cache, v.key, &why) == -EBADMSG && why && strstr(why, "size"),
	       "data too long: -EBADMSG, \"%s\"", why ? why : "(null)");
	tap_ok((l = lay_open(cache, &v)) && lay_reads(l, &v), "rebuilt by the next open");
	mlfs_layer_free(l);
	tap_is_int(mlfs_cache_verify_layer(cache, v.key, &why), 0, "sound again");

	/* Half a layer. */
	unlink(data);
	why = NULL;
	tap_ok(mlfs_cache_verify_layer(cache, v.key, &why) == -EBADMSG && why && strstr(why, "without its data"),
	       "index without data: -EBADMSG, \"%s\"", why ? why : "(null)");
	tap_ok((l = lay_open(cache, &v)) && lay_reads(l, &v), "rebuilt");
	mlfs_layer_free(l);
	unlink(index);
	why = NULL;
	tap_ok(mlfs_cache_verify_layer(cache, v.key, &why) == -EBADMSG && why && strstr(why, "without an index"),
	       "data without index: -EBADMSG, \"%s\"", why ? why : "(null)");
	tap_is_int(lay_open_cached(cache, &v, &l), -ENOENT, "open_cached: -ENOENT");
	tap_ok((l = lay_open(cache, &v)) && lay_reads(l, &v), "rebuilt");
	mlfs_layer_free(l);
	tap_is_int(mlfs_cache_verify_layer(cache, v.key, &why), 0, "sound again");

	/* A kept blob's bytes against its name. */
	char blob[4096], blob_key[MLFS_DIGEST_MAX], sub[256];
	lg_digest_file(v.tar, blob_key);
	snprintf(sub, sizeof sub, "blobs/sha256/%.64s", blob_key + 7);
	snprintf(blob, sizeof blob, "%s/%s", cache, sub);
	mkdirs(cache, "blobs/sha256");
	fd = open(v.tar, O_RDONLY);
	fstat(fd, &st);
	unsigned char *tb = malloc((size_t)st.st_size);
	tap_ok(read(fd, tb, (size_t)st.st_size) == st.st_size, "tar read");
	close(fd);
	lg_write_bytes(blob, tb, (size_t)st.st_size);
	tap_is_int(mlfs_cache_verify_blob(cache, blob_key, &why), 0, "blob verifies");
	tb[st.st_size / 2] ^= 0x20;
	lg_write_bytes(blob, tb, (size_t)st.st_size);
	why = NULL;
	tap_ok(mlfs_cache_verify_blob(cache, blob_key, &why) == -EBADMSG && why, "flipped blob: -EBADMSG, \"%s\"",
	       why ? why : "(null)");
	free(tb);
	free(saved);
	lay_free(&v);
	free(cache);
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	root = lg_tmpdir();
	double t0 = now_s();
	void (*tests[])(void) = { test_lock_timeout_start, test_scan_and_remove, test_fit, test_race,
				  test_clean_temps, test_lock_build, test_verify, test_lock_timeout_finish };
	for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++) {
		double t = now_s();
		tests[i]();
		tap_diag("section %zu: %.2f s", i + 1, now_s() - t);
	}
	tap_diag("%.2f s", now_s() - t0);
	lg_rmrf(root);
	free(root);
	return tap_done();
}
