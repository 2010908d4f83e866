/* What a live mount tells `mlfs stat`, through a virtual xattr on its root
 * (why an xattr: fs/stats.c). */
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "fetch/fetch.h"

/* Asked with getxattr(2) on the mount's root; never listed by listxattr. */
#define MLFS_STATS_XATTR "user.mlfs.stats"

/* Counters bumped by the read path and the downloads: relaxed atomics
 * (__atomic builtins), no lock.  Zero is the start. */
struct mlfs_stats {
	uint64_t fetched;        /* layer bytes from the registry (blobs, ranges) */
	uint64_t reused;         /* blob bytes that were in the cache already */
	uint64_t layers_cached;  /* layers found indexed in the cache: nothing fetched */
	uint64_t served;         /* file bytes answered to reads */
	uint64_t reads;          /* read requests answered with data */
};

/* The image's progress listener (mlfs_image_opts.progress); priv is the
 * struct mlfs_stats. */
void mlfs_stats_progress(void *priv, size_t layer, enum mlfs_progress_event ev, uint64_t n);
/* A read answered with n bytes. */
static inline void mlfs_stats_served(struct mlfs_stats *s, uint64_t n)
{
	__atomic_fetch_add(&s->served, n, __ATOMIC_RELAXED);
	__atomic_fetch_add(&s->reads, 1, __ATOMIC_RELAXED);
}

struct mlfs_fs;
/* The statistics as one JSON object (malloc'd text, NULL when out of
 * memory): what the xattr answers. */
char *mlfs_stats_json(struct mlfs_fs *fs, size_t *len);
