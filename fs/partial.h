/* Lookups answered from the layers indexed so far, before the merge. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "layers/layers.h"

#define PATH_MAX_PARTIAL 4096

/* Where the layers come from: layer(i) returns layer i (0 = bottom) and its
 * partial_sort_layer() table, waiting for it if need be; 0 or -errno. */
struct partial_src {
	size_t n_layers;
	int (*layer)(void *priv, size_t i, const struct mlfs_layer **layer, const uint32_t **sorted);
	void *priv;
};

/* The merged entry for dir/name ("" is the root) as (layer, entry): 0;
 * -ENOENT when it does not exist; -EAGAIN when only the merged tree can
 * tell; other -errno from src->layer(). */
int partial_lookup(const struct partial_src *src, const char *dir, const char *name, unsigned *layer,
		   size_t *entry);

/* A layer's entry numbers ordered by path, and by position among equal
 * paths (malloc'd; NULL on ENOMEM). */
uint32_t *partial_sort_layer(const struct mlfs_layer *layer);
