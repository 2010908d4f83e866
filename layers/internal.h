/* Shared between the files of layers/ only. */
#pragma once
#include <stdint.h>

#include "layers/layers.h"

struct archive_entry;

#define MLFS_NO_STR UINT32_MAX

/* One entry as the index stores it: 56 bytes, strings as arena offsets. */
struct mlfs_ient {
	uint64_t size;
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
/* Writes buf into path through a synced temp file + rename. */
int mlfs_store_write_file(const char *path, const void *buf, size_t len);

/* ---- index.c: the entry table ---- */
int mlfs_index_build(struct mlfs_layer *layer, struct mlfs_tar_reader *r, struct mlfs_store *s);
void mlfs_index_clear(struct mlfs_layer *layer);

/* ---- indexfile.c: the table on disk ---- */
int mlfs_indexfile_save(const struct mlfs_layer *layer, const char *path);
/* -ENOENT when absent, -EBADMSG when truncated, corrupt or of another key. */
int mlfs_indexfile_load(struct mlfs_layer *layer, const char *path);
