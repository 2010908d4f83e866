/* Shared between the files of layers/ only. */
#pragma once
#include <stdint.h>

#include "layers/layers.h"

struct archive_entry;

#define MLFS_NO_STR UINT32_MAX

/* One entry as the index stores it: 64 bytes, strings as arena offsets. */
struct mlfs_ient {
	uint64_t size;
	uint64_t stored;   /* regular files: bytes of data, not holes (<= size) */
	uint64_t data_off; /* rdev for devices: the two never coexist */
	int64_t mtime;
	uint32_t path;     /* arena offset, NUL-terminated */
	uint32_t link;     /* arena offset or MLFS_NO_STR */
	uint32_t mode, uid, gid;
	uint32_t mtime_nsec;
	uint32_t xattr_first;
	uint16_t n_xattrs;
	uint8_t kind;
	uint8_t pad;
};

struct mlfs_ixattr {
	uint32_t name;     /* arena offset, NUL-terminated */
	uint32_t value;    /* arena offset */
	uint32_t len;
};

/* One chunk of a seekable layer (chunks.c): bytes [data_off, data_off+len)
 * of the data file are the output of decompressing blob bytes [blob_off,
 * blob_off+blob_len) after skipping inner_off bytes, and hash to digest.
 * blob_len 0 is a hole: zeros, nothing to fetch.  Sorted by data_off. */
struct mlfs_ichunk {
	uint64_t data_off, len;
	uint64_t blob_off, blob_len;
	uint64_t inner_off;
	uint8_t digest[32];
};

/* A chunk's compressed bytes are fetched into one buffer: a TOC, and a
 * cached index just as much, may not ask for more. */
#define CHUNK_MAX_COMPRESSED (64u << 20)

enum mlfs_codec { MLFS_CODEC_NONE = 0, MLFS_CODEC_GZIP = 1, MLFS_CODEC_ZSTD = 2 };

struct mlfs_chunkstate;

struct mlfs_layer {
	struct mlfs_ient *ents;
	size_t n_ents, cap_ents;
	struct mlfs_ixattr *xattrs;
	size_t n_xattrs, cap_xattrs;
	char *arena;
	size_t arena_len, arena_cap;
	uint64_t data_size;
	uint64_t refused;
	int data_fd;
	char key[MLFS_DIGEST_MAX];     /* "" when not persisted */
	bool hide_format_entries;      /* eStargz: its TOC and landmarks are not image files */
	/* Seekable layers only; n_chunks 0 and cs NULL for a layer streamed whole. */
	struct mlfs_ichunk *chunks;
	size_t n_chunks;
	uint32_t codec;                /* enum mlfs_codec of the chunks */
	uint64_t prefetch_end;         /* chunks below this blob offset are prefetched first */
	struct mlfs_chunkstate *cs;    /* the present map, claims, the range source */
};

/* ---- path.c ---- */
#define MLFS_PATH_MAX 4096
/* Normalises a tar member name into out (MLFS_PATH_MAX bytes): leading "/"
 * and "./" stripped, "//" and "." components dropped, trailing "/" removed.
 * -EINVAL for ".." components or empty components that are too long. */
int mlfs_path_normalize(const char *in, char *out, size_t *out_len);
/* Classifies a normalised path's basename: 0 plain, MLFS_ENTRY_WHITEOUT (out
 * gets the hidden path), MLFS_ENTRY_OPAQUE (out gets the directory), 1 for
 * other AUFS metadata ".wh..wh.*" to ignore, -EINVAL for ".wh." with a name
 * that cannot be hidden ("", ".", ".."). */
int mlfs_path_whiteout(const char *path, size_t len, char *out, size_t *out_len);

/* ---- reader.c: compressed bytes -> tar entries, hashing both streams ---- */
struct mlfs_tar_reader;
int mlfs_tar_reader_new(const struct mlfs_layer_source *src, struct mlfs_tar_reader **out);
/* 1 with *entry set, 0 at the end of the archive, -errno on failure. */
int mlfs_tar_reader_next(struct mlfs_tar_reader *r, struct archive_entry **entry);
/* The current entry's data: 1 with a block (offset within the file), 0 at its end. */
int mlfs_tar_reader_data(struct mlfs_tar_reader *r, const void **buf, size_t *len, int64_t *off);
/* Reads both streams to their ends and returns their digests. */
int mlfs_tar_reader_finish(struct mlfs_tar_reader *r, char diff_id[MLFS_DIGEST_MAX],
			   char blob_digest[MLFS_DIGEST_MAX]);
const char *mlfs_tar_reader_error(const struct mlfs_tar_reader *r);
void mlfs_tar_reader_free(struct mlfs_tar_reader *r);

/* ---- store.c: the cache's files ---- */
/* "<cache>/<kind>/sha256/<hex>" for key "sha256:<hex>"; malloc'd, NULL on ENOMEM. */
char *mlfs_store_path(const char *cache_dir, const char *kind, const char *key);
/* Creates <cache>/<kind>/sha256 as needed. */
int mlfs_store_mkdirs(const char *cache_dir, const char *kind);
struct mlfs_store;
/* A data file being written: a temp file next to its final name, or an
 * unnamed one when key is NULL. */
int mlfs_store_begin(const char *cache_dir, const char *key, struct mlfs_store **out);
int mlfs_store_pwrite(struct mlfs_store *s, const void *buf, size_t len, uint64_t off);
/* Sizes, syncs and renames the file into place; returns its fd (caller owns). */
int mlfs_store_commit(struct mlfs_store *s, uint64_t size, int *fd);
/* Without a commit, removes the temp file. */
void mlfs_store_free(struct mlfs_store *s);
/* The sparse data file of a seekable layer: the existing one when it has
 * the size, else a new one of that size (all holes); fd read-write. */
int mlfs_store_sparse(const char *cache_dir, const char *key, uint64_t size, int *fd);
/* Makes a rename into path's directory durable. */
void mlfs_store_sync_dir(const char *path);
/* Writes buf into path through a synced temp file + rename. */
int mlfs_store_write_file(const char *path, const void *buf, size_t len);

/* ---- cache.c ---- */
/* LOCK_SH on a cached file being used; -ESTALE when it was evicted (has no
 * name any more) by the time the lock came. */
int mlfs_cache_lock_shared(int fd);
/* Records a use (the file's mtime). */
void mlfs_cache_touch(int fd);

/* ---- index.c: the entry table ---- */
int mlfs_index_build(struct mlfs_layer *layer, struct mlfs_tar_reader *r, struct mlfs_store *s);
/* One entry (refused ones are logged and skipped: check n_ents).  A regular
 * file's bytes are copied from r into s; with r NULL only its place in the
 * data file is reserved. */
int mlfs_index_add(struct mlfs_layer *layer, struct archive_entry *e, struct mlfs_tar_reader *r,
		   struct mlfs_store *s);
void mlfs_index_clear(struct mlfs_layer *layer);

/* ---- layer.c ---- */
int mlfs_layer_open_key(const char *cache_dir, const char *key, const struct mlfs_blob_ranges *src,
			struct mlfs_layer **out, struct mlfs_err *err);
struct mlfs_layer *mlfs_layer_new(void);
void mlfs_layer_shrink(struct mlfs_layer *l);

/* ---- seekable.c ---- */
/* The entry table and chunk table of a verified TOC's JSON; chunk data
 * ends before data_end.  Untrusted input all the same (fuzzed). */
int mlfs_toc_index(struct mlfs_layer *l, const char *json, size_t json_len, bool zstd, uint64_t data_end,
		   struct mlfs_err *err);

/* ---- chunks.c: a seekable layer's bytes, fetched by chunk ---- */
/* Opens or creates the layer's present map and takes over src. */
int mlfs_chunks_attach(struct mlfs_layer *layer, const char *cache_dir, const struct mlfs_blob_ranges *src);
void mlfs_chunks_detach(struct mlfs_layer *layer);
/* Whether the layer's present map on disk belongs to its chunk table: 0
 * (also when there is none yet), -EBADMSG when it does not. */
int mlfs_chunks_check_map(const struct mlfs_layer *layer, const char *cache_dir);
/* Makes data file bytes [off, off+len) present, fetching what is missing:
 * the number of chunks this call fetched, or -errno. */
int mlfs_chunks_ensure(const struct mlfs_layer *layer, uint64_t off, uint64_t len, struct mlfs_err *err);
/* Entry `entry` had to fetch (counts distinct files, for mlfs_layer_take_fill_hint). */
void mlfs_chunks_note_miss(const struct mlfs_layer *layer, size_t entry);

/* ---- indexfile.c: the table on disk ---- */
int mlfs_indexfile_save(const struct mlfs_layer *layer, const char *path);
/* -ENOENT when absent, -EBADMSG when truncated, corrupt or of another key. */
int mlfs_indexfile_load(struct mlfs_layer *layer, const char *path);
