#include "fs/layerload.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>

#include "common/cleanup.h"

int mlfs_image_layer_open(struct mlfs_image *img, size_t i, struct mlfs_layer **out, struct mlfs_err *err)
{
	const struct mlfs_descriptor *d = &img->manifest->layers[i];
	struct mlfs_layer_opts o = {
		.cache_dir = img->cache_dir,
		.diff_id = img->config->diff_ids[i],
		.blob_digest = d->digest,
	};
	int r = mlfs_layer_open_cached(&o, out, err);
	if (r != -ENOENT)
		return r;
	_cleanup_free_ char *path = NULL;
	r = mlfs_image_layer_blob(img, i, &path, err);
	if (r < 0)
		return r;
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return mlfs_err_set(err, errno, "layer %zu: %s: %s", i + 1, path, strerror(errno));
	r = mlfs_layer_open_fd(fd, &o, out, err);
	if (r < 0)
		mlfs_err_wrap(err, "layer %zu of %s", i + 1, img->canonical);
	return r;
}
