/* Where fetch/ meets layers/: one image layer, indexed and ready to read. */
#pragma once
#include "fetch/fetch.h"
#include "layers/layers.h"

/* Whether layer i's descriptor says it is eStargz or zstd:chunked. */
bool mlfs_image_layer_seekable(const struct mlfs_image *img, size_t i);
/* Layer i of img: its cached index when there is a valid one (no network);
 * else, for a seekable layer, an index from its TOC (its bytes come on
 * first read); else (or when that fails) its blob, from the cache or the
 * registry, indexed into the cache. */
int mlfs_image_layer_open(struct mlfs_image *img, size_t i, struct mlfs_layer **out, struct mlfs_err *err);
/* With the image's cache-max, evicts what no live process uses until the
 * cache plus `reserve` bytes fits (logs once when what is in use is over). */
void mlfs_cache_enforce(struct mlfs_image *img, uint64_t reserve);
/* Marks the image's cached layers as used now, before any is opened: the
 * room made for its first layer is never taken from its others. */
void mlfs_image_layers_touch(struct mlfs_image *img);
