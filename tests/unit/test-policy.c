/* containers-policy.json: the parser (every field, and a list of files
 * that must fail with the reason named), scope matching (a table of
 * references × scopes, as containers/image looks them up), what each kind
 * of requirement decides without signatures, the one-line refusals, and
 * which file is used. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fetch/internal.h"
#include "tap.h"

#define DIGEST "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

static struct mlfs_policy *parse(const char *json, struct mlfs_err *err)
{
	struct mlfs_policy *p = NULL;
	mlfs_err_clear(err);
	int r = mlfs_policy_parse(json, strlen(json), "/t/policy.json", &p, err);
	if ((r == 0) != (p != NULL))
		tap_ok(false, "a result exactly when it succeeds (r=%d)", r);
	return p;
}

static const struct mlfs_policy_reqs *scope(const struct mlfs_policy *p, const char *transport, const char *name)
{
	for (size_t t = 0; t < p->n_transports; t++)
		for (size_t s = 0; !strcmp(p->transports[t].name, transport) && s < p->transports[t].n_scopes; s++)
			if (!strcmp(p->transports[t].scopes[s].name, name))
				return &p->transports[t].scopes[s].reqs;
	return NULL;
}

static bool blob_is(const struct mlfs_policy_blob *b, const char *text)
{
	return b->len == strlen(text) && !memcmp(b->data, text, b->len);
}

/* ---- every field of a valid file ------------------------------------------ */

static const char full[] =
	"{\"default\": [{\"type\": \"reject\"}],\n"
	" \"transports\": {\n"
	"  \"docker\": {\n"
	"   \"\": [{\"type\": \"insecureAcceptAnything\"}],\n"
	"   \"a.example/gpg\": [{\"type\": \"signedBy\", \"keyType\": \"GPGKeys\", \"keyPath\": \"/k.gpg\"}],\n"
	"   \"a.example/gpgs\": [{\"type\": \"signedBy\", \"keyType\": \"signedByGPGKeys\",\n"
	"                       \"keyPaths\": [\"/a.gpg\", \"/b.gpg\"],\n"
	"                       \"signedIdentity\": {\"type\": \"matchRepository\"}}],\n"
	"   \"a.example/gpgdata\": [{\"type\": \"signedBy\", \"keyType\": \"X509Certificates\", \"keyData\": \"aGVs\\nbG8=\",\n"
	"                          \"signedIdentity\": {\"type\": \"exactReference\", \"dockerReference\": \"busybox:1\"}}],\n"
	"   \"a.example/x509\": [{\"type\": \"signedBy\", \"keyType\": \"signedByX509CAs\", \"keyPath\": \"/ca.pem\",\n"
	"                       \"signedIdentity\": {\"type\": \"exactRepository\", \"dockerRepository\": \"quay.io/a/b\"}}],\n"
	"   \"a.example/remap\": [{\"type\": \"signedBy\", \"keyType\": \"GPGKeys\", \"keyPath\": \"/k.gpg\",\n"
	"                        \"signedIdentity\": {\"type\": \"remapIdentity\", \"prefix\": \"mirror.local:5000/lib\",\n"
	"                                           \"signedPrefix\": \"docker.io/library\"}}],\n"
	"   \"a.example/exact\": [{\"type\": \"signedBy\", \"keyType\": \"GPGKeys\", \"keyPath\": \"/k.gpg\",\n"
	"                        \"signedIdentity\": {\"type\": \"matchExact\"}},\n"
	"                       {\"type\": \"insecureAcceptAnything\"}],\n"
	"   \"a.example/cosign\": [{\"type\": \"sigstoreSigned\", \"keyPath\": \"/c.pub\",\n"
	"                         \"signedIdentity\": {\"type\": \"matchRepoDigestOrExact\"}}],\n"
	"   \"a.example/cosigns\": [{\"type\": \"sigstoreSigned\", \"keyPaths\": [\"/1.pub\", \"/2.pub\"]}],\n"
	"   \"a.example/cosigndata\": [{\"type\": \"sigstoreSigned\", \"keyData\": \"aGk=\", \"rekorPublicKeyPath\": \"/r.pub\"}],\n"
	"   \"a.example/cosigndatas\": [{\"type\": \"sigstoreSigned\", \"keyDatas\": [\"YQ==\", \"YmM=\"],\n"
	"                              \"rekorPublicKeyDatas\": [\"eA==\"]}],\n"
	"   \"a.example/fulcio\": [{\"type\": \"sigstoreSigned\",\n"
	"                         \"fulcio\": {\"caData\": \"Y2E=\", \"oidcIssuer\": \"https://id\", \"subjectEmail\": \"a@b\"},\n"
	"                         \"rekorPublicKeyPaths\": [\"/r1\", \"/r2\"]}],\n"
	"   \"a.example/fulcio2\": [{\"type\": \"sigstoreSigned\",\n"
	"                          \"fulcio\": {\"caPath\": \"/f.pem\", \"oidcIssuer\": \"https://id\", \"subjectEmail\": \"a@b\"},\n"
	"                          \"rekorPublicKeyData\": \"cg==\"}],\n"
	"   \"a.example/pki\": [{\"type\": \"sigstoreSigned\",\n"
	"                      \"pki\": {\"caRootsPath\": \"/roots\", \"caIntermediatesData\": \"aQ==\",\n"
	"                              \"subjectHostname\": \"h.example\"}}],\n"
	"   \"a.example/pki2\": [{\"type\": \"sigstoreSigned\",\n"
	"                       \"pki\": {\"caRootsData\": \"cm9vdA==\", \"caIntermediatesPath\": \"/i\",\n"
	"                               \"subjectEmail\": \"e@x\", \"subjectHostname\": \"h\"}}],\n"
	"   \"a.example/base\": [{\"type\": \"signedBaseLayer\", \"baseLayerIdentity\": {\"type\": \"matchRepository\"}}]\n"
	"  },\n"
	"  \"docker-daemon\": {\"\": [{\"type\": \"insecureAcceptAnything\"}]},\n"
	"  \"atomic\": {}\n"
	" }\n"
	"}\n";

static void test_full(void)
{
	struct mlfs_err err = { 0 };
	struct mlfs_policy *p = parse(full, &err);
	tap_ok(p != NULL, "the full policy parses (%s)", err.msg);
	if (!p)
		return;
	tap_is_str(p->path, "/t/policy.json", "path kept for messages");
	tap_ok(p->def.n == 1 && p->def.v[0].type == MLFS_PR_REJECT, "default: reject");
	tap_is_int(p->n_transports, 3, "three transports");
	const struct mlfs_policy_reqs *r = scope(p, "docker", "");
	tap_ok(r && r->n == 1 && r->v[0].type == MLFS_PR_ACCEPT, "docker \"\": insecureAcceptAnything");
	r = scope(p, "docker-daemon", "");
	tap_ok(r && r->v[0].type == MLFS_PR_ACCEPT, "docker-daemon parsed too");

	const struct mlfs_policy_req *q = &scope(p, "docker", "a.example/gpg")->v[0];
	tap_ok(q->type == MLFS_PR_SIGNED_BY && !strcmp(q->key_type, "GPGKeys") && q->keys.kind == MLFS_KEYS_PATH &&
	       q->keys.n == 1 && !strcmp(q->keys.paths[0], "/k.gpg"), "signedBy keyPath");
	tap_ok(q->identity.type == MLFS_PRM_MATCH_REPO_DIGEST_OR_EXACT, "signedIdentity defaults to matchRepoDigestOrExact");
	q = &scope(p, "docker", "a.example/gpgs")->v[0];
	tap_ok(!strcmp(q->key_type, "signedByGPGKeys") && q->keys.kind == MLFS_KEYS_PATHS && q->keys.n == 2 &&
	       !strcmp(q->keys.paths[1], "/b.gpg") && q->identity.type == MLFS_PRM_MATCH_REPOSITORY,
	       "signedBy keyPaths, matchRepository");
	q = &scope(p, "docker", "a.example/gpgdata")->v[0];
	tap_ok(q->keys.kind == MLFS_KEYS_DATA && blob_is(&q->keys.datas[0], "hello"),
	       "keyData decoded (a line break skipped)");
	tap_ok(q->identity.type == MLFS_PRM_EXACT_REFERENCE && !strcmp(q->identity.reference, "busybox:1"),
	       "exactReference");
	q = &scope(p, "docker", "a.example/x509")->v[0];
	tap_ok(q->identity.type == MLFS_PRM_EXACT_REPOSITORY && !strcmp(q->identity.reference, "quay.io/a/b"),
	       "exactRepository");
	q = &scope(p, "docker", "a.example/remap")->v[0];
	tap_ok(q->identity.type == MLFS_PRM_REMAP_IDENTITY && !strcmp(q->identity.prefix, "mirror.local:5000/lib") &&
	       !strcmp(q->identity.signed_prefix, "docker.io/library"), "remapIdentity");
	r = scope(p, "docker", "a.example/exact");
	tap_ok(r->n == 2 && r->v[0].identity.type == MLFS_PRM_MATCH_EXACT && r->v[1].type == MLFS_PR_ACCEPT,
	       "two requirements, matchExact");
	q = &scope(p, "docker", "a.example/cosign")->v[0];
	tap_ok(q->type == MLFS_PR_SIGSTORE && q->keys.kind == MLFS_KEYS_PATH && !strcmp(q->keys.paths[0], "/c.pub") &&
	       q->rekor_keys.kind == MLFS_KEYS_NONE && !q->has_fulcio && !q->has_pki, "sigstoreSigned keyPath");
	q = &scope(p, "docker", "a.example/cosigns")->v[0];
	tap_ok(q->keys.kind == MLFS_KEYS_PATHS && q->keys.n == 2, "sigstoreSigned keyPaths");
	q = &scope(p, "docker", "a.example/cosigndata")->v[0];
	tap_ok(q->keys.kind == MLFS_KEYS_DATA && blob_is(&q->keys.datas[0], "hi") &&
	       q->rekor_keys.kind == MLFS_KEYS_PATH && !strcmp(q->rekor_keys.paths[0], "/r.pub"),
	       "sigstoreSigned keyData, rekorPublicKeyPath");
	q = &scope(p, "docker", "a.example/cosigndatas")->v[0];
	tap_ok(q->keys.kind == MLFS_KEYS_DATAS && q->keys.n == 2 && blob_is(&q->keys.datas[0], "a") &&
	       blob_is(&q->keys.datas[1], "bc") && q->rekor_keys.kind == MLFS_KEYS_DATAS &&
	       blob_is(&q->rekor_keys.datas[0], "x"), "sigstoreSigned keyDatas, rekorPublicKeyDatas");
	q = &scope(p, "docker", "a.example/fulcio")->v[0];
	tap_ok(q->has_fulcio && q->keys.kind == MLFS_KEYS_NONE && q->fulcio_ca.kind == MLFS_KEYS_DATA &&
	       blob_is(&q->fulcio_ca.datas[0], "ca") && !strcmp(q->fulcio_oidc_issuer, "https://id") &&
	       !strcmp(q->fulcio_subject_email, "a@b") && q->rekor_keys.kind == MLFS_KEYS_PATHS &&
	       q->rekor_keys.n == 2, "fulcio caData, rekorPublicKeyPaths");
	q = &scope(p, "docker", "a.example/fulcio2")->v[0];
	tap_ok(q->fulcio_ca.kind == MLFS_KEYS_PATH && q->rekor_keys.kind == MLFS_KEYS_DATA &&
	       blob_is(&q->rekor_keys.datas[0], "r"), "fulcio caPath, rekorPublicKeyData");
	q = &scope(p, "docker", "a.example/pki")->v[0];
	tap_ok(q->has_pki && q->pki_roots.kind == MLFS_KEYS_PATH && q->pki_intermediates.kind == MLFS_KEYS_DATA &&
	       blob_is(&q->pki_intermediates.datas[0], "i") && !q->pki_subject_email &&
	       !strcmp(q->pki_subject_hostname, "h.example"), "pki caRootsPath, caIntermediatesData, subjectHostname");
	q = &scope(p, "docker", "a.example/pki2")->v[0];
	tap_ok(q->pki_roots.kind == MLFS_KEYS_DATA && blob_is(&q->pki_roots.datas[0], "root") &&
	       q->pki_intermediates.kind == MLFS_KEYS_PATH && !strcmp(q->pki_subject_email, "e@x"),
	       "pki caRootsData, caIntermediatesPath, both subjects");
	q = &scope(p, "docker", "a.example/base")->v[0];
	tap_ok(q->type == MLFS_PR_BASE_LAYER && q->identity.type == MLFS_PRM_MATCH_REPOSITORY, "signedBaseLayer");
	mlfs_policy_free(p);
}

/* ---- files that must parse, and files that must not ----------------------- */

#define ACCEPT "{\"type\":\"insecureAcceptAnything\"}"
#define DEF "\"default\":[" ACCEPT "]"
#define SCOPE(reqs) "{" DEF ",\"transports\":{\"docker\":{\"x.io/a\":[" reqs "]}}}"
#define GPG(rest) SCOPE("{\"type\":\"signedBy\",\"keyType\":\"GPGKeys\"" rest "}")
#define COSIGN(rest) SCOPE("{\"type\":\"sigstoreSigned\"" rest "}")
#define IDENT(id) GPG(",\"keyPath\":\"/k\",\"signedIdentity\":" id)
#define FULCIO(f) COSIGN(",\"fulcio\":{" f "},\"rekorPublicKeyPath\":\"/r\"")
#define PKI(p) COSIGN(",\"pki\":{" p "}")

static void test_valid(void)
{
	static const char *const ok[] = {
		"{" DEF "}",
		"{" DEF ",\"transports\":{}}",
		"{" DEF ",\"transports\":{\"docker\":{}}}",
		"{" DEF ",\"transports\":{\"no-such-transport\":{\"whatever\":[" ACCEPT "]}}}",
		"{\"transports\":{\"docker\":{\"busybox\":[" ACCEPT "]}}," DEF "}", /* never matches; not an error */
		"  {" DEF "}  \n",
		GPG(",\"keyPath\":\"relative/key.gpg\""),
		GPG(",\"keyData\":\"YWJj\\r\\nZA==\""),
		IDENT("{\"type\":\"exactReference\",\"dockerReference\":\"x.io/a@" DIGEST "\"}"),
		IDENT("{\"type\":\"exactRepository\",\"dockerRepository\":\"busybox\"}"),
		IDENT("{\"type\":\"remapIdentity\",\"prefix\":\"localhost\",\"signedPrefix\":\"[::1]:5000/a/b\"}"),
		IDENT("{\"type\":\"remapIdentity\",\"prefix\":\"a/b__c/d-e.f\",\"signedPrefix\":\"Host.Example:1\"}"),
		COSIGN(",\"keyPath\":\"/k\",\"rekorPublicKeyDatas\":[\"YQ==\",\"Yg==\"]"),
		PKI("\"caRootsPath\":\"/r\",\"subjectEmail\":\"a@b\""),
	};
	for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
		struct mlfs_err err;
		struct mlfs_policy *p = parse(ok[i], &err);
		tap_ok(p != NULL, "valid #%zu parses", i);
		if (!p)
			tap_diag("%s\n  %s", ok[i], err.msg);
		mlfs_policy_free(p);
	}
}

static void test_invalid(void)
{
	static const struct {
		const char *json;
		const char *why; /* a piece of the message */
	} bad[] = {
		{ "", "line 1" },
		{ "[]", "the top level: must be an object, not an array" },
		{ "{}", "\"default\" is missing" },
		{ "{" DEF "} x", "line 1" },
		{ "{" DEF "," DEF "}", "duplicate" },
		{ "{" DEF ",\"Default\":[]}", "the top level: unknown key \"Default\"" },
		{ "{\"default\":[]}", "default: must list at least one requirement" },
		{ "{\"default\":null}", "default: must be a list of requirements, not null" },
		{ "{\"default\":{\"type\":\"reject\"}}", "must be a list of requirements, not an object" },
		{ "{\"default\":[\"reject\"]}", "default[0]: must be an object, not a string" },
		{ "{\"default\":[{}]}", "default[0]: \"type\" is missing" },
		{ "{\"default\":[{\"type\":null}]}", "\"type\" must be a string, not null" },
		{ "{\"default\":[{\"type\":\"accept\"}]}", "unknown requirement type \"accept\"" },
		{ "{\"default\":[{\"type\":\"reject\",\"keyPath\":\"/k\"}]}", "default[0]: unknown key \"keyPath\"" },
		{ "{\"default\":[" ACCEPT ",{\"type\":\"Reject\"}]}", "default[1]: unknown requirement type" },
		{ "{" DEF ",\"transports\":null}", "transports: must be an object, not null" },
		{ "{" DEF ",\"transports\":{\"docker\":[]}}", "transports.docker: must be an object, not an array" },
		{ "{" DEF ",\"transports\":{\"docker\":{\"a\":[" ACCEPT "],\"a\":[" ACCEPT "]}}}", "duplicate" },
		{ "{" DEF ",\"transports\":{\"docker\":{\"x.io/a\":[]}}}",
		  "transports.docker \"x.io/a\": must list at least one requirement" },
		{ "{" DEF ",\"transports\":{\"oci\":{\"/p\":[{\"type\":\"x\"}]}}}", "transports.oci \"/p\"[0]: unknown" },
		/* signedBy */
		{ SCOPE("{\"type\":\"signedBy\",\"keyPath\":\"/k\"}"), "\"keyType\" is missing" },
		{ GPG(""), "give exactly one of \"keyPath\", \"keyPaths\" and \"keyData\"" },
		{ GPG(",\"keyPath\":\"/k\",\"keyData\":\"YQ==\""), "give exactly one of" },
		{ GPG(",\"keyPath\":\"/k\",\"keyPaths\":[\"/k\"]"), "give exactly one of" },
		{ GPG(",\"keyPath\":\"\""), "\"keyPath\" must not be empty" },
		{ GPG(",\"keyPath\":null"), "\"keyPath\" must be a string, not null" },
		{ GPG(",\"keyPath\":[\"/k\"]"), "\"keyPath\" must be a string, not an array" },
		{ GPG(",\"keyPaths\":\"/k\""), "\"keyPaths\" must be an array, not a string" },
		{ GPG(",\"keyPaths\":[]"), "\"keyPaths\" must not be empty" },
		{ GPG(",\"keyPaths\":[\"/k\",3]"), "\"keyPaths[1]\" must be a string, not an integer" },
		{ GPG(",\"keyPaths\":[\"\"]"), "\"keyPaths[0]\" must not be empty" },
		{ GPG(",\"keyData\":\"YQ\""), "\"keyData\" is not valid base64" },
		{ GPG(",\"keyData\":\"YQ=a\""), "not valid base64" },
		{ GPG(",\"keyData\":\"Y===\""), "not valid base64" },
		{ GPG(",\"keyData\":\"YQ==YQ==\""), "not valid base64" },
		{ GPG(",\"keyData\":\"YQ-_\""), "not valid base64" },
		{ GPG(",\"keyData\":true"), "\"keyData\" must be a base64 string, not a boolean" },
		{ GPG(",\"keyPath\":\"/k\",\"keyDatas\":[\"YQ==\"]"), "unknown key \"keyDatas\"" },
		{ GPG(",\"keyPath\":\"/k\",\"keypath\":\"/k\""), "unknown key \"keypath\"" },
		{ SCOPE("{\"type\":\"signedBy\",\"keyType\":\"GPGKey\",\"keyPath\":\"/k\"}"), "unknown \"keyType\" \"GPGKey\"" },
		/* identities */
		{ IDENT("null"), "signedIdentity: must be an object, not null" },
		{ IDENT("{}"), "signedIdentity: \"type\" is missing" },
		{ IDENT("{\"type\":\"matchAnything\"}"), "unknown identity type \"matchAnything\"" },
		{ IDENT("{\"type\":\"matchRepository\",\"dockerReference\":\"a:1\"}"), "unknown key \"dockerReference\"" },
		{ IDENT("{\"type\":\"exactReference\"}"), "\"dockerReference\" is missing" },
		{ IDENT("{\"type\":\"exactReference\",\"dockerReference\":\"busybox\"}"), "neither a tag nor a digest" },
		{ IDENT("{\"type\":\"exactReference\",\"dockerReference\":\"localhost:5000/a\"}"), "neither a tag" },
		{ IDENT("{\"type\":\"exactReference\",\"dockerReference\":\"Busybox:1\"}"), "must be lowercase" },
		{ IDENT("{\"type\":\"exactReference\",\"dockerReference\":\"a:1\",\"dockerRepository\":\"a\"}"),
		  "unknown key \"dockerRepository\"" },
		{ IDENT("{\"type\":\"exactRepository\",\"dockerRepository\":\"\"}"), "\"dockerRepository\" must not be empty" },
		{ IDENT("{\"type\":\"exactRepository\",\"dockerRepository\":\"a//b\"}"), "\"dockerRepository\": invalid" },
		{ IDENT("{\"type\":\"remapIdentity\",\"prefix\":\"a.io\"}"), "\"signedPrefix\" is missing" },
		{ IDENT("{\"type\":\"remapIdentity\",\"prefix\":\"a_b\",\"signedPrefix\":\"a.io\"}"),
		  "\"prefix\" \"a_b\" is neither a registry host" },
		{ IDENT("{\"type\":\"remapIdentity\",\"prefix\":\"a.io/B\",\"signedPrefix\":\"a.io\"}"), "\"prefix\"" },
		{ IDENT("{\"type\":\"remapIdentity\",\"prefix\":\"a.io/\",\"signedPrefix\":\"a.io\"}"), "\"prefix\"" },
		{ IDENT("{\"type\":\"remapIdentity\",\"prefix\":\"-a.io\",\"signedPrefix\":\"a.io\"}"), "\"prefix\"" },
		{ IDENT("{\"type\":\"remapIdentity\",\"prefix\":\"a.io:\",\"signedPrefix\":\"a.io\"}"), "\"prefix\"" },
		{ IDENT("{\"type\":\"remapIdentity\",\"prefix\":\"a.io\",\"signedPrefix\":\"docker.io/library:latest\"}"),
		  "\"signedPrefix\"" },
		/* sigstoreSigned */
		{ COSIGN(""), "give exactly one of \"keyPath\", \"keyPaths\", \"keyData\", \"keyDatas\", \"fulcio\" and \"pki\"" },
		{ COSIGN(",\"keyPath\":\"/k\",\"keyDatas\":[\"YQ==\"]"), "give exactly one of" },
		{ COSIGN(",\"keyPath\":\"/k\",\"pki\":{\"caRootsPath\":\"/r\",\"subjectEmail\":\"a\"}"), "give exactly one of" },
		{ COSIGN(",\"keyDatas\":[]"), "\"keyDatas\" must not be empty" },
		{ COSIGN(",\"keyDatas\":[\"%%%%\"]"), "\"keyDatas[0]\" is not valid base64" },
		{ COSIGN(",\"keyPath\":\"/k\",\"keyType\":\"GPGKeys\""), "unknown key \"keyType\"" },
		{ COSIGN(",\"keyPath\":\"/k\",\"rekorPublicKeyPath\":\"/r\",\"rekorPublicKeyData\":\"YQ==\""),
		  "give at most one of \"rekorPublicKeyPath\"" },
		{ COSIGN(",\"keyPath\":\"/k\",\"rekorPublicKeyPaths\":[]"), "\"rekorPublicKeyPaths\" must not be empty" },
		{ COSIGN(",\"fulcio\":{\"caPath\":\"/c\",\"oidcIssuer\":\"i\",\"subjectEmail\":\"e\"}"),
		  "\"fulcio\" needs a Rekor key" },
		{ FULCIO("\"oidcIssuer\":\"i\",\"subjectEmail\":\"e\""), "fulcio: give one of \"caPath\" and \"caData\"" },
		{ FULCIO("\"caPath\":\"/c\",\"caData\":\"YQ==\",\"oidcIssuer\":\"i\",\"subjectEmail\":\"e\""), "give one of" },
		{ FULCIO("\"caPath\":\"/c\",\"subjectEmail\":\"e\""), "fulcio: \"oidcIssuer\" is missing" },
		{ FULCIO("\"caPath\":\"/c\",\"oidcIssuer\":\"i\""), "\"subjectEmail\" is missing" },
		{ FULCIO("\"caPath\":\"/c\",\"oidcIssuer\":\"i\",\"subjectEmail\":\"e\",\"x\":1"), "fulcio: unknown key \"x\"" },
		{ COSIGN(",\"fulcio\":[],\"rekorPublicKeyPath\":\"/r\""), "fulcio: must be an object, not an array" },
		{ COSIGN(",\"pki\":{\"caRootsPath\":\"/r\",\"subjectEmail\":\"e\"},\"rekorPublicKeyPath\":\"/r\""),
		  "\"pki\" takes no Rekor key" },
		{ PKI("\"subjectEmail\":\"e\""), "pki: give one of \"caRootsPath\" and \"caRootsData\"" },
		{ PKI("\"caRootsPath\":\"/r\",\"caRootsData\":\"YQ==\",\"subjectEmail\":\"e\""), "give one of" },
		{ PKI("\"caRootsPath\":\"/r\",\"caIntermediatesPath\":\"/i\",\"caIntermediatesData\":\"YQ==\","
		      "\"subjectEmail\":\"e\""), "give at most one of \"caIntermediatesPath\"" },
		{ PKI("\"caRootsPath\":\"/r\""), "give \"subjectEmail\" or \"subjectHostname\"" },
		{ PKI("\"caRootsPath\":\"/r\",\"subjectHostname\":\"\""), "\"subjectHostname\" must not be empty" },
		/* signedBaseLayer */
		{ SCOPE("{\"type\":\"signedBaseLayer\"}"), "\"baseLayerIdentity\" is missing" },
		{ SCOPE("{\"type\":\"signedBaseLayer\",\"baseLayerIdentity\":{\"type\":\"x\"}}"),
		  "[0].baseLayerIdentity: unknown identity type" },
		{ SCOPE("{\"type\":\"signedBaseLayer\",\"baseLayerIdentity\":{\"type\":\"matchExact\"},\"a\":1}"),
		  "unknown key \"a\"" },
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		struct mlfs_err err;
		struct mlfs_policy *p = parse(bad[i].json, &err);
		static const char prefix[] = "invalid policy /t/policy.json: ";
		bool ok = !p && err.code == EINVAL && strstr(err.msg, bad[i].why) &&
			  !strncmp(err.msg, prefix, strlen(prefix)) && !strchr(err.msg, '\n');
		tap_ok(ok, "invalid #%zu refused: %s", i, bad[i].why);
		if (!ok)
			tap_diag("%s\n  got: %s", bad[i].json, p ? "(parsed)" : err.msg);
		mlfs_policy_free(p);
	}
}

/* ---- scope matching -------------------------------------------------------- */

static const char scopes[] =
	"{\"default\":[{\"type\":\"reject\"}],\"transports\":{\"docker-daemon\":{\"\":[" ACCEPT "]},\"docker\":{"
	"\"\":[" ACCEPT "],"
	"\"docker.io/library/busybox:1.36\":[" ACCEPT "],"
	"\"docker.io/library/busybox\":[" ACCEPT "],"
	"\"docker.io/library\":[" ACCEPT "],"
	"\"docker.io\":[" ACCEPT "],"
	"\"*.io\":[" ACCEPT "],"
	"\"busybox\":[" ACCEPT "],"
	"\"docker.io/busybox\":[" ACCEPT "],"
	"\"127.0.0.1:5000/ns/demo@" DIGEST "\":[" ACCEPT "],"
	"\"127.0.0.1:5000/ns/demo\":[" ACCEPT "],"
	"\"127.0.0.1:5000/ns\":[" ACCEPT "],"
	"\"127.0.0.1:5000\":[" ACCEPT "],"
	"\"*.0.0.1\":[" ACCEPT "],"
	"\"registry.example.com:8443/team\":[" ACCEPT "],"
	"\"*.example.com\":[" ACCEPT "],"
	"\"*.com\":[" ACCEPT "],"
	"\"quay.io/org/app:v1\":[" ACCEPT "]"
	"}}}";

static void test_scopes(void)
{
	static const struct {
		const char *ref;    /* as a user types it */
		const char *scope;  /* NULL: the top-level default */
	} table[] = {
		{ "busybox:1.36", "docker.io/library/busybox:1.36" },
		{ "docker.io/library/busybox:1.36", "docker.io/library/busybox:1.36" },
		{ "index.docker.io/busybox:1.36", "docker.io/library/busybox:1.36" },
		{ "busybox", "docker.io/library/busybox" },
		{ "busybox:1.35", "docker.io/library/busybox" },
		{ "busybox@" DIGEST, "docker.io/library/busybox" },
		{ "alpine", "docker.io/library" },
		{ "someone/app", "docker.io" },
		{ "docker.io/someone/deep/app:1", "docker.io" },
		{ "127.0.0.1:5000/ns/demo@" DIGEST, "127.0.0.1:5000/ns/demo@" DIGEST },
		{ "127.0.0.1:5000/ns/demo:latest", "127.0.0.1:5000/ns/demo" },
		{ "127.0.0.1:5000/ns/demo", "127.0.0.1:5000/ns/demo" },
		{ "127.0.0.1:5000/ns/other", "127.0.0.1:5000/ns" },
		{ "127.0.0.1:5000/ns/demo/sub", "127.0.0.1:5000/ns/demo" },
		{ "127.0.0.1:5000/nsx", "127.0.0.1:5000" },
		{ "127.0.0.1:5001/ns/demo", "*.0.0.1" },
		{ "127.0.0.1/x", "*.0.0.1" },
		{ "registry.example.com:8443/team/app", "registry.example.com:8443/team" },
		{ "registry.example.com/team/app", "*.example.com" },
		{ "registry.example.com:8443/other", "*.example.com" },
		{ "a.b.example.com/x", "*.example.com" },
		{ "example.com/x", "*.com" },
		{ "example.org/x", "" },
		{ "ghcr.io/x/y", "*.io" },
		{ "quay.io/org/app:v1", "quay.io/org/app:v1" },
		{ "quay.io/org/app:v2", "*.io" },
		{ "quay.io/org/app", "*.io" },
		{ "localhost:5000/x", "" },
		{ "localhost/x", "" },
		{ "[::1]:5000/x", "" },
	};
	struct mlfs_err err;
	struct mlfs_policy *p = parse(scopes, &err);
	tap_ok(p != NULL, "the scope table's policy parses (%s)", err.msg);
	for (size_t i = 0; p && i < sizeof table / sizeof table[0]; i++) {
		struct mlfs_ref ref;
		if (mlfs_ref_parse(table[i].ref, &ref, &err) < 0) {
			tap_ok(false, "%s parses: %s", table[i].ref, err.msg);
			continue;
		}
		char *id = mlfs_ref_canonical(&ref);
		struct mlfs_policy_decision d;
		mlfs_policy_decide(p, id, &d);
		tap_is_str(d.scope ? d.scope : "(default)", table[i].scope ? table[i].scope : "(default)", table[i].ref);
		free(id);
		mlfs_ref_clear(&ref);
	}
	mlfs_policy_free(p);

	/* No "" in transports.docker, or no docker transport: the default. */
	p = parse("{\"default\":[" ACCEPT "],\"transports\":{\"docker\":{\"a.io\":[{\"type\":\"reject\"}]},"
		  "\"docker-daemon\":{\"\":[{\"type\":\"reject\"}]}}}", &err);
	struct mlfs_policy_decision d;
	mlfs_policy_decide(p, "b.io/x:latest", &d);
	tap_ok(d.scope == NULL && d.verdict == MLFS_POLICY_ACCEPT, "no \"\" scope: the default");
	mlfs_policy_decide(p, "a.io/x:latest", &d);
	tap_ok(d.scope && !strcmp(d.scope, "a.io") && d.verdict == MLFS_POLICY_REJECT, "host scope rejects");
	mlfs_policy_free(p);
	p = parse("{\"default\":[{\"type\":\"reject\"}],\"transports\":{\"docker-daemon\":{\"\":[" ACCEPT "]}}}", &err);
	mlfs_policy_decide(p, "b.io/x:latest", &d);
	tap_ok(d.scope == NULL && d.verdict == MLFS_POLICY_REJECT, "no docker transport: the default");
	mlfs_policy_free(p);
}

/* ---- what requirements decide, and what the user reads --------------------- */

static void test_verdicts(void)
{
	static const struct {
		const char *reqs;
		enum mlfs_policy_verdict verdict;
		size_t req;
		const char *described;
	} table[] = {
		{ ACCEPT, MLFS_POLICY_ACCEPT, 0, NULL },
		{ ACCEPT "," ACCEPT, MLFS_POLICY_ACCEPT, 0, NULL },
		{ "{\"type\":\"reject\"}", MLFS_POLICY_REJECT, 0, "reject" },
		{ ACCEPT ",{\"type\":\"reject\"}", MLFS_POLICY_REJECT, 1, "reject" },
		{ "{\"type\":\"signedBy\",\"keyType\":\"GPGKeys\",\"keyPath\":\"/k.gpg\"}", MLFS_POLICY_NEEDS_SIGNATURES, 0,
		  "signedBy GPGKeys keyPath /k.gpg" },
		{ "{\"type\":\"signedBy\",\"keyType\":\"GPGKeys\",\"keyPaths\":[\"/a\",\"/b\"]}",
		  MLFS_POLICY_NEEDS_SIGNATURES, 0, "signedBy GPGKeys keyPaths /a,..." },
		{ "{\"type\":\"signedBy\",\"keyType\":\"GPGKeys\",\"keyData\":\"YQ==\"}", MLFS_POLICY_NEEDS_SIGNATURES, 0,
		  "signedBy GPGKeys keyData" },
		{ ACCEPT ",{\"type\":\"signedBy\",\"keyType\":\"X509Certificates\",\"keyPath\":\"/c\"}",
		  MLFS_POLICY_UNSUPPORTED, 1, "signedBy X509Certificates keyPath /c" },
		{ "{\"type\":\"sigstoreSigned\",\"keyPath\":\"/c.pub\"}", MLFS_POLICY_NEEDS_SIGNATURES, 0,
		  "sigstoreSigned keyPath /c.pub" },
		{ "{\"type\":\"sigstoreSigned\",\"keyDatas\":[\"YQ==\",\"YQ==\"]}", MLFS_POLICY_NEEDS_SIGNATURES, 0,
		  "sigstoreSigned keyDatas (2)" },
		{ "{\"type\":\"sigstoreSigned\",\"keyPath\":\"/c.pub\",\"rekorPublicKeyPath\":\"/r\"}",
		  MLFS_POLICY_UNSUPPORTED, 0, "sigstoreSigned keyPath /c.pub with rekorPublicKey" },
		{ "{\"type\":\"sigstoreSigned\",\"fulcio\":{\"caPath\":\"/c\",\"oidcIssuer\":\"https://i\","
		  "\"subjectEmail\":\"e\"},\"rekorPublicKeyPath\":\"/r\"}", MLFS_POLICY_UNSUPPORTED, 0,
		  "sigstoreSigned fulcio https://i" },
		{ "{\"type\":\"sigstoreSigned\",\"pki\":{\"caRootsPath\":\"/r\",\"subjectEmail\":\"e\"}}",
		  MLFS_POLICY_UNSUPPORTED, 0, "sigstoreSigned pki" },
		{ "{\"type\":\"signedBaseLayer\",\"baseLayerIdentity\":{\"type\":\"matchRepository\"}}",
		  MLFS_POLICY_UNSUPPORTED, 0, "signedBaseLayer" },
		/* AND: a refusal anywhere wins over signatures still to check */
		{ "{\"type\":\"reject\"},{\"type\":\"signedBy\",\"keyType\":\"GPGKeys\",\"keyPath\":\"/k\"}",
		  MLFS_POLICY_REJECT, 0, "reject" },
		{ "{\"type\":\"sigstoreSigned\",\"keyPath\":\"/k\"},{\"type\":\"reject\"}",
		  MLFS_POLICY_REJECT, 1, "reject" },
		{ "{\"type\":\"sigstoreSigned\",\"keyPath\":\"/c.pub\"},"
		  "{\"type\":\"sigstoreSigned\",\"pki\":{\"caRootsPath\":\"/r\",\"subjectEmail\":\"e\"}}",
		  MLFS_POLICY_UNSUPPORTED, 1, "sigstoreSigned pki" },
		{ ACCEPT ",{\"type\":\"signedBy\",\"keyType\":\"GPGKeys\",\"keyPath\":\"/k\"}," ACCEPT,
		  MLFS_POLICY_NEEDS_SIGNATURES, 1, "signedBy GPGKeys keyPath /k" },
	};
	for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
		char json[1024];
		snprintf(json, sizeof json, "{\"default\":[%s]}", table[i].reqs);
		struct mlfs_err err;
		struct mlfs_policy *p = parse(json, &err);
		if (!p) {
			tap_ok(false, "verdict #%zu parses: %s", i, err.msg);
			continue;
		}
		struct mlfs_policy_decision d;
		mlfs_policy_decide(p, "x.io/a:1", &d);
		/* A build without gpgme refuses signedBy outright. */
		enum mlfs_policy_verdict want = table[i].verdict;
		if (want == MLFS_POLICY_NEEDS_SIGNATURES && strstr(table[i].reqs, "signedBy") && !mlfs_gpg_available())
			want = MLFS_POLICY_UNSUPPORTED;
		tap_ok(d.verdict == want && (d.verdict == MLFS_POLICY_ACCEPT || d.req == table[i].req),
		       "verdict #%zu: %d at %zu", i, (int)d.verdict, d.req);
		if (table[i].described) {
			char buf[256];
			mlfs_policy_req_describe(&d.reqs->v[d.req], buf, sizeof buf);
			tap_is_str(buf, table[i].described, "requirement described");
		}
		mlfs_policy_free(p);
	}
}

static int check(const char *json, const char *ref_s, struct mlfs_err *err)
{
	struct mlfs_policy *p = parse(json, err);
	struct mlfs_ref ref;
	if (!p || mlfs_ref_parse(ref_s, &ref, err) < 0) {
		mlfs_policy_free(p);
		return -99;
	}
	mlfs_err_clear(err);
	int r = mlfs_policy_check(p, &ref, err);
	mlfs_ref_clear(&ref);
	mlfs_policy_free(p);
	return r;
}

static void test_messages(void)
{
	static const char policy[] =
		"{\"default\":[{\"type\":\"reject\"}],\"transports\":{\"docker\":{"
		"\"127.0.0.1:5000/demo\":[{\"type\":\"reject\"}],"
		"\"127.0.0.1:5000/demo:ok\":[" ACCEPT "],"
		"\"127.0.0.1:5000/signed\":[{\"type\":\"signedBy\",\"keyType\":\"GPGKeys\",\"keyPath\":\"/k.gpg\"}],"
		"\"127.0.0.1:5000/fulcio\":[{\"type\":\"sigstoreSigned\",\"fulcio\":{\"caPath\":\"/c\","
		"\"oidcIssuer\":\"https://i\",\"subjectEmail\":\"e\"},\"rekorPublicKeyPath\":\"/r\"}],"
		"\"localhost:5000\":[" ACCEPT "],"
		"\"*.example.com\":[" ACCEPT "]}}}";
	struct mlfs_err err;
	int r = check(policy, "127.0.0.1:5000/demo:latest", &err);
	tap_is_int(r, -EACCES, "reject: -EACCES");
	tap_is_str(err.msg, "127.0.0.1:5000/demo:latest: rejected by policy /t/policy.json "
			    "(scope \"127.0.0.1:5000/demo\": reject)", "reject: the message");
	tap_is_int(check(policy, "127.0.0.1:5000/demo:ok", &err), 0, "an exact tag accepted over its repository");
	tap_is_int(check(policy, "localhost:5000/x", &err), 0, "host:port accepted");
	r = check(policy, "127.0.0.1:5000/other", &err);
	tap_is_str(err.msg, "127.0.0.1:5000/other:latest: rejected by policy /t/policy.json (default: reject)",
		   "the default, named");
	r = check(policy, "127.0.0.1:5000/signed:1", &err);
	if (mlfs_gpg_available())
		tap_is_int(r, 1, "signedBy: accepted if its signatures verify");
	else
		tap_ok(r == -EACCES && strstr(err.msg, "127.0.0.1:5000/signed:1: policy /t/policy.json requires "
						       "signatures (scope \"127.0.0.1:5000/signed\": signedBy GPGKeys "
						       "keyPath /k.gpg); this mlfs was built without OpenPGP support"),
		       "signedBy without gpgme: refused, fail closed (%s)", err.msg);
	r = check(policy, "127.0.0.1:5000/fulcio:1", &err);
	tap_ok(r == -EACCES && strstr(err.msg, "not supported yet"), "fulcio: not supported yet (%s)", err.msg);
	/* Tag and digest: both names must be accepted. */
	tap_is_int(check(policy, "127.0.0.1:5000/demo:ok@" DIGEST, &err), -EACCES, "tag accepted, digest rejected");
	tap_ok(strstr(err.msg, "127.0.0.1:5000/demo@" DIGEST ": rejected") != NULL, "the digest name is named");
	tap_is_int(check(policy, "a.example.com/x:1@" DIGEST, &err), 0, "tag and digest, both accepted");
	r = check("{\"default\":[" ACCEPT "],\"transports\":{\"docker\":{\"\":[{\"type\":\"reject\"}]}}}", "a.io/b",
		  &err);
	tap_is_str(err.msg, "a.io/b:latest: rejected by policy /t/policy.json (scope \"\" of transport docker: reject)",
		   "the transport's default, named");
}

/* ---- which file, and reading it ------------------------------------------- */

static void put(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	if (!f || fputs(text, f) == EOF || fclose(f) != 0) {
		perror(path);
		exit(99);
	}
}

static void test_files(void)
{
	char root[] = "/tmp/mlfs-test-policy.XXXXXX", home[PATH_MAX], sys[PATH_MAX], user[PATH_MAX + 64], *path;
	if (!mkdtemp(root)) {
		perror("mkdtemp");
		exit(99);
	}
	snprintf(home, sizeof home, "%s/home", root);
	snprintf(sys, sizeof sys, "%s/etc-policy.json", root);
	snprintf(user, sizeof user, "%s/.config/containers/policy.json", home);

	tap_ok(mlfs_policy_locate_in(NULL, NULL, home, sys, &path) == 0 && !path, "no file anywhere: none");
	put(sys, "{" DEF "}");
	tap_ok(mlfs_policy_locate_in(NULL, "", home, sys, &path) == 0 && path && !strcmp(path, sys),
	       "the system file (an empty $MLFS_POLICY ignored)");
	free(path);
	char dir[PATH_MAX + 32];
	snprintf(dir, sizeof dir, "%s/.config", home);
	if (mkdir(home, 0700) < 0 || mkdir(dir, 0700) < 0 || (strcat(dir, "/containers"), mkdir(dir, 0700)) < 0) {
		perror("mkdir");
		exit(99);
	}
	put(user, "{" DEF "}");
	tap_ok(mlfs_policy_locate_in(NULL, NULL, home, sys, &path) == 0 && path && !strcmp(path, user),
	       "the user's file before the system's");
	free(path);
	tap_ok(mlfs_policy_locate_in(NULL, "/env.json", home, sys, &path) == 0 && path && !strcmp(path, "/env.json"),
	       "$MLFS_POLICY before both, even when missing (then an error to read it)");
	free(path);
	tap_ok(mlfs_policy_locate_in("/opt.json", "/env.json", home, sys, &path) == 0 && path &&
	       !strcmp(path, "/opt.json"), "the option before everything");
	free(path);

	struct mlfs_policy *p = NULL;
	struct mlfs_err err = { 0 };
	tap_ok(mlfs_policy_load(user, &p, &err) == 0 && p && !strcmp(p->path, user), "a file loads");
	mlfs_policy_free(p);
	char missing[PATH_MAX + 16];
	snprintf(missing, sizeof missing, "%s/missing.json", root);
	tap_ok(mlfs_policy_load(missing, &p, &err) == -ENOENT && !p && strstr(err.msg, "cannot read the policy") &&
	       strstr(err.msg, missing), "a missing file: -ENOENT naming it");
	tap_ok(mlfs_policy_load(root, &p, &err) < 0 && !p && strstr(err.msg, root), "a directory: an error");
	put(sys, "{\"default\":[{\"type\":\"insecureAcceptAnything\"}],\"transport\":{}}");
	tap_ok(mlfs_policy_load(sys, &p, &err) == -EINVAL && strstr(err.msg, sys) &&
	       strstr(err.msg, "unknown key \"transport\""), "a typo: -EINVAL naming the file and the key");
	/* Larger than the cap */
	FILE *f = fopen(sys, "w");
	for (int i = 0; f && i < (5 << 20) / 8; i++)
		fputs("        ", f);
	if (f)
		fclose(f);
	tap_ok(mlfs_policy_load(sys, &p, &err) == -EFBIG, "a file above 4 MiB: -EFBIG");

	unlink(user);
	unlink(sys);
	rmdir(dir);
	snprintf(dir, sizeof dir, "%s/.config", home);
	rmdir(dir);
	rmdir(home);
	rmdir(root);
}

int main(void)
{
	test_full();
	test_valid();
	test_invalid();
	test_scopes();
	test_verdicts();
	test_messages();
	test_files();
	return tap_done();
}
