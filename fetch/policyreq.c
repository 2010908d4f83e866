/* One requirement of a containers-policy.json(5) scope, parsed as
 * containers/image parses it (signature/policy_config.go, policy_config_sigstore.go):
 *
 *   REQ := {"type": "insecureAcceptAnything"} | {"type": "reject"}
 *        | {"type": "signedBy", "keyType": KT,
 *           one of "keyPath" / "keyPaths" / "keyData", "signedIdentity"?: ID}
 *        | {"type": "sigstoreSigned", one of "keyPath" / "keyPaths" / "keyData"
 *           / "keyDatas" / "fulcio" / "pki", at most one of
 *           "rekorPublicKey{Path,Paths,Data,Datas}", "signedIdentity"?: ID}
 *        | {"type": "signedBaseLayer", "baseLayerIdentity": ID}
 *   ID  := a signature identity (policyident.c)
 *
 * KT is GPGKeys, or one of the three types containers/image parses but
 * never verifies (signedByGPGKeys, X509Certificates, signedByX509CAs).
 * "fulcio" is {caPath | caData, oidcIssuer, subjectEmail} and needs a
 * Rekor key; "pki" is {caRootsPath | caRootsData, caIntermediatesPath |
 * caIntermediatesData?, subjectEmail and/or subjectHostname} and takes no
 * Rekor key.  Unknown keys, wrong types, two key sources and the like are
 * errors, as there; so are null, "" and [] where a value is expected
 * (containers/image sometimes reads those as "absent").  *Data fields are
 * base64 as Go writes []byte (padded, line breaks ignored), decoded here.
 * Key files are not opened here: as in containers/image, only when a
 * signature is checked. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/base64.h"
#include "common/cleanup.h"
#include "fetch/internal.h"

/* ---- strict field access -------------------------------------------------- */

int mlfs_policy_bad(const struct mlfs_policy_ctx *c, const char *where, const char *fmt, ...)
{
	char what[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(what, sizeof what, fmt, ap);
	va_end(ap);
	return mlfs_err_set(c->err, EINVAL, "invalid policy %s: %s: %s", c->name, where, what);
}

int mlfs_policy_oom(const struct mlfs_policy_ctx *c)
{
	return mlfs_err_set(c->err, ENOMEM, "reading the policy %s: out of memory", c->name);
}

int mlfs_policy_only_keys(const struct mlfs_policy_ctx *c, const char *where, json_t *obj,
			  const char *const *allowed)
{
	const char *k;
	json_t *v;
	json_object_foreach(obj, k, v) {
		const char *const *a = allowed;
		while (*a && strcmp(*a, k))
			a++;
		if (!*a)
			return mlfs_policy_bad(c, where, "unknown key \"%s\"", k);
	}
	return 0;
}

int mlfs_policy_want_object(const struct mlfs_policy_ctx *c, const char *where, json_t *v)
{
	if (json_is_object(v))
		return 0;
	return mlfs_policy_bad(c, where, "must be an object, not %s", mlfs_json_type_name(v));
}

int mlfs_policy_get_string(const struct mlfs_policy_ctx *c, const char *where, json_t *obj, const char *key,
			   bool required, char **out)
{
	json_t *v = json_object_get(obj, key);
	*out = NULL;
	if (!v)
		return required ? mlfs_policy_bad(c, where, "\"%s\" is missing", key) : 0;
	if (!json_is_string(v))
		return mlfs_policy_bad(c, where, "\"%s\" must be a string, not %s", key, mlfs_json_type_name(v));
	if (!json_string_length(v))
		return mlfs_policy_bad(c, where, "\"%s\" must not be empty", key);
	*out = strdup(json_string_value(v));
	return *out ? 0 : mlfs_policy_oom(c);
}

static void keys_clear(struct mlfs_policy_keys *k)
{
	for (size_t i = 0; i < k->n; i++) {
		if (k->paths)
			free(k->paths[i]);
		if (k->datas)
			free(k->datas[i].data);
	}
	free(k->paths);
	free(k->datas);
	memset(k, 0, sizeof *k);
}

void mlfs_policy_req_clear(struct mlfs_policy_req *r)
{
	free(r->key_type);
	keys_clear(&r->keys);
	free(r->identity.reference);
	free(r->identity.prefix);
	free(r->identity.signed_prefix);
	keys_clear(&r->fulcio_ca);
	free(r->fulcio_oidc_issuer);
	free(r->fulcio_subject_email);
	keys_clear(&r->rekor_keys);
	keys_clear(&r->pki_roots);
	keys_clear(&r->pki_intermediates);
	free(r->pki_subject_email);
	free(r->pki_subject_hostname);
}

/* ---- base64, key sources, identities, requirements ----------------------- */

/* Base64 as Go's encoding/json reads []byte (common/base64.c); also what
 * reads a cosign signature annotation (sigstore.c). -EINVAL when malformed. */
int mlfs_base64_decode_blob(const char *s, size_t n, struct mlfs_policy_blob *out)
{
	unsigned char *buf = malloc(n / 4 * 3 + 1);
	if (!buf)
		return -ENOMEM;
	ssize_t len = mlfs_base64_decode(s, n, buf);
	if (len < 0) {
		free(buf);
		return -EINVAL;
	}
	out->data = buf;
	out->len = (size_t)len;
	return 0;
}

static int get_blob(const struct mlfs_policy_ctx *c, const char *where, json_t *v, const char *key,
		    struct mlfs_policy_blob *out)
{
	if (!json_is_string(v))
		return mlfs_policy_bad(c, where, "\"%s\" must be a base64 string, not %s", key,
				       mlfs_json_type_name(v));
	if (!json_string_length(v))
		return mlfs_policy_bad(c, where, "\"%s\" must not be empty", key);
	int r = mlfs_base64_decode_blob(json_string_value(v), json_string_length(v), out);
	if (r == -ENOMEM)
		return mlfs_policy_oom(c);
	return r < 0 ? mlfs_policy_bad(c, where, "\"%s\" is not valid base64", key) : 0;
}

/* One of the spellings of a key source (a NULL name: not allowed here).
 * Returns how many were present (0: k stays NONE; > 1: nothing parsed,
 * the caller says which to choose), or -errno. */
static int get_keys(const struct mlfs_policy_ctx *c, const char *where, json_t *obj,
		    const char *const names[4], struct mlfs_policy_keys *k)
{
	int present = 0, which = -1;
	for (int i = 0; i < 4; i++)
		if (names[i] && json_object_get(obj, names[i]))
			present++, which = i;
	if (present != 1)
		return present;
	const char *key = names[which];
	json_t *v = json_object_get(obj, key);
	bool list = which == 1 || which == 3;
	if (list && !json_is_array(v))
		return mlfs_policy_bad(c, where, "\"%s\" must be an array, not %s", key, mlfs_json_type_name(v));
	if (list && !json_array_size(v))
		return mlfs_policy_bad(c, where, "\"%s\" must not be empty", key);
	size_t n = list ? json_array_size(v) : 1;
	k->kind = (enum mlfs_key_kind)(MLFS_KEYS_PATH + which);
	if (which <= 1)
		k->paths = calloc(n, sizeof *k->paths);
	else
		k->datas = calloc(n, sizeof *k->datas);
	if (!k->paths && !k->datas)
		return mlfs_policy_oom(c);
	for (size_t i = 0; i < n; i++, k->n++) {
		json_t *e = list ? json_array_get(v, i) : v;
		char what[64];
		if (list)
			snprintf(what, sizeof what, "%s[%zu]", key, i);
		else
			snprintf(what, sizeof what, "%s", key);
		if (which >= 2) {
			int r = get_blob(c, where, e, what, &k->datas[i]);
			if (r < 0)
				return r;
			continue;
		}
		if (!json_is_string(e))
			return mlfs_policy_bad(c, where, "\"%s\" must be a string, not %s", what,
					       mlfs_json_type_name(e));
		if (!json_string_length(e))
			return mlfs_policy_bad(c, where, "\"%s\" must not be empty", what);
		if (!(k->paths[i] = strdup(json_string_value(e))))
			return mlfs_policy_oom(c);
	}
	return 1;
}

/* ---- requirements ------------------------------------------------------- */

/* signedIdentity, optional: matchRepoDigestOrExact when absent. */
static int parse_signed_identity(const struct mlfs_policy_ctx *c, const char *where, json_t *j,
				 struct mlfs_policy_identity *id)
{
	json_t *v = json_object_get(j, "signedIdentity");
	char sub[600];
	snprintf(sub, sizeof sub, "%s.signedIdentity", where);
	return v ? mlfs_policy_identity_parse(c, sub, v, id) : 0;
}

static int parse_fulcio(const struct mlfs_policy_ctx *c, const char *where, json_t *j, struct mlfs_policy_req *r)
{
	static const char *const keys[] = { "caPath", "caData", "oidcIssuer", "subjectEmail", NULL };
	static const char *const ca[4] = { "caPath", NULL, "caData", NULL };
	int n = mlfs_policy_want_object(c, where, j);
	if (n < 0 || (n = mlfs_policy_only_keys(c, where, j, keys)) < 0 ||
	    (n = get_keys(c, where, j, ca, &r->fulcio_ca)) < 0)
		return n;
	if (n != 1)
		return mlfs_policy_bad(c, where, "give one of \"caPath\" and \"caData\"");
	if ((n = mlfs_policy_get_string(c, where, j, "oidcIssuer", true, &r->fulcio_oidc_issuer)) < 0)
		return n;
	return mlfs_policy_get_string(c, where, j, "subjectEmail", true, &r->fulcio_subject_email);
}

static int parse_pki(const struct mlfs_policy_ctx *c, const char *where, json_t *j, struct mlfs_policy_req *r)
{
	static const char *const keys[] = { "caRootsPath", "caRootsData", "caIntermediatesPath",
					    "caIntermediatesData", "subjectEmail", "subjectHostname", NULL };
	static const char *const roots[4] = { "caRootsPath", NULL, "caRootsData", NULL };
	static const char *const inter[4] = { "caIntermediatesPath", NULL, "caIntermediatesData", NULL };
	int n = mlfs_policy_want_object(c, where, j);
	if (n < 0 || (n = mlfs_policy_only_keys(c, where, j, keys)) < 0 ||
	    (n = get_keys(c, where, j, roots, &r->pki_roots)) < 0)
		return n;
	if (n != 1)
		return mlfs_policy_bad(c, where, "give one of \"caRootsPath\" and \"caRootsData\"");
	if ((n = get_keys(c, where, j, inter, &r->pki_intermediates)) < 0)
		return n;
	if (n > 1)
		return mlfs_policy_bad(c, where, "give at most one of \"caIntermediatesPath\" and "
				       "\"caIntermediatesData\"");
	if ((n = mlfs_policy_get_string(c, where, j, "subjectEmail", false, &r->pki_subject_email)) < 0 ||
	    (n = mlfs_policy_get_string(c, where, j, "subjectHostname", false, &r->pki_subject_hostname)) < 0)
		return n;
	if (!r->pki_subject_email && !r->pki_subject_hostname)
		return mlfs_policy_bad(c, where, "give \"subjectEmail\" or \"subjectHostname\" (or both)");
	return 0;
}

static int parse_signed_by(const struct mlfs_policy_ctx *c, const char *where, json_t *j,
			   struct mlfs_policy_req *r)
{
	static const char *const keys[] = { "type", "keyType", "keyPath", "keyPaths", "keyData", "signedIdentity",
					    NULL };
	static const char *const sources[4] = { "keyPath", "keyPaths", "keyData", NULL };
	int n = mlfs_policy_only_keys(c, where, j, keys);
	if (n < 0 || (n = mlfs_policy_get_string(c, where, j, "keyType", true, &r->key_type)) < 0)
		return n;
	if (strcmp(r->key_type, "GPGKeys") && strcmp(r->key_type, "signedByGPGKeys") &&
	    strcmp(r->key_type, "X509Certificates") && strcmp(r->key_type, "signedByX509CAs"))
		return mlfs_policy_bad(c, where, "unknown \"keyType\" \"%s\" (want GPGKeys)", r->key_type);
	if ((n = get_keys(c, where, j, sources, &r->keys)) < 0)
		return n;
	if (n != 1)
		return mlfs_policy_bad(c, where, "give exactly one of \"keyPath\", \"keyPaths\" and \"keyData\"");
	return parse_signed_identity(c, where, j, &r->identity);
}

static int parse_sigstore(const struct mlfs_policy_ctx *c, const char *where, json_t *j, struct mlfs_policy_req *r)
{
	static const char *const keys[] = { "type", "keyPath", "keyPaths", "keyData", "keyDatas", "fulcio",
					    "rekorPublicKeyPath", "rekorPublicKeyPaths", "rekorPublicKeyData",
					    "rekorPublicKeyDatas", "pki", "signedIdentity", NULL };
	static const char *const sources[4] = { "keyPath", "keyPaths", "keyData", "keyDatas" };
	static const char *const rekor[4] = { "rekorPublicKeyPath", "rekorPublicKeyPaths", "rekorPublicKeyData",
					      "rekorPublicKeyDatas" };
	char sub[600];
	int n = mlfs_policy_only_keys(c, where, j, keys);
	if (n < 0 || (n = get_keys(c, where, j, sources, &r->keys)) < 0)
		return n;
	json_t *fulcio = json_object_get(j, "fulcio"), *pki = json_object_get(j, "pki");
	if (n + !!fulcio + !!pki != 1)
		return mlfs_policy_bad(c, where, "give exactly one of \"keyPath\", \"keyPaths\", \"keyData\", "
				       "\"keyDatas\", \"fulcio\" and \"pki\"");
	if (fulcio) {
		r->has_fulcio = true;
		snprintf(sub, sizeof sub, "%s.fulcio", where);
		if ((n = parse_fulcio(c, sub, fulcio, r)) < 0)
			return n;
	}
	if (pki) {
		r->has_pki = true;
		snprintf(sub, sizeof sub, "%s.pki", where);
		if ((n = parse_pki(c, sub, pki, r)) < 0)
			return n;
	}
	if ((n = get_keys(c, where, j, rekor, &r->rekor_keys)) < 0)
		return n;
	if (n > 1)
		return mlfs_policy_bad(c, where, "give at most one of \"rekorPublicKeyPath\", "
				       "\"rekorPublicKeyPaths\", \"rekorPublicKeyData\" and \"rekorPublicKeyDatas\"");
	if (fulcio && !n)
		return mlfs_policy_bad(c, where, "\"fulcio\" needs a Rekor key (\"rekorPublicKeyPath\" or "
				       "another spelling)");
	if (pki && n)
		return mlfs_policy_bad(c, where, "\"pki\" takes no Rekor key");
	return parse_signed_identity(c, where, j, &r->identity);
}

int mlfs_policy_req_parse(const struct mlfs_policy_ctx *c, const char *where, json_t *j,
			  struct mlfs_policy_req *r)
{
	static const char *const only_type[] = { "type", NULL };
	static const char *const base[] = { "type", "baseLayerIdentity", NULL };
	_cleanup_free_ char *type = NULL;
	int n = mlfs_policy_want_object(c, where, j);
	if (n < 0 || (n = mlfs_policy_get_string(c, where, j, "type", true, &type)) < 0)
		return n;
	if (!strcmp(type, "insecureAcceptAnything") || !strcmp(type, "reject")) {
		r->type = strcmp(type, "reject") ? MLFS_PR_ACCEPT : MLFS_PR_REJECT;
		return mlfs_policy_only_keys(c, where, j, only_type);
	}
	if (!strcmp(type, "signedBy")) {
		r->type = MLFS_PR_SIGNED_BY;
		return parse_signed_by(c, where, j, r);
	}
	if (!strcmp(type, "sigstoreSigned")) {
		r->type = MLFS_PR_SIGSTORE;
		return parse_sigstore(c, where, j, r);
	}
	if (!strcmp(type, "signedBaseLayer")) {
		r->type = MLFS_PR_BASE_LAYER;
		char sub[600];
		snprintf(sub, sizeof sub, "%s.baseLayerIdentity", where);
		json_t *id = json_object_get(j, "baseLayerIdentity");
		if ((n = mlfs_policy_only_keys(c, where, j, base)) < 0)
			return n;
		if (!id)
			return mlfs_policy_bad(c, where, "\"baseLayerIdentity\" is missing");
		return mlfs_policy_identity_parse(c, sub, id, &r->identity);
	}
	return mlfs_policy_bad(c, where, "unknown requirement type \"%s\" (insecureAcceptAnything, reject, "
			       "signedBy, sigstoreSigned or signedBaseLayer)", type);
}

