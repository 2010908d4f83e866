/* layers/: everything about layer contents.
 *
 * The flow a caller follows:
 *   mlfs_layer_open_fd() / _open_source()   one layer: the cached index when
 *        there is a valid one, else stream the blob once (tar, tar+gzip,
 *        tar+zstd, sniffed from the bytes), index every entry, write the
 *        regular files' bytes into the cache and verify both digests
 *   mlfs_tree_merge()                        all layers, bottom first, into
 *        one read-only tree (upper wins, whiteouts, opaque dirs, hardlinks)
 *   mlfs_tree_* / mlfs_layer_pread()         lookups, metadata, file bytes
 *
 * Cache layout, next to fetch's blobs/, meta/ and refs/:
 *   index/sha256/<hex>   the persisted entry table (layers/indexfile.c)
 *   data/sha256/<hex>    the decompressed bytes of every regular file
 *   chunks/sha256/<hex>  a seekable layer's present map (layers/chunks.c)
 * <hex> is the diff_id when known (so a layer shared by images in another
 * compression is indexed once), else the blob digest (always, for a
 * seekable layer).  Who may remove what, and when: layers/cache.c.
 *
 * Everything returns 0 or -errno; failures a user sees also fill a struct
 * mlfs_err.  A layer and a tree are immutable once returned: any number of
 * threads may read them without locks. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/digest.h"
#include "common/err.h"

/* ---- one layer (layer.c, reader.c, index.c, store.c, indexfile.c) ------ */

/* A byte source: fills *buf and *len with the next chunk, valid until the next
 * call; *len == 0 means end of stream.  Returns 0 or -errno.  This is what
 * lets a layer be indexed while its download still streams in. */
struct mlfs_layer_source {
	int (*read)(void *priv, const void **buf, size_t *len);
	void *priv;
};

struct mlfs_layer_opts {
	const char *cache_dir;   /* required: the cache root */
	const char *diff_id;     /* sha256 of the uncompressed tar; NULL: not checked */
	const char *blob_digest; /* sha256 of the bytes read; NULL: not checked */
	bool estargz;            /* an eStargz layer: its TOC and landmark files are hidden */
	/* With neither digest the layer is indexed into an unnamed temporary
	 * file and never persisted (tests, fuzzing, unverified input). */
};

/* Where a seekable layer's bytes come from: read() fills buf with blob
 * bytes [off, off+len) exactly (an HTTP Range request), 0 or -errno + err;
 * -ERANGE when the server cannot serve ranges.  The layer owns priv from
 * the open on (successful or not) and calls release(priv) when done. */
struct mlfs_blob_ranges {
	int (*read)(void *priv, uint64_t off, size_t len, void *buf, struct mlfs_err *err);
	void *priv;
	void (*release)(void *priv);
	/* Optional: the whole blob from its first byte, every byte handed to
	 * sink in order (a sink returning non-zero aborts with that value). */
	int (*stream)(void *priv, int (*sink)(void *sp, const void *buf, size_t len), void *sink_priv,
		      struct mlfs_err *err);
	/* Optional: bytes read() gave failed their check.  True when asking
	 * again may bring other bytes (a mirror that served them is no longer
	 * asked for this blob): the chunks are then read once more. */
	bool (*distrust)(void *priv);
};

/* A layer's blob as the manifest describes it, for the seekable formats. */
struct mlfs_seekable_desc {
	const char *blob_digest;       /* the layer's digest: the cache key of a seekable layer */
	uint64_t blob_size;
	bool zstd;                     /* media type tar+zstd (else tar+gzip) */
	const char *toc_digest;        /* eStargz annotation, or NULL */
	const char *zstd_toc_checksum; /* zstd:chunked annotations, or NULL */
	const char *zstd_toc_position;
};

enum mlfs_entry_kind {
	MLFS_ENTRY_REG = 1,
	MLFS_ENTRY_DIR,
	MLFS_ENTRY_SYMLINK,
	MLFS_ENTRY_HARDLINK, /* `link` names an earlier path */
	MLFS_ENTRY_CHR,
	MLFS_ENTRY_BLK,
	MLFS_ENTRY_FIFO,
	MLFS_ENTRY_SOCK,
	MLFS_ENTRY_WHITEOUT, /* `.wh.NAME`: path is the hidden NAME's path */
	MLFS_ENTRY_OPAQUE,   /* `.wh..wh..opq`: path is the directory made opaque */
};

/* One entry's metadata; strings point into the layer and live as long as it. */
struct mlfs_entry {
	const char *path;       /* normalised: no leading "./" or "/", no "//"; "" is the root */
	enum mlfs_entry_kind kind;
	uint32_t mode;          /* S_IFMT bits + permissions incl. setuid/setgid/sticky */
	uint32_t uid, gid;
	int64_t mtime_sec;
	uint32_t mtime_nsec;
	uint64_t size;          /* regular files; 0 otherwise */
	uint64_t rdev;          /* character / block devices (makedev) */
	uint64_t data_off;      /* regular files: where the bytes start in the data file */
	const char *link;       /* symlink target or hardlink target path; NULL otherwise */
	uint32_t n_xattrs;
	uint64_t stored;        /* regular files: bytes of data, holes not counted (st_blocks) */
};

struct mlfs_layer;

int mlfs_layer_open_source(const struct mlfs_layer_source *src, const struct mlfs_layer_opts *opts,
			   struct mlfs_layer **out, struct mlfs_err *err);
/* Reads fd from its current offset to EOF (a pipe works); does not close it. */
int mlfs_layer_open_fd(int fd, const struct mlfs_layer_opts *opts, struct mlfs_layer **out,
		       struct mlfs_err *err);
/* The cached index only: -ENOENT when there is none (or it was corrupt and
 * has been removed); nothing is decompressed. */
int mlfs_layer_open_cached(const struct mlfs_layer_opts *opts, struct mlfs_layer **out,
			   struct mlfs_err *err);
void mlfs_layer_free(struct mlfs_layer *layer);

/* A seekable layer (seekable.c): from its cached index, else from its TOC
 * alone (a footer and a TOC fetched by range, verified against the digest
 * in the manifest); file bytes come later, chunk by chunk.  -ENOTSUP when
 * the descriptor is not of a seekable format, -ERANGE when the registry
 * ignores Range, -EBADMSG when the TOC fails verification or cannot be
 * used: all mean "stream the layer whole instead", and err says why. */
int mlfs_layer_open_seekable(const struct mlfs_layer_opts *opts, const struct mlfs_seekable_desc *desc,
			     const struct mlfs_blob_ranges *src, struct mlfs_layer **out, struct mlfs_err *err);
/* Whether bytes may need fetching (a seekable layer). */
bool mlfs_layer_is_seekable(const struct mlfs_layer *layer);
/* Makes bytes [off, off+len) of regular entry i present in the data file,
 * fetching and verifying the chunks that hold them; 0 at once for a layer
 * streamed whole.  -EIO/-EBADMSG + err when a chunk cannot be had. */
int mlfs_layer_fetch(const struct mlfs_layer *layer, size_t i, uint64_t off, uint64_t len,
		     struct mlfs_err *err);
/* Fetches every absent chunk (or only those the image marks for prefetch),
 * with `jobs` requests in flight.  When most of the layer is missing and
 * the source can stream, the whole blob is read once instead, in order,
 * and then also checked against the layer's digest (-EBADMSG when it
 * differs; the chunks kept were each verified on their own). */
int mlfs_layer_fill(const struct mlfs_layer *layer, bool prioritized_only, unsigned jobs, struct mlfs_err *err);
/* True once, when reads have fetched chunks for so many distinct files that
 * filling the whole layer in the background will serve them better (a
 * walk over the tree, a build reading every header). */
bool mlfs_layer_take_fill_hint(const struct mlfs_layer *layer);
struct mlfs_layer_stats {
	uint64_t chunks, chunks_present;         /* in the cache, by any process */
	uint64_t chunks_fetched, bytes_fetched;  /* by this process */
	uint64_t requests;
};
void mlfs_layer_stats(const struct mlfs_layer *layer, struct mlfs_layer_stats *out);

size_t mlfs_layer_count(const struct mlfs_layer *layer);
/* Entries in stream order; refused entries (".." paths, ...) are absent. */
void mlfs_layer_entry(const struct mlfs_layer *layer, size_t i, struct mlfs_entry *out);
void mlfs_layer_xattr(const struct mlfs_layer *layer, size_t i, uint32_t j, const char **name,
		      const void **value, size_t *len);
/* Entries the indexer refused and logged. */
size_t mlfs_layer_refused(const struct mlfs_layer *layer);
/* The decompressed data file, for preads and fd-backed FUSE replies. */
int mlfs_layer_data_fd(const struct mlfs_layer *layer);
/* Bytes [off, off+len) of regular entry i, clipped to its size (fetched
 * first for a seekable layer). */
ssize_t mlfs_layer_pread(const struct mlfs_layer *layer, size_t i, void *buf, size_t len,
			 uint64_t off);
/* Memory held by the in-memory index (for measurements). */
size_t mlfs_layer_mem_bytes(const struct mlfs_layer *layer);

/* ---- the cache's life (cache.c): locks, last use, eviction, leftovers ---- */

enum mlfs_cache_kind {
	MLFS_CACHE_LAYER,   /* index + chunk map + data of one layer key */
	MLFS_CACHE_BLOB,    /* a kept compressed layer blob */
	MLFS_CACHE_PARTIAL, /* a blob download: running, or left by an interrupted run */
	MLFS_CACHE_TEMP,    /* a file being written, or left by a crash */
	MLFS_CACHE_LOCK,    /* an empty per-layer build lock */
};

struct mlfs_cache_item {
	enum mlfs_cache_kind kind;
	char key[MLFS_DIGEST_MAX];  /* layers and blobs: the digest; "" otherwise */
	char *path;                 /* partials, temps, locks: the file */
	uint64_t bytes;             /* on disk (allocated blocks) */
	uint64_t data_bytes;        /* layers: of which the data file */
	int64_t last_use;           /* seconds since the epoch */
	bool has_index, has_data, has_chunks;
};

/* Bytes on disk by kind, and their sum (meta: manifests, configs, tag
 * records and the signatures kept for offline use). */
struct mlfs_cache_usage {
	uint64_t data, index, chunks, blobs, partial, temp, meta, other;
	uint64_t total;
};

/* Marks a cached layer used now (if it is there): a mount marks all its
 * layers when it starts, so making room for its first layer never evicts
 * another of its own that it has not opened yet. */
void mlfs_cache_touch_key(const char *cache_dir, const char *key);
/* Every unit of the cache, unordered; free with mlfs_cache_items_free(). */
int mlfs_cache_scan(const char *cache_dir, struct mlfs_cache_item **items, size_t *n,
		    struct mlfs_cache_usage *use);
void mlfs_cache_items_free(struct mlfs_cache_item *items, size_t n);
/* Whether a live process holds it (probed without waiting). */
bool mlfs_cache_in_use(const char *cache_dir, const struct mlfs_cache_item *item);
/* Bytes of the units live processes hold (layers, downloads, temps). */
uint64_t mlfs_cache_bytes_in_use(const char *cache_dir);
/* Removes one unit unless a live process holds it: -EBUSY then.  A layer
 * or blob already gone is 0; a leftover removed or replaced by another
 * process first is -ENOENT. */
int mlfs_cache_remove(const char *cache_dir, const struct mlfs_cache_item *item);

typedef void (*mlfs_cache_report_fn)(void *priv, const struct mlfs_cache_item *removed);
/* Evicts leftovers, then the least recently used layers and blobs nobody
 * holds, until the cache plus `reserve` bytes fits in `max`.  -ENOSPC when
 * what is in use alone is over (nothing in use is touched); *total gets
 * the bytes left. */
int mlfs_cache_fit(const char *cache_dir, uint64_t max, uint64_t reserve, mlfs_cache_report_fn report,
		   void *priv, uint64_t *total);
/* Removes the temporary files of writers that are gone (killed, crashed). */
int mlfs_cache_clean_temps(const char *cache_dir, mlfs_cache_report_fn report, void *priv);
/* One builder per layer across processes: an exclusive lock held while a
 * layer is fetched and indexed; waits at most timeout_s (0: forever),
 * -ETIMEDOUT after, or until *cancel turns true (-ECANCELED; cancel may be
 * NULL).  Released (and its file removed) by _unlock_build. */
int mlfs_cache_lock_build(const char *cache_dir, const char *key, unsigned timeout_s, const bool *cancel, int *fd);
void mlfs_cache_unlock_build(const char *cache_dir, const char *key, int fd);
/* Re-checks a cached layer: its index checksum, its data file's size, its
 * chunk map's layout.  0 when sound, -EBADMSG with why (a short phrase). */
int mlfs_cache_verify_layer(const char *cache_dir, const char *key, const char **why);
/* Re-hashes a kept blob: 0, or -EBADMSG with why. */
int mlfs_cache_verify_blob(const char *cache_dir, const char *digest, const char **why);

/* ---- the merged tree (merge.c) ----------------------------------------- */

struct mlfs_tree;

#define MLFS_TREE_ROOT 0u
#define MLFS_TREE_NONE UINT32_MAX
#define MLFS_TREE_IMPLICIT 0xffffu /* `layer` of a directory no layer describes */

/* layers[0] is the bottom layer.  The layers must outlive the tree. */
int mlfs_tree_merge(struct mlfs_layer *const *layers, size_t n_layers, struct mlfs_tree **out,
		    struct mlfs_err *err);
void mlfs_tree_free(struct mlfs_tree *tree);

/* Nodes are names; node ids are dense, 0 is the root; a directory's
 * children are the contiguous ids [first, first + count), sorted by name. */
size_t mlfs_tree_count(const struct mlfs_tree *tree);
size_t mlfs_tree_inode_count(const struct mlfs_tree *tree);
const char *mlfs_tree_name(const struct mlfs_tree *tree, uint32_t node);
uint32_t mlfs_tree_parent(const struct mlfs_tree *tree, uint32_t node);
void mlfs_tree_children(const struct mlfs_tree *tree, uint32_t node, uint32_t *first,
			uint32_t *count);
/* -ENOENT, or -ENOTDIR when parent is not a directory. */
int mlfs_tree_lookup(const struct mlfs_tree *tree, uint32_t parent, const char *name,
		     uint32_t *out);
int mlfs_tree_lookup_path(const struct mlfs_tree *tree, const char *path, uint32_t *out);
/* Dense inode number (0 = root's); hardlinked names share one. */
uint32_t mlfs_tree_inode(const struct mlfs_tree *tree, uint32_t node);
uint32_t mlfs_tree_nlink(const struct mlfs_tree *tree, uint32_t node);
/* The metadata of node's inode and the layer that holds it (its index in
 * the layers given to merge, or MLFS_TREE_IMPLICIT for a directory with
 * defaults: 0755, root:root, mtime 0). */
void mlfs_tree_entry(const struct mlfs_tree *tree, uint32_t node, struct mlfs_entry *out,
		     unsigned *layer, size_t *entry);
size_t mlfs_tree_mem_bytes(const struct mlfs_tree *tree);
