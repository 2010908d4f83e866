/* Signature checks that need no key and no network: the signed JSON
 * (sigpayload.c), signedIdentity matching (sigmatch.c), registries.d
 * parsing and lookaside lookup (registriesd.c), lookaside URLs and files
 * (lookaside.c), and the signatures kept for offline use (sigcache.c).
 * The verification itself, with gpg and skopeo's
 * signatures, is tests/integration/test_signatures.py. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>

#include "fetch/internal.h"
#include "tap.h"

#define D1 "sha256:1111111111111111111111111111111111111111111111111111111111111111"
#define D2 "sha256:2222222222222222222222222222222222222222222222222222222222222222"

/* ---- the signed JSON ------------------------------------------------------ */

static int payload(const char *json, enum mlfs_sig_kind kind, struct mlfs_sig_payload *p, char *why, size_t len)
{
	return mlfs_sig_payload_parse(json, strlen(json), kind, p, why, len);
}

#define SIMPLE(critical_extra, optional)                                                                  \
	"{\"critical\":{\"type\":\"atomic container signature\",\"image\":{\"docker-manifest-digest\":\"" D1 \
	"\"},\"identity\":{\"docker-reference\":\"example.com/ns/app:1\"}" critical_extra "},\"optional\":" optional "}"

static void test_payload(void)
{
	struct mlfs_sig_payload p;
	char why[256];
	int r = payload(SIMPLE("", "{\"creator\":\"skopeo 1.9.3\",\"timestamp\":1700000000}"), MLFS_SIG_SIMPLE, &p,
			why, sizeof why);
	tap_is_int(r, 0, "skopeo's signed JSON parses");
	tap_is_str(p.digest, D1, "the digest");
	tap_is_str(p.reference, "example.com/ns/app:1", "the reference");
	tap_is_str(p.creator, "skopeo 1.9.3", "the creator");
	tap_ok(p.has_timestamp && p.timestamp == 1700000000, "the timestamp");
	mlfs_sig_payload_clear(&p);
	tap_is_int(payload(SIMPLE("", "{\"anything\":[1,2],\"timestamp\":1.7e9}"), MLFS_SIG_SIMPLE, &p, why,
			   sizeof why), 0, "unknown optional fields are ignored; an integral float timestamp is fine");
	mlfs_sig_payload_clear(&p);

	static const struct {
		const char *json;
		enum mlfs_sig_kind kind;
		const char *why;
	} bad[] = {
		{ SIMPLE(",\"extra\":1", "{}"), MLFS_SIG_SIMPLE, "\"critical\" has an unknown field \"extra\"" },
		{ SIMPLE("", "null"), MLFS_SIG_SIMPLE, "\"optional\" is not a JSON object" },
		{ SIMPLE("", "{\"timestamp\":1.5}"), MLFS_SIG_SIMPLE, "optional.timestamp is not an integer" },
		{ SIMPLE("", "{\"timestamp\":\"1\"}"), MLFS_SIG_SIMPLE, "optional.timestamp is not an integer" },
		{ SIMPLE("", "{\"creator\":1}"), MLFS_SIG_SIMPLE, "optional.creator is not a string" },
		{ SIMPLE("", "{}"), MLFS_SIG_COSIGN,
		  "critical.type is \"atomic container signature\", not \"cosign container image signature\"" },
		{ "{\"critical\":{}}", MLFS_SIG_SIMPLE, "the signed content has no \"optional\"" },
		{ "{\"optional\":{}}", MLFS_SIG_SIMPLE, "the signed content has no \"critical\"" },
		{ "{\"critical\":{},\"optional\":{},\"x\":1}", MLFS_SIG_SIMPLE,
		  "the signed content has an unknown field \"x\"" },
		{ "{\"critical\":{\"type\":\"atomic container signature\",\"image\":{},\"identity\":{}},\"optional\":{}}",
		  MLFS_SIG_SIMPLE, "critical.image has no \"docker-manifest-digest\"" },
		{ "{\"critical\":{\"type\":\"atomic container signature\",\"image\":{\"docker-manifest-digest\":1},"
		  "\"identity\":{\"docker-reference\":\"a\"}},\"optional\":{}}",
		  MLFS_SIG_SIMPLE, "critical.image.docker-manifest-digest is not a string" },
		{ "{\"critical\":{\"type\":\"atomic container signature\",\"image\":{\"docker-manifest-digest\":\"x\","
		  "\"size\":1},\"identity\":{\"docker-reference\":\"a\"}},\"optional\":{}}",
		  MLFS_SIG_SIMPLE, "critical.image has an unknown field \"size\"" },
		{ "{\"critical\":{\"type\":\"atomic container signature\",\"image\":{\"docker-manifest-digest\":\"x\"},"
		  "\"identity\":{\"docker-reference\":\"a\",\"docker-reference\":\"b\"}},\"optional\":{}}",
		  MLFS_SIG_SIMPLE, NULL /* duplicate key: not JSON to us */ },
		{ "{\"critical\":{\"type\":7,\"image\":{},\"identity\":{}},\"optional\":{}}", MLFS_SIG_SIMPLE,
		  "critical.type is not a string" },
		{ "[]", MLFS_SIG_SIMPLE, "the signed content is not a JSON object" },
		{ "not json", MLFS_SIG_SIMPLE, NULL },
		{ SIMPLE("", "{}") "x", MLFS_SIG_SIMPLE, NULL },
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		why[0] = '\0';
		r = payload(bad[i].json, bad[i].kind, &p, why, sizeof why);
		tap_ok(r == -EINVAL && !p.digest && !p.reference, "bad payload #%zu refused (%s)", i, why);
		if (bad[i].why)
			tap_is_str(why, bad[i].why, "bad payload: why");
		else
			tap_ok(strstr(why, "not JSON") != NULL, "bad payload #%zu: not JSON (%s)", i, why);
	}

	/* cosign: "optional" may be null (cosign writes that) */
	static const char cosign[] =
		"{\"critical\":{\"identity\":{\"docker-reference\":\"example.com/app\"},\"image\":{\"docker-manifest-"
		"digest\":\"" D2 "\"},\"type\":\"cosign container image signature\"},\"optional\":null}";
	tap_is_int(payload(cosign, MLFS_SIG_COSIGN, &p, why, sizeof why), 0, "cosign's payload, optional null");
	tap_is_str(p.reference, "example.com/app", "cosign: the reference");
	mlfs_sig_payload_clear(&p);
	tap_is_int(payload(cosign, MLFS_SIG_SIMPLE, &p, why, sizeof why), -EINVAL, "cosign's type is not simple signing");
}

/* ---- signedIdentity ------------------------------------------------------- */

static void test_identity(void)
{
	static struct mlfs_policy_identity exact = { .type = MLFS_PRM_MATCH_EXACT },
				    default_ = { .type = MLFS_PRM_MATCH_REPO_DIGEST_OR_EXACT },
				    repo = { .type = MLFS_PRM_MATCH_REPOSITORY },
				    exact_ref = { .type = MLFS_PRM_EXACT_REFERENCE, .reference = "example.com/up/app:1" },
				    exact_ref_name = { .type = MLFS_PRM_EXACT_REFERENCE, .reference = "example.com/up/app" },
				    exact_repo = { .type = MLFS_PRM_EXACT_REPOSITORY, .reference = "example.com/up/app" },
				    remap = { .type = MLFS_PRM_REMAP_IDENTITY, .prefix = "mirror.local/up",
					      .signed_prefix = "example.com/up" },
				    remap_host = { .type = MLFS_PRM_REMAP_IDENTITY, .prefix = "mirror.local",
						   .signed_prefix = "example.com" };
	static const char img_tag[] = "example.com/up/app:1", img_digest[] = "example.com/up/app@" D1;
	static const struct {
		const struct mlfs_policy_identity *id;
		const char *image, *signed_ref;
		bool want;
		const char *what;
	} table[] = {
		{ &default_, img_tag, "example.com/up/app:1", true, "default: the same tag" },
		{ &default_, img_tag, "example.com/up/app:2", false, "default: another tag" },
		{ &default_, img_tag, "example.com/up/app", false, "default: a name only is not an image" },
		{ &default_, img_tag, "example.com/up/other:1", false, "default: another repository" },
		{ &default_, img_digest, "example.com/up/app:7", true, "default, by digest: the repository is enough" },
		{ &default_, img_digest, "example.com/up/other:7", false, "default, by digest: another repository" },
		{ &default_, img_digest, "example.com/up/app", false, "default, by digest: a name only is still not an image" },
		{ &remap_host, "mirror.local/up/app@" D1, "example.com/up/app", false, "remapIdentity, by digest: nor here" },
		{ &default_, "docker.io/library/busybox:latest", "busybox:latest", true, "normalised: busybox" },
		{ &default_, "docker.io/library/busybox:latest", "busybox", false, "busybox without a tag" },
		{ &default_, img_tag, "not a reference!", false, "garbage refused" },
		{ &exact, img_tag, "example.com/up/app:1", true, "exact: the same" },
		{ &exact, img_digest, "example.com/up/app:1", false, "exact, by digest: a tag is not the digest" },
		{ &exact, img_digest, "example.com/up/app@" D1, true, "exact, by digest: the digest" },
		{ &repo, img_tag, "example.com/up/app:9", true, "matchRepository: any tag" },
		{ &repo, img_tag, "example.com/up/app", true, "matchRepository: the name alone" },
		{ &repo, img_tag, "example.com/up/apps:1", false, "matchRepository: another repository" },
		{ &exact_ref, "other.io/x:1", "example.com/up/app:1", true, "exactReference: whatever the image" },
		{ &exact_ref, "other.io/x:1", "example.com/up/app:2", false, "exactReference: another tag" },
		{ &exact_ref_name, "other.io/x:1", "example.com/up/app", false, "exactReference: names never match" },
		{ &exact_repo, "other.io/x:1", "example.com/up/app:5", true, "exactRepository" },
		{ &exact_repo, "other.io/x:1", "example.com/up/apx:5", false, "exactRepository: another repository" },
		{ &remap, "mirror.local/up/app:1", "example.com/up/app:1", true, "remapIdentity: the mirror's name remapped" },
		{ &remap, "mirror.local/up/app:1", "mirror.local/up/app:1", false, "remapIdentity: not the mirror's name" },
		{ &remap, "mirror.local/upx/app:1", "example.com/upx/app:1", false, "remapIdentity: a whole component" },
		{ &remap, "other.io/up/app:1", "other.io/up/app:1", true, "remapIdentity: no prefix, as the default" },
		{ &remap_host, "mirror.local/up/app@" D1, "example.com/up/app:3", true, "remapIdentity: a host, by digest" },
	};
	for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
		tap_ok(mlfs_sig_identity_matches(table[i].id, table[i].image, table[i].signed_ref) == table[i].want,
		       "%s", table[i].what);
}

/* ---- registries.d ----------------------------------------------------------- */

static struct mlfs_registries_d *regd(const char *yaml, struct mlfs_err *err)
{
	struct mlfs_registries_d *c = mlfs_registries_d_new("/t/registries.d");
	if (mlfs_registries_d_parse(c, yaml, strlen(yaml), "/t/registries.d/a.yaml", err) < 0) {
		mlfs_registries_d_free(c);
		return NULL;
	}
	return c;
}

static void lookaside_is(const struct mlfs_registries_d *c, const char *identity, const char *repo,
			 const char *want, const char *want_from)
{
	const char *from = NULL;
	char *url = mlfs_registries_d_lookaside(c, identity, repo, &from);
	tap_is_str(url, want, identity);
	tap_is_str(from, want_from, "chosen by");
	free(url);
}

static void test_registries_d(void)
{
	struct mlfs_err err = { 0 };
	struct mlfs_registries_d *c = regd(
		"# a comment\n"
		"default-docker:\n"
		"  lookaside: https://sigs.example.com/default\n"
		"  lookaside-staging: file:///var/lib/staging\n"
		"docker:\n"
		"  example.com:\n"
		"    lookaside: file:///srv/example\n"
		"  example.com/team:\n"
		"    sigstore: http://old.example.com/team\n"
		"    use-sigstore-attachments: true\n"
		"  example.com/team/app:\n"
		"    use-cosign-attachments: false\n"
		"  example.com/team/app:v1:\n"
		"    lookaside: file:///srv/v1\n"
		"  '*.example.org':\n"
		"    lookaside: file:///srv/org\n"
		"    future-key: whatever\n",
		&err);
	tap_ok(c != NULL, "registries.d parses (%s)", err.msg);
	if (!c)
		return;
	lookaside_is(c, "example.com/x/y:1", "x/y", "file:///srv/example/x/y", "example.com");
	lookaside_is(c, "example.com/team/app:v2", "team/app", "http://old.example.com/team/team/app",
		     "example.com/team");
	lookaside_is(c, "example.com/team/app:v1", "team/app", "file:///srv/v1/team/app", "example.com/team/app:v1");
	lookaside_is(c, "reg.example.org/a@" D1, "a", "file:///srv/org/a", "*.example.org");
	lookaside_is(c, "other.io/a:1", "a", "https://sigs.example.com/default/a", "default-docker");
	tap_ok(mlfs_registries_d_attachments(c, "example.com/team/x:1"), "use-sigstore-attachments: true");
	tap_ok(!mlfs_registries_d_attachments(c, "example.com/team/app:1"), "use-cosign-attachments: false, closer");
	tap_ok(!mlfs_registries_d_attachments(c, "other.io/a:1"), "unset: false");
	/* Two files: a scope defined in both is an error, as in containers/image */
	static const char twice[] = "docker:\n  example.com:\n    lookaside: file:///x\n";
	static const char twice_default[] = "default-docker:\n  lookaside: file:///x\n";
	int r = mlfs_registries_d_parse(c, twice, strlen(twice), "/t/registries.d/b.yaml", &err);
	tap_ok(r == -EINVAL && strstr(err.msg, "the docker scope \"example.com\" is also defined in "
					       "/t/registries.d/a.yaml"), "a scope twice (%s)", err.msg);
	r = mlfs_registries_d_parse(c, twice_default, strlen(twice_default), "/t/registries.d/c.yaml", &err);
	tap_ok(r == -EINVAL && strstr(err.msg, "\"default-docker\" is also defined in"), "default-docker twice (%s)",
	       err.msg);
	mlfs_registries_d_free(c);

	/* Nothing configured: containers/image's built-in store */
	c = regd("", &err);
	tap_ok(c != NULL, "an empty file");
	if (c) {
		const char *from;
		char *url = mlfs_registries_d_lookaside(c, "a.io/b:1", "b", &from);
		if (geteuid() == 0)
			tap_is_str(url, "file:///var/lib/containers/sigstore/b", "root: /var/lib/containers/sigstore");
		else
			tap_ok(url && strstr(url, "/.local/share/containers/sigstore/b"), "a user: ~/.local/share (%s)", url);
		free(url);
		mlfs_registries_d_free(c);
	}

	static const struct {
		const char *yaml, *msg;
	} bad[] = {
		{ "docker: [a, b]\n", "line 1: \"docker\" must be a mapping of scopes" },
		{ "- a\n- b\n", "the top level must be a mapping" },
		{ "docker:\n  a.io:\n    lookaside: [x]\n", "line 3: \"lookaside\" must be a string" },
		{ "docker:\n  a.io:\n    use-sigstore-attachments: \"true\"\n", "must be true or false" },
		{ "docker:\n  a.io:\n    use-sigstore-attachments: maybe\n", "must be true or false" },
		{ "docker:\n  a.io: 5\n", "a configuration section must be a mapping" },
		{ "docker:\n  a.io: {}\n  a.io: {}\n", "also defined in" },
		{ "docker: {}\ndocker: {}\n", "\"docker\" appears twice" },
		{ "docker:\n  [x]: {}\n", "a scope must be a string" },
		{ "docker: {\n", "invalid registries.d file /t/registries.d/a.yaml: line" },
		{ "a: *nope\n", "invalid registries.d file" },
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		err.msg[0] = '\0';
		c = regd(bad[i].yaml, &err);
		tap_ok(!c && strstr(err.msg, bad[i].msg), "bad registries.d #%zu: %s", i, err.msg);
		mlfs_registries_d_free(c);
	}
	c = regd("docker:\ndefault-docker: ~\nunknown: [1]\n", &err);
	tap_ok(c && !c->n_docker && !c->default_docker, "null sections and unknown keys are nothing (%s)", err.msg);
	mlfs_registries_d_free(c);
}

/* ---- lookaside stores -------------------------------------------------------- */

static void test_lookaside(void)
{
	char dir[] = "/tmp/mlfs-test-lookaside-XXXXXX";
	if (!mkdtemp(dir)) {
		tap_ok(false, "mkdtemp");
		return;
	}
	char path[512], base[600];
	snprintf(path, sizeof path, "%s/ns/app@sha256=%s", dir, D1 + 7);
	snprintf(base, sizeof base, "file://%s/ns/app", dir);
	struct mlfs_err err = { 0 };
	struct mlfs_lookaside *l = NULL;
	tap_is_int(mlfs_lookaside_new(base, true, &l, &err), 0, "a file:// store, offline");
	void *buf = NULL;
	size_t len = 0;
	tap_is_int(mlfs_lookaside_get(l, D1, 1, &buf, &len, &err), -ENOENT, "no signature: -ENOENT");
	char sub[600];
	snprintf(sub, sizeof sub, "%s/ns", dir);
	mkdir(sub, 0755);
	mkdir(path, 0755);
	snprintf(sub, sizeof sub, "%s/signature-1", path);
	FILE *f = fopen(sub, "w");
	if (f) {
		fputs("sig", f);
		fclose(f);
	}
	tap_is_int(mlfs_lookaside_get(l, D1, 1, &buf, &len, &err), 0, "signature-1 read");
	tap_ok(len == 3 && !memcmp(buf, "sig", 3), "its bytes");
	free(buf);
	tap_is_int(mlfs_lookaside_get(l, D1, 2, &buf, &len, &err), -ENOENT, "signature-2: the end");
	char *url = mlfs_lookaside_url(l, D1, 2);
	char want[700];
	snprintf(want, sizeof want, "%s@sha256=%s/signature-2", base, D1 + 7);
	tap_is_str(url, want, "the URL of signature-2");
	free(url);
	mlfs_lookaside_free(l);
	unlink(sub);
	rmdir(path);
	snprintf(sub, sizeof sub, "%s/ns", dir);
	rmdir(sub);
	rmdir(dir);

	tap_is_int(mlfs_lookaside_new("https://sigs.example.com/x", true, &l, &err), 0, "an https store, offline");
	tap_ok(mlfs_lookaside_get(l, D1, 1, &buf, &len, &err) == -ENETUNREACH && strstr(err.msg, "cannot be read offline"),
	       "offline: an https store refuses (%s)", err.msg);
	mlfs_lookaside_free(l);
	tap_ok(mlfs_lookaside_new("ftp://x/y", false, &l, &err) == -EINVAL && strstr(err.msg, "only file://"),
	       "ftp:// refused (%s)", err.msg);
}

/* ---- sigstore: the .sig manifest and the signatures --------------------------- */

static void test_sig_manifest(void)
{
	char tag[128], why[256];
	tap_is_int(mlfs_sig_tag(D1, tag, sizeof tag), 0, "the .sig tag");
	tap_is_str(tag, "sha256-" "1111111111111111111111111111111111111111111111111111111111111111" ".sig", "its name");
	static const char manifest[] =
		"{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\","
		"\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"size\":2,\"digest\":\"" D2 "\"},"
		"\"layers\":[{\"mediaType\":\"application/vnd.dev.cosign.simplesigning.v1+json\",\"size\":200,"
		"\"digest\":\"" D1 "\",\"annotations\":{\"dev.cosignproject.cosign/signature\":\"MEUCIQ==\"}},"
		"{\"mediaType\":\"application/vnd.dev.cosign.simplesigning.v1+json\",\"size\":7,\"digest\":\"" D2 "\","
		"\"annotations\":{\"dev.sigstore.cosign/certificate\":\"PEM\"}}]}";
	struct mlfs_sig_layer *l = NULL;
	size_t n = 0;
	tap_is_int(mlfs_sig_manifest_parse(manifest, strlen(manifest), &l, &n, why, sizeof why), 0, "a .sig manifest");
	tap_ok(n == 2 && l && !strcmp(l[0].desc.digest, D1) && l[0].desc.size == 200 &&
	       !strcmp(l[0].signature, "MEUCIQ==") && !l[0].has_cert, "layer 1: payload and signature");
	tap_ok(n == 2 && l && !l[1].signature && l[1].has_cert, "layer 2: no signature, a certificate");
	mlfs_sig_layers_free(l, n);
	static const char *const bad[] = {
		"{}", "{\"layers\":{}}", "{\"layers\":[1]}",
		"{\"layers\":[{\"mediaType\":\"x\",\"size\":1,\"digest\":\"md5:00\"}]}",
		"{\"layers\":[{\"mediaType\":\"x\",\"size\":1,\"digest\":\"" D1 "\",\"annotations\":"
		"{\"dev.cosignproject.cosign/signature\":5}}]}",
		"{\"layers\":[],\"layers\":[]}", "nope",
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		why[0] = '\0';
		int r = mlfs_sig_manifest_parse(bad[i], strlen(bad[i]), &l, &n, why, sizeof why);
		tap_ok(r == -EINVAL && !l && !n && why[0], "bad .sig manifest #%zu (%s)", i, why);
	}
}

/* A key made here, a payload signed as cosign signs it, checked. */
static void test_sigstore_verify(void)
{
	EVP_PKEY *key = EVP_EC_gen("P-256");
	EVP_PKEY *other = EVP_EC_gen("P-256");
	BIO *bio = BIO_new(BIO_s_mem());
	if (!key || !other || !bio || PEM_write_bio_PUBKEY(bio, key) != 1) {
		tap_ok(false, "making a P-256 key");
		return;
	}
	char *pem = NULL;
	long pem_len = BIO_get_mem_data(bio, &pem);
	struct mlfs_policy_blob data = { .data = (unsigned char *)pem, .len = (size_t)pem_len };
	struct mlfs_policy_keys keys = { .kind = MLFS_KEYS_DATA, .n = 1, .datas = &data };
	struct mlfs_sigstore_keys *k = NULL;
	struct mlfs_err err = { 0 };
	tap_is_int(mlfs_sigstore_keys_new(&keys, &k, &err), 0, "the key, as PEM keyData");

	static const char payload[] = "{\"critical\":{}}";
	unsigned char sig[256], sig_other[256];
	size_t sig_len = sizeof sig, other_len = sizeof sig_other;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	bool signed_ok = EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, key) == 1 &&
			 EVP_DigestSign(ctx, sig, &sig_len, (const unsigned char *)payload, strlen(payload)) == 1;
	EVP_MD_CTX_reset(ctx);
	signed_ok = signed_ok && EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, other) == 1 &&
		    EVP_DigestSign(ctx, sig_other, &other_len, (const unsigned char *)payload, strlen(payload)) == 1;
	EVP_MD_CTX_free(ctx);
	char b64[400], b64_other[400], who[80], why[256];
	EVP_EncodeBlock((unsigned char *)b64, sig, (int)sig_len);
	EVP_EncodeBlock((unsigned char *)b64_other, sig_other, (int)other_len);
	tap_ok(signed_ok, "signed");
	tap_is_int(mlfs_sigstore_verify(k, payload, strlen(payload), b64, who, sizeof who, why, sizeof why), 0,
		   "a good signature verifies");
	tap_ok(!strncmp(who, "sigstore key sha256:", 20) && strlen(who) == 36, "named by its key (%s)", who);
	tap_is_int(mlfs_sigstore_verify(k, payload, strlen(payload) - 1, b64, who, sizeof who, why, sizeof why),
		   -EBADMSG, "another payload does not");
	tap_is_int(mlfs_sigstore_verify(k, payload, strlen(payload), b64_other, who, sizeof who, why, sizeof why),
		   -EBADMSG, "another key's signature does not");
	tap_is_str(why, "the signature does not verify with the policy's key", "why");
	tap_is_int(mlfs_sigstore_verify(k, payload, strlen(payload), "!!", who, sizeof who, why, sizeof why), -EBADMSG,
		   "not base64");
	tap_is_str(why, "the signature annotation is not base64", "why");
	mlfs_sigstore_keys_free(k);
	struct mlfs_policy_blob junk = { .data = (unsigned char *)"junk", .len = 4 };
	keys.datas = &junk;
	tap_ok(mlfs_sigstore_keys_new(&keys, &k, &err) == -EINVAL && strstr(err.msg, "holds no PEM public key"),
	       "keyData without a key (%s)", err.msg);
	char *paths[] = { "/nonexistent/cosign.pub" };
	struct mlfs_policy_keys files = { .kind = MLFS_KEYS_PATH, .n = 1, .paths = paths };
	tap_ok(mlfs_sigstore_keys_new(&files, &k, &err) < 0 && strstr(err.msg, "/nonexistent/cosign.pub"),
	       "a missing key file, named (%s)", err.msg);
	BIO_free(bio);
	EVP_PKEY_free(key);
	EVP_PKEY_free(other);
}

/* A key text as PEM: one block of a key (PUBLIC KEY, or with pkcs1 an
 * RSA key as RSA PUBLIC KEY), appended to out. */
static void pem_append(BIO *out, EVP_PKEY *key, bool pkcs1)
{
	if (!pkcs1) {
		PEM_write_bio_PUBKEY(out, key);
		return;
	}
	unsigned char *der = NULL;
	int n = i2d_PublicKey(key, &der);
	if (n > 0)
		PEM_write_bio(out, "RSA PUBLIC KEY", "", der, n);
	OPENSSL_free(der);
}

/* keys_new on a PEM text (keyData): its result, the keys and the error. */
static int keys_from(BIO *text, struct mlfs_sigstore_keys **k, struct mlfs_err *err)
{
	char *pem = NULL;
	long len = BIO_get_mem_data(text, &pem);
	struct mlfs_policy_blob data = { .data = (unsigned char *)pem, .len = (size_t)len };
	struct mlfs_policy_keys keys = { .kind = MLFS_KEYS_DATA, .n = 1, .datas = &data };
	*k = NULL;
	memset(err, 0, sizeof *err);
	return mlfs_sigstore_keys_new(&keys, k, err);
}

static bool verifies(struct mlfs_sigstore_keys *k, EVP_PKEY *signer)
{
	static const char payload[] = "{\"critical\":{}}";
	unsigned char sig[1024];
	size_t sig_len = sizeof sig;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	const EVP_MD *md = EVP_PKEY_base_id(signer) == EVP_PKEY_ED25519 ? NULL : EVP_sha256();
	bool ok = ctx && EVP_DigestSignInit(ctx, NULL, md, NULL, signer) == 1 &&
		  EVP_DigestSign(ctx, sig, &sig_len, (const unsigned char *)payload, strlen(payload)) == 1;
	EVP_MD_CTX_free(ctx);
	char b64[1500], who[80], why[256];
	EVP_EncodeBlock((unsigned char *)b64, sig, (int)sig_len);
	return ok && mlfs_sigstore_verify(k, payload, strlen(payload), b64, who, sizeof who, why, sizeof why) == 0;
}

/* A key text is one key, read as containers/image reads it (the first PEM
 * block; PUBLIC KEY or RSA PUBLIC KEY; the key kinds Go reads), checked
 * against tests/reference/cimage-verify by test_sigstore.py. */
static void test_sigstore_keys(void)
{
	EVP_PKEY *p256 = EVP_EC_gen("P-256"), *p384 = EVP_EC_gen("P-384"), *k1 = EVP_EC_gen("secp256k1");
	EVP_PKEY *rsa = EVP_RSA_gen(1024), *ed = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
	EVP_PKEY *x25519 = EVP_PKEY_Q_keygen(NULL, NULL, "X25519");
	if (!p256 || !p384 || !k1 || !rsa || !ed || !x25519) {
		tap_ok(false, "making keys");
		return;
	}
	struct mlfs_sigstore_keys *k;
	struct mlfs_err err;
	struct {
		const char *what;
		EVP_PKEY *key;
		bool pkcs1;
	} good[] = {
		{ "P-256", p256, false }, { "P-384", p384, false }, { "RSA (PUBLIC KEY)", rsa, false },
		{ "RSA (RSA PUBLIC KEY)", rsa, true }, { "Ed25519", ed, false },
	};
	for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
		BIO *b = BIO_new(BIO_s_mem());
		pem_append(b, good[i].key, good[i].pkcs1);
		tap_ok(keys_from(b, &k, &err) == 0, "%s: read (%s)", good[i].what, err.msg);
		tap_ok(k && verifies(k, good[i].key), "%s: its signature verifies", good[i].what);
		mlfs_sigstore_keys_free(k);
		BIO_free(b);
	}

	/* Two keys in one text: the first is the key, the second nothing. */
	BIO *two = BIO_new(BIO_s_mem());
	pem_append(two, p384, false);
	pem_append(two, p256, false);
	tap_is_int(keys_from(two, &k, &err), 0, "two PEM keys in one text: read");
	tap_ok(k && verifies(k, p384) && !verifies(k, p256), "only the first is a key of the policy");
	mlfs_sigstore_keys_free(k);
	BIO_free(two);

	/* Refused when read, as Go refuses to parse them (or to verify with them). */
	struct {
		const char *what;
		EVP_PKEY *key;
		const char *says;
	} bad[] = {
		{ "secp256k1", k1, "is an ECDSA key on secp256k1" },
		{ "X25519", x25519, "is not an ECDSA, RSA or Ed25519 key" },
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		BIO *b = BIO_new(BIO_s_mem());
		pem_append(b, bad[i].key, false);
		tap_ok(keys_from(b, &k, &err) == -EINVAL && !k && strstr(err.msg, bad[i].says), "%s refused (%s)",
		       bad[i].what, err.msg);
		BIO_free(b);
	}
	BIO *cert_first = BIO_new(BIO_s_mem());
	PEM_write_bio(cert_first, "CERTIFICATE", "", (const unsigned char *)"\x30\x00", 2);
	pem_append(cert_first, p256, false);
	tap_ok(keys_from(cert_first, &k, &err) == -EINVAL && strstr(err.msg, "\"CERTIFICATE\" block first"),
	       "another block first: no key (%s)", err.msg);
	BIO_free(cert_first);
	BIO *trailing = BIO_new(BIO_s_mem());
	unsigned char *der = NULL;
	int n = i2d_PUBKEY(p256, &der);
	unsigned char longer[512];
	if (n > 0 && n < (int)sizeof longer - 1) {
		memcpy(longer, der, (size_t)n);
		longer[n] = 0;
		PEM_write_bio(trailing, "PUBLIC KEY", "", longer, n + 1);
	}
	OPENSSL_free(der);
	tap_ok(keys_from(trailing, &k, &err) == -EINVAL && strstr(err.msg, "does not parse"),
	       "a byte after the key: refused (%s)", err.msg);
	BIO_free(trailing);
	EVP_PKEY_free(p256);
	EVP_PKEY_free(p384);
	EVP_PKEY_free(k1);
	EVP_PKEY_free(rsa);
	EVP_PKEY_free(ed);
	EVP_PKEY_free(x25519);
}

/* ---- signatures kept for offline use ------------------------------------- */

static size_t files_in(const char *dir)
{
	DIR *d = opendir(dir);
	size_t n = 0;
	struct dirent *de;
	while (d && (de = readdir(d)))
		n += de->d_name[0] != '.';
	if (d)
		closedir(d);
	return n;
}

static void test_sigcache_format(void)
{
	struct mlfs_sigcache_entry e = { .kind = MLFS_SIG_COSIGN }, back;
	snprintf(e.digest, sizeof e.digest, "%s", D1);
	e.source = strdup("example.com/app");
	const unsigned char bin[] = { 0, 1, 2, 0xff, 'x' };
	tap_is_int(mlfs_sigcache_entry_add(&e, bin, sizeof bin, "c2ln"), 0, "a payload and its signature");
	tap_is_int(mlfs_sigcache_entry_add(&e, bin, sizeof bin, "c2ln"), 0, "the same again");
	tap_is_int(mlfs_sigcache_entry_add(&e, "", 0, "eA=="), 0, "an empty payload");
	tap_is_int((int)e.n, 2, "kept once each");
	char *json = NULL;
	size_t len = 0;
	tap_is_int(mlfs_sigcache_encode(&e, &json, &len), 0, "encoded");
	tap_is_int(mlfs_sigcache_decode(json, len, MLFS_SIG_COSIGN, D1, "example.com/app", &back), 0, "decoded");
	tap_ok(back.n == 2 && back.v[0].len == sizeof bin && !memcmp(back.v[0].data, bin, sizeof bin) &&
	       !strcmp(back.v[0].signature, "c2ln") && back.v[1].len == 0 && !strcmp(back.v[1].signature, "eA=="),
	       "the same bytes back");
	mlfs_sigcache_entry_clear(&back);
	/* Never used for another kind, image or store. */
	tap_is_int(mlfs_sigcache_decode(json, len, MLFS_SIG_SIMPLE, D1, "example.com/app", &back), -EBADMSG,
		   "another kind");
	tap_is_int(mlfs_sigcache_decode(json, len, MLFS_SIG_COSIGN, D2, "example.com/app", &back), -EBADMSG,
		   "another digest");
	tap_is_int(mlfs_sigcache_decode(json, len, MLFS_SIG_COSIGN, D1, "example.com/other", &back), -EBADMSG,
		   "another source");
	free(json);
	mlfs_sigcache_entry_clear(&e);
	static const char *const bad[] = {
		"",
		"[]",
		"{\"kind\":\"sigstore\",\"digest\":\"" D1 "\",\"source\":\"s\"}",
		"{\"kind\":\"sigstore\",\"digest\":\"" D1 "\",\"source\":\"s\",\"signatures\":{}}",
		"{\"kind\":\"sigstore\",\"digest\":\"" D1 "\",\"source\":\"s\",\"signatures\":[],\"x\":1}",
		"{\"kind\":\"sigstore\",\"digest\":\"" D1 "\",\"source\":\"s\",\"signatures\":[{\"data\":\"!!\","
		"\"signature\":\"x\"}]}",
		/* sigstore without its signature, GPG with one */
		"{\"kind\":\"sigstore\",\"digest\":\"" D1 "\",\"source\":\"s\",\"signatures\":[{\"data\":\"\"}]}",
		"{\"kind\":\"lookaside\",\"digest\":\"" D1 "\",\"source\":\"s\",\"signatures\":[{\"data\":\"\","
		"\"signature\":\"x\"}]}",
		"{\"kind\":\"lookaside\",\"digest\":\"" D1 "\",\"source\":\"s\",\"signatures\":[{\"data\":\"\","
		"\"more\":1}]}",
		"{\"kind\":\"lookaside\",\"kind\":\"lookaside\",\"digest\":\"" D1 "\",\"source\":\"s\","
		"\"signatures\":[]}",
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		enum mlfs_sig_kind k = strstr(bad[i], "lookaside") ? MLFS_SIG_SIMPLE : MLFS_SIG_COSIGN;
		int r = mlfs_sigcache_decode(bad[i], strlen(bad[i]), k, D1, "s", &back);
		tap_ok(r == -EBADMSG, "bad kept file #%zu refused (%d)", i, r);
		tap_ok(!back.n && !back.v && !back.source, "bad kept file #%zu: nothing out", i);
	}
	char *p1 = mlfs_sigcache_path("/c", MLFS_SIG_SIMPLE, D1, "https://a/r"),
	     *p2 = mlfs_sigcache_path("/c", MLFS_SIG_SIMPLE, D1, "https://b/r"),
	     *p3 = mlfs_sigcache_path("/c", MLFS_SIG_COSIGN, D1, "https://a/r");
	tap_ok(p1 && !strncmp(p1, "/c/sigs/sha256/1111111111111111111111111111111111111111111111111111111111111111"
			      ".lookaside-", 90) && strlen(p1) == 90 + 16, "keyed by digest, kind and source (%s)", p1 ? p1 : "NULL");
	tap_ok(p1 && p2 && p3 && strcmp(p1, p2) && strcmp(p1, p3), "another source or kind, another file");
	tap_ok(!mlfs_sigcache_path("/c", MLFS_SIG_SIMPLE, "sha256:../../x", "s"), "not a digest: no path");
	free(p1);
	free(p2);
	free(p3);
}

static void test_sigcache_keep(void)
{
	char dir[] = "/tmp/mlfs-sigcache-XXXXXX", sigs[64], meta[128];
	if (!mkdtemp(dir)) {
		tap_ok(false, "mkdtemp");
		return;
	}
	snprintf(sigs, sizeof sigs, "%s/sigs/sha256", dir);
	struct mlfs_sigcache_entry got;
	tap_is_int(mlfs_sigcache_get(dir, MLFS_SIG_SIMPLE, D1, "http://s/r", &got), -ENOENT, "nothing kept");

	/* Accepted: what was fetched is kept, under both digests. */
	struct mlfs_sig_keep k = { 0 };
	tap_is_int(mlfs_sig_keep_fetched(&k, MLFS_SIG_SIMPLE, D1, "http://s/r", "one", 3, NULL), 0, "accepted");
	tap_is_int(mlfs_sig_keep_fetched(&k, MLFS_SIG_COSIGN, D2, "s/r", "two", 3, "c2ln"), 0, "accepted, sigstore");
	tap_is_int(mlfs_sig_keep_fetched(NULL, MLFS_SIG_SIMPLE, D1, "x", "x", 1, NULL), 0, "offline: no keep");
	tap_is_int(mlfs_sig_keep_commit(dir, &k, true), 0, "committed");
	mlfs_sig_keep_clear(&k);
	tap_is_int((int)files_in(sigs), 2, "two files");
	tap_is_int(mlfs_sigcache_get(dir, MLFS_SIG_SIMPLE, D1, "http://s/r", &got), 0, "read back");
	tap_ok(got.n == 1 && got.v[0].len == 3 && !memcmp(got.v[0].data, "one", 3), "its bytes");
	mlfs_sigcache_entry_clear(&got);
	tap_is_int(mlfs_sigcache_get(dir, MLFS_SIG_SIMPLE, D1, "http://other/r", &got), -ENOENT,
		   "another store: nothing");

	/* Refused: nothing written, and what the fresh fetch no longer found goes. */
	tap_is_int(mlfs_sig_keep_examined(&k, MLFS_SIG_SIMPLE, D1, "http://s/r"), 0, "examined, none accepted");
	tap_is_int(mlfs_sig_keep_fetched(&k, MLFS_SIG_SIMPLE, D2, "http://s/r", "new", 3, NULL), 0, "one accepted");
	tap_is_int(mlfs_sig_keep_commit(dir, &k, false), 0, "refused");
	mlfs_sig_keep_clear(&k);
	tap_is_int(mlfs_sigcache_get(dir, MLFS_SIG_SIMPLE, D1, "http://s/r", &got), -ENOENT, "dropped");
	tap_is_int(mlfs_sigcache_get(dir, MLFS_SIG_SIMPLE, D2, "http://s/r", &got), -ENOENT, "not written");

	/* Refused again: an entry an error cut short leaves what was kept;
	 * one read to the end (whose fresh set did not verify) removes it. */
	tap_is_int(mlfs_sig_keep_fetched(&k, MLFS_SIG_SIMPLE, D1, "http://s/r", "old", 3, NULL), 0, "kept");
	tap_is_int(mlfs_sig_keep_commit(dir, &k, true), 0, "committed");
	mlfs_sig_keep_clear(&k);
	tap_is_int(mlfs_sig_keep_fetched(&k, MLFS_SIG_SIMPLE, D1, "http://s/r", "bad", 3, NULL), 0, "cut short");
	tap_is_int(mlfs_sig_keep_commit(dir, &k, false), 0, "refused");
	mlfs_sig_keep_clear(&k);
	tap_is_int(mlfs_sigcache_get(dir, MLFS_SIG_SIMPLE, D1, "http://s/r", &got), 0, "still kept");
	tap_ok(got.n == 1 && !memcmp(got.v[0].data, "old", 3), "the old bytes");
	mlfs_sigcache_entry_clear(&got);
	tap_is_int(mlfs_sig_keep_fetched(&k, MLFS_SIG_SIMPLE, D1, "http://s/r", "bad", 3, NULL), 0, "fetched");
	tap_is_int(mlfs_sig_keep_examined(&k, MLFS_SIG_SIMPLE, D1, "http://s/r"), 0, "to the end");
	tap_is_int(mlfs_sig_keep_commit(dir, &k, false), 0, "refused");
	mlfs_sig_keep_clear(&k);
	tap_is_int(mlfs_sigcache_get(dir, MLFS_SIG_SIMPLE, D1, "http://s/r", &got), -ENOENT, "removed");

	/* A fresh accepted fetch replaces the set. */
	tap_is_int(mlfs_sig_keep_fetched(&k, MLFS_SIG_COSIGN, D2, "s/r", "three", 5, "eA=="), 0, "another");
	tap_is_int(mlfs_sig_keep_commit(dir, &k, true), 0, "committed");
	mlfs_sig_keep_clear(&k);
	tap_is_int(mlfs_sigcache_get(dir, MLFS_SIG_COSIGN, D2, "s/r", &got), 0, "read back");
	tap_ok(got.n == 1 && got.v[0].len == 5 && !strcmp(got.v[0].signature, "eA=="), "replaced, not added to");
	mlfs_sigcache_entry_clear(&got);

	/* Damaged: removed, and then nothing is kept. */
	char *path = mlfs_sigcache_path(dir, MLFS_SIG_COSIGN, D2, "s/r");
	FILE *f = fopen(path, "w");
	fputs("{\"kind\":", f);
	fclose(f);
	tap_is_int(mlfs_sigcache_get(dir, MLFS_SIG_COSIGN, D2, "s/r", &got), -EBADMSG, "damaged");
	tap_ok(access(path, F_OK) < 0, "and removed");
	free(path);

	/* With their manifest: dropped by digest, swept when it is gone. */
	tap_is_int(mlfs_sig_keep_fetched(&k, MLFS_SIG_SIMPLE, D1, "http://s/r", "a", 1, NULL), 0, "D1");
	tap_is_int(mlfs_sig_keep_fetched(&k, MLFS_SIG_SIMPLE, D1, "http://t/r", "b", 1, NULL), 0, "D1, elsewhere");
	tap_is_int(mlfs_sig_keep_fetched(&k, MLFS_SIG_COSIGN, D2, "s/r", "c", 1, "eA=="), 0, "D2");
	tap_is_int(mlfs_sig_keep_commit(dir, &k, true), 0, "committed");
	mlfs_sig_keep_clear(&k);
	tap_is_int(mlfs_sigcache_drop(dir, D1), 2, "D1's two files dropped");
	tap_is_int((int)files_in(sigs), 1, "D2's left");
	snprintf(meta, sizeof meta, "%s/meta/sha256", dir);
	char *mp = mlfs_metacache_path(dir, D2);
	tap_is_int(mlfs_cache_write_atomic(mp, "m", 1), 0, "D2's manifest cached");
	tap_is_int(mlfs_sigcache_sweep(dir), 0, "sweep: D2's manifest is there, kept");
	unlink(mp);
	tap_is_int(mlfs_sigcache_sweep(dir), 1, "sweep: gone with it");
	tap_is_int((int)files_in(sigs), 0, "nothing left");
	free(mp);
	rmdir(meta);
	snprintf(meta, sizeof meta, "%s/meta", dir);
	rmdir(meta);
	rmdir(sigs);
	snprintf(sigs, sizeof sigs, "%s/sigs", dir);
	rmdir(sigs);
	tap_is_int(rmdir(dir), 0, "nothing else left behind");
}

int main(void)
{
	test_payload();
	test_sig_manifest();
	test_sigstore_verify();
	test_sigstore_keys();
	test_identity();
	test_registries_d();
	test_lookaside();
	test_sigcache_format();
	test_sigcache_keep();
	return tap_done();
}
