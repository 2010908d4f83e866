/* mlfs pull: fill the cache with one platform's layers, so a later mount
 * (or export) of the image needs no network.  What is kept is what a mount
 * reads from: each layer indexed with its bytes decompressed (a seekable
 * one with every chunk fetched); the compressed blobs only with
 * --keep-blobs. */
#include "fs/cli/cli.h"

#include <errno.h>
#include <stdlib.h>

#include "fs/cli/progress.h"
#include "fs/layerload.h"

#define PULL_JOBS 4

/* The layer stays open (and so locked against eviction) until the whole
 * image is in: a cap must not evict layer 1 to make room for layer 2. */
static int pull_layer(struct mlfs_image *img, size_t i, struct mlfs_layer **layer, struct mlfs_err *err)
{
	if (img->keep_blobs && !mlfs_image_layer_seekable(img, i)) {
		char *path = NULL;
		int r = mlfs_image_layer_blob(img, i, &path, err);
		free(path);
		if (r < 0)
			return r;
	}
	int r = mlfs_image_layer_open(img, i, layer, err); /* its errors name the layer already */
	if (r == 0 && (r = mlfs_layer_fill(*layer, false, PULL_JOBS, err)) < 0)
		mlfs_err_wrap(err, "layer %zu of %s", i + 1, img->canonical);
	return r;
}

int mlfs_cmd_pull(int argc, char **argv)
{
	struct cli_image_args a;
	int parsed = cli_parse_image_args(argc, argv, CLI_LAYERS | CLI_PROGRESS, &a);
	if (parsed != 0)
		return parsed < 0 ? 2 : 0; /* 1: --help */
	cli_cache_startup(a.opts.cache_dir);
	struct cli_progress *progress = cli_progress_new(cli_progress_mode(a.quiet), &a.opts);
	struct mlfs_err err = { 0 };
	struct mlfs_image *img = NULL;
	int r = mlfs_image_open(a.ref, &a.opts, &img, &err);
	size_t n = r == 0 ? img->manifest->n_layers : 0;
	struct mlfs_layer **layers = calloc(n ? n : 1, sizeof *layers);
	if (!layers && r == 0)
		r = mlfs_err_set(&err, ENOMEM, "out of memory");
	if (r == 0) {
		mlfs_image_layers_touch(img);
		cli_progress_start(progress, img);
	}
	for (size_t i = 0; r == 0 && i < n; i++) {
		cli_progress_layer_begin(progress, i);
		if ((r = pull_layer(img, i, &layers[i], &err)) == 0)
			cli_progress_layer_end(progress, i);
	}
	cli_progress_finish(progress, r == 0, "pulled");
	if (img)
		img->progress = NULL;
	cli_progress_free(progress);
	for (size_t i = 0; layers && i < n; i++)
		mlfs_layer_free(layers[i]);
	free(layers);
	if (img)
		mlfs_cache_enforce(img, 0);
	mlfs_image_free(img);
	return r < 0 ? cli_fail(&err) : 0;
}
