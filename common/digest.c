#include "common/digest.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/evp.h>

struct mlfs_hasher {
	EVP_MD_CTX *ctx;
};

int mlfs_hasher_new(struct mlfs_hasher **out)
{
	struct mlfs_hasher *h = calloc(1, sizeof *h);
	if (!h)
		return -ENOMEM;
	h->ctx = EVP_MD_CTX_new();
	if (!h->ctx || EVP_DigestInit_ex(h->ctx, EVP_sha256(), NULL) != 1) {
		mlfs_hasher_free(h);
		return -ENOMEM;
	}
	*out = h;
	return 0;
}

int mlfs_hasher_update(struct mlfs_hasher *h, const void *buf, size_t len)
{
	return EVP_DigestUpdate(h->ctx, buf, len) == 1 ? 0 : -EIO;
}

int mlfs_hasher_final(struct mlfs_hasher *h, char out[MLFS_DIGEST_MAX])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int n = 0;
	if (EVP_DigestFinal_ex(h->ctx, md, &n) != 1)
		return -EIO;
	char *p = out + sprintf(out, "sha256:");
	for (unsigned i = 0; i < n; i++)
		p += sprintf(p, "%02x", md[i]);
	return 0;
}

void mlfs_hasher_free(struct mlfs_hasher *h)
{
	if (!h)
		return;
	EVP_MD_CTX_free(h->ctx);
	free(h);
}

int mlfs_digest_validate(const char *digest)
{
	const char *colon = strchr(digest, ':');
	if (!colon || colon == digest)
		return -EINVAL;
	if ((size_t)(colon - digest) != 6 || strncmp(digest, "sha256", 6) != 0) {
		/* algorithm grammar: [a-z0-9]+([+._-][a-z0-9]+)* ; we only speak sha256 */
		for (const char *p = digest; p < colon; p++)
			if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || strchr("+._-", *p)))
				return -EINVAL;
		return -ENOTSUP;
	}
	const char *hex = colon + 1;
	if (strlen(hex) != 64)
		return -EINVAL;
	for (const char *p = hex; *p; p++)
		if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
			return -EINVAL;
	return 0;
}

int mlfs_digest_buf(const void *buf, size_t len, char out[MLFS_DIGEST_MAX])
{
	struct mlfs_hasher *h;
	int r = mlfs_hasher_new(&h);
	if (r < 0)
		return r;
	r = mlfs_hasher_update(h, buf, len);
	if (r == 0)
		r = mlfs_hasher_final(h, out);
	mlfs_hasher_free(h);
	return r;
}
