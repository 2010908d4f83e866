/* Choosing one manifest of an index for a platform: the lowest
 * mlfs_platform_rank() wins, and among equals the first in the index, as
 * containerd's stable sort does.
 *
 * BuildKit puts its provenance / SBOM attestations into the same index as
 * unknown/unknown entries; they are not images and are neither chosen nor
 * listed to the user.  Entries that are not image manifests (nested
 * indexes, artifacts) cannot be mounted, so they are not candidates either. */
#include "fetch/fetch.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

static bool selectable(const struct mlfs_descriptor *d)
{
	return d->has_platform && mlfs_media_is_manifest(d->media) && d->platform.os[0] && d->platform.arch[0] &&
	       strcmp(d->platform.os, "unknown") && strcmp(d->platform.arch, "unknown");
}

/* "linux/amd64, linux/arm64, ..." of the selectable entries, each once. */
static void list_platforms(const struct mlfs_index *idx, char *buf, size_t len)
{
	size_t o = 0;
	buf[0] = '\0';
	for (size_t i = 0; i < idx->n_manifests; i++) {
		const struct mlfs_descriptor *d = &idx->manifests[i];
		if (!selectable(d))
			continue;
		struct mlfs_platform p = d->platform;
		mlfs_platform_normalize(&p);
		char name[160];
		mlfs_platform_format(&p, name, sizeof name);

		bool seen = false;
		for (size_t j = 0; j < i && !seen; j++) {
			const struct mlfs_descriptor *e = &idx->manifests[j];
			if (!selectable(e))
				continue;
			struct mlfs_platform q = e->platform;
			char other[160];
			mlfs_platform_normalize(&q);
			mlfs_platform_format(&q, other, sizeof other);
			seen = !strcmp(name, other);
		}
		if (seen)
			continue;

		const char *sep = o ? ", " : "";
		/* Leave room for the ", ..." that says the list goes on. */
		if (o + strlen(sep) + strlen(name) + 6 >= len) {
			snprintf(buf + o, len - o, ", ...");
			return;
		}
		o += (size_t)snprintf(buf + o, len - o, "%s%s", sep, name);
	}
}

int mlfs_platform_select(const struct mlfs_index *idx, const struct mlfs_platform *want,
			 size_t *chosen, struct mlfs_err *err)
{
	if (!idx || !want || !chosen || (idx->n_manifests && !idx->manifests))
		return mlfs_err_set(err, EINVAL, "platform selection: invalid arguments");

	int best_rank = -1;
	size_t best = 0;
	for (size_t i = 0; i < idx->n_manifests; i++) {
		const struct mlfs_descriptor *d = &idx->manifests[i];
		if (!selectable(d))
			continue;
		int r = mlfs_platform_rank(want, &d->platform);
		if (r >= 0 && (best_rank < 0 || r < best_rank)) {
			best_rank = r;
			best = i;
			if (r == 0)
				break;
		}
	}
	if (best_rank >= 0) {
		*chosen = best;
		return 0;
	}

	char wanted[160], have[640];
	struct mlfs_platform w = *want;
	mlfs_platform_normalize(&w);
	mlfs_platform_format(&w, wanted, sizeof wanted);
	list_platforms(idx, have, sizeof have);
	if (!have[0])
		return mlfs_err_set(err, ENOENT,
				    "no matching platform for %s: the image index names no platform",
				    wanted);
	return mlfs_err_set(err, ENOENT,
			    "no matching platform for %s: the image has %s (choose one with --platform, or -o platform= for a mount)", wanted,
			    have);
}
