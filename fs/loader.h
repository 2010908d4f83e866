/* Lazy loading: the layers of an image are fetched and indexed the first
 * time anything needs them, each published as soon as it is ready, then
 * merged and published as one immutable view. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fetch/fetch.h"
#include "layers/layers.h"

/* Everything a FUSE reply needs, immutable once published. */
struct mlfs_view {
	struct mlfs_tree *tree;
	struct mlfs_layer **layers;   /* the loader's; not owned here */
	size_t n_layers;
	uint32_t **entry_node;        /* [layer][entry] -> the node whose inode that entry is, or UINT32_MAX */
	uint64_t *entries_above;      /* [layer]: entries of the layers above it (inode numbers, fs/ops.c) */
	uint64_t n_entries;           /* entries of all layers */
	size_t n_inodes;
	uint64_t total_bytes;         /* sum of regular file sizes, for statfs */
};

struct loader;

/* fill_all (-o prefetch): once the view is up, fetch every chunk of the
 * seekable layers in the background. */
int loader_new(struct mlfs_image *img, unsigned jobs, unsigned timeout_s, bool fill_all, struct loader **out);
/* The end of a mount, before its session goes: cancels the downloads
 * under way (mlfs_image_cancel), answers every parked request -EINTR and
 * waits, up to `grace_s`, for the loading threads to end.  0 when they
 * all ended; -EBUSY when one is still stuck (outside libcurl: a lock of
 * another process's download). */
int loader_stop(struct loader *l, unsigned grace_s);
/* Frees everything; -EBUSY (and nothing freed, the image included, which
 * the loading threads still use) when a load is under way: for exit paths. */
int loader_free(struct loader *l);
/* Starts loading if nothing is loaded or loading (also after a failure). */
void loader_start(struct loader *l);
/* The view if published, else NULL; never blocks. */
const struct mlfs_view *loader_peek(struct loader *l);
/* Starts loading if needed and waits for the view.  -EIO on failure or
 * after the timeout (the reason is logged), -EINTR when cancelled(priv)
 * turns true (an interrupted FUSE request). */
int loader_wait(struct loader *l, bool (*cancelled)(void *priv), void *priv, const struct mlfs_view **out);

/* Fetches every chunk of a published seekable layer in a background
 * thread (loader_free() reports -EBUSY until it ends). */
void loader_fill_async(struct loader *l, const struct mlfs_layer *layer);

/* Parking: a request that needs what is not published yet is handed to
 * the loader instead of waiting in its own thread, so a thousand waiting
 * `stat`s hold no thread at all.  `need` is a layer (0 = bottom) or
 * LOADER_VIEW.  Returns 0 when it is there now (peek it), -EIO when the
 * load has failed (within its backoff), -EINTR after loader_stop(), or 1:
 * parked, and done(arg, status) will be called exactly once, from the
 * loader's waker thread: 0 once it is published (look again: it may park
 * again for the next thing), -EIO when the load failed or timed out,
 * -EINTR when cancelled(arg) turned true or the loader stopped. */
#define LOADER_VIEW SIZE_MAX
int loader_park(struct loader *l, size_t need, bool (*cancelled)(void *arg), void (*done)(void *arg, int status),
		void *arg);

size_t loader_layer_count(const struct loader *l);
/* Layer i (0 = bottom) and its entries sorted by path, if indexed yet. */
bool loader_layer_peek(struct loader *l, size_t i, const struct mlfs_layer **layer, const uint32_t **sorted);
/* The same, waiting for it as loader_wait() waits for the view. */
int loader_wait_layer(struct loader *l, size_t i, bool (*cancelled)(void *priv), void *priv,
		      const struct mlfs_layer **layer, const uint32_t **sorted);

/* The last failure of this mount (a layer that could not be loaded, a
 * wait that timed out, a read that could not fetch its bytes), for
 * `mlfs stat`: copied into buf ("" when none) with its time (seconds
 * since the epoch, 0 when none). */
void loader_note_error(struct loader *l, const char *msg);
void loader_last_error(struct loader *l, char *buf, size_t len, int64_t *when);
