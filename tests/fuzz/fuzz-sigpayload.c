/* The signed JSON of a signature (fetch/sigpayload.c) on arbitrary bytes,
 * as simple signing and as cosign, and, when it parses, its reference
 * through signedIdentity matching (fetch/sigmatch.c) against itself and
 * a fixed image; the same bytes as a cosign .sig manifest
 * (fetch/sigattach.c).  The contract: a refusal gives a reason and no
 * fields; a success gives the digest and the reference, or layers with
 * valid digests. */
#include <stdlib.h>
#include <string.h>

#include "fetch/internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
	static const enum mlfs_sig_kind kinds[] = { MLFS_SIG_SIMPLE, MLFS_SIG_COSIGN };
	for (size_t k = 0; k < 2; k++) {
		struct mlfs_sig_payload p;
		char why[256] = "";
		int r = mlfs_sig_payload_parse(d, n, kinds[k], &p, why, sizeof why);
		if (r < 0) {
			if (!why[0] || p.digest || p.reference)
				abort();
			continue;
		}
		if (!p.digest || !p.reference)
			abort();
		struct mlfs_policy_identity ids[] = {
			{ .type = MLFS_PRM_MATCH_REPO_DIGEST_OR_EXACT }, { .type = MLFS_PRM_MATCH_EXACT },
			{ .type = MLFS_PRM_MATCH_REPOSITORY },
			{ .type = MLFS_PRM_EXACT_REFERENCE, .reference = p.reference },
			{ .type = MLFS_PRM_EXACT_REPOSITORY, .reference = p.reference },
			{ .type = MLFS_PRM_REMAP_IDENTITY, .prefix = "example.com", .signed_prefix = "docker.io/library" },
		};
		for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
			(void)mlfs_sig_identity_matches(&ids[i], "example.com/app:1", p.reference);
			(void)mlfs_sig_identity_matches(&ids[i], p.reference, p.reference);
		}
		mlfs_sig_payload_clear(&p);
	}
	struct mlfs_sig_layer *layers = NULL;
	size_t n_layers = 0;
	char why[256] = "";
	if (mlfs_sig_manifest_parse(d, n, &layers, &n_layers, why, sizeof why) < 0) {
		if (layers || n_layers || !why[0])
			abort();
		return 0;
	}
	for (size_t i = 0; i < n_layers; i++)
		if (mlfs_digest_validate(layers[i].desc.digest) < 0 || !layers[i].desc.media_type)
			abort();
	mlfs_sig_layers_free(layers, n_layers);
	return 0;
}
