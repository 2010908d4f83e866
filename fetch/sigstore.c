/* sigstore (cosign) signatures verified with libcrypto, against public
 * keys only.
 *
 * What cosign signs with a key (sigstore/sigstore pkg/signature, the
 * verifier containers/image loads with SHA-256): the payload's bytes,
 * ECDSA (ASN.1 DER signature) or RSA PKCS#1 v1.5 over their SHA-256, or
 * Ed25519 over the bytes themselves; the signature travels base64 in the
 * layer's annotation.  EVP_DigestVerify does each.  The keys come from
 * the policy, one per keyPath, keyPaths entry, keyData or keyDatas entry,
 * read as containers/image reads one (sigstore's cryptoutils.
 * UnmarshalPEMToPublicKey, then Go's crypto/x509): the text's first PEM
 * block only — a second key in a cosign.pub is not a key of the policy —,
 * a "PUBLIC KEY" (cosign.pub) or a PKCS#1 "RSA PUBLIC KEY", and of the
 * kinds Go reads: RSA, Ed25519, or ECDSA on P-224, P-256, P-384 or P-521
 * (a key on another curve, secp256k1 say, verifies nothing there, so
 * here neither).  A signature is good when any of the keys verifies it. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
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

/* Whether containers/image could use the key; why not in why. */
static bool usable(EVP_PKEY *key, char *why, size_t len)
{
	static const char *const curves[] = { "secp224r1", "prime256v1", "secp384r1", "secp521r1", NULL };
	int id = EVP_PKEY_base_id(key);
	if (id == EVP_PKEY_RSA || id == EVP_PKEY_ED25519)
		return true;
	if (id != EVP_PKEY_EC) {
		snprintf(why, len, "is not an ECDSA, RSA or Ed25519 key");
		return false;
	}
	char group[64] = "";
	size_t n = 0;
	if (EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group, &n) == 1)
		for (const char *const *c = curves; *c; c++)
			if (!strcmp(group, *c))
				return true;
	snprintf(why, len, "is an ECDSA key on %s (containers/image reads P-224, P-256, P-384 and P-521 keys)",
		 *group ? group : "a curve without a name");
	return false;
}

/* The first PEM block of a key text: one key. */
static int add_pem(struct mlfs_sigstore_keys *k, const void *buf, size_t len, const char *what, struct mlfs_err *err)
{
	if (k->n == KEYS_MAX)
		return mlfs_err_set(err, E2BIG, "more than %d keys", KEYS_MAX);
	BIO *bio = BIO_new_mem_buf(buf, (int)len);
	if (!bio)
		return mlfs_err_set(err, ENOMEM, "out of memory");
	char *name = NULL, *header = NULL, why[200] = "";
	unsigned char *der = NULL;
	long der_len = 0;
	EVP_PKEY *key = NULL;
	if (PEM_read_bio(bio, &name, &header, &der, &der_len) == 1) {
		const unsigned char *p = der;
		if (!strcmp(name, "PUBLIC KEY"))
			key = d2i_PUBKEY(NULL, &p, der_len);
		else if (!strcmp(name, "RSA PUBLIC KEY"))
			key = d2i_PublicKey(EVP_PKEY_RSA, NULL, &p, der_len);
		else
			snprintf(why, sizeof why, "holds a PEM \"%.40s\" block first, not a public key", name);
		/* Go's parsers refuse bytes after the key: so does this. */
		if (!*why && (!key || p != der + der_len))
			snprintf(why, sizeof why, "holds a PEM public key that does not parse");
		else if (!*why)
			usable(key, why, sizeof why);
	} else {
		snprintf(why, sizeof why, "holds no PEM public key");
	}
	ERR_clear_error();
	OPENSSL_free(name);
	OPENSSL_free(header);
	OPENSSL_free(der);
	BIO_free(bio);
	if (*why) {
		EVP_PKEY_free(key);
		return mlfs_err_set(err, EINVAL, "the key %s %s", what, why);
	}
	key_name(key, k->names[k->n], sizeof k->names[k->n]);
	k->keys[k->n++] = key;
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
	int r = mlfs_base64_decode_blob(b64sig, strlen(b64sig), &sig);
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
