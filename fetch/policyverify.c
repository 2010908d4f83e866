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
 * what was wrong with the first). */
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
			int g_r = mlfs_lookaside_get(l, digests[k], n, &sig, &len, &e);
			if (g_r == -ENOENT)
				break;
			if (g_r < 0) {
				r = refuse(v, name, d, i, e.msg);
				decided = true;
				break;
			}
			found++;
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
				if (!v->signed_by && !(v->signed_by = strdup(signer)))
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
		if (!found)
			snprintf(msg, sizeof msg, "no signature found (none at %s%s)", url ? url : base,
				 digests[1] ? ", nor for the index" : "");
		else
			snprintf(msg, sizeof msg, "%s%u signature%s accepted: %s", found > 1 ? "none of " : "not the ",
				 found, found > 1 ? "s" : "", first_why);
		r = refuse(v, name, d, i, msg);
	}
	mlfs_gpg_free(g);
	mlfs_lookaside_free(l);
	return r;
}

/* One layer of a .sig manifest: its payload fetched by digest, its
 * signature checked with the keys, then the payload.  0: accepted. */
static int sigstore_layer(struct verify *v, struct mlfs_sigstore_keys *keys, const struct mlfs_policy_req *req,
			  const char *name, const char *digest, const struct mlfs_sig_layer *l, char *signer,
			  size_t signer_len, char *why, size_t why_len)
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
	struct mlfs_fetched f = { 0 };
	int r = mlfs_registry_get_small_blob(v->s->reg, &l->desc, &f, &e);
	if (r < 0) {
		snprintf(why, why_len, "%.400s", e.msg);
		return r == -ENOMEM ? r : -EBADMSG;
	}
	char who[80];
	r = mlfs_sigstore_verify(keys, f.body, f.len, l->signature, who, sizeof who, why, why_len);
	if (r == 0)
		r = check_payload(req, MLFS_SIG_COSIGN, name, digest, f.body, f.len, who, signer, signer_len, why,
				  why_len);
	mlfs_fetched_clear(&f);
	return r;
}

/* sigstoreSigned with keys: the signatures cosign attached in the
 * registry (sigattach.c), where registries.d says to look for them. */
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
	if (v->s->offline || !v->s->reg)
		return refuse(v, name, d, i, "sigstore signatures are attached in the registry, which cannot be "
			      "asked offline (mount without offline)");
	struct mlfs_sigstore_keys *keys = NULL;
	if ((r = mlfs_sigstore_keys_new(&req->keys, &keys, &e)) < 0)
		return refuse(v, name, d, i, e.msg);
	const char *digests[2] = { v->s->manifest_digest, NULL };
	if (v->s->index_digest && *v->s->index_digest && strcmp(v->s->index_digest, v->s->manifest_digest))
		digests[1] = v->s->index_digest;
	char first_why[700] = "", why[512], signer[512], tag[128];
	unsigned found = 0;
	bool decided = false;
	for (int k = 0; k < 2 && digests[k] && !decided; k++) {
		struct mlfs_fetched f = { 0 };
		if (mlfs_sig_tag(digests[k], tag, sizeof tag) < 0)
			continue;
		int g_r = mlfs_registry_get_manifest(v->s->reg, tag, &f, &e);
		if (g_r == -ENOENT)
			continue;
		if (g_r < 0) {
			r = refuse(v, name, d, i, e.msg);
			decided = true;
			break;
		}
		struct mlfs_sig_layer *layers = NULL;
		size_t n = 0;
		g_r = mlfs_sig_manifest_parse(f.body, f.len, &layers, &n, why, sizeof why);
		mlfs_fetched_clear(&f);
		if (g_r < 0) {
			found++;
			if (!*first_why)
				snprintf(first_why, sizeof first_why, "%s: %s", tag, why);
			continue;
		}
		for (size_t j = 0; j < n && !decided; j++) {
			found++;
			g_r = sigstore_layer(v, keys, req, name, digests[k], &layers[j], signer, sizeof signer, why,
					     sizeof why);
			if (g_r == 0) {
				log_debug(MLFS_AREA_FETCH, "%s: %s layer %zu accepted: %s", name, tag, j + 1, signer);
				r = !v->signed_by && !(v->signed_by = strdup(signer))
					    ? mlfs_err_set(v->err, ENOMEM, "out of memory") : 0;
				decided = true;
			} else if (g_r == -ENOMEM) {
				r = mlfs_err_set(v->err, ENOMEM, "out of memory");
				decided = true;
			} else {
				log_debug(MLFS_AREA_FETCH, "%s: %s layer %zu refused: %s", name, tag, j + 1, why);
				if (!*first_why)
					snprintf(first_why, sizeof first_why, "%s layer %zu: %s", tag, j + 1, why);
			}
		}
		mlfs_sig_layers_free(layers, n);
	}
	if (!decided) {
		if (!found)
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
	char *names[2] = { NULL, NULL };
	int r = 0;
	*out = NULL;
	if (ref->tag && asprintf(&names[0], "%s/%s:%s", ref->domain, ref->path, ref->tag) < 0)
		names[0] = NULL, r = -ENOMEM;
	if (r == 0 && ref->digest && asprintf(&names[1], "%s/%s@%s", ref->domain, ref->path, ref->digest) < 0)
		names[1] = NULL, r = -ENOMEM;
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
