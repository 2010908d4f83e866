/* mlfs pull: fill the cache with one platform's layer blobs, so a later
 * mount (or export) of the image needs no network for its layers. */
#include "fs/cli.h"

#include <stdlib.h>

int mlfs_cmd_pull(int argc, char **argv)
{
	struct cli_image_args a;
	if (cli_parse_image_args(argc, argv, 0, &a) < 0)
		return 2;
	struct mlfs_err err = { 0 };
	struct mlfs_image *img = NULL;
	int r = mlfs_image_open(a.ref, &a.opts, &img, &err);
	for (size_t i = 0; r == 0 && i < img->manifest->n_layers; i++) {
		char *path = NULL;
		r = mlfs_image_layer_blob(img, i, &path, &err);
		free(path);
	}
	mlfs_image_free(img);
	return r < 0 ? cli_fail(&err) : 0;
}
