/* Signatures kept for offline use.
 *
 * Online, signatures are fetched fresh on every run (a removed signature
 * must take effect at once); offline, the network stores cannot be asked,
 * so what the last online run fetched and verified is kept here:
 *
 *   <cache>/sigs/sha256/<hex>.<kind>-<16 hex of sha256(source)>
 *
 * <hex> is the signed manifest's (or index's) digest, the metadata cache's
 * key, so `mlfs cache rm`/`gc` remove an image's signatures with its
 * manifests; <kind> is "lookaside" (GPG signature-N files; the source is
 * the store's URL for the repository) or "sigstore" (cosign attachments;
 * the source is the repository).  One file holds every signature kept for
 * that digest and source, as JSON, written whole (temp name, fsync,
 * rename), so a fresh fetch replaces the earlier set at once:
 *
 *   {"kind": K, "digest": D, "source": S,
 *    "signatures": [{"data": BASE64, "signature": B64SIG?}, ...]}
 *
 * data is the signature file (lookaside) or the payload (sigstore, whose
 * signature is the annotation's base64 string).  Every signature fetched
 * for the digest that was accepted is written, verified or not, and only
 * once the image is accepted (image.c): offline then judges the same set
 * an online run would, even under a policy that names another key.  What
 * is read back is only bytes: it is verified again against the policy of
 * the day, never trusted for an earlier verdict.  kind, digest
 * and source are checked on reading, so a file is never used for another
 * image or store. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <openssl/evp.h>

#include "common/cleanup.h"
#include "common/grow.h"
#include "fetch/internal.h"

static const char *kind_name(enum mlfs_sig_kind kind)
{
	return kind == MLFS_SIG_SIMPLE ? "lookaside" : "sigstore";
}

char *mlfs_sigcache_path(const char *cache_dir, enum mlfs_sig_kind kind, const char *digest, const char *source)
{
	char sd[MLFS_DIGEST_MAX], *p = NULL;
	if (mlfs_digest_validate(digest) < 0 || mlfs_digest_buf(source, strlen(source), sd) < 0)
		return NULL;
	if (asprintf(&p, "%s/sigs/sha256/%s.%s-%.16s", cache_dir, digest + strlen("sha256:"), kind_name(kind),
		     sd + strlen("sha256:")) < 0)
		return NULL;
	return p;
}

void mlfs_sigcache_entry_clear(struct mlfs_sigcache_entry *e)
{
	for (size_t i = 0; e->v && i < e->n; i++) {
		free(e->v[i].data);
		free(e->v[i].signature);
	}
	free(e->v);
	free(e->source);
	memset(e, 0, sizeof *e);
}

int mlfs_sigcache_entry_add(struct mlfs_sigcache_entry *e, const void *data, size_t len, const char *signature)
{
	for (size_t i = 0; i < e->n; i++)
		if (e->v[i].len == len && !memcmp(e->v[i].data, data, len) &&
		    !e->v[i].signature == !signature && (!signature || !strcmp(e->v[i].signature, signature)))
			return 0; /* accepted for two requirements or names: kept once */
	if (e->n >= MLFS_LOOKASIDE_MAX)
		return 0;
	if (mlfs_grow((void **)&e->v, &e->cap, e->n + 1, sizeof *e->v, 4, MLFS_LOOKASIDE_MAX) < 0)
		return -ENOMEM;
	struct mlfs_cached_sig *s = &e->v[e->n];
	memset(s, 0, sizeof *s);
	if (!(s->data = malloc(len ? len : 1)) || (signature && !(s->signature = strdup(signature)))) {
		free(s->data);
		return -ENOMEM;
	}
	memcpy(s->data, data, len);
	s->len = len;
	e->n++;
	return 0;
}

int mlfs_sigcache_encode(const struct mlfs_sigcache_entry *e, char **out, size_t *len)
{
	*out = NULL;
	_cleanup_(json_decrefp) json_t *root = json_pack("{s:s, s:s, s:s, s:[]}", "kind", kind_name(e->kind), "digest",
							 e->digest, "source", e->source, "signatures");
	if (!root)
		return -ENOMEM;
	json_t *arr = json_object_get(root, "signatures");
	for (size_t i = 0; i < e->n; i++) {
		const struct mlfs_cached_sig *s = &e->v[i];
		if (s->len > MLFS_SIGNATURE_MAX)
			return -EFBIG;
		_cleanup_free_ char *b64 = malloc(4 * ((s->len + 2) / 3) + 1);
		if (!b64)
			return -ENOMEM;
		EVP_EncodeBlock((unsigned char *)b64, s->data, (int)s->len);
		json_t *o = json_pack("{s:s}", "data", b64);
		if (!o || (s->signature && json_object_set_new(o, "signature", json_string(s->signature)) < 0) ||
		    json_array_append_new(arr, o) < 0)
			return -ENOMEM;
	}
	if (!(*out = json_dumps(root, JSON_COMPACT)))
		return -ENOMEM;
	*len = strlen(*out);
	return 0;
}

int mlfs_sigcache_decode(const void *buf, size_t len, enum mlfs_sig_kind kind, const char *digest,
			 const char *source, struct mlfs_sigcache_entry *out)
{
	memset(out, 0, sizeof *out);
	json_error_t je;
	_cleanup_(json_decrefp) json_t *root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &je);
	const char *k, *d, *s;
	json_t *sigs;
	if (!root || json_unpack_ex(root, &je, JSON_STRICT, "{s:s, s:s, s:s, s:o}", "kind", &k, "digest", &d,
				    "source", &s, "signatures", &sigs) < 0 ||
	    !json_is_array(sigs) || json_array_size(sigs) > MLFS_LOOKASIDE_MAX)
		return -EBADMSG;
	if (strcmp(k, kind_name(kind)) || strcmp(d, digest) || strcmp(s, source))
		return -EBADMSG; /* another image's or store's: never used for this one */
	out->kind = kind;
	snprintf(out->digest, sizeof out->digest, "%s", digest);
	if (!(out->source = strdup(source)))
		return -ENOMEM;
	size_t i;
	json_t *v;
	json_array_foreach(sigs, i, v) {
		const char *data, *sig = NULL;
		size_t data_len;
		if (json_unpack_ex(v, &je, JSON_STRICT, "{s:s%, s?s}", "data", &data, &data_len, "signature", &sig) <
			    0 ||
		    (kind == MLFS_SIG_COSIGN) != (sig != NULL)) {
			mlfs_sigcache_entry_clear(out);
			return -EBADMSG;
		}
		struct mlfs_policy_blob b = { 0 };
		int r = mlfs_base64_decode_blob(data, data_len, &b);
		if (r == 0 && b.len > MLFS_SIGNATURE_MAX)
			r = -EBADMSG;
		if (r == 0)
			r = mlfs_sigcache_entry_add(out, b.data, b.len, sig);
		free(b.data);
		if (r < 0) {
			mlfs_sigcache_entry_clear(out);
			return r == -ENOMEM ? r : -EBADMSG;
		}
	}
	return 0;
}

int mlfs_sigcache_get(const char *cache_dir, enum mlfs_sig_kind kind, const char *digest, const char *source,
		      struct mlfs_sigcache_entry *out)
{
	memset(out, 0, sizeof *out);
	_cleanup_free_ char *path = mlfs_sigcache_path(cache_dir, kind, digest, source), *buf = NULL;
	size_t len;
	if (!path)
		return -EINVAL;
	/* At most MLFS_LOOKASIDE_MAX signatures of MLFS_SIGNATURE_MAX, in base64: far above any real set. */
	int r = mlfs_cache_read_small(path, 64u << 20, &buf, &len);
	if (r < 0)
		return r;
	r = mlfs_sigcache_decode(buf, len, kind, digest, source, out);
	if (r == -EBADMSG)
		unlink(path); /* damaged: gone, so the refusal says to fetch them again */
	return r;
}

int mlfs_sigcache_put(const char *cache_dir, const struct mlfs_sigcache_entry *e)
{
	_cleanup_free_ char *path = mlfs_sigcache_path(cache_dir, e->kind, e->digest, e->source), *buf = NULL;
	size_t len;
	if (!path)
		return -EINVAL;
	if (!e->n)
		return unlink(path) < 0 && errno != ENOENT ? -errno : 0;
	int r = mlfs_sigcache_encode(e, &buf, &len);
	return r < 0 ? r : mlfs_cache_write_atomic(path, buf, len);
}

/* Calls fn on every kept file of `digest` (every one when NULL). */
static int each_file(const char *cache_dir, const char *digest, int (*fn)(const char *path, void *priv),
		     void *priv)
{
	_cleanup_free_ char *dir = NULL;
	if ((digest && mlfs_digest_validate(digest) < 0) || asprintf(&dir, "%s/sigs/sha256", cache_dir) < 0)
		return -EINVAL;
	DIR *d = opendir(dir);
	if (!d)
		return errno == ENOENT ? 0 : -errno;
	const char *hex = digest ? digest + strlen("sha256:") : NULL;
	size_t hex_len = hex ? strlen(hex) : 0;
	int r = 0, count = 0;
	struct dirent *de;
	while (r >= 0 && (de = readdir(d))) {
		if (de->d_name[0] == '.' || strstr(de->d_name, ".tmp."))
			continue; /* a write in progress is the writer's */
		if (hex && (strncmp(de->d_name, hex, hex_len) || de->d_name[hex_len] != '.'))
			continue;
		_cleanup_free_ char *path = NULL;
		if (asprintf(&path, "%s/%s", dir, de->d_name) < 0)
			r = -ENOMEM;
		else if ((r = fn(path, priv)) > 0)
			count += r;
	}
	closedir(d);
	return r < 0 ? r : count;
}

static int unlink_one(const char *path, void *priv)
{
	(void)priv;
	return unlink(path) == 0 ? 1 : errno == ENOENT ? 0 : -errno;
}

int mlfs_sigcache_drop(const char *cache_dir, const char *digest)
{
	return each_file(cache_dir, digest, unlink_one, NULL);
}

/* A kept file whose signed manifest the metadata cache no longer has. */
static int unlink_orphan(const char *path, void *priv)
{
	const char *cache_dir = priv, *base = strrchr(path, '/') + 1, *dot = strchr(base, '.');
	_cleanup_free_ char *digest = NULL, *meta = NULL;
	if (!dot || asprintf(&digest, "sha256:%.*s", (int)(dot - base), base) < 0)
		return 0;
	if (!(meta = mlfs_metacache_path(cache_dir, digest)) || access(meta, F_OK) == 0 || errno != ENOENT)
		return 0;
	return unlink_one(path, NULL);
}

int mlfs_sigcache_sweep(const char *cache_dir)
{
	return each_file(cache_dir, NULL, unlink_orphan, (void *)cache_dir);
}

/* ---- for `mlfs cache` ------------------------------------------------------ */

/* One file on its own: its content must name the digest, kind and source
 * its name was made from, and decode.  The number of signatures, or
 * -EBADMSG with why. */
static int check_file(const char *path, const char **why)
{
	_cleanup_free_ char *buf = NULL, *expect = NULL;
	size_t len;
	int r = mlfs_cache_read_small(path, 64u << 20, &buf, &len);
	if (r < 0) {
		*why = r == -EFBIG ? "too large" : "unreadable";
		return r == -EFBIG ? -EBADMSG : r;
	}
	_cleanup_(json_decrefp) json_t *root = json_loadb(buf, len, 0, NULL);
	const char *k = json_string_value(json_object_get(root, "kind"));
	const char *d = json_string_value(json_object_get(root, "digest"));
	const char *s = json_string_value(json_object_get(root, "source"));
	enum mlfs_sig_kind kind = k && !strcmp(k, "lookaside") ? MLFS_SIG_SIMPLE : MLFS_SIG_COSIGN;
	if (!k || !d || !s || (strcmp(k, "lookaside") && strcmp(k, "sigstore"))) {
		*why = "not a file of kept signatures";
		return -EBADMSG;
	}
	const char *base = strrchr(path, '/');
	if (!(expect = mlfs_sigcache_path("", kind, d, s)) || strcmp(strrchr(expect, '/'), base)) {
		*why = "its name does not match its content";
		return -EBADMSG;
	}
	struct mlfs_sigcache_entry e;
	if ((r = mlfs_sigcache_decode(buf, len, kind, d, s, &e)) < 0) {
		*why = "malformed";
		return r == -ENOMEM ? r : -EBADMSG;
	}
	r = (int)e.n;
	mlfs_sigcache_entry_clear(&e);
	return r;
}

struct count {
	int n;
};

static int count_one(const char *path, void *priv)
{
	const char *why;
	int r = check_file(path, &why);
	if (r > 0)
		((struct count *)priv)->n += r;
	return 0;
}

int mlfs_sigcache_count(const char *cache_dir, const char *digest)
{
	struct count c = { 0 };
	int r = each_file(cache_dir, digest, count_one, &c);
	return r < 0 ? r : c.n;
}

struct verify_walk {
	void (*report)(void *priv, const char *path, const char *why);
	void *priv;
	size_t good, bad;
};

static int verify_one(const char *path, void *priv)
{
	struct verify_walk *w = priv;
	const char *why = NULL;
	int r = check_file(path, &why);
	if (r == -ENOMEM)
		return r;
	if (r >= 0) {
		w->good++;
		return 0;
	}
	w->bad++;
	if (r != -EBADMSG)
		why = strerror(-r);
	else if (unlink(path) < 0 && errno != ENOENT)
		why = "damaged, and cannot be removed";
	w->report(w->priv, path, why);
	return 0;
}

int mlfs_sigcache_verify(const char *cache_dir, void (*report)(void *priv, const char *path, const char *why),
			 void *priv, size_t *good, size_t *bad)
{
	struct verify_walk w = { .report = report, .priv = priv };
	int r = each_file(cache_dir, NULL, verify_one, &w);
	*good = w.good;
	*bad = w.bad;
	return r < 0 ? r : 0;
}

/* ---- what one verification kept ------------------------------------------ */

static struct mlfs_sigcache_entry *keep_entry(struct mlfs_sig_keep *k, enum mlfs_sig_kind kind, const char *digest,
					      const char *source)
{
	for (size_t i = 0; i < k->n; i++)
		if (k->v[i].kind == kind && !strcmp(k->v[i].digest, digest) && !strcmp(k->v[i].source, source))
			return &k->v[i];
	if (mlfs_grow((void **)&k->v, &k->cap, k->n + 1, sizeof *k->v, 4, SIZE_MAX) < 0)
		return NULL;
	struct mlfs_sigcache_entry *e = &k->v[k->n];
	memset(e, 0, sizeof *e);
	e->kind = kind;
	snprintf(e->digest, sizeof e->digest, "%s", digest);
	if (!(e->source = strdup(source)))
		return NULL;
	k->n++;
	return e;
}

int mlfs_sig_keep_examined(struct mlfs_sig_keep *k, enum mlfs_sig_kind kind, const char *digest, const char *source)
{
	if (!k)
		return 0;
	struct mlfs_sigcache_entry *e = keep_entry(k, kind, digest, source);
	if (!e)
		return -ENOMEM;
	e->complete = true;
	return 0;
}

int mlfs_sig_keep_fetched(struct mlfs_sig_keep *k, enum mlfs_sig_kind kind, const char *digest, const char *source,
			   const void *data, size_t len, const char *signature)
{
	if (!k)
		return 0;
	struct mlfs_sigcache_entry *e = keep_entry(k, kind, digest, source);
	return e ? mlfs_sigcache_entry_add(e, data, len, signature) : -ENOMEM;
}

int mlfs_sig_keep_commit(const char *cache_dir, const struct mlfs_sig_keep *k, bool accepted)
{
	int failed = 0;
	for (size_t i = 0; i < k->n; i++) {
		const struct mlfs_sigcache_entry *e = &k->v[i];
		if (accepted) {
			if (mlfs_sigcache_put(cache_dir, e) < 0)
				failed++;
			continue;
		}
		if (!e->complete)
			continue;
		_cleanup_free_ char *path = mlfs_sigcache_path(cache_dir, e->kind, e->digest, e->source);
		if (!path || (unlink(path) < 0 && errno != ENOENT))
			failed++;
	}
	return failed ? -EIO : 0;
}

void mlfs_sig_keep_clear(struct mlfs_sig_keep *k)
{
	for (size_t i = 0; i < k->n; i++)
		mlfs_sigcache_entry_clear(&k->v[i]);
	free(k->v);
	memset(k, 0, sizeof *k);
}
