/* mlfs pull: fill the cache with one platform's layer blobs, so a later
 * mount (or export) of the image needs no network for its layers.  A
 * seekable layer is not kept as a blob: it is indexed from its TOC and
 * every chunk fetched, which is what a mount reads from. */
#include "fs/cli.h"

#include <stdlib.h>

#include "fs/layerload.h"

#define PULL_JOBS 4

static int pull_seekable(struct mlfs_image *img, size_t i, struct mlfs_err *err)
{
	struct mlfs_layer *layer = NULL;
	int r = mlfs_image_layer_open(img, i, &layer, err);
	if (r == 0)
		r = mlfs_layer_fill(layer, false, PULL_JOBS, err);
	if (r < 0)
		mlfs_err_wrap(err, "layer %zu of %s", i + 1, img->canonical);
	mlfs_layer_free(layer);
	return r;
}

int mlfs_cmd_pull(int argc, char **argv)
{
	struct cli_image_args a;
	if (cli_parse_image_args(argc, argv, 0, &a) < 0)
		return 2;
	struct mlfs_err err = { 0 };
	struct mlfs_image *img = NULL;
	int r = mlfs_image_open(a.ref, &a.opts, &img, &err);
	for (size_t i = 0; r == 0 && i < img->manifest->n_layers; i++) {
		if (mlfs_image_layer_seekable(img, i)) {
			r = pull_seekable(img, i, &err);
			continue;
		}
		char *path = NULL;
		r = mlfs_image_layer_blob(img, i, &path, &err);
		free(path);
	}
	mlfs_image_free(img);
	return r < 0 ? cli_fail(&err) : 0;
}
