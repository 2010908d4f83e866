/* A policy's signature requirements checked against one image: the one
 * place where a signature is accepted or not.
 *
 * mlfs_policy_check() (policymatch.c) decided from the reference alone;
 * what remains are signedBy requirements, checked here once the manifest
 * to mount is known (image.c calls this before anything of the image is
 * kept in the cache).  For each, as containers/image's prSignedBy:
 *
 *   1. where the signatures are: registries.d's lookaside store for the
 *      image (registriesd.c), signature-1, -2, ... (lookaside.c);
 *   2. each verified by gpg against the policy's keys only (gpg.c);
 *   3. its signed JSON read strictly (sigpayload.c): the digest it signs
 *      must be the manifest's, and the reference it names must be one the
 *      requirement's signedIdentity accepts for this image (sigmatch.c).
 *
 * One signature that passes all three satisfies the requirement.  The
 * digests looked at: the platform's manifest, which is what is mounted
 * (skopeo copy --all --sign-by signs each), and the index it was chosen
 * from (a signature over the index covers the manifests it lists by
 * digest).  A refusal is one line: the image, the policy, the scope and
 * requirement, and what was missing or wrong (with several signatures,
 * what was wrong with the first).
 *
 * Signatures that need the network (an http(s) lookaside store, sigstore
 * attachments) are fetched fresh on every online run, and every one
 * fetched (of the digest a signature was accepted for, read to the end)
 * is handed back (s->keep) for image.c to keep once the image is
 * accepted (sigcache.c).  Offline, those kept bytes are read instead and
 * go through exactly the same checks against today's policy: what is
 * kept is signatures, never a verdict. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cleanup.h"
#include "common/log.h"
#include "fetch/internal.h"

struct verify {
	const struct mlfs_policy *p;
	const struct mlfs_policy_subject *s;
	struct mlfs_registries_d *regd;  /* loaded on first need */
	char *signed_by;                 /* the first signer accepted */
	struct mlfs_err *err;
};

/* "NAME: rejected by policy FILE (SCOPE: REQ): WHAT". */
static int refuse(struct verify *v, const char *name, const struct mlfs_policy_decision *d, size_t i,
		  const char *what)
{
	char scope[300], req[512];
	mlfs_policy_scope_describe(d, scope, sizeof scope);
	mlfs_policy_req_describe(&d->reqs->v[i], req, sizeof req);
	return mlfs_err_set(v->err, EACCES, "%s: rejected by policy %s (%s: %s): %s", name, v->p->path, scope, req,
			    what);
}

/* The signed JSON of a verified signature (by `who`), against the digest
 * and the image: 0 (signer filled) or -EBADMSG with why. */
static int check_payload(const struct mlfs_policy_req *req, enum mlfs_sig_kind kind, const char *name,
			 const char *digest, const void *content, size_t clen, const char *who, char *signer,
			 size_t signer_len, char *why, size_t why_len)
{
	struct mlfs_sig_payload pl;
	char inner[200];
	int r = mlfs_sig_payload_parse(content, clen, kind, &pl, inner, sizeof inner);
	if (r < 0) {
		snprintf(why, why_len, "signed by %s, but its content is not a container signature: %s", who, inner);
		return r == -ENOMEM ? r : -EBADMSG;
	}
	char shown_ref[200], shown_digest[100];
	mlfs_printable(pl.reference, shown_ref, sizeof shown_ref);
	mlfs_printable(pl.digest, shown_digest, sizeof shown_digest);
	if (strcmp(pl.digest, digest)) {
		snprintf(why, why_len, "signed by %s for the manifest %s, not %s", who, shown_digest, digest);
		r = -EBADMSG;
	} else if (!mlfs_sig_identity_matches(&req->identity, name, pl.reference)) {
		snprintf(why, why_len, "signed by %s as \"%s\", which the policy's signedIdentity does not accept "
			 "for %s", who, shown_ref, name);
		r = -EBADMSG;
	} else {
		snprintf(signer, signer_len, "%s as %s (manifest %s)", who, shown_ref, digest);
	}
	mlfs_sig_payload_clear(&pl);
	return r;
}

/* One signature file against one digest: 0 when accepted (who in
 * signer), else why not. */
static int check_one(struct mlfs_gpg *g, const struct mlfs_policy_req *req, const char *name, const char *digest,
		     const void *sig, size_t len, char *signer, size_t signer_len, char *why, size_t why_len)
{
	_cleanup_free_ void *content = NULL;
	size_t clen = 0;
	char fpr[64];
	int r = mlfs_gpg_verify(g, sig, len, &content, &clen, fpr, sizeof fpr, why, why_len);
	if (r < 0)
		return r;
	char who[80];
	snprintf(who, sizeof who, "GPG key %s", fpr);
	return check_payload(req, MLFS_SIG_SIMPLE, name, digest, content, clen, who, signer, signer_len, why, why_len);
}

static int load_registries_d(struct verify *v, const char *name, const struct mlfs_policy_decision *d, size_t i)
{
	struct mlfs_err e = { 0 };
	if (v->regd)
		return 0;
	_cleanup_free_ char *dir = mlfs_registries_d_locate(v->s->registries_d);
	if (!dir)
		return mlfs_err_set(v->err, ENOMEM, "out of memory");
	return mlfs_registries_d_load(dir, &v->regd, &e) < 0 ? refuse(v, name, d, i, e.msg) : 0;
}

/* Whether signatures come from what an online run kept: offline, for
 * stores that are reached over the network. */
static bool from_kept(const struct verify *v, bool remote)
{
	return v->s->offline && remote;
}

/* What an online run kept of digest's signatures from source: an empty
 * entry when nothing (or something damaged) was kept. */
static int load_kept(struct verify *v, enum mlfs_sig_kind kind, const char *digest, const char *source,
		     struct mlfs_sigcache_entry *kept, struct mlfs_err *err)
{
	mlfs_sigcache_entry_clear(kept);
	int r = v->s->cache_dir ? mlfs_sigcache_get(v->s->cache_dir, kind, digest, source, kept) : -ENOENT;
	if (r == -ENOMEM)
		return mlfs_err_set(err, ENOMEM, "out of memory");
	if (r < 0)
		log_debug(MLFS_AREA_FETCH, "no signatures of %s from %s kept in %s: %s", digest, source,
			  v->s->cache_dir ? v->s->cache_dir : "(no cache)", strerror(-r));
	return 0;
}

/* Signature n of digest: from the store, or offline, for a network
 * store, from what was kept (kept loaded when n is 1). */
static int get_signature(struct verify *v, struct mlfs_lookaside *l, const char *base, const char *digest,
			 unsigned n, struct mlfs_sigcache_entry *kept, void **sig, size_t *len, struct mlfs_err *e)
{
	*sig = NULL;
	*len = 0;
	if (!from_kept(v, mlfs_lookaside_remote(l)))
		return mlfs_lookaside_get(l, digest, n, sig, len, e);
	int r = n == 1 ? load_kept(v, MLFS_SIG_SIMPLE, digest, base, kept, e) : 0;
	if (r < 0)
		return r;
	if (n > kept->n)
		return -ENOENT;
	if (!(*sig = malloc(kept->v[n - 1].len ? kept->v[n - 1].len : 1)))
		return mlfs_err_set(e, ENOMEM, "out of memory");
	memcpy(*sig, kept->v[n - 1].data, kept->v[n - 1].len);
	*len = kept->v[n - 1].len;
	return 0;
}

/* The refusal when offline found nothing kept. */
static void none_kept(char *msg, size_t len, const char *name, const char *where)
{
	snprintf(msg, len, "no signature kept for offline use (signatures from %s are kept when they verify "
		 "online: run once online, e.g. mlfs pull %s)", where, name);
}

/* Once one is accepted, the digest's other signatures (from n on) are
 * read only to be kept: offline, a policy that has moved to another
 * signer's key must find what an online run would.  A failure here costs
 * only that (what was kept stays, see mlfs_sig_keep_commit). */
static int keep_rest(struct verify *v, struct mlfs_lookaside *l, const char *base, const char *digest, unsigned n)
{
	for (; n <= MLFS_LOOKASIDE_MAX; n++) {
		struct mlfs_err e = { 0 };
		void *sig = NULL;
		size_t len = 0;
		int r = mlfs_lookaside_get(l, digest, n, &sig, &len, &e);
		if (r == -ENOENT)
			return mlfs_sig_keep_examined(v->s->keep, MLFS_SIG_SIMPLE, digest, base);
		if (r < 0) {
			log_debug(MLFS_AREA_FETCH, "signature-%u of %s not kept: %s", n, digest, e.msg);
			return r == -ENOMEM ? r : 0;
		}
		r = mlfs_sig_keep_fetched(v->s->keep, MLFS_SIG_SIMPLE, digest, base, sig, len, NULL);
		free(sig);
		if (r < 0)
			return r;
	}
	return 0;
}

static int signed_by(struct verify *v, const char *name, const struct mlfs_policy_decision *d, size_t i)
{
	const struct mlfs_policy_req *req = &d->reqs->v[i];
	struct mlfs_err e = { 0 };
	int r = load_registries_d(v, name, d, i);
	if (r < 0)
		return r;
	const char *from = NULL;
	_cleanup_free_ char *base = mlfs_registries_d_lookaside(v->regd, name, v->s->ref->path, &from);
	if (!base)
		return mlfs_err_set(v->err, ENOMEM, "out of memory");
	log_debug(MLFS_AREA_FETCH, "%s: signatures from %s (registries.d %s: %s)", name, base, v->regd->dir, from);
	struct mlfs_lookaside *l = NULL;
	struct mlfs_gpg *g = NULL;
	if ((r = mlfs_lookaside_new(base, v->s->offline, &l, &e)) < 0)
		return refuse(v, name, d, i, e.msg);
	const char *digests[2] = { v->s->manifest_digest, NULL };
	if (v->s->index_digest && *v->s->index_digest && strcmp(v->s->index_digest, v->s->manifest_digest))
		digests[1] = v->s->index_digest;
	char first_why[560] = "", why[512], signer[512], msg[1024];
	unsigned found = 0;
	bool decided = false;            /* r is the answer: accepted, or refused for a reason of its own */
	bool remote = mlfs_lookaside_remote(l);
	bool keeping = remote && !v->s->offline; /* a local store is read offline as it is */
	struct mlfs_sigcache_entry kept = { 0 };
	for (int k = 0; k < 2 && digests[k] && !decided; k++) {
		for (unsigned n = 1;; n++) {
			if (n > MLFS_LOOKASIDE_MAX) {
				snprintf(why, sizeof why, "more than %d signatures for %s", MLFS_LOOKASIDE_MAX, digests[k]);
				r = refuse(v, name, d, i, why);
				decided = true;
				break;
			}
			_cleanup_free_ void *sig = NULL;
			size_t len = 0;
			int g_r = get_signature(v, l, base, digests[k], n, &kept, &sig, &len, &e);
			if (g_r == -ENOENT) {
				/* Read to the end, fresh: what was kept for it is replaced. */
				if (keeping &&
				    mlfs_sig_keep_examined(v->s->keep, MLFS_SIG_SIMPLE, digests[k], base) < 0) {
					r = mlfs_err_set(v->err, ENOMEM, "out of memory");
					decided = true;
				}
				break;
			}
			if (g_r < 0) {
				r = refuse(v, name, d, i, e.msg);
				decided = true;
				break;
			}
			found++;
			if (keeping && mlfs_sig_keep_fetched(v->s->keep, MLFS_SIG_SIMPLE, digests[k], base, sig, len,
							     NULL) < 0) {
				r = mlfs_err_set(v->err, ENOMEM, "out of memory");
				decided = true;
				break;
			}
			/* The keys are read when there is something to check, as in containers/image. */
			if (!g && (g_r = mlfs_gpg_new(&req->keys, &g, &e)) < 0) {
				r = refuse(v, name, d, i, e.msg);
				decided = true;
				break;
			}
			g_r = check_one(g, req, name, digests[k], sig, len, signer, sizeof signer, why, sizeof why);
			if (g_r == 0) {
				log_debug(MLFS_AREA_FETCH, "%s: signature-%u of %s accepted: %s", name, n, digests[k],
					  signer);
				if ((!v->signed_by && !(v->signed_by = strdup(signer))) ||
				    (keeping && keep_rest(v, l, base, digests[k], n + 1) < 0))
					r = mlfs_err_set(v->err, ENOMEM, "out of memory");
				else
					r = 0;
				decided = true;
				break;
			}
			if (g_r == -ENOMEM) {
				r = mlfs_err_set(v->err, ENOMEM, "out of memory");
				decided = true;
				break;
			}
			log_debug(MLFS_AREA_FETCH, "%s: signature-%u of %s refused: %s", name, n, digests[k], why);
			if (!*first_why)
				snprintf(first_why, sizeof first_why, "signature-%u of %s: %s", n, digests[k], why);
		}
	}
	if (!decided) {
		_cleanup_free_ char *url = mlfs_lookaside_url(l, digests[0], 1);
		if (!found && from_kept(v, remote))
			none_kept(msg, sizeof msg, name, base);
		else if (!found)
			snprintf(msg, sizeof msg, "no signature found (none at %s%s)", url ? url : base,
				 digests[1] ? ", nor for the index" : "");
		else
			snprintf(msg, sizeof msg, "%s%u signature%s accepted: %s", found > 1 ? "none of " : "not the ",
				 found, found > 1 ? "s" : "", first_why);
		r = refuse(v, name, d, i, msg);
	}
	mlfs_sigcache_entry_clear(&kept);
	mlfs_gpg_free(g);
	mlfs_lookaside_free(l);
	return r;
}

/* A payload with its signature: checked with the keys, then its content.
 * 0: accepted (signer filled). */
static int cosign_check(struct mlfs_sigstore_keys *keys, const struct mlfs_policy_req *req, const char *name,
			const char *digest, const void *payload, size_t len, const char *b64sig, char *signer,
			size_t signer_len, char *why, size_t why_len)
{
	char who[80];
	int r = mlfs_sigstore_verify(keys, payload, len, b64sig, who, sizeof who, why, why_len);
	if (r == 0)
		r = check_payload(req, MLFS_SIG_COSIGN, name, digest, payload, len, who, signer, signer_len, why,
				  why_len);
	return r;
}

/* One layer of a .sig manifest: its payload fetched by digest (into f)
 * and kept, fresh, for offline use.  -EBADMSG with why: not a signature
 * (nothing to keep); -EIO: not fetched (an error cut the reading short). */
static int sigstore_payload(struct verify *v, const char *digest, const char *source,
			    const struct mlfs_sig_layer *l, struct mlfs_fetched *f, char *why, size_t why_len)
{
	struct mlfs_err e = { 0 };
	if (strcmp(l->desc.media_type, "application/vnd.dev.cosign.simplesigning.v1+json")) {
		snprintf(why, why_len, "not a cosign simple-signing payload");
		return -EBADMSG;
	}
	if (!l->signature) {
		snprintf(why, why_len, "no dev.cosignproject.cosign/signature annotation");
		return -EBADMSG;
	}
	int r = mlfs_registry_get_small_blob(v->s->reg, &l->desc, f, &e);
	if (r < 0) {
		snprintf(why, why_len, "%.400s", e.msg);
		return r == -ENOMEM ? r : -EIO;
	}
	return mlfs_sig_keep_fetched(v->s->keep, MLFS_SIG_COSIGN, digest, source, f->body, f->len, l->signature);
}

/* What a candidate's check (g_r) means for the requirement: decided
 * (accepted, or out of memory) with r set, or the first refusal noted. */
static bool judge(struct verify *v, int g_r, const char *name, const char *what, const char *signer,
		  const char *why, char *first_why, size_t first_why_len, int *r)
{
	if (g_r == 0) {
		log_debug(MLFS_AREA_FETCH, "%s: %s accepted: %s", name, what, signer);
		*r = !v->signed_by && !(v->signed_by = strdup(signer)) ? mlfs_err_set(v->err, ENOMEM, "out of memory")
								       : 0;
		return true;
	}
	if (g_r == -ENOMEM) {
		*r = mlfs_err_set(v->err, ENOMEM, "out of memory");
		return true;
	}
	log_debug(MLFS_AREA_FETCH, "%s: %s refused: %s", name, what, why);
	if (!*first_why)
		snprintf(first_why, first_why_len, "%s: %s", what, why);
	return false;
}

/* Offline: the attachments an online run kept, checked again. */
static bool sigstore_kept(struct verify *v, struct mlfs_sigstore_keys *keys, const struct mlfs_policy_req *req,
			  const char *name, const char *digest, const char *source, unsigned *found, char *first_why,
			  size_t first_why_len, int *r)
{
	struct mlfs_sigcache_entry kept = { 0 };
	struct mlfs_err e = { 0 };
	char why[512], signer[512], what[160];
	bool decided = false;
	if (load_kept(v, MLFS_SIG_COSIGN, digest, source, &kept, &e) < 0) {
		*r = mlfs_err_set(v->err, ENOMEM, "out of memory");
		return true;
	}
	for (size_t j = 0; j < kept.n && !decided; j++) {
		(*found)++;
		int g_r = cosign_check(keys, req, name, digest, kept.v[j].data, kept.v[j].len, kept.v[j].signature,
				       signer, sizeof signer, why, sizeof why);
		snprintf(what, sizeof what, "the kept signature %zu of %s", j + 1, digest);
		decided = judge(v, g_r, name, what, signer, why, first_why, first_why_len, r);
	}
	mlfs_sigcache_entry_clear(&kept);
	return decided;
}

/* sigstoreSigned with keys: the signatures cosign attached in the
 * registry (sigattach.c), where registries.d says to look for them;
 * offline, those an online run kept. */
static int sigstore_signed(struct verify *v, const char *name, const struct mlfs_policy_decision *d, size_t i)
{
	const struct mlfs_policy_req *req = &d->reqs->v[i];
	struct mlfs_err e = { 0 };
	int r = load_registries_d(v, name, d, i);
	if (r < 0)
		return r;
	char msg[1024];
	if (!mlfs_registries_d_attachments(v->regd, name)) {
		snprintf(msg, sizeof msg, "no signature found (sigstore signatures are read from the registry only "
			 "where registries.d says use-sigstore-attachments: true, and %s does not for this image)",
			 v->regd->dir);
		return refuse(v, name, d, i, msg);
	}
	if (!v->s->offline && !v->s->reg)
		return refuse(v, name, d, i, "sigstore signatures are attached in the registry, which is not "
			      "reachable here");
	_cleanup_free_ char *source = NULL;
	if (asprintf(&source, "%s/%s", v->s->ref->domain, v->s->ref->path) < 0)
		return mlfs_err_set(v->err, ENOMEM, "out of memory");
	struct mlfs_sigstore_keys *keys = NULL;
	if ((r = mlfs_sigstore_keys_new(&req->keys, &keys, &e)) < 0)
		return refuse(v, name, d, i, e.msg);
	const char *digests[2] = { v->s->manifest_digest, NULL };
	if (v->s->index_digest && *v->s->index_digest && strcmp(v->s->index_digest, v->s->manifest_digest))
		digests[1] = v->s->index_digest;
	char first_why[700] = "", why[512], signer[512], tag[128], what[200];
	unsigned found = 0;
	bool decided = false;
	for (int k = 0; k < 2 && digests[k] && !decided; k++) {
		struct mlfs_fetched f = { 0 };
		if (mlfs_sig_tag(digests[k], tag, sizeof tag) < 0)
			continue;
		if (v->s->offline) {
			decided = sigstore_kept(v, keys, req, name, digests[k], source, &found, first_why,
						sizeof first_why, &r);
			continue;
		}
		int g_r = mlfs_registry_get_manifest(v->s->reg, tag, &f, &e);
		if (g_r == -ENOENT) {
			/* None there now: what was kept for it goes. */
			if (mlfs_sig_keep_examined(v->s->keep, MLFS_SIG_COSIGN, digests[k], source) < 0) {
				r = mlfs_err_set(v->err, ENOMEM, "out of memory");
				decided = true;
			}
			continue;
		}
		if (g_r < 0) {
			r = refuse(v, name, d, i, e.msg);
			decided = true;
			break;
		}
		struct mlfs_sig_layer *layers = NULL;
		size_t n = 0;
		/* containers/image reads only an OCI one (cosign's default; its
		 * COSIGN_DOCKER_MEDIA_TYPES=1 writes Docker's), and refuses others. */
		if (f.media == MLFS_MEDIA_OCI_MANIFEST)
			g_r = mlfs_sig_manifest_parse(f.body, f.len, &layers, &n, why, sizeof why);
		else
			g_r = mlfs_why_set(why, sizeof why, "the .sig manifest is %s, not an OCI image manifest",
					   *mlfs_media_string(f.media) ? mlfs_media_string(f.media) : "of an unknown type");
		mlfs_fetched_clear(&f);
		if (g_r < 0) {
			found++;
			if (!*first_why)
				snprintf(first_why, sizeof first_why, "%s: %s", tag, why);
		}
		bool whole = true; /* every payload fetched (a .sig that does not parse has none) */
		for (size_t j = 0; g_r == 0 && j < n && !(decided && r < 0); j++) {
			struct mlfs_fetched pf = { 0 };
			int l_r = sigstore_payload(v, digests[k], source, &layers[j], &pf, why, sizeof why);
			if (l_r == -EIO)
				whole = false;
			if (!decided) {
				/* Once one is accepted, the others are only kept (see keep_rest). */
				found++;
				if (l_r == 0)
					l_r = cosign_check(keys, req, name, digests[k], pf.body, pf.len,
							   layers[j].signature, signer, sizeof signer, why, sizeof why);
				snprintf(what, sizeof what, "%s layer %zu", tag, j + 1);
				decided = judge(v, l_r == -EIO ? -EBADMSG : l_r, name, what, signer, why, first_why,
						sizeof first_why, &r);
			} else if (l_r == -ENOMEM) {
				r = mlfs_err_set(v->err, ENOMEM, "out of memory");
			}
			mlfs_fetched_clear(&pf);
		}
		mlfs_sig_layers_free(layers, n);
		if (!(decided && r < 0) && whole &&
		    mlfs_sig_keep_examined(v->s->keep, MLFS_SIG_COSIGN, digests[k], source) < 0) {
			r = mlfs_err_set(v->err, ENOMEM, "out of memory");
			decided = true;
		}
	}
	if (!decided) {
		if (!found && v->s->offline)
			none_kept(msg, sizeof msg, name, source);
		else if (!found)
			snprintf(msg, sizeof msg, "no signature found (no %s.sig in %s/%s%s)", tag, v->s->ref->domain,
				 v->s->ref->path, digests[1] ? ", nor for the index" : "");
		else
			snprintf(msg, sizeof msg, "%s%u signature%s accepted: %s", found > 1 ? "none of " : "not the ",
				 found, found > 1 ? "s" : "", first_why);
		r = refuse(v, name, d, i, msg);
	}
	mlfs_sigstore_keys_free(keys);
	return r;
}

static int verify_name(struct verify *v, const char *name)
{
	struct mlfs_policy_decision d;
	mlfs_policy_decide(v->p, name, &d);
	for (size_t i = 0; i < d.reqs->n; i++) {
		const struct mlfs_policy_req *req = &d.reqs->v[i];
		if (req->type == MLFS_PR_ACCEPT)
			continue;
		if ((req->type != MLFS_PR_SIGNED_BY && req->type != MLFS_PR_SIGSTORE) ||
		    d.verdict != MLFS_POLICY_NEEDS_SIGNATURES)
			/* mlfs_policy_check() refused these already; never accept them here. */
			return refuse(v, name, &d, i, "not accepted");
		int r = req->type == MLFS_PR_SIGNED_BY ? signed_by(v, name, &d, i) : sigstore_signed(v, name, &d, i);
		if (r < 0)
			return r;
	}
	return d.reqs->n ? 0 : mlfs_err_set(v->err, EACCES, "%s: rejected by policy %s", name, v->p->path);
}

int mlfs_policy_verify(const struct mlfs_policy *p, const struct mlfs_policy_subject *s, char **out,
		       struct mlfs_err *err)
{
	struct verify v = { .p = p, .s = s, .err = err };
	const struct mlfs_ref *ref = s->ref;
	char *names[2];
	*out = NULL;
	int r = mlfs_policy_names(ref, names);
	if (r < 0)
		mlfs_err_set(err, ENOMEM, "out of memory");
	for (int i = 0; i < 2 && r == 0; i++)
		if (names[i])
			r = verify_name(&v, names[i]);
	free(names[0]);
	free(names[1]);
	mlfs_registries_d_free(v.regd);
	if (r == 0)
		*out = v.signed_by;
	else
		free(v.signed_by);
	return r;
}
