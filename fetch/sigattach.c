/* sigstore signatures as cosign stores them in the registry (sigstore/
 * cosign pkg/oci: static/signature.go, remote/signatures.go), and as
 * containers/image reads them with use-sigstore-attachments:
 *
 *   tag  sha256-<hex of the signed manifest's digest>.sig, in the image's repository
 *   an OCI image manifest (containers/image refuses any other type, and so
 *   does policyverify.c) whose layers are the signatures:
 *     { "mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
 *       "digest": "sha256:...", "size": N,         the payload blob (sigpayload.c)
 *       "annotations": { "dev.cosignproject.cosign/signature": BASE64,
 *                        "dev.sigstore.cosign/certificate": PEM?,  (Fulcio)
 *                        "dev.sigstore.cosign/bundle": JSON? ... } }  (Rekor)
 *
 * This file only reads the manifest; the payloads are fetched by digest
 * (so verified) by policyverify.c, and checked by sigstore.c. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cleanup.h"
#include "fetch/internal.h"

int mlfs_sig_tag(const char *digest, char *out, size_t len)
{
	const char *colon = strchr(digest, ':');
	if (!colon)
		return -EINVAL;
	int n = snprintf(out, len, "%.*s-%s.sig", (int)(colon - digest), digest, colon + 1);
	return n > 0 && (size_t)n < len ? 0 : -ENAMETOOLONG;
}

void mlfs_sig_layers_free(struct mlfs_sig_layer *v, size_t n)
{
	for (size_t i = 0; v && i < n; i++) {
		free(v[i].desc.media_type);
		free(v[i].signature);
	}
	free(v);
}

static int parse_layer(json_t *j, size_t i, struct mlfs_sig_layer *l, char *why, size_t why_len)
{
	json_t *mt = json_object_get(j, "mediaType"), *dg = json_object_get(j, "digest"),
	       *size = json_object_get(j, "size"), *ann = json_object_get(j, "annotations");
	if (!json_is_object(j) || !json_is_string(mt) || !json_is_string(dg) || !json_is_integer(size) ||
	    (ann && !json_is_object(ann)))
		return mlfs_why_set(why, why_len, "layer %zu is not a descriptor", i + 1);
	if (mlfs_digest_validate(json_string_value(dg)) < 0)
		return mlfs_why_set(why, why_len, "layer %zu: the digest is not a sha256 digest", i + 1);
	snprintf(l->desc.digest, sizeof l->desc.digest, "%s", json_string_value(dg));
	l->desc.size = json_integer_value(size);
	if (!(l->desc.media_type = strdup(json_string_value(mt))))
		return -ENOMEM;
	json_t *sig = json_object_get(ann, "dev.cosignproject.cosign/signature");
	if (sig && !json_is_string(sig))
		return mlfs_why_set(why, why_len, "layer %zu: the signature annotation is not a string", i + 1);
	if (sig && !(l->signature = strdup(json_string_value(sig))))
		return -ENOMEM;
	l->has_cert = json_object_get(ann, "dev.sigstore.cosign/certificate") != NULL;
	return 0;
}

int mlfs_sig_manifest_parse(const void *buf, size_t len, struct mlfs_sig_layer **out, size_t *n, char *why,
			    size_t why_len)
{
	*out = NULL;
	*n = 0;
	json_error_t je;
	_cleanup_(json_decrefp) json_t *root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &je);
	if (!root)
		return mlfs_why_set(why, why_len, "the .sig manifest is not JSON (line %d: %s)", je.line, je.text);
	json_t *layers = json_object_get(root, "layers");
	if (!json_is_array(layers))
		return mlfs_why_set(why, why_len, "the .sig manifest has no layers");
	size_t count = json_array_size(layers);
	if (count > MLFS_SIG_LAYERS_MAX)
		return mlfs_why_set(why, why_len, "the .sig manifest has %zu layers (at most %d are read)", count,
			       MLFS_SIG_LAYERS_MAX);
	struct mlfs_sig_layer *v = calloc(count ? count : 1, sizeof *v);
	if (!v)
		return -ENOMEM;
	for (size_t i = 0; i < count; i++) {
		int r = parse_layer(json_array_get(layers, i), i, &v[i], why, why_len);
		if (r < 0) {
			mlfs_sig_layers_free(v, count);
			if (r == -ENOMEM)
				mlfs_why_set(why, why_len, "out of memory");
			return r;
		}
	}
	*out = v;
	*n = count;
	return 0;
}
