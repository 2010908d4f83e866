/* sigstore (cosign) signatures verified with libcrypto, against public
 * keys only.
 *
 * What cosign signs with a key (sigstore/sigstore pkg/signature, the
 * verifier containers/image loads with SHA-256): the payload's bytes,
 * ECDSA (ASN.1 DER signature) or RSA PKCS#1 v1.5 over their SHA-256, or
 * Ed25519 over the bytes themselves; the signature travels base64 in the
 * layer's annotation.  EVP_DigestVerify does each.  The keys come from
 * the policy as PEM "PUBLIC KEY" blocks (cosign.pub).  A signature is
 * good when any of them verifies it. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "common/cleanup.h"
#include "common/readfile.h"
#include "fetch/internal.h"

#define KEY_FILE_MAX (1u << 20)
#define KEYS_MAX 64

struct mlfs_sigstore_keys {
	size_t n;
	EVP_PKEY *keys[KEYS_MAX];
	char names[KEYS_MAX][40];        /* "sha256:" + 16 hex of the key (SubjectPublicKeyInfo) */
};

void mlfs_sigstore_keys_free(struct mlfs_sigstore_keys *k)
{
	if (!k)
		return;
	for (size_t i = 0; i < k->n; i++)
		EVP_PKEY_free(k->keys[i]);
	free(k);
}

static void key_name(EVP_PKEY *key, char *out, size_t len)
{
	unsigned char *der = NULL;
	int n = i2d_PUBKEY(key, &der);
	char digest[MLFS_DIGEST_MAX] = "";
	if (n > 0)
		mlfs_digest_buf(der, (size_t)n, digest);
	OPENSSL_free(der);
	snprintf(out, len, "%.23s", digest);
}

/* Every PUBLIC KEY block of a PEM text. */
static int add_pem(struct mlfs_sigstore_keys *k, const void *buf, size_t len, const char *what, struct mlfs_err *err)
{
	BIO *bio = BIO_new_mem_buf(buf, (int)len);
	if (!bio)
		return mlfs_err_set(err, ENOMEM, "out of memory");
	size_t before = k->n;
	EVP_PKEY *key;
	while (k->n < KEYS_MAX && (key = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL))) {
		key_name(key, k->names[k->n], sizeof k->names[k->n]);
		k->keys[k->n++] = key;
	}
	ERR_clear_error(); /* the end of the text reads as an error */
	BIO_free(bio);
	if (k->n == before)
		return mlfs_err_set(err, EINVAL, "the key %s holds no PEM public key", what);
	return 0;
}

int mlfs_key_file_read(const char *path, size_t max, char **buf, size_t *len, struct mlfs_err *err)
{
	/* Read to the end, not a stat()ed size: a key path may be a pipe (<(...)). */
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return mlfs_err_set(err, errno, "cannot read the key %s: %s", path, strerror(errno));
	int r = mlfs_read_whole(fd, max, buf, len);
	if (r == -ENOMEM)
		return mlfs_err_set(err, ENOMEM, "out of memory");
	if (r < 0)
		return mlfs_err_set(err, EIO, "cannot read the key %s (larger than %zu MiB?)", path, max >> 20);
	return 0;
}

static int add_file(struct mlfs_sigstore_keys *k, const char *path, struct mlfs_err *err)
{
	_cleanup_free_ char *buf = NULL;
	size_t n;
	int r = mlfs_key_file_read(path, KEY_FILE_MAX, &buf, &n, err);
	return r < 0 ? r : add_pem(k, buf, n, path, err);
}

int mlfs_sigstore_keys_new(const struct mlfs_policy_keys *keys, struct mlfs_sigstore_keys **out,
			   struct mlfs_err *err)
{
	*out = NULL;
	struct mlfs_sigstore_keys *k = calloc(1, sizeof *k);
	if (!k)
		return mlfs_err_set(err, ENOMEM, "out of memory");
	int r = 0;
	for (size_t i = 0; r == 0 && i < keys->n; i++)
		r = keys->paths ? add_file(k, keys->paths[i], err)
				: add_pem(k, keys->datas[i].data, keys->datas[i].len, "keyData", err);
	if (r == 0 && !k->n)
		r = mlfs_err_set(err, EINVAL, "the policy names no public key");
	if (r < 0) {
		mlfs_sigstore_keys_free(k);
		return r;
	}
	*out = k;
	return 0;
}

static bool verify_one(EVP_PKEY *key, const void *payload, size_t len, const unsigned char *sig, size_t sig_len)
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	int id = EVP_PKEY_base_id(key);
	/* Ed25519 signs the message itself; the others its SHA-256. */
	const EVP_MD *md = id == EVP_PKEY_ED25519 ? NULL : EVP_sha256();
	bool ok = ctx && (id == EVP_PKEY_EC || id == EVP_PKEY_RSA || id == EVP_PKEY_ED25519) &&
		  EVP_DigestVerifyInit(ctx, NULL, md, NULL, key) == 1 &&
		  EVP_DigestVerify(ctx, sig, sig_len, payload, len) == 1;
	EVP_MD_CTX_free(ctx);
	ERR_clear_error();
	return ok;
}

int mlfs_sigstore_verify(const struct mlfs_sigstore_keys *k, const void *payload, size_t len, const char *b64sig,
			 char *who, size_t who_len, char *why, size_t why_len)
{
	struct mlfs_policy_blob sig = { 0 };
	int r = mlfs_base64_decode(b64sig, strlen(b64sig), &sig);
	if (r == -ENOMEM) {
		snprintf(why, why_len, "out of memory");
		return r;
	}
	if (r < 0 || !sig.len) {
		free(sig.data);
		snprintf(why, why_len, "the signature annotation is not base64");
		return -EBADMSG;
	}
	r = -EBADMSG;
	for (size_t i = 0; i < k->n && r < 0; i++)
		if (verify_one(k->keys[i], payload, len, sig.data, sig.len)) {
			snprintf(who, who_len, "sigstore key %s", k->names[i]);
			r = 0;
		}
	if (r < 0)
		snprintf(why, why_len, "the signature does not verify with the policy's key%s", k->n > 1 ? "s" : "");
	free(sig.data);
	return r;
}
