/* Which requirements of a policy apply to an image, and what they decide.
 *
 * Scopes of the docker transport, as containers/image looks them up
 * (signature/policy_eval.go requirementsForImageRef,
 * docker/policyconfiguration/naming.go), first match wins:
 *
 *   1. the reference itself:  "127.0.0.1:5000/ns/demo:latest"
 *                             or "127.0.0.1:5000/ns/demo@sha256:..."
 *   2. the repository, then each parent namespace, then the host[:port]:
 *                             "127.0.0.1:5000/ns/demo", "127.0.0.1:5000/ns",
 *                             "127.0.0.1:5000"
 *   3. wildcards of the host without its port, longest first:
 *                             "*.example.com", "*.com" for registry.example.com
 *                             (an IP address gets "*.0.0.1", "*.0.1", "*.1":
 *                             containers/image does not tell them apart)
 *   4. the transport's ""     transports.docker[""]
 *   5. the top-level "default".
 *
 * Names are the canonical ones (fetch/ref.c): "busybox" is looked up as
 * "docker.io/library/busybox:latest", then "docker.io/library/busybox",
 * "docker.io/library", "docker.io", "*.io" — never as "busybox" or
 * "library".  Matching is on exact strings: a scope written "busybox"
 * never matches anything, in containers/image as here.
 *
 * Every requirement of the chosen scope must hold (AND), and the first
 * that does not is the one reported, as in IsRunningImageAllowed.  What
 * the reference alone decides is decided here, before any request; a
 * signedBy requirement is then checked against the image's signatures
 * (policyverify.c), and so is a sigstoreSigned one with public keys.
 * What cannot be verified (signedBy on a build without gpgme; Fulcio,
 * Rekor and pki; signedBaseLayer) refuses the image: fail closed, never
 * accept unchecked. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "fetch/internal.h"

int mlfs_policy_scopes_walk(const char *identity, int (*fn)(void *priv, const char *scope, size_t len), void *priv)
{
	int r = fn(priv, identity, strlen(identity));
	if (r)
		return r;
	/* The name: before the digest, or before the tag's ':' after the last '/'. */
	const char *slash = strchr(identity, '/');
	const char *last_slash = strrchr(identity, '/');
	const char *end = strchr(identity, '@');
	if (!end && last_slash)
		end = strchr(last_slash, ':');
	size_t len = end ? (size_t)(end - identity) : strlen(identity);
	size_t domain_len = slash ? (size_t)(slash - identity) : len;
	for (;;) {
		if ((r = fn(priv, identity, len)))
			return r;
		const char *up = memrchr(identity, '/', len);
		if (!up)
			break;
		len = (size_t)(up - identity);
	}
	const char *colon = memchr(identity, ':', domain_len);
	size_t host_len = colon ? (size_t)(colon - identity) : domain_len;
	for (const char *dot = memchr(identity, '.', host_len); dot;
	     dot = memchr(dot + 1, '.', host_len - (size_t)(dot + 1 - identity))) {
		char wild[300];
		int n = snprintf(wild, sizeof wild, "*.%.*s", (int)(host_len - (size_t)(dot + 1 - identity)), dot + 1);
		if (n > 0 && (size_t)n < sizeof wild && (r = fn(priv, wild, (size_t)n)))
			return r;
	}
	return 0;
}

struct scope_find {
	const struct mlfs_policy_transport *t;
	const struct mlfs_policy_reqs *reqs;
	const char *scope;
};

static int scope_reqs(void *priv, const char *name, size_t len)
{
	struct scope_find *f = priv;
	for (size_t i = 0; i < f->t->n_scopes; i++)
		if (strlen(f->t->scopes[i].name) == len && !memcmp(f->t->scopes[i].name, name, len)) {
			f->scope = f->t->scopes[i].name;
			f->reqs = &f->t->scopes[i].reqs;
			return 1;
		}
	return 0;
}

static const struct mlfs_policy_reqs *find_reqs(const struct mlfs_policy *p, const char *identity,
						const char **scope)
{
	struct scope_find f = { 0 };
	for (size_t i = 0; i < p->n_transports && !f.t; i++)
		if (!strcmp(p->transports[i].name, "docker"))
			f.t = &p->transports[i];
	*scope = NULL;
	if (!f.t)
		return &p->def;
	if (mlfs_policy_scopes_walk(identity, scope_reqs, &f) || scope_reqs(&f, "", 0)) {
		*scope = f.scope;
		return f.reqs;
	}
	return &p->def;
}

static enum mlfs_policy_verdict req_verdict(const struct mlfs_policy_req *r)
{
	switch (r->type) {
	case MLFS_PR_ACCEPT:
		return MLFS_POLICY_ACCEPT;
	case MLFS_PR_REJECT:
		return MLFS_POLICY_REJECT;
	case MLFS_PR_SIGNED_BY:
		if (strcmp(r->key_type, "GPGKeys") || !mlfs_gpg_available())
			return MLFS_POLICY_UNSUPPORTED;
		return MLFS_POLICY_NEEDS_SIGNATURES;
	case MLFS_PR_SIGSTORE:
		if (r->has_fulcio || r->has_pki || r->rekor_keys.kind != MLFS_KEYS_NONE)
			return MLFS_POLICY_UNSUPPORTED;
		return MLFS_POLICY_NEEDS_SIGNATURES;
	case MLFS_PR_BASE_LAYER:
		break;
	}
	return MLFS_POLICY_UNSUPPORTED;
}

void mlfs_policy_decide(const struct mlfs_policy *p, const char *identity, struct mlfs_policy_decision *out)
{
	memset(out, 0, sizeof *out);
	out->reqs = find_reqs(p, identity, &out->scope);
	/* A refusal anywhere in the list wins over signatures still to check. */
	bool needs = false;
	for (size_t i = 0; i < out->reqs->n; i++) {
		enum mlfs_policy_verdict v = req_verdict(&out->reqs->v[i]);
		if (v == MLFS_POLICY_NEEDS_SIGNATURES && !needs) {
			needs = true;
			out->req = i;
		} else if (v == MLFS_POLICY_REJECT || v == MLFS_POLICY_UNSUPPORTED) {
			out->verdict = v;
			out->req = i;
			return;
		}
	}
	if (needs)
		out->verdict = MLFS_POLICY_NEEDS_SIGNATURES;
	else
		out->verdict = out->reqs->n ? MLFS_POLICY_ACCEPT : MLFS_POLICY_REJECT; /* an empty list: refuse */
}

static const char *keys_describe(const struct mlfs_policy_keys *k, const char *prefix, char *buf, size_t len)
{
	switch (k->kind) {
	case MLFS_KEYS_NONE:
		snprintf(buf, len, "%s", "");
		break;
	case MLFS_KEYS_PATH:
		snprintf(buf, len, " %sPath %s", prefix, k->paths[0]);
		break;
	case MLFS_KEYS_PATHS:
		snprintf(buf, len, " %sPaths %s%s", prefix, k->paths[0], k->n > 1 ? ",..." : "");
		break;
	case MLFS_KEYS_DATA:
		snprintf(buf, len, " %sData", prefix);
		break;
	case MLFS_KEYS_DATAS:
		snprintf(buf, len, " %sDatas (%zu)", prefix, k->n);
		break;
	}
	return buf;
}

void mlfs_policy_req_describe(const struct mlfs_policy_req *r, char *buf, size_t len)
{
	char keys[256];
	switch (r->type) {
	case MLFS_PR_ACCEPT:
		snprintf(buf, len, "insecureAcceptAnything");
		break;
	case MLFS_PR_REJECT:
		snprintf(buf, len, "reject");
		break;
	case MLFS_PR_SIGNED_BY:
		snprintf(buf, len, "signedBy %s%s", r->key_type, keys_describe(&r->keys, "key", keys, sizeof keys));
		break;
	case MLFS_PR_SIGSTORE:
		if (r->has_fulcio)
			snprintf(buf, len, "sigstoreSigned fulcio %s", r->fulcio_oidc_issuer);
		else if (r->has_pki)
			snprintf(buf, len, "sigstoreSigned pki");
		else
			snprintf(buf, len, "sigstoreSigned%s%s", keys_describe(&r->keys, "key", keys, sizeof keys),
				 r->rekor_keys.kind != MLFS_KEYS_NONE ? " with rekorPublicKey" : "");
		break;
	case MLFS_PR_BASE_LAYER:
		snprintf(buf, len, "signedBaseLayer");
		break;
	}
}

void mlfs_policy_scope_describe(const struct mlfs_policy_decision *d, char *buf, size_t len)
{
	if (d->scope && *d->scope)
		snprintf(buf, len, "scope \"%s\"", d->scope);
	else
		snprintf(buf, len, "%s", d->scope ? "scope \"\" of transport docker" : "default");
}

/* What to say, after "(scope ...: requirement)", for a refusal. */
static const char *why(const struct mlfs_policy_decision *d)
{
	const struct mlfs_policy_req *r = &d->reqs->v[d->req];
	if (r->type == MLFS_PR_BASE_LAYER)
		return "signedBaseLayer is not implemented (by containers/image either)";
	if (r->type == MLFS_PR_SIGNED_BY && strcmp(r->key_type, "GPGKeys"))
		return "only keyType GPGKeys can be verified (containers/image does not implement the others either)";
	if (r->type == MLFS_PR_SIGNED_BY)
		return "this mlfs was built without OpenPGP support (gpgme): rebuild it with -Dgpgme=enabled, "
		       "or use a policy that accepts this image";
	if (r->has_fulcio || r->rekor_keys.kind != MLFS_KEYS_NONE)
		return "Fulcio certificates and Rekor entries are not supported yet";
	return "pki certificates are not supported yet";
}

static int check_identity(const struct mlfs_policy *p, const char *identity, struct mlfs_err *err)
{
	struct mlfs_policy_decision d;
	mlfs_policy_decide(p, identity, &d);
	char scope[300], req[512];
	mlfs_policy_scope_describe(&d, scope, sizeof scope);
	if (d.verdict == MLFS_POLICY_ACCEPT) {
		log_debug(MLFS_AREA_FETCH, "policy %s accepts %s (%s)", p->path, identity, scope);
		return 0;
	}
	if (d.verdict == MLFS_POLICY_NEEDS_SIGNATURES) {
		log_debug(MLFS_AREA_FETCH, "policy %s: %s needs signatures (%s)", p->path, identity, scope);
		return 1;
	}
	if (!d.reqs->n)
		return mlfs_err_set(err, EACCES, "%s: rejected by policy %s (%s: no requirement)", identity, p->path,
				    scope);
	mlfs_policy_req_describe(&d.reqs->v[d.req], req, sizeof req);
	if (d.verdict == MLFS_POLICY_REJECT)
		return mlfs_err_set(err, EACCES, "%s: rejected by policy %s (%s: %s)", identity, p->path, scope, req);
	return mlfs_err_set(err, EACCES, "%s: policy %s requires signatures (%s: %s); %s", identity, p->path, scope,
			    req, why(&d));
}

int mlfs_policy_names(const struct mlfs_ref *ref, char *names[2])
{
	names[0] = names[1] = NULL;
	if ((ref->tag && asprintf(&names[0], "%s/%s:%s", ref->domain, ref->path, ref->tag) < 0) ||
	    (ref->digest && asprintf(&names[1], "%s/%s@%s", ref->domain, ref->path, ref->digest) < 0)) {
		free(names[0]);
		names[0] = names[1] = NULL;
		return -ENOMEM;
	}
	return 0;
}

int mlfs_policy_check(const struct mlfs_policy *p, const struct mlfs_ref *ref, struct mlfs_err *err)
{
	/* containers/image refuses a reference with both a tag and a digest
	 * (which name would the scopes see?); mlfs fetches the digest, and
	 * the policy must accept it under both names. */
	char *names[2];
	int r = mlfs_policy_names(ref, names);
	if (r < 0)
		mlfs_err_set(err, ENOMEM, "out of memory");
	bool needs = false;
	for (int i = 0; i < 2 && r >= 0; i++)
		if (names[i] && (r = check_identity(p, names[i], err)) > 0)
			needs = true;
	free(names[0]);
	free(names[1]);
	return r < 0 ? r : needs;
}
