/* Content digests ("sha256:<64 hex>") through OpenSSL's libcrypto. */
#pragma once
#include <stdbool.h>
#include <stddef.h>

#define MLFS_DIGEST_MAX 72 /* "sha256:" + 64 hex + NUL, rounded */

struct mlfs_hasher;

int mlfs_hasher_new(struct mlfs_hasher **out);
int mlfs_hasher_update(struct mlfs_hasher *h, const void *buf, size_t len);
/* Writes "sha256:<hex>" into out; the hasher can not be updated after. */
int mlfs_hasher_final(struct mlfs_hasher *h, char out[MLFS_DIGEST_MAX]);
void mlfs_hasher_free(struct mlfs_hasher *h);

/* "sha256:" + lowercase 64 hex: 0; other algorithms: -ENOTSUP; malformed: -EINVAL. */
int mlfs_digest_validate(const char *digest);
/* Digest of a whole buffer. */
int mlfs_digest_buf(const void *buf, size_t len, char out[MLFS_DIGEST_MAX]);
