/* Media types, indexes, manifests and image configs: the samples under
 * data/ are shaped like what Docker Hub, buildkit and containerd produce;
 * every file under data/should-fail/ must be refused cleanly (an error code,
 * one line of message, nothing allocated). */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cleanup.h"
#include "fetch/fetch.h"
#include "tap.h"

#define D_AMD64 "sha256:18a549f7a09e210d1b0fea2c1e671bd4b07b04ca840e18054701ddc410fd661e"
#define D_ARM64 "sha256:8e7bbfbd93d2603dd508963c49e0addba874e02446ef08d9bc36485b95677b0d"
#define D_CFG "sha256:e67d23e7820c49a8051dac2831f38290f5e72f66c8db5079eeb60d82f14894c0"
#define D_L1 "sha256:2804bad6fe94a55f18b2b37e300919a5fd517b95aa81e95db574c0ba069a3740"
#define D_L3 "sha256:10dacdccfe877dc064d57442e6fa7a4e3085dc94e11a29819c2290fc3d788724"

static char *read_file(const char *dir, const char *name, size_t *len)
{
	const char *src = getenv("MLFS_TEST_SRCDIR");
	_cleanup_free_ char *path = NULL;
	if (asprintf(&path, "%s/data/%s%s%s", src ? src : ".", dir, *dir ? "/" : "", name) < 0)
		return NULL;
	_cleanup_fclose_ FILE *f = fopen(path, "rb");
	if (!f) {
		tap_diag("%s: %m", path);
		return NULL;
	}
	char *buf = NULL;
	size_t cap = 0;
	*len = 0;
	for (;;) {
		if (*len == cap) {
			char *n = realloc(buf, cap = cap ? 2 * cap : 4096);
			if (!n) {
				free(buf);
				return NULL;
			}
			buf = n;
		}
		size_t got = fread(buf + *len, 1, cap - *len, f);
		if (got == 0)
			break;
		*len += got;
	}
	return buf;
}

static bool contains(const char *s, const char *needle)
{
	return s && strstr(s, needle);
}

static bool one_line(const struct mlfs_err *err)
{
	return err->msg[0] && !strchr(err->msg, '\n');
}

/* ---- media types --------------------------------------------------------- */

static void test_media(void)
{
	static const struct {
		const char *s;
		enum mlfs_media m;
	} cases[] = {
		{ "application/vnd.oci.image.index.v1+json", MLFS_MEDIA_OCI_INDEX },
		{ "application/vnd.docker.distribution.manifest.list.v2+json", MLFS_MEDIA_DOCKER_LIST },
		{ "application/vnd.oci.image.manifest.v1+json", MLFS_MEDIA_OCI_MANIFEST },
		{ "application/vnd.docker.distribution.manifest.v2+json", MLFS_MEDIA_DOCKER_MANIFEST },
		{ "application/vnd.docker.distribution.manifest.v1+json", MLFS_MEDIA_DOCKER_SCHEMA1 },
		{ "application/vnd.docker.distribution.manifest.v1+prettyjws", MLFS_MEDIA_DOCKER_SCHEMA1 },
		{ "application/vnd.oci.image.config.v1+json", MLFS_MEDIA_OCI_CONFIG },
		{ "application/vnd.docker.container.image.v1+json", MLFS_MEDIA_DOCKER_CONFIG },
		{ "application/vnd.oci.image.layer.v1.tar", MLFS_MEDIA_LAYER_TAR },
		{ "application/vnd.oci.image.layer.v1.tar+gzip", MLFS_MEDIA_LAYER_GZIP },
		{ "application/vnd.oci.image.layer.v1.tar+zstd", MLFS_MEDIA_LAYER_ZSTD },
		{ "application/vnd.oci.image.layer.nondistributable.v1.tar", MLFS_MEDIA_LAYER_TAR },
		{ "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", MLFS_MEDIA_LAYER_GZIP },
		{ "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd", MLFS_MEDIA_LAYER_ZSTD },
		{ "application/vnd.docker.image.rootfs.diff.tar.gzip", MLFS_MEDIA_LAYER_GZIP },
		{ "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", MLFS_MEDIA_LAYER_GZIP },
		{ "application/vnd.docker.image.rootfs.diff.tar", MLFS_MEDIA_LAYER_TAR },
		/* Content-Type decorations */
		{ "application/vnd.oci.image.index.v1+json; charset=utf-8", MLFS_MEDIA_OCI_INDEX },
		{ "  application/vnd.oci.image.manifest.v1+json ;charset=utf-8", MLFS_MEDIA_OCI_MANIFEST },
		{ "application/vnd.docker.distribution.manifest.v2+json\t", MLFS_MEDIA_DOCKER_MANIFEST },
		{ "Application/VND.Docker.Distribution.Manifest.List.V2+JSON", MLFS_MEDIA_DOCKER_LIST },
		/* near misses */
		{ "", MLFS_MEDIA_UNKNOWN },
		{ ";", MLFS_MEDIA_UNKNOWN },
		{ "application/json", MLFS_MEDIA_UNKNOWN },
		{ "application/vnd.oci.image.index.v1", MLFS_MEDIA_UNKNOWN },
		{ "application/vnd.oci.image.index.v1+jsonx", MLFS_MEDIA_UNKNOWN },
		{ "application/vnd.oci.image.layer.v1.tar+bzip2", MLFS_MEDIA_UNKNOWN },
		{ "application/vnd.oci.image. index.v1+json", MLFS_MEDIA_UNKNOWN },
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
		tap_is_int(mlfs_media_from_string(cases[i].s), cases[i].m, cases[i].s);
	tap_is_int(mlfs_media_from_string(NULL), MLFS_MEDIA_UNKNOWN, "NULL media type");

	tap_ok(mlfs_media_is_index(MLFS_MEDIA_OCI_INDEX) && mlfs_media_is_index(MLFS_MEDIA_DOCKER_LIST) &&
		       !mlfs_media_is_index(MLFS_MEDIA_OCI_MANIFEST) && !mlfs_media_is_index(MLFS_MEDIA_UNKNOWN),
	       "is_index");
	tap_ok(mlfs_media_is_manifest(MLFS_MEDIA_OCI_MANIFEST) &&
		       mlfs_media_is_manifest(MLFS_MEDIA_DOCKER_MANIFEST) &&
		       !mlfs_media_is_manifest(MLFS_MEDIA_DOCKER_SCHEMA1) &&
		       !mlfs_media_is_manifest(MLFS_MEDIA_OCI_INDEX),
	       "is_manifest (schema1 is not one we read)");
	tap_ok(mlfs_media_is_layer(MLFS_MEDIA_LAYER_TAR) && mlfs_media_is_layer(MLFS_MEDIA_LAYER_GZIP) &&
		       mlfs_media_is_layer(MLFS_MEDIA_LAYER_ZSTD) && !mlfs_media_is_layer(MLFS_MEDIA_OCI_CONFIG),
	       "is_layer");

	const char *accept = mlfs_media_accept();
	const char *oci_index = strstr(accept, "application/vnd.oci.image.index.v1+json");
	const char *list = strstr(accept, "application/vnd.docker.distribution.manifest.list.v2+json");
	const char *oci_man = strstr(accept, "application/vnd.oci.image.manifest.v1+json");
	const char *v2s2 = strstr(accept, "application/vnd.docker.distribution.manifest.v2+json");
	tap_ok(oci_index == accept && list && oci_man && v2s2 && list < oci_man && list < v2s2,
	       "Accept lists the four types, indexes first");
	tap_ok(!strstr(accept, "v1+prettyjws") && !strchr(accept, '\n'), "Accept asks for no schema1");
}

/* ---- indexes ------------------------------------------------------------- */

static void test_oci_index(void)
{
	size_t len;
	_cleanup_free_ char *buf = read_file("", "oci-index.json", &len);
	struct mlfs_index *idx = NULL;
	struct mlfs_err err = { 0 };

	tap_is_int(mlfs_index_parse(buf, len, MLFS_MEDIA_OCI_INDEX, &idx, &err), 0, "OCI index parses");
	if (!idx) {
		tap_diag("%s", err.msg);
		return;
	}
	tap_is_int(idx->media, MLFS_MEDIA_OCI_INDEX, "index media");
	tap_is_int(idx->n_manifests, 4, "four entries, the attestation one included");
	struct mlfs_descriptor *d = idx->manifests;
	tap_is_str(d[0].media_type, "application/vnd.oci.image.manifest.v1+json", "entry media type kept");
	tap_is_int(d[0].media, MLFS_MEDIA_OCI_MANIFEST, "entry media");
	tap_is_str(d[0].digest, D_AMD64, "entry digest");
	tap_is_int(d[0].size, 1047, "entry size");
	tap_ok(d[0].has_platform, "entry platform");
	tap_is_str(d[0].platform.os, "linux", "platform os");
	tap_is_str(d[0].platform.arch, "amd64", "platform architecture");
	tap_is_str(d[0].platform.variant, "", "no variant");
	tap_ok(d[0].urls == NULL, "no urls");
	tap_is_str(d[1].platform.arch, "arm64", "arm64");
	tap_is_str(d[1].platform.variant, "", "arm64/v8 normalised to no variant");
	tap_is_str(d[2].platform.os, "windows", "windows entry");
	tap_is_str(d[2].platform.os_version, "10.0.17763.5329", "os.version");
	tap_is_str(d[3].platform.os, "unknown", "attestation entry kept as unknown/unknown");
	mlfs_index_free(idx);

	/* The Content-Type did not say (application/octet-stream): the body does. */
	tap_is_int(mlfs_index_parse(buf, len, MLFS_MEDIA_UNKNOWN, &idx, &err), 0,
		   "index with unknown Content-Type");
	tap_is_int(idx ? (int)idx->media : -1, MLFS_MEDIA_OCI_INDEX, "media from the body");
	mlfs_index_free(idx);

	tap_is_int(mlfs_index_parse(buf, len, MLFS_MEDIA_DOCKER_LIST, &idx, &err), -EPROTO,
		   "body mediaType disagrees with Content-Type");
	tap_ok(contains(err.msg, "disagrees") && idx == NULL, "message: %s", err.msg);

	tap_is_int(mlfs_index_parse(buf, len, MLFS_MEDIA_OCI_MANIFEST, &idx, &err), -EPROTO,
		   "index asked to parse a manifest Content-Type");
	tap_ok(contains(err.msg, "expected an image index") && contains(err.msg, "manifest"),
	       "message: %s", err.msg);

	tap_is_int(mlfs_index_parse(buf, len, MLFS_MEDIA_DOCKER_SCHEMA1, &idx, &err), -EPROTONOSUPPORT,
		   "schema1 Content-Type");
	tap_ok(contains(err.msg, "schema1 manifests are not supported") &&
		       contains(err.msg, "push the image again"),
	       "schema1 message: %s", err.msg);
}

static void test_docker_list(void)
{
	size_t len;
	_cleanup_free_ char *buf = read_file("", "docker-list.json", &len);
	struct mlfs_index *idx = NULL;
	struct mlfs_err err = { 0 };

	tap_is_int(mlfs_index_parse(buf, len, MLFS_MEDIA_DOCKER_LIST, &idx, &err), 0,
		   "Docker manifest list parses");
	if (!idx) {
		tap_diag("%s", err.msg);
		return;
	}
	tap_is_int(idx->media, MLFS_MEDIA_DOCKER_LIST, "list media");
	tap_is_int(idx->n_manifests, 3, "three entries");
	tap_is_int(idx->manifests[0].media, MLFS_MEDIA_DOCKER_MANIFEST, "entry is v2s2");
	tap_is_int(idx->manifests[0].size, 528, "entry size");
	tap_is_str(idx->manifests[1].platform.arch, "arm", "arm");
	tap_is_str(idx->manifests[1].platform.variant, "v7", "arm/v7");
	tap_is_str(idx->manifests[2].platform.arch, "arm64", "aarch64 normalised to arm64");
	tap_is_str(idx->manifests[2].platform.variant, "", "aarch64/v8 has no variant");
	tap_is_str(idx->manifests[2].digest, D_ARM64, "digest");
	mlfs_index_free(idx);
}

static void test_index_inline(void)
{
	struct mlfs_index *idx = NULL;
	struct mlfs_err err = { 0 };
	const char *s;

	s = "{\"schemaVersion\":2,\"manifests\":[]}";
	tap_is_int(mlfs_index_parse(s, strlen(s), MLFS_MEDIA_UNKNOWN, &idx, &err), 0,
		   "empty index without mediaType");
	tap_ok(idx && idx->n_manifests == 0 && idx->media == MLFS_MEDIA_OCI_INDEX,
	       "defaults to an OCI index");
	mlfs_index_free(idx);

	s = "{\"schemaVersion\":2,\"manifests\":[{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\","
	    "\"digest\":\"" D_AMD64 "\",\"size\":1},{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\","
	    "\"digest\":\"sha256:1234\",\"size\":1}]}";
	tap_is_int(mlfs_index_parse(s, strlen(s), MLFS_MEDIA_OCI_INDEX, &idx, &err), -EPROTO,
		   "bad digest in second entry");
	tap_is_str(err.msg, "malformed index: manifests[1].digest: not a valid sha256 digest",
		   "message names the field");
	tap_ok(idx == NULL, "nothing returned");

	s = "{\"schemaVersion\":2,\"manifests\":[{\"mediaType\":\"x\",\"digest\":\"" D_AMD64 "\",\"size\":1,"
	    "\"platform\":{\"os\":\"linux\",\"architecture\":[]}}]}";
	tap_is_int(mlfs_index_parse(s, strlen(s), MLFS_MEDIA_OCI_INDEX, &idx, &err), -EPROTO,
		   "platform architecture not a string");
	tap_is_str(err.msg,
		   "malformed index: manifests[0].platform.architecture: must be a string, not an array",
		   "message names the nested field");

	s = "{\"schemaVersion\":2,\"manifests\":[{\"mediaType\":\"application/vnd.example+json\","
	    "\"digest\":\"" D_AMD64 "\",\"size\":0}]}";
	tap_is_int(mlfs_index_parse(s, strlen(s), MLFS_MEDIA_OCI_INDEX, &idx, &err), 0,
		   "unknown entry media types are kept (selection skips them)");
	tap_ok(idx && idx->manifests[0].media == MLFS_MEDIA_UNKNOWN && !idx->manifests[0].has_platform,
	       "entry media unknown, no platform");
	mlfs_index_free(idx);

	/* Large integers must survive: blobs over 4 GiB exist. */
	s = "{\"schemaVersion\":2,\"manifests\":[{\"mediaType\":\"x\",\"digest\":\"" D_AMD64 "\","
	    "\"size\":9007199254740993}]}";
	tap_is_int(mlfs_index_parse(s, strlen(s), MLFS_MEDIA_OCI_INDEX, &idx, &err), 0, "large size");
	tap_is_int(idx ? idx->manifests[0].size : 0, 9007199254740993LL, "size kept exactly");
	mlfs_index_free(idx);

	/* Not NUL-terminated: the parser must honour len. */
	char trunc[] = "{\"schemaVersion\":2,\"manifests\":[]}XXXX";
	tap_is_int(mlfs_index_parse(trunc, strlen(trunc) - 4, MLFS_MEDIA_OCI_INDEX, &idx, &err), 0,
		   "len honoured");
	mlfs_index_free(idx);

	size_t big = MLFS_MANIFEST_MAX + 1;
	_cleanup_free_ char *huge = malloc(big);
	if (huge) {
		memset(huge, ' ', big);
		tap_is_int(mlfs_index_parse(huge, big, MLFS_MEDIA_OCI_INDEX, &idx, &err), -EFBIG,
			   "index over MLFS_MANIFEST_MAX");
		struct mlfs_manifest *m = NULL;
		tap_is_int(mlfs_manifest_parse(huge, big, MLFS_MEDIA_OCI_MANIFEST, &m, &err), -EFBIG,
			   "manifest over MLFS_MANIFEST_MAX");
		struct mlfs_config *c = NULL;
		tap_is_int(mlfs_config_parse(huge, big, &c, &err), -EFBIG, "config over MLFS_MANIFEST_MAX");
		tap_ok(contains(err.msg, "too large"), "message: %s", err.msg);
	}
}

/* ---- manifests ----------------------------------------------------------- */

static void test_oci_manifest(void)
{
	size_t len;
	_cleanup_free_ char *buf = read_file("", "oci-manifest.json", &len);
	struct mlfs_manifest *m = NULL;
	struct mlfs_err err = { 0 };

	tap_is_int(mlfs_manifest_parse(buf, len, MLFS_MEDIA_OCI_MANIFEST, &m, &err), 0,
		   "OCI manifest parses");
	if (!m) {
		tap_diag("%s", err.msg);
		return;
	}
	tap_is_int(m->media, MLFS_MEDIA_OCI_MANIFEST, "manifest media");
	tap_is_int(m->config.media, MLFS_MEDIA_OCI_CONFIG, "config media");
	tap_is_str(m->config.digest, D_CFG, "config digest");
	tap_is_int(m->config.size, 1470, "config size");
	tap_is_int(m->n_layers, 4, "four layers");
	tap_is_int(m->layers[0].media, MLFS_MEDIA_LAYER_GZIP, "gzip layer");
	tap_is_str(m->layers[0].digest, D_L1, "layer digest");
	tap_is_int(m->layers[0].size, 29124181, "layer size");
	tap_is_int(m->layers[1].media, MLFS_MEDIA_LAYER_ZSTD, "zstd layer");
	tap_is_int(m->layers[2].media, MLFS_MEDIA_LAYER_GZIP, "nondistributable gzip layer");
	tap_is_str(m->layers[2].digest, D_L3, "nondistributable digest");
	tap_ok(m->layers[2].urls && m->layers[2].urls[0] && m->layers[2].urls[1] && !m->layers[2].urls[2],
	       "two urls, NULL-terminated");
	tap_is_str(m->layers[2].urls ? m->layers[2].urls[1] : NULL, "https://example.com/mirror/layer.tar.gz",
		   "url kept");
	tap_is_int(m->layers[3].media, MLFS_MEDIA_LAYER_TAR, "plain tar layer");
	tap_is_int(m->layers[3].size, 0, "zero size allowed");
	mlfs_manifest_free(m);

	tap_is_int(mlfs_manifest_parse(buf, len, MLFS_MEDIA_DOCKER_MANIFEST, &m, &err), -EPROTO,
		   "OCI body under a v2s2 Content-Type");
	tap_is_int(mlfs_manifest_parse(buf, len, MLFS_MEDIA_OCI_INDEX, &m, &err), -EPROTO,
		   "manifest under an index Content-Type");
	tap_ok(contains(err.msg, "expected an image manifest") && m == NULL, "message: %s", err.msg);
	tap_is_int(mlfs_manifest_parse(buf, len, MLFS_MEDIA_DOCKER_SCHEMA1, &m, &err),
		   -EPROTONOSUPPORT, "schema1 Content-Type refused");
	tap_is_str(err.msg, "schema1 manifests are not supported (deprecated by Docker): "
			    "push the image again with a current tool", "schema1 message");

	struct mlfs_index *idx = NULL;
	tap_is_int(mlfs_index_parse(buf, len, MLFS_MEDIA_UNKNOWN, &idx, &err), -EPROTO,
		   "OCI manifest body parsed as an index");
	tap_ok(contains(err.msg, "image manifest") && idx == NULL, "message: %s", err.msg);
}

static void test_docker_manifest(void)
{
	size_t len;
	_cleanup_free_ char *buf = read_file("", "docker-manifest.json", &len);
	struct mlfs_manifest *m = NULL;
	struct mlfs_err err = { 0 };

	tap_is_int(mlfs_manifest_parse(buf, len, MLFS_MEDIA_DOCKER_MANIFEST, &m, &err), 0,
		   "Docker v2s2 manifest parses");
	if (!m) {
		tap_diag("%s", err.msg);
		return;
	}
	tap_is_int(m->media, MLFS_MEDIA_DOCKER_MANIFEST, "v2s2 media");
	tap_is_int(m->config.media, MLFS_MEDIA_DOCKER_CONFIG, "Docker config media");
	tap_is_int(m->n_layers, 2, "two layers");
	tap_is_int(m->layers[0].media, MLFS_MEDIA_LAYER_GZIP, "rootfs.diff.tar.gzip");
	tap_is_int(m->layers[1].media, MLFS_MEDIA_LAYER_GZIP, "foreign layer");
	tap_is_str(m->layers[1].urls ? m->layers[1].urls[0] : NULL,
		   "https://go.microsoft.com/fwlink/?linkid=837858", "foreign url");
	mlfs_manifest_free(m);
}

static void test_manifest_inline(void)
{
	struct mlfs_manifest *m = NULL;
	struct mlfs_err err = { 0 };
	const char *s;

#define CONFIG "\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"" D_CFG "\",\"size\":2}"
#define LAYER(type) "{\"mediaType\":\"" type "\",\"digest\":\"" D_L1 "\",\"size\":3}"

	s = "{\"schemaVersion\":2," CONFIG ",\"layers\":[" LAYER("application/vnd.oci.image.layer.v1.tar")
	    "," LAYER("application/vnd.oci.image.layer.v1.tar") "," LAYER("application/x-squashfs") "]}";
	tap_is_int(mlfs_manifest_parse(s, strlen(s), MLFS_MEDIA_OCI_MANIFEST, &m, &err), -EPROTONOSUPPORT,
		   "unknown layer media type");
	tap_ok(contains(err.msg, "layers[2]") && contains(err.msg, "application/x-squashfs"),
	       "message names layer and type: %s", err.msg);

	s = "{\"schemaVersion\":2," CONFIG ",\"layers\":[" LAYER("application/vnd.oci.image.layer.v1.tar")
	    ",{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar\",\"digest\":\"" D_L1 "\",\"size\":-5}]}";
	tap_is_int(mlfs_manifest_parse(s, strlen(s), MLFS_MEDIA_OCI_MANIFEST, &m, &err), -EPROTO,
		   "negative size");
	tap_is_str(err.msg, "malformed manifest: layers[1].size: negative (-5)", "negative size message");

	s = "{\"schemaVersion\":2," CONFIG ",\"layers\":[{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar\","
	    "\"digest\":\"sha512:" "00000000000000000000000000000000000000000000000000000000000000000000000000000000"
	    "000000000000000000000000000000000000000000000000\",\"size\":3}]}";
	tap_is_int(mlfs_manifest_parse(s, strlen(s), MLFS_MEDIA_OCI_MANIFEST, &m, &err), -EPROTONOSUPPORT,
		   "sha512 layer digest");
	tap_ok(contains(err.msg, "layers[0].digest") && contains(err.msg, "sha256"), "message: %s", err.msg);

	s = "{\"schemaVersion\":2,\"config\":{\"mediaType\":\"application/vnd.cncf.helm.config.v1+json\","
	    "\"digest\":\"" D_CFG "\",\"size\":2},\"layers\":[]}";
	tap_is_int(mlfs_manifest_parse(s, strlen(s), MLFS_MEDIA_OCI_MANIFEST, &m, &err), -EPROTONOSUPPORT,
		   "artifact (Helm chart) refused");
	tap_ok(contains(err.msg, "not a container image") && contains(err.msg, "helm"),
	       "message: %s", err.msg);

	s = "{\"schemaVersion\":2," CONFIG ",\"layers\":[]}";
	tap_is_int(mlfs_manifest_parse(s, strlen(s), MLFS_MEDIA_UNKNOWN, &m, &err), 0,
		   "no layers, no mediaType");
	tap_ok(m && m->n_layers == 0 && m->media == MLFS_MEDIA_OCI_MANIFEST, "defaults to OCI manifest");
	mlfs_manifest_free(m);

	s = "{\"schemaVersion\":1,\"name\":\"x\",\"fsLayers\":[]}";
	tap_is_int(mlfs_manifest_parse(s, strlen(s), MLFS_MEDIA_UNKNOWN, &m, &err), -EPROTONOSUPPORT,
		   "schema1 body under another Content-Type");
	tap_ok(contains(err.msg, "schema1"), "message: %s", err.msg);

	s = "{\"schemaVersion\":2," CONFIG ",\"layers\":[" LAYER("application/vnd.oci.image.layer.v1.tar") "]}";
	tap_is_int(mlfs_manifest_parse(s, strlen(s) - 1, MLFS_MEDIA_OCI_MANIFEST, &m, &err), -EPROTO,
		   "truncated JSON");
	tap_ok(contains(err.msg, "malformed manifest") && one_line(&err), "message: %s", err.msg);
#undef CONFIG
#undef LAYER
}

/* ---- configs ------------------------------------------------------------- */

static void test_oci_config(void)
{
	size_t len;
	_cleanup_free_ char *buf = read_file("", "oci-config.json", &len);
	struct mlfs_config *c = NULL;
	struct mlfs_err err = { 0 };

	tap_is_int(mlfs_config_parse(buf, len, &c, &err), 0, "OCI config parses");
	if (!c) {
		tap_diag("%s", err.msg);
		return;
	}
	tap_is_str(c->platform.os, "linux", "config os");
	tap_is_str(c->platform.arch, "arm", "config architecture");
	tap_is_str(c->platform.variant, "v7", "config variant");
	tap_ok(c->entrypoint == NULL, "Entrypoint null");
	tap_ok(c->cmd && c->cmd[0] && c->cmd[1] && c->cmd[2] && !c->cmd[3], "Cmd has three words");
	tap_is_str(c->cmd ? c->cmd[2] : NULL, "exec httpd -f -p 8080", "Cmd word");
	tap_is_str(c->env ? c->env[1] : NULL, "LANG=C.UTF-8", "Env");
	tap_is_str(c->working_dir, "/srv", "WorkingDir");
	tap_is_str(c->user, "nobody:nogroup", "User");
	tap_is_int(c->n_diff_ids, 3, "three diff_ids");
	tap_is_str(c->n_diff_ids == 3 ? c->diff_ids[2] : NULL,
		   "sha256:f451a61749c611ba0fa0e16c61831db44f38c611dff25879cf271a24c81a88b6", "diff_id");
	tap_ok(c->has_created && c->created == 1704952053, "created 2024-01-11T05:47:33.123456789Z");
	mlfs_config_free(c);
}

static void test_config_created(void)
{
	static const struct {
		const char *value;
		bool ok;
		int64_t t;
	} cases[] = {
		{ "\"1970-01-01T00:00:00Z\"", true, 0 },
		{ "\"2024-01-11T05:47:33Z\"", true, 1704952053 },
		{ "\"2024-01-11T06:47:33+01:00\"", true, 1704952053 },
		{ "\"2024-01-11T04:17:33.5-01:30\"", true, 1704952053 },
		{ "\"2024-01-11 05:47:33\"", false, 0 },
		{ "\"yesterday\"", false, 0 },
		{ "null", false, 0 },
		/* Offsets that are not exactly "hh:mm": the parser used to take
		 * "+1:2" with sscanf and skip 6 bytes from the sign, past the end
		 * of the string (ASan: heap-buffer-overflow), and accepted
		 * "+1:23Z" because that skip landed on its NUL. */
		{ "\"2024-01-11T05:47:33+1:2\"", false, 0 },
		{ "\"2024-01-11T05:47:33+1:23Z\"", false, 0 },
		{ "\"2024-01-11T05:47:33-1:2Z\"", false, 0 },
		{ "\"2024-01-11T05:47:33+01:0\"", false, 0 },
		{ "\"2024-01-11T05:47:33+01\"", false, 0 },
		{ "\"2024-01-11T05:47:33+\"", false, 0 },
		{ "\"2024-01-11T05:47:33+01:00x\"", false, 0 },
		{ "\"2024-01-11T05:47:33+0a:00\"", false, 0 },
		{ "\"2024-01-11T05:47:33+24:00\"", false, 0 },
		{ "\"2024-01-11T05:47:33+01:60\"", false, 0 },
		{ "\"2024-01-11T05:47:33.123+00:00\"", true, 1704952053 },
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		char s[512];
		snprintf(s, sizeof s, "{\"architecture\":\"amd64\",\"os\":\"linux\",\"created\":%s,"
			 "\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[]}}", cases[i].value);
		struct mlfs_config *c = NULL;
		struct mlfs_err err = { 0 };
		int r = mlfs_config_parse(s, strlen(s), &c, &err);
		tap_ok(r == 0 && c && c->has_created == cases[i].ok && (!cases[i].ok || c->created == cases[i].t),
		       "created %s: %s", cases[i].value, cases[i].ok ? "parsed" : "ignored");
		mlfs_config_free(c);
	}
}

static void test_docker_config(void)
{
	size_t len;
	_cleanup_free_ char *buf = read_file("", "docker-config.json", &len);
	struct mlfs_config *c = NULL;
	struct mlfs_err err = { 0 };

	tap_is_int(mlfs_config_parse(buf, len, &c, &err), 0, "Docker config parses");
	if (!c) {
		tap_diag("%s", err.msg);
		return;
	}
	tap_is_str(c->platform.arch, "arm64", "aarch64 normalised");
	tap_is_str(c->platform.variant, "", "v8 dropped");
	tap_ok(c->cmd == NULL, "Cmd null");
	tap_is_str(c->entrypoint ? c->entrypoint[0] : NULL, "/docker-entrypoint.sh", "Entrypoint");
	tap_is_str(c->working_dir, "", "empty WorkingDir kept");
	tap_is_int(c->n_diff_ids, 1, "one diff_id");
	mlfs_config_free(c);
}

static void test_config_inline(void)
{
	struct mlfs_config *c = NULL;
	struct mlfs_err err = { 0 };
	const char *s;

	s = "{\"architecture\":\"amd64\",\"os\":\"linux\",\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[]}}";
	tap_is_int(mlfs_config_parse(s, strlen(s), &c, &err), 0, "minimal config");
	tap_ok(c && !c->entrypoint && !c->cmd && !c->env && !c->working_dir && !c->user &&
		       c->n_diff_ids == 0,
	       "everything optional absent");
	mlfs_config_free(c);

	s = "{\"architecture\":\"amd64\",\"os\":\"linux\",\"config\":{\"Entrypoint\":[],\"User\":null},"
	    "\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[]}}";
	tap_is_int(mlfs_config_parse(s, strlen(s), &c, &err), 0, "empty Entrypoint");
	tap_ok(c && c->entrypoint && !c->entrypoint[0] && !c->user, "empty list kept apart from null");
	mlfs_config_free(c);

	s = "{\"architecture\":\"amd64\",\"os\":\"linux\",\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[\"" D_L1
	    "\",\"sha256:" "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855\"]}}";
	tap_is_int(mlfs_config_parse(s, strlen(s), &c, &err), -EPROTO, "upper-case diff_id");
	tap_is_str(err.msg, "malformed image config: rootfs.diff_ids[1]: not a valid sha256 digest",
		   "message names the diff_id");
	tap_ok(c == NULL, "nothing returned");

	s = "{\"architecture\":\"amd64\",\"os\":\"linux\",\"config\":{\"Cmd\":[\"sh\",false]},"
	    "\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[]}}";
	tap_is_int(mlfs_config_parse(s, strlen(s), &c, &err), -EPROTO, "boolean in Cmd");
	tap_is_str(err.msg, "malformed image config: config.Cmd[1]: must be a string, not a boolean",
		   "message names the Cmd item");

	s = "{\"architecture\":\"amd64\",\"os\":\"linux\",\"rootfs\":{\"type\":\"tarballs\",\"diff_ids\":[]}}";
	tap_is_int(mlfs_config_parse(s, strlen(s), &c, &err), -EPROTO, "rootfs.type not layers");
	tap_ok(contains(err.msg, "rootfs.type"), "message: %s", err.msg);
}

/* ---- inputs that must fail ---------------------------------------------- */

static bool fails_cleanly(int r, const struct mlfs_err *err, const void *out)
{
	return r < 0 && err->code == -r && one_line(err) && out == NULL;
}

static int name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void test_should_fail(void)
{
	const char *src = getenv("MLFS_TEST_SRCDIR");
	_cleanup_free_ char *dir = NULL;
	if (asprintf(&dir, "%s/data/should-fail", src ? src : ".") < 0)
		return;
	DIR *d = opendir(dir);
	tap_ok(d != NULL, "open %s", dir);
	if (!d)
		return;

	char *names[512];
	size_t n = 0;
	struct dirent *de;
	while ((de = readdir(d)) && n < sizeof names / sizeof names[0])
		if (de->d_name[0] != '.')
			names[n++] = strdup(de->d_name);
	closedir(d);
	/* readdir order varies; TAP numbering should not */
	qsort(names, n, sizeof names[0], name_cmp);

	for (size_t i = 0; i < n; i++) {
		const char *name = names[i];
		size_t len = 0;
		_cleanup_free_ char *buf = read_file("should-fail", name, &len);
		struct mlfs_err err = { 0 };
		char first[sizeof err.msg] = "";
		bool ok = buf != NULL;

		if (ok && !strncmp(name, "index-", 6)) {
			static const enum mlfs_media as[] = { MLFS_MEDIA_UNKNOWN, MLFS_MEDIA_OCI_INDEX,
							      MLFS_MEDIA_DOCKER_LIST };
			for (size_t j = 0; j < 3; j++) {
				struct mlfs_index *idx = NULL;
				int r = mlfs_index_parse(buf, len, as[j], &idx, &err);
				ok = ok && fails_cleanly(r, &err, idx);
				if (j == 0)
					memcpy(first, err.msg, sizeof first);
				mlfs_index_free(idx);
			}
		} else if (ok && !strncmp(name, "manifest-", 9)) {
			static const enum mlfs_media as[] = { MLFS_MEDIA_UNKNOWN, MLFS_MEDIA_OCI_MANIFEST,
							      MLFS_MEDIA_DOCKER_MANIFEST };
			for (size_t j = 0; j < 3; j++) {
				struct mlfs_manifest *m = NULL;
				int r = mlfs_manifest_parse(buf, len, as[j], &m, &err);
				ok = ok && fails_cleanly(r, &err, m);
				if (j == 0)
					memcpy(first, err.msg, sizeof first);
				mlfs_manifest_free(m);
			}
		} else if (ok && !strncmp(name, "config-", 7)) {
			struct mlfs_config *c = NULL;
			int r = mlfs_config_parse(buf, len, &c, &err);
			ok = fails_cleanly(r, &err, c);
			memcpy(first, err.msg, sizeof first);
			mlfs_config_free(c);
		} else {
			ok = false;
			tap_diag("%s: name must start with index-, manifest- or config-", name);
		}
		/* the message of the run where the body alone decides */
		tap_ok(ok, "should fail: %s: %s", name, first);
		free(names[i]);
	}
}

int main(void)
{
	test_media();
	test_oci_index();
	test_docker_list();
	test_index_inline();
	test_oci_manifest();
	test_docker_manifest();
	test_manifest_inline();
	test_oci_config();
	test_docker_config();
	test_config_created();
	test_config_inline();
	test_should_fail();
	return tap_done();
}
