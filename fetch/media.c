#include "fetch/fetch.h"

#include <string.h>
#include <strings.h>

static const struct {
	const char *name;
	enum mlfs_media media;
} media_types[] = {
	{ "application/vnd.oci.image.index.v1+json", MLFS_MEDIA_OCI_INDEX },
	{ "application/vnd.docker.distribution.manifest.list.v2+json", MLFS_MEDIA_DOCKER_LIST },
	{ "application/vnd.oci.image.manifest.v1+json", MLFS_MEDIA_OCI_MANIFEST },
	{ "application/vnd.docker.distribution.manifest.v2+json", MLFS_MEDIA_DOCKER_MANIFEST },
	{ "application/vnd.docker.distribution.manifest.v1+json", MLFS_MEDIA_DOCKER_SCHEMA1 },
	{ "application/vnd.docker.distribution.manifest.v1+prettyjws", MLFS_MEDIA_DOCKER_SCHEMA1 },
	{ "application/vnd.oci.image.config.v1+json", MLFS_MEDIA_OCI_CONFIG },
	{ "application/vnd.docker.container.image.v1+json", MLFS_MEDIA_DOCKER_CONFIG },
	{ "application/vnd.oci.image.layer.v1.tar", MLFS_MEDIA_LAYER_TAR },
	{ "application/vnd.oci.image.layer.v1.tar+gzip", MLFS_MEDIA_LAYER_GZIP },
	{ "application/vnd.oci.image.layer.v1.tar+zstd", MLFS_MEDIA_LAYER_ZSTD },
	{ "application/vnd.oci.image.layer.nondistributable.v1.tar", MLFS_MEDIA_LAYER_TAR },
	{ "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", MLFS_MEDIA_LAYER_GZIP },
	{ "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd", MLFS_MEDIA_LAYER_ZSTD },
	{ "application/vnd.docker.image.rootfs.diff.tar.gzip", MLFS_MEDIA_LAYER_GZIP },
	{ "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", MLFS_MEDIA_LAYER_GZIP },
	/* Not in Docker's schema 2 document, but written by some tools (and
	 * named by containerd) for uncompressed layers. */
	{ "application/vnd.docker.image.rootfs.diff.tar", MLFS_MEDIA_LAYER_TAR },
	{ "application/vnd.docker.image.rootfs.foreign.diff.tar", MLFS_MEDIA_LAYER_TAR },
};

static bool is_ows(char c)
{
	return c == ' ' || c == '\t';
}

enum mlfs_media mlfs_media_from_string(const char *s)
{
	if (!s)
		return MLFS_MEDIA_UNKNOWN;
	while (is_ows(*s))
		s++;
	size_t n = strcspn(s, ";");
	while (n > 0 && is_ows(s[n - 1]))
		n--;
	for (size_t i = 0; i < sizeof media_types / sizeof media_types[0]; i++)
		if (strlen(media_types[i].name) == n && strncasecmp(s, media_types[i].name, n) == 0)
			return media_types[i].media;
	return MLFS_MEDIA_UNKNOWN;
}

bool mlfs_media_is_index(enum mlfs_media m)
{
	return m == MLFS_MEDIA_OCI_INDEX || m == MLFS_MEDIA_DOCKER_LIST;
}

bool mlfs_media_is_manifest(enum mlfs_media m)
{
	return m == MLFS_MEDIA_OCI_MANIFEST || m == MLFS_MEDIA_DOCKER_MANIFEST;
}

bool mlfs_media_is_layer(enum mlfs_media m)
{
	return m == MLFS_MEDIA_LAYER_TAR || m == MLFS_MEDIA_LAYER_GZIP || m == MLFS_MEDIA_LAYER_ZSTD;
}

const char *mlfs_media_accept(void)
{
	/* Indexes first: distribution 2.8 answers a list request that lacks
	 * the list type with one platform's manifest, and OCI content with a
	 * 404 unless the OCI types are listed (FIELD-NOTES). */
	return "application/vnd.oci.image.index.v1+json, "
	       "application/vnd.docker.distribution.manifest.list.v2+json, "
	       "application/vnd.oci.image.manifest.v1+json, "
	       "application/vnd.docker.distribution.manifest.v2+json";
}

const char *mlfs_media_string(enum mlfs_media m)
{
	/* The table lists each type's canonical (OCI, else Docker) name first. */
	for (size_t i = 0; i < sizeof media_types / sizeof media_types[0]; i++)
		if (media_types[i].media == m)
			return media_types[i].name;
	return "";
}
