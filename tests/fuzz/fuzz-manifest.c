/* Index, manifest and config parsers on arbitrary bytes, under every media
 * type a Content-Type could claim.  Beyond memory errors (ASan, UBSan) it
 * checks the contract: a failure returns nothing and sets a one-line
 * message with the same code; a success returns fields the rest of fetch/
 * can use without checking again. */
#include <stdlib.h>
#include <string.h>

#include "fetch/fetch.h"

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);

static void check_failure(int r, const struct mlfs_err *err, const void *out)
{
	if (r >= 0)
		return;
	if (out || err->code != -r || !err->msg[0] || strchr(err->msg, '\n'))
		abort();
}

static void check_descriptor(const struct mlfs_descriptor *desc)
{
	if (!desc->media_type || mlfs_digest_validate(desc->digest) != 0 || desc->size < 0)
		abort();
	if (desc->has_platform && (strlen(desc->platform.os) >= sizeof desc->platform.os ||
				   strlen(desc->platform.arch) >= sizeof desc->platform.arch))
		abort();
	for (char **u = desc->urls; u && *u; u++)
		(void)strlen(*u);
}

static void check_strv(char **v)
{
	for (; v && *v; v++)
		(void)strlen(*v);
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
	static const enum mlfs_media index_as[] = {
		MLFS_MEDIA_UNKNOWN, MLFS_MEDIA_OCI_INDEX, MLFS_MEDIA_DOCKER_LIST,
		MLFS_MEDIA_OCI_MANIFEST, MLFS_MEDIA_DOCKER_SCHEMA1,
	};
	static const enum mlfs_media manifest_as[] = {
		MLFS_MEDIA_UNKNOWN, MLFS_MEDIA_OCI_MANIFEST, MLFS_MEDIA_DOCKER_MANIFEST,
		MLFS_MEDIA_OCI_INDEX, MLFS_MEDIA_LAYER_GZIP,
	};
	struct mlfs_err err;

	for (size_t i = 0; i < sizeof index_as / sizeof index_as[0]; i++) {
		struct mlfs_index *idx = NULL;
		mlfs_err_clear(&err);
		int r = mlfs_index_parse(d, n, index_as[i], &idx, &err);
		check_failure(r, &err, idx);
		if (r == 0) {
			if (!mlfs_media_is_index(idx->media))
				abort();
			for (size_t j = 0; j < idx->n_manifests; j++)
				check_descriptor(&idx->manifests[j]);
		}
		mlfs_index_free(idx);
	}

	for (size_t i = 0; i < sizeof manifest_as / sizeof manifest_as[0]; i++) {
		struct mlfs_manifest *m = NULL;
		mlfs_err_clear(&err);
		int r = mlfs_manifest_parse(d, n, manifest_as[i], &m, &err);
		check_failure(r, &err, m);
		if (r == 0) {
			if (!mlfs_media_is_manifest(m->media))
				abort();
			check_descriptor(&m->config);
			for (size_t j = 0; j < m->n_layers; j++) {
				check_descriptor(&m->layers[j]);
				if (!mlfs_media_is_layer(m->layers[j].media))
					abort();
			}
		}
		mlfs_manifest_free(m);
	}

	struct mlfs_config *c = NULL;
	mlfs_err_clear(&err);
	int r = mlfs_config_parse(d, n, &c, &err);
	check_failure(r, &err, c);
	if (r == 0) {
		check_strv(c->entrypoint);
		check_strv(c->cmd);
		check_strv(c->env);
		for (size_t j = 0; j < c->n_diff_ids; j++)
			if (mlfs_digest_validate(c->diff_ids[j]) != 0)
				abort();
	}
	mlfs_config_free(c);
	return 0;
}
