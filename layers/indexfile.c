/* A layer's entry table on disk: index/sha256/<hex>.
 *
 * Reusing a layer must cost a file read, not a decompression, so the table
 * is saved once the layer's digests were verified.  The file is explicitly
 * little-endian with fixed field widths (a cache directory may be shared by
 * machines of both byte orders), starts with a magic and a version (a new
 * layout bumps the version, and an old file is simply rebuilt), and ends
 * with the sha256 of everything before it: a truncated or bit-flipped file
 * is detected before one byte of it is believed.  Offsets inside are still
 * bounds-checked on load, because a checksum guards against accidents and
 * the arrays index memory.
 *
 *   header   magic "MLFSIDX\0", u32 version, u32 entry size, u32 xattr
 *            size, u32 chunk size, u32 codec, u32 0, u64 entries, u64
 *            xattrs, u64 arena bytes, u64 data file size, u64 refused,
 *            u64 chunks, u64 prefetch end, char key[72]
 *   entries  64 bytes each (struct mlfs_ient, field by field)
 *   xattrs   12 bytes each
 *   chunks   72 bytes each (struct mlfs_ichunk): seekable layers only
 *   arena    the strings
 *   trailer  "sha256:<hex>" of all the above, NUL-padded to 72 bytes */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/file.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/tmpfile.h"
#include "layers/internal.h"

#define MAGIC "MLFSIDX"
/* 3: entries carry `stored` (a sparse file's allocated bytes), and what
 * is indexed changed (symlink modes, sizes libarchive misreads, foreign
 * xattrs dropped): a version 2 table is rebuilt, never reused. */
#define VERSION 3u
#define HEADER_SIZE (8 + 4 * 6 + 8 * 7 + MLFS_DIGEST_MAX)
#define ENT_SIZE 64u
#define XATTR_SIZE 12u
#define CHUNK_SIZE 72u
#define TRAILER_SIZE MLFS_DIGEST_MAX

/* ---- writing ---- */

struct writer {
	FILE *f;
	struct mlfs_hasher *h;
	int err;
};

static void put(struct writer *w, const void *p, size_t n)
{
	if (w->err)
		return;
	if (fwrite(p, 1, n, w->f) != n)
		w->err = -EIO;
	else if (mlfs_hasher_update(w->h, p, n) < 0)
		w->err = -EIO;
}

static void put32(struct writer *w, uint32_t v)
{
	v = htole32(v);
	put(w, &v, 4);
}

static void put64(struct writer *w, uint64_t v)
{
	v = htole64(v);
	put(w, &v, 8);
}

static void put16(struct writer *w, uint16_t v)
{
	v = htole16(v);
	put(w, &v, 2);
}

static void write_all(struct writer *w, const struct mlfs_layer *l)
{
	char magic[8] = MAGIC, key[MLFS_DIGEST_MAX] = { 0 };
	put(w, magic, 8);
	put32(w, VERSION);
	put32(w, ENT_SIZE);
	put32(w, XATTR_SIZE);
	put32(w, CHUNK_SIZE);
	put32(w, l->codec);
	put32(w, 0);
	put64(w, l->n_ents);
	put64(w, l->n_xattrs);
	put64(w, l->arena_len);
	put64(w, l->data_size);
	put64(w, l->refused);
	put64(w, l->n_chunks);
	put64(w, l->prefetch_end);
	snprintf(key, sizeof key, "%s", l->key);
	put(w, key, sizeof key);
	for (size_t i = 0; i < l->n_ents; i++) {
		const struct mlfs_ient *e = &l->ents[i];
		put64(w, e->size);
		put64(w, e->data_off);
		put64(w, (uint64_t)e->mtime);
		put32(w, e->path);
		put32(w, e->link);
		put32(w, e->mode);
		put32(w, e->uid);
		put32(w, e->gid);
		put32(w, e->mtime_nsec);
		put32(w, e->xattr_first);
		put16(w, e->n_xattrs);
		uint8_t kp[2] = { e->kind, 0 };
		put(w, kp, 2);
		put64(w, e->stored);
	}
	for (size_t i = 0; i < l->n_xattrs; i++) {
		put32(w, l->xattrs[i].name);
		put32(w, l->xattrs[i].value);
		put32(w, l->xattrs[i].len);
	}
	for (size_t i = 0; i < l->n_chunks; i++) {
		const struct mlfs_ichunk *c = &l->chunks[i];
		put64(w, c->data_off);
		put64(w, c->len);
		put64(w, c->blob_off);
		put64(w, c->blob_len);
		put64(w, c->inner_off);
		put(w, c->digest, sizeof c->digest);
	}
	put(w, l->arena, l->arena_len);
}

int mlfs_indexfile_save(const struct mlfs_layer *l, const char *path)
{
	_cleanup_free_ char *tmp = NULL;
	if (asprintf(&tmp, "%s.tmp-XXXXXX", path) < 0)
		return -ENOMEM;
	int fd = mlfs_mkstemp_locked(tmp);
	if (fd < 0)
		return -errno;
	/* Held until renamed: a temp file nobody holds is a crash's leftover
	 * (layers/cache.c), which any starting command removes. */
	(void)flock(fd, LOCK_EX);
	struct writer w = { .f = fdopen(fd, "w") };
	if (!w.f) {
		close(fd);
		unlink(tmp);
		return -ENOMEM;
	}
	w.err = mlfs_hasher_new(&w.h);
	write_all(&w, l);
	char sum[TRAILER_SIZE] = { 0 };
	if (!w.err && mlfs_hasher_final(w.h, sum) < 0)
		w.err = -EIO;
	if (!w.err && fwrite(sum, 1, sizeof sum, w.f) != sizeof sum)
		w.err = -EIO;
	if (!w.err && fflush(w.f) != 0)
		w.err = -errno;
	if (!w.err && fdatasync(fd) < 0)
		w.err = -errno;
	if (!w.err && rename(tmp, path) < 0)
		w.err = -errno;
	if (w.err)
		unlink(tmp);
	if (fclose(w.f) != 0 && !w.err)
		w.err = -EIO;
	mlfs_hasher_free(w.h);
	if (!w.err)
		mlfs_store_sync_dir(path);
	return w.err;
}

/* ---- reading ---- */

static uint64_t get64(const unsigned char *p)
{
	uint64_t v;
	memcpy(&v, p, 8);
	return le64toh(v);
}

static uint32_t get32(const unsigned char *p)
{
	uint32_t v;
	memcpy(&v, p, 4);
	return le32toh(v);
}

static uint16_t get16(const unsigned char *p)
{
	uint16_t v;
	memcpy(&v, p, 2);
	return le16toh(v);
}

static bool str_ok(const struct mlfs_layer *l, uint32_t off)
{
	return off < l->arena_len && memchr(l->arena + off, '\0', l->arena_len - off);
}

static int validate(const struct mlfs_layer *l)
{
	for (size_t i = 0; i < l->n_ents; i++) {
		const struct mlfs_ient *e = &l->ents[i];
		if (e->kind < MLFS_ENTRY_REG || e->kind > MLFS_ENTRY_OPAQUE || !str_ok(l, e->path))
			return -EBADMSG;
		if (e->link != MLFS_NO_STR && !str_ok(l, e->link))
			return -EBADMSG;
		if ((e->kind == MLFS_ENTRY_SYMLINK || e->kind == MLFS_ENTRY_HARDLINK) &&
		    e->link == MLFS_NO_STR)
			return -EBADMSG;
		if ((uint64_t)e->xattr_first + e->n_xattrs > l->n_xattrs)
			return -EBADMSG;
		if (e->kind == MLFS_ENTRY_REG &&
		    (e->size > l->data_size || e->data_off > l->data_size - e->size || e->stored > e->size))
			return -EBADMSG;
	}
	for (size_t i = 0; i < l->n_xattrs; i++) {
		const struct mlfs_ixattr *x = &l->xattrs[i];
		if (!str_ok(l, x->name) || x->value > l->arena_len ||
		    x->len > l->arena_len - x->value)
			return -EBADMSG;
	}
	if (l->n_chunks && l->codec != MLFS_CODEC_GZIP && l->codec != MLFS_CODEC_ZSTD)
		return -EBADMSG;
	uint64_t end = 0;
	for (size_t i = 0; i < l->n_chunks; i++) {
		const struct mlfs_ichunk *c = &l->chunks[i];
		if (c->data_off < end || c->len == 0 || c->len > l->data_size - c->data_off ||
		    c->data_off > l->data_size || c->blob_off > UINT64_MAX - c->blob_len ||
		    c->blob_len > CHUNK_MAX_COMPRESSED)
			return -EBADMSG;
		end = c->data_off + c->len;
	}
	return 0;
}

static int decode(struct mlfs_layer *l, const unsigned char *p, size_t size)
{
	if (size < HEADER_SIZE + TRAILER_SIZE)
		return -EBADMSG;
	char sum[MLFS_DIGEST_MAX] = { 0 };
	if (mlfs_digest_buf(p, size - TRAILER_SIZE, sum) < 0)
		return -EIO;
	if (memcmp(sum, p + size - TRAILER_SIZE, TRAILER_SIZE) != 0)
		return -EBADMSG;
	if (memcmp(p, MAGIC, 8) != 0 || get32(p + 8) != VERSION || get32(p + 12) != ENT_SIZE ||
	    get32(p + 16) != XATTR_SIZE || get32(p + 20) != CHUNK_SIZE)
		return -EBADMSG;
	uint64_t n_ents = get64(p + 32), n_x = get64(p + 40), arena = get64(p + 48);
	uint64_t n_chunks = get64(p + 72);
	const char *key = (const char *)p + 88;
	if (n_ents >= UINT32_MAX || n_x >= UINT32_MAX || arena >= MLFS_NO_STR || n_chunks >= UINT32_MAX)
		return -EBADMSG;
	if (HEADER_SIZE + n_ents * ENT_SIZE + n_x * XATTR_SIZE + n_chunks * CHUNK_SIZE + arena + TRAILER_SIZE !=
	    size)
		return -EBADMSG;
	if (strnlen(key, MLFS_DIGEST_MAX) == MLFS_DIGEST_MAX || strcmp(key, l->key) != 0)
		return -EBADMSG;

	l->codec = get32(p + 24);
	l->data_size = get64(p + 56);
	l->refused = get64(p + 64);
	l->prefetch_end = get64(p + 80);
	l->ents = calloc(n_ents ? n_ents : 1, sizeof *l->ents);
	l->xattrs = calloc(n_x ? n_x : 1, sizeof *l->xattrs);
	l->chunks = n_chunks ? calloc(n_chunks, sizeof *l->chunks) : NULL;
	l->arena = malloc(arena ? arena : 1);
	if (!l->ents || !l->xattrs || !l->arena || (n_chunks && !l->chunks))
		return -ENOMEM;
	l->n_chunks = n_chunks;
	l->n_ents = l->cap_ents = n_ents;
	l->n_xattrs = l->cap_xattrs = n_x;
	l->arena_len = l->arena_cap = arena;
	const unsigned char *q = p + HEADER_SIZE;
	for (size_t i = 0; i < n_ents; i++, q += ENT_SIZE) {
		struct mlfs_ient *e = &l->ents[i];
		e->size = get64(q);
		e->data_off = get64(q + 8);
		e->mtime = (int64_t)get64(q + 16);
		e->path = get32(q + 24);
		e->link = get32(q + 28);
		e->mode = get32(q + 32);
		e->uid = get32(q + 36);
		e->gid = get32(q + 40);
		e->mtime_nsec = get32(q + 44);
		e->xattr_first = get32(q + 48);
		e->n_xattrs = get16(q + 52);
		e->kind = q[54];
		e->stored = get64(q + 56);
	}
	for (size_t i = 0; i < n_x; i++, q += XATTR_SIZE) {
		l->xattrs[i].name = get32(q);
		l->xattrs[i].value = get32(q + 4);
		l->xattrs[i].len = get32(q + 8);
	}
	for (size_t i = 0; i < n_chunks; i++, q += CHUNK_SIZE) {
		struct mlfs_ichunk *c = &l->chunks[i];
		c->data_off = get64(q);
		c->len = get64(q + 8);
		c->blob_off = get64(q + 16);
		c->blob_len = get64(q + 24);
		c->inner_off = get64(q + 32);
		memcpy(c->digest, q + 40, sizeof c->digest);
	}
	memcpy(l->arena, q, arena);
	return validate(l);
}

int mlfs_indexfile_load(struct mlfs_layer *l, const char *path)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	struct stat st;
	if (fstat(fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode) || st.st_size < HEADER_SIZE + TRAILER_SIZE)
		return -EBADMSG;
	void *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	if (map == MAP_FAILED)
		return -errno;
	int rc = decode(l, map, (size_t)st.st_size);
	munmap(map, (size_t)st.st_size);
	if (rc < 0) {
		mlfs_index_clear(l);
		free(l->chunks);
		l->chunks = NULL;
		l->n_chunks = 0;
	}
	return rc;
}
