/* Where fetch/ meets layers/: one image layer, indexed and ready to read. */
#pragma once
#include "fetch/fetch.h"
#include "layers/layers.h"

/* Layer i of img: its cached index when there is a valid one (no network),
 * else its blob (from the cache or the registry) indexed into the cache. */
int mlfs_image_layer_open(struct mlfs_image *img, size_t i, struct mlfs_layer **out, struct mlfs_err *err);
