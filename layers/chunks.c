/* A seekable layer's bytes: chunks fetched by Range on first need.
 *
 * The data file of a seekable layer has the same shape as a streamed
 * layer's (every regular file at its data_off), but starts as one big hole:
 * a chunk's bytes land in it the first time a read needs them.  Each chunk
 * goes through
 *
 *   ABSENT --claimed by one thread--> IN FLIGHT --decoded, sha256 matched,
 *      ^                                  |        written, fdatasync'd--> PRESENT
 *      +------- fetch or digest failed ---+
 *
 * PRESENT is one byte per chunk in the present map, chunks/sha256/<hex>,
 * mmap'ed shared: every mount and command using the cache sees a chunk
 * another one fetched, at once and without a syscall.  The byte is set only
 * after the chunk's bytes were verified and synced, so after a crash a
 * present chunk is a good one, and a chunk cut off mid-write is simply
 * absent and fetched again.  IN FLIGHT is per process (a mutex and a
 * condition variable): two readers of one chunk in one mount fetch it once;
 * two processes may both fetch it, and write the same verified bytes.
 *
 * Holes (containers/storage's "zeros" chunks, blob_len 0) are never
 * fetched: the data file reads as zeros there already.
 *
 * Why one sparse data file per layer rather than composefs' one object
 * per file content: it is the shape streamed layers already have, so the
 * FUSE read path (an fd-backed splice at data_off), export and the index
 * format stay one; the cold path creates no file per chunk (35k files on
 * the bench image would each cost a create and a sync); and a chunk's
 * place is fixed by the TOC, so two processes filling the same layer
 * write the same bytes to the same offsets.  Sharing identical files
 * across layers and images (composefs' gain) is left to the cache work;
 * it was not measured here. */
#include <archive.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/log.h"
#include "layers/internal.h"

#define GROUP_GAP (64u << 10)       /* chunks this close in the blob share one request */
#define GROUP_MAX (16u << 20)       /* ...up to this many compressed bytes */
#define FILL_BATCH (8u << 20)       /* compressed bytes one fill worker takes at a time */
#define FILL_AFTER_FILES 64         /* distinct files read cold before the layer is worth filling */

struct mlfs_chunkstate {
	struct mlfs_blob_ranges src;
	void *map;                      /* the shared map file */
	size_t map_len;
	uint8_t *present;               /* n_chunks bytes in it */
	pthread_mutex_t lock;           /* protects inflight */
	pthread_cond_t cond;
	uint8_t *inflight;
	atomic_uint_fast64_t bytes_fetched, chunks_fetched, requests;
	/* Files whose reads had to fetch: a walk over many of them is better
	 * served by filling the layer than by a request per file. */
	atomic_size_t last_missed_entry;
	atomic_uint missed_files;
	atomic_bool fill_hinted;
	atomic_bool full_fill;          /* a whole-layer fill runs: a second one would only repeat it */
};

static bool is_present(const struct mlfs_layer *l, size_t c)
{
	return l->chunks[c].blob_len == 0 || __atomic_load_n(&l->cs->present[c], __ATOMIC_ACQUIRE);
}

/* The map starts with "MLFSMAP1" and the digest of the chunk table it
 * describes: a map is believed only for exactly that table, so a map left
 * by another layout (another mlfs version) can never mark bytes present. */
#define MAP_MAGIC "MLFSMAP1"
#define MAP_HEADER (8 + MLFS_DIGEST_MAX)

static int table_digest(const struct mlfs_layer *l, char out[MLFS_DIGEST_MAX])
{
	struct mlfs_hasher *h;
	int rc = mlfs_hasher_new(&h);
	for (size_t i = 0; rc == 0 && i < l->n_chunks; i++) {
		const struct mlfs_ichunk *c = &l->chunks[i];
		uint64_t v[5] = { htole64(c->data_off), htole64(c->len), htole64(c->blob_off),
				  htole64(c->blob_len), htole64(c->inner_off) };
		rc = mlfs_hasher_update(h, v, sizeof v);
		if (rc == 0)
			rc = mlfs_hasher_update(h, c->digest, sizeof c->digest);
	}
	if (rc == 0)
		rc = mlfs_hasher_final(h, out);
	mlfs_hasher_free(h);
	return rc;
}

int mlfs_chunks_attach(struct mlfs_layer *l, const char *cache_dir, const struct mlfs_blob_ranges *src)
{
	struct mlfs_chunkstate *cs = calloc(1, sizeof *cs);
	if (!cs) {
		if (src->release)
			src->release(src->priv);
		return -ENOMEM;
	}
	cs->src = *src;
	atomic_init(&cs->last_missed_entry, SIZE_MAX);
	pthread_mutex_init(&cs->lock, NULL);
	pthread_cond_init(&cs->cond, NULL);
	l->cs = cs; /* from here on mlfs_chunks_detach() releases everything */
	cs->inflight = calloc(l->n_chunks ? l->n_chunks : 1, 1);
	if (!cs->inflight)
		return -ENOMEM;
	char header[MAP_HEADER] = MAP_MAGIC;
	int rc = table_digest(l, header + 8);
	if (rc == 0)
		rc = mlfs_store_mkdirs(cache_dir, "chunks");
	_cleanup_free_ char *path = mlfs_store_path(cache_dir, "chunks", l->key);
	if (rc < 0)
		return rc;
	if (!path)
		return -ENOMEM;
	_cleanup_close_ int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
	if (fd < 0)
		return -errno;
	size_t len = MAP_HEADER + l->n_chunks;
	char have[MAP_HEADER];
	struct stat st;
	if (fstat(fd, &st) < 0)
		return -errno;
	if ((uint64_t)st.st_size != len || pread(fd, have, sizeof have, 0) != (ssize_t)sizeof have ||
	    memcmp(have, header, sizeof have)) {
		/* Every chunk absent again is always safe. */
		if (st.st_size != 0)
			log_warn(MLFS_AREA_LAYERS, "layer %s: chunk map of another layout, starting it over", l->key);
		if (ftruncate(fd, 0) < 0 || ftruncate(fd, (off_t)len) < 0 ||
		    pwrite(fd, header, sizeof header, 0) != (ssize_t)sizeof header)
			return -errno;
	}
	void *map = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (map == MAP_FAILED)
		return -errno;
	cs->map = map;
	cs->map_len = len;
	cs->present = (uint8_t *)map + MAP_HEADER;
	return 0;
}

int mlfs_chunks_check_map(const struct mlfs_layer *l, const char *cache_dir)
{
	char header[MAP_HEADER] = MAP_MAGIC, have[MAP_HEADER];
	int rc = table_digest(l, header + 8);
	_cleanup_free_ char *path = mlfs_store_path(cache_dir, "chunks", l->key);
	if (rc < 0)
		return rc;
	if (!path)
		return -ENOMEM;
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return errno == ENOENT ? 0 : -errno;
	struct stat st;
	if (fstat(fd, &st) < 0)
		return -errno;
	if ((uint64_t)st.st_size != MAP_HEADER + l->n_chunks ||
	    pread(fd, have, sizeof have, 0) != (ssize_t)sizeof have || memcmp(have, header, sizeof have))
		return -EBADMSG;
	return 0;
}

void mlfs_chunks_detach(struct mlfs_layer *l)
{
	struct mlfs_chunkstate *cs = l->cs;
	if (!cs)
		return;
	if (cs->map)
		munmap(cs->map, cs->map_len);
	if (cs->src.release)
		cs->src.release(cs->src.priv);
	pthread_mutex_destroy(&cs->lock);
	pthread_cond_destroy(&cs->cond);
	free(cs->inflight);
	free(cs);
	l->cs = NULL;
}

static void hex_digest(const uint8_t raw[32], char out[MLFS_DIGEST_MAX])
{
	static const char hx[] = "0123456789abcdef";
	memcpy(out, "sha256:", 7);
	for (int i = 0; i < 32; i++) {
		out[7 + 2 * i] = hx[raw[i] >> 4];
		out[8 + 2 * i] = hx[raw[i] & 15];
	}
	out[71] = '\0';
}

/* Decompresses one chunk from its compressed bytes, checks its digest
 * while writing it to the data file at its place.  Nothing marks it
 * present here: a mismatch leaves bytes that no one will trust. */
static int decode_chunk(const struct mlfs_layer *l, const struct mlfs_ichunk *c, const void *src, size_t len,
			struct mlfs_err *err)
{
	struct archive *a = archive_read_new();
	struct mlfs_hasher *h = NULL;
	if (!a || mlfs_hasher_new(&h) < 0) {
		if (a)
			archive_read_free(a);
		return mlfs_err_set(err, ENOMEM, "out of memory");
	}
	/* The filter is appended, not bid for: a chunk of a file that is
	 * itself gzip'ed (a man page, a changelog.gz) must not be unpacked
	 * twice. */
	archive_read_support_format_raw(a);
	archive_read_append_filter(a, l->codec == MLFS_CODEC_ZSTD ? ARCHIVE_FILTER_ZSTD : ARCHIVE_FILTER_GZIP);
	int rc = 0;
	struct archive_entry *ae;
	uint64_t skip = c->inner_off, done = 0;
	if (archive_read_open_memory(a, src, len) != ARCHIVE_OK || archive_read_next_header(a, &ae) != ARCHIVE_OK ||
	    archive_filter_count(a) != 2) {
		rc = mlfs_err_set(err, EBADMSG, "layer %s: the chunk at blob offset %llu is corrupt: it does not "
				  "decompress as %s (%s); nothing was cached", l->key, (unsigned long long)c->blob_off,
				  l->codec == MLFS_CODEC_ZSTD ? "zstd" : "gzip", archive_error_string(a) ?: "no data");
		goto out;
	}
	while (done < c->len) {
		const void *buf;
		size_t n;
		la_int64_t off;
		int ar = archive_read_data_block(a, &buf, &n, &off);
		if (ar == ARCHIVE_EOF || ar < ARCHIVE_WARN) {
			rc = mlfs_err_set(err, EBADMSG, "layer %s: the chunk at blob offset %llu %s after %llu of "
					  "%llu bytes", l->key, (unsigned long long)c->blob_off,
					  ar == ARCHIVE_EOF ? "ends" : "is corrupt", (unsigned long long)done,
					  (unsigned long long)c->len);
			goto out;
		}
		const char *p = buf;
		if (skip) {
			size_t k = skip < n ? (size_t)skip : n;
			p += k;
			n -= k;
			skip -= k;
		}
		if (n > c->len - done)
			n = (size_t)(c->len - done);
		if (!n)
			continue;
		if (mlfs_hasher_update(h, p, n) < 0) {
			rc = mlfs_err_set(err, EIO, "hashing failed");
			goto out;
		}
		for (size_t w = 0; w < n;) {
			ssize_t k = pwrite(l->data_fd, p + w, n - w, (off_t)(c->data_off + done + w));
			if (k < 0 && errno == EINTR)
				continue;
			if (k < 0) {
				rc = mlfs_err_set(err, errno, "layer %s: writing the cache: %s", l->key, strerror(errno));
				goto out;
			}
			w += (size_t)k;
		}
		done += n;
	}
	char got[MLFS_DIGEST_MAX], want[MLFS_DIGEST_MAX];
	if (mlfs_hasher_final(h, got) < 0) {
		rc = mlfs_err_set(err, EIO, "hashing failed");
		goto out;
	}
	hex_digest(c->digest, want);
	if (strcmp(got, want))
		rc = mlfs_err_set(err, EBADMSG, "layer %s: the chunk at blob offset %llu is %s, its TOC says %s: "
				  "the registry served corrupt data; nothing was cached", l->key,
				  (unsigned long long)c->blob_off, got, want);
out:
	mlfs_hasher_free(h);
	archive_read_free(a);
	return rc;
}

/* Fetches and stores the claimed chunks idx[0..n) (ascending blob_off),
 * grouping neighbours into one request; marks the good ones present and
 * releases every claim.  Returns the first error. */
static int fetch_claimed(const struct mlfs_layer *l, const size_t *idx, size_t n, struct mlfs_err *err)
{
	struct mlfs_chunkstate *cs = l->cs;
	int first_rc = 0;
	_cleanup_free_ bool *ok = calloc(n ? n : 1, sizeof *ok);
	if (!ok)
		first_rc = mlfs_err_set(err, ENOMEM, "out of memory");
	for (size_t g = 0; ok && g < n;) {
		const struct mlfs_ichunk *c0 = &l->chunks[idx[g]];
		uint64_t start = c0->blob_off, end = c0->blob_off + c0->blob_len;
		size_t e = g + 1;
		for (; e < n; e++) {
			const struct mlfs_ichunk *c = &l->chunks[idx[e]];
			uint64_t cend = c->blob_off + c->blob_len;
			if (c->blob_off > end + GROUP_GAP || (cend > end ? cend : end) - start > GROUP_MAX)
				break;
			if (cend > end)
				end = cend;
		}
		struct mlfs_err gerr = { 0 };
		int rc = 0;
		size_t len = (size_t)(end - start);
		_cleanup_free_ unsigned char *buf = malloc(len);
		if (!buf)
			rc = mlfs_err_set(&gerr, ENOMEM, "out of memory for %zu bytes of layer %s", len, l->key);
		if (rc == 0) {
			rc = cs->src.read(cs->src.priv, start, len, buf, &gerr);
			atomic_fetch_add(&cs->requests, 1);
		}
		if (rc == 0)
			atomic_fetch_add(&cs->bytes_fetched, len);
		/* Bytes that fail their digest may come from a mirror: when the
		 * source can ask elsewhere, the group is read once more. */
		bool reread = false;
		for (size_t k = g; rc == 0 && k < e && cs->src.distrust; k++) {
			const struct mlfs_ichunk *c = &l->chunks[idx[k]];
			struct mlfs_err cerr = { 0 };
			if (decode_chunk(l, c, buf + (c->blob_off - start), (size_t)(c->blob_len), &cerr) == -EBADMSG) {
				reread = cs->src.distrust(cs->src.priv);
				break;
			}
			ok[k] = true;
		}
		if (reread) {
			log_warn(MLFS_AREA_LAYERS, "layer %s: bytes %llu+%zu did not verify: reading them again from the "
				 "upstream", l->key, (unsigned long long)start, len);
			rc = cs->src.read(cs->src.priv, start, len, buf, &gerr);
			atomic_fetch_add(&cs->requests, 1);
			if (rc == 0)
				atomic_fetch_add(&cs->bytes_fetched, len);
		}
		for (size_t k = g; rc == 0 && k < e; k++) {
			const struct mlfs_ichunk *c = &l->chunks[idx[k]];
			struct mlfs_err cerr = { 0 };
			if (ok[k] && !reread)
				continue; /* decoded (and written) above */
			ok[k] = false;
			int r2 = decode_chunk(l, c, buf + (c->blob_off - start), (size_t)(c->blob_len), &cerr);
			if (r2 < 0) {
				if (first_rc) /* the first one is the caller's to report */
					log_error(MLFS_AREA_LAYERS, "%s", cerr.msg);
				if (!first_rc) {
					first_rc = r2;
					if (err)
						*err = cerr;
				}
				continue;
			}
			ok[k] = true;
		}
		if (rc < 0 && !first_rc) {
			first_rc = rc;
			if (err)
				*err = gerr;
		}
		g = e;
	}
	/* One sync for the whole batch, then the marks: a mark never precedes
	 * its bytes on disk. */
	bool any = false;
	for (size_t k = 0; ok && k < n; k++)
		any |= ok[k];
	if (any && fdatasync(l->data_fd) < 0) {
		if (!first_rc)
			first_rc = mlfs_err_set(err, errno, "layer %s: syncing the cache: %s", l->key, strerror(errno));
		any = false;
	}
	pthread_mutex_lock(&cs->lock);
	for (size_t k = 0; k < n; k++) {
		if (any && ok[k]) {
			__atomic_store_n(&cs->present[idx[k]], 1, __ATOMIC_RELEASE);
			atomic_fetch_add(&cs->chunks_fetched, 1);
		}
		cs->inflight[idx[k]] = 0;
	}
	pthread_cond_broadcast(&cs->cond);
	pthread_mutex_unlock(&cs->lock);
	return first_rc;
}

static int cmp_blob_off(const void *a, const void *b, void *priv)
{
	const struct mlfs_ichunk *c = priv;
	uint64_t x = c[*(const size_t *)a].blob_off, y = c[*(const size_t *)b].blob_off;
	return x < y ? -1 : x > y;
}

/* Makes chunks [first, last) present: claims the absent ones nobody
 * fetches, fetches them, waits for the ones others fetch, and takes over
 * those whose fetch failed.  Bounded: a chunk is tried by this thread at
 * most once. */
static int ensure_chunks(const struct mlfs_layer *l, size_t first, size_t last, struct mlfs_err *err)
{
	struct mlfs_chunkstate *cs = l->cs;
	size_t cap = last - first;
	_cleanup_free_ size_t *mine = malloc((cap ? cap : 1) * sizeof *mine);
	_cleanup_free_ bool *tried = calloc(cap ? cap : 1, sizeof *tried);
	if (!mine || !tried)
		return mlfs_err_set(err, ENOMEM, "out of memory");
	int fetched = 0;
	for (;;) {
		size_t n = 0;
		bool waiting = false;
		pthread_mutex_lock(&cs->lock);
		for (size_t c = first; c < last; c++) {
			if (is_present(l, c))
				continue;
			if (cs->inflight[c]) {
				waiting = true;
			} else if (!tried[c - first]) {
				cs->inflight[c] = 1;
				tried[c - first] = true;
				mine[n++] = c;
			}
		}
		pthread_mutex_unlock(&cs->lock);
		if (n) {
			qsort_r(mine, n, sizeof *mine, cmp_blob_off, l->chunks);
			int rc = fetch_claimed(l, mine, n, err);
			if (rc < 0)
				return rc;
			fetched += (int)n;
			continue;
		}
		if (!waiting)
			break;
		pthread_mutex_lock(&cs->lock);
		for (size_t c = first; c < last; c++)
			while (cs->inflight[c])
				pthread_cond_wait(&cs->cond, &cs->lock);
		pthread_mutex_unlock(&cs->lock);
	}
	for (size_t c = first; c < last; c++)
		if (!is_present(l, c))
			return mlfs_err_set(err, EIO, "layer %s: the chunk at blob offset %llu could not be fetched "
					    "(see the log)", l->key, (unsigned long long)l->chunks[c].blob_off);
	return fetched;
}

/* The first chunk that ends after data offset off. */
static size_t chunk_at(const struct mlfs_layer *l, uint64_t off)
{
	size_t lo = 0, hi = l->n_chunks;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (l->chunks[mid].data_off + l->chunks[mid].len <= off)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

int mlfs_chunks_ensure(const struct mlfs_layer *l, uint64_t off, uint64_t len, struct mlfs_err *err)
{
	if (!l->cs || !len)
		return 0;
	size_t first = chunk_at(l, off), last = first;
	while (last < l->n_chunks && l->chunks[last].data_off < off + len)
		last++;
	size_t c = first;
	while (c < last && is_present(l, c))
		c++;
	if (c == last)
		return 0; /* the fast path of every warm read: no lock */
	return ensure_chunks(l, c, last, err);
}

void mlfs_chunks_note_miss(const struct mlfs_layer *l, size_t entry)
{
	struct mlfs_chunkstate *cs = l->cs;
	if (atomic_exchange(&cs->last_missed_entry, entry) != entry)
		atomic_fetch_add(&cs->missed_files, 1);
}

bool mlfs_layer_take_fill_hint(const struct mlfs_layer *l)
{
	struct mlfs_chunkstate *cs = l->cs;
	return cs && atomic_load(&cs->missed_files) >= FILL_AFTER_FILES && !atomic_exchange(&cs->fill_hinted, true);
}

/* ---- filling in the background ---- */

struct fill {
	const struct mlfs_layer *l;
	uint64_t limit;                 /* chunks whose blob_off is below it */
	pthread_mutex_t lock;           /* protects next, rc, err */
	size_t next;
	int rc;
	struct mlfs_err err;
};

static void *fill_worker(void *arg)
{
	struct fill *f = arg;
	const struct mlfs_layer *l = f->l;
	for (;;) {
		pthread_mutex_lock(&f->lock);
		size_t first = f->next, last = first;
		uint64_t bytes = 0;
		while (last < l->n_chunks && bytes < FILL_BATCH && l->chunks[last].blob_off < f->limit)
			bytes += l->chunks[last++].blob_len;
		f->next = last;
		pthread_mutex_unlock(&f->lock);
		if (first == last)
			return NULL;
		struct mlfs_err err = { 0 };
		int rc = mlfs_chunks_ensure(l, l->chunks[first].data_off,
					    l->chunks[last - 1].data_off + l->chunks[last - 1].len -
						    l->chunks[first].data_off, &err);
		if (rc < 0) {
			pthread_mutex_lock(&f->lock);
			if (!f->rc) {
				f->rc = rc;
				f->err = err;
			}
			pthread_mutex_unlock(&f->lock);
		}
	}
}

/* ---- a whole-blob fill: one stream, every byte hashed ---- */

struct stream_fill {
	const struct mlfs_layer *l;
	struct mlfs_hasher *blob;
	uint64_t pos;                   /* blob offset of the next byte */
	size_t next;                    /* index into order[] of the next chunk group */
	size_t *order;                  /* chunks with data, by blob_off */
	size_t n_order;
	unsigned char *buf;             /* the current group's compressed bytes */
	uint64_t group_off, group_len, have;
	size_t group_first, group_end;  /* order[group_first..group_end) share group_off */
	size_t *done;                   /* decoded, waiting for the sync before they count */
	size_t n_done;
	uint64_t unsynced;
	int rc;
	struct mlfs_err err;
};

static int sync_and_mark(struct stream_fill *f)
{
	const struct mlfs_layer *l = f->l;
	if (!f->n_done)
		return 0;
	if (fdatasync(l->data_fd) < 0)
		return mlfs_err_set(&f->err, errno, "layer %s: syncing the cache: %s", l->key, strerror(errno));
	pthread_mutex_lock(&l->cs->lock);
	for (size_t k = 0; k < f->n_done; k++) {
		__atomic_store_n(&l->cs->present[f->done[k]], 1, __ATOMIC_RELEASE);
		atomic_fetch_add(&l->cs->chunks_fetched, 1);
	}
	pthread_cond_broadcast(&l->cs->cond);
	pthread_mutex_unlock(&l->cs->lock);
	f->n_done = 0;
	f->unsynced = 0;
	return 0;
}

/* The group order[group_first..group_end) is buffered: decode what is
 * still absent.  A chunk a reader fetches meanwhile is written twice with
 * the same verified bytes, which is harmless. */
static int finish_group(struct stream_fill *f)
{
	const struct mlfs_layer *l = f->l;
	for (size_t k = f->group_first; k < f->group_end; k++) {
		size_t c = f->order[k];
		if (is_present(l, c))
			continue;
		struct mlfs_err cerr = { 0 };
		int rc = decode_chunk(l, &l->chunks[c], f->buf, (size_t)f->group_len, &cerr);
		if (rc < 0) {
			if (f->rc)
				log_error(MLFS_AREA_LAYERS, "%s", cerr.msg);
			if (!f->rc) {
				f->rc = rc;
				f->err = cerr;
			}
			continue;
		}
		f->done[f->n_done++] = c;
		f->unsynced += l->chunks[c].len;
	}
	if (f->unsynced >= FILL_BATCH * 8)
		return sync_and_mark(f);
	return 0;
}

static void start_group(struct stream_fill *f)
{
	const struct mlfs_layer *l = f->l;
	f->group_first = f->next;
	f->group_off = l->chunks[f->order[f->next]].blob_off;
	f->group_len = 0;
	f->have = 0;
	while (f->next < f->n_order && l->chunks[f->order[f->next]].blob_off == f->group_off) {
		uint64_t bl = l->chunks[f->order[f->next]].blob_len;
		if (bl > f->group_len)
			f->group_len = bl;
		f->next++;
	}
	f->group_end = f->next;
}

static int stream_sink(void *priv, const void *data, size_t len)
{
	struct stream_fill *f = priv;
	const unsigned char *p = data;
	if (mlfs_hasher_update(f->blob, p, len) < 0)
		return mlfs_err_set(&f->err, EIO, "hashing failed");
	uint64_t end = f->pos + len;
	while (f->pos < end) {
		if (f->group_len == 0 && f->next < f->n_order)
			start_group(f);
		if (f->group_len == 0 || f->pos < f->group_off) {
			/* Bytes before the next group (tar headers, the TOC): only hashed. */
			uint64_t skip = f->group_len == 0 ? end - f->pos
							   : (f->group_off < end ? f->group_off : end) - f->pos;
			p += skip;
			f->pos += skip;
			continue;
		}
		uint64_t want = f->group_len - f->have, take = end - f->pos < want ? end - f->pos : want;
		memcpy(f->buf + f->have, p, (size_t)take);
		f->have += take;
		p += take;
		f->pos += take;
		if (f->have == f->group_len) {
			int rc = finish_group(f);
			f->group_len = 0;
			if (rc < 0)
				return rc;
		}
	}
	return 0;
}

static int cmp_order(const void *a, const void *b, void *priv)
{
	return cmp_blob_off(a, b, priv);
}

static int fill_stream(const struct mlfs_layer *l, struct mlfs_err *err)
{
	struct stream_fill f = { .l = l };
	size_t n = l->n_chunks;
	uint64_t biggest = 0;
	f.order = malloc((n ? n : 1) * sizeof *f.order);
	f.done = malloc((n ? n : 1) * sizeof *f.done);
	for (size_t c = 0; f.order && c < n; c++) {
		if (l->chunks[c].blob_len) {
			f.order[f.n_order++] = c;
			if (l->chunks[c].blob_len > biggest)
				biggest = l->chunks[c].blob_len;
		}
	}
	f.buf = malloc(biggest ? (size_t)biggest : 1);
	int rc = 0;
	if (!f.order || !f.done || !f.buf || mlfs_hasher_new(&f.blob) < 0)
		rc = mlfs_err_set(err, ENOMEM, "out of memory");
	if (rc == 0) {
		qsort_r(f.order, f.n_order, sizeof *f.order, cmp_order, l->chunks);
		rc = l->cs->src.stream(l->cs->src.priv, stream_sink, &f, err);
		atomic_fetch_add(&l->cs->requests, 1);
		atomic_fetch_add(&l->cs->bytes_fetched, f.pos);
		if (rc < 0 && f.err.msg[0] && err)
			*err = f.err;
	}
	int r2 = sync_and_mark(&f);
	if (rc == 0 && r2 < 0) {
		rc = r2;
		if (err)
			*err = f.err;
	}
	if (rc == 0 && f.rc < 0) {
		rc = f.rc;
		if (err)
			*err = f.err;
	}
	char got[MLFS_DIGEST_MAX];
	if (rc == 0 && mlfs_hasher_final(f.blob, got) == 0 && strcmp(got, l->key))
		rc = mlfs_err_set(err, EBADMSG, "layer %s: the whole blob hashes to %s (its chunks verified one "
				  "by one; the registry's copy is damaged elsewhere)", l->key, got);
	else if (rc == 0)
		log_debug(MLFS_AREA_LAYERS, "layer %s: filled from one stream, blob digest verified", l->key);
	mlfs_hasher_free(f.blob);
	free(f.order);
	free(f.done);
	free(f.buf);
	return rc;
}

static int fill(const struct mlfs_layer *l, bool prioritized_only, unsigned jobs, struct mlfs_err *err);

int mlfs_layer_fill(const struct mlfs_layer *l, bool prioritized_only, unsigned jobs, struct mlfs_err *err)
{
	if (!l->cs)
		return 0;
	if (!prioritized_only && atomic_exchange(&l->cs->full_fill, true))
		return 0; /* another thread fills it all already */
	int rc = fill(l, prioritized_only, jobs, err);
	if (!prioritized_only)
		atomic_store(&l->cs->full_fill, false);
	return rc;
}

static int fill(const struct mlfs_layer *l, bool prioritized_only, unsigned jobs, struct mlfs_err *err)
{
	if (!prioritized_only && l->cs->src.stream) {
		/* Most of it missing: one ordered stream beats a request per
		 * batch, and lets the blob digest be checked too. */
		uint64_t missing = 0, total = 0;
		for (size_t c = 0; c < l->n_chunks; c++) {
			total += l->chunks[c].blob_len;
			if (!is_present(l, c))
				missing += l->chunks[c].blob_len;
		}
		if (missing == 0)
			return 0;
		if (missing * 2 > total)
			return fill_stream(l, err);
	}
	/* Chunks in data order are in blob order in every writer we know; the
	 * prioritised ones (before the landmark) come first. */
	struct fill f = { .l = l, .limit = prioritized_only ? l->prefetch_end : UINT64_MAX };
	pthread_mutex_init(&f.lock, NULL);
	pthread_t tids[16];
	unsigned started = 0;
	if (jobs > 16)
		jobs = 16;
	for (; started + 1 < jobs; started++)
		if (pthread_create(&tids[started], NULL, fill_worker, &f) != 0)
			break;
	fill_worker(&f);
	for (unsigned i = 0; i < started; i++)
		pthread_join(tids[i], NULL);
	pthread_mutex_destroy(&f.lock);
	if (f.rc < 0 && err)
		*err = f.err;
	return f.rc;
}

void mlfs_layer_stats(const struct mlfs_layer *l, struct mlfs_layer_stats *out)
{
	memset(out, 0, sizeof *out);
	if (!l->cs)
		return;
	out->chunks = l->n_chunks;
	for (size_t c = 0; c < l->n_chunks; c++)
		out->chunks_present += is_present(l, c);
	out->chunks_fetched = atomic_load(&l->cs->chunks_fetched);
	out->bytes_fetched = atomic_load(&l->cs->bytes_fetched);
	out->requests = atomic_load(&l->cs->requests);
}
