/* Go's archive/tar reader, walked alongside libarchive (gowalk.c): the
 * reader (reader.c) feeds it the uncompressed tar stream as it hands the
 * same bytes to libarchive, a whole block at a time where Go expects a
 * header.  The struct is open because the reader gathers those blocks in
 * it; only gowalk.c reads or writes the rest. */
#ifndef MLFS_LAYERS_GOWALK_H
#define MLFS_LAYERS_GOWALK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MLFS_TAR_BLOCK 512u

enum walk_kind {
	W_HEADER,      /* a header, or the first end-of-archive block */
	W_SPARSE_EXT,  /* an old GNU sparse header's extension block */
	W_ZERO2,       /* the block after a zero block that followed meta headers */
};

struct mlfs_gowalk {
	bool on;               /* false once Go's reader has ended, failed or lost track */
	enum walk_kind kind;   /* what Go reads the block at `next` as */
	uint64_t next;         /* stream offset of the next block Go reads */
	size_t have;           /* bytes of that block gathered in blk */
	unsigned char blk[MLFS_TAR_BLOCK];
	uint64_t after_ext;    /* W_SPARSE_EXT: the data and padding after the last extension block */
	/* An extended header's records, gathered from [rec_at, rec_at + rec_want). */
	char *rec;
	size_t rec_len, rec_want, rec_cap;
	uint64_t rec_at;
	bool rec_global;       /* a 'g' header's: parsed, then forgotten */
	int64_t pax_size;      /* the last 'x' header's "size" record, or -1 */
	bool pax_size_bad;     /* ... which Go cannot parse: the entry it describes fails */
	/* The meta headers ('x', 'L', 'K') read since the last entry. */
	unsigned metas;
	uint64_t chain_start;  /* where the first of them is */
	uint64_t meta_end;     /* where the records of the last one end */
	uint64_t entry_start;  /* where the headers of the entry being read begin */
	bool end_after_meta;   /* Go's reader ended cleanly right after them */
	bool fixed_logged;
	char why[160];         /* why Go's reader fails, when it does */
};

/* A walk that starts at byte 0, expecting a header. */
void mlfs_gowalk_init(struct mlfs_gowalk *w);
void mlfs_gowalk_free(struct mlfs_gowalk *w);

/* Bytes [at, at + n) of the stream, all before w->next (records or data). */
void mlfs_gowalk_records(struct mlfs_gowalk *w, uint64_t at, const unsigned char *p, size_t n);

/* The block at w->next is whole in w->blk: read it as Go does, rewriting
 * it in place where libarchive would read it otherwise. */
void mlfs_gowalk_block(struct mlfs_gowalk *w);

/* The stream ends at `end`, w->have bytes into the block at w->next. */
void mlfs_gowalk_eof(struct mlfs_gowalk *w, uint64_t end);

/* Go's reader is no longer followed; fmt (may be NULL) says why it fails. */
void mlfs_gowalk_stop(struct mlfs_gowalk *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
