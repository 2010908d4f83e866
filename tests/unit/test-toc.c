/* layers/: seekable layers' TOC JSON and footers (toc.c, footer.c): both
 * flavours decoded field by field, inputs that must fail, footers built byte
 * by byte and damaged one byte at a time, real TOCs and footers made by
 * ctr-remote 0.12 and skopeo 1.9.3. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cleanup.h"
#include "layers/toc.h"
#include "tap.h"

#define HEX_A "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"
#define HEX_B "bb9f8df61474d25e71fa00722318cd387396ca1736605e1248821cc0de3d3af8"
#define DIGEST_A "sha256:" HEX_A
#define DIGEST_B "sha256:" HEX_B

static char *read_data(const char *name, size_t *len)
{
	const char *src = getenv("MLFS_TEST_SRCDIR");
	_cleanup_free_ char *path = NULL;
	if (asprintf(&path, "%s/data/%s", src ? src : ".", name) < 0)
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

static bool digest_is(const uint8_t d[32], const char *hex)
{
	char s[65];
	for (int k = 0; k < 32; k++)
		snprintf(s + 2 * k, 3, "%02x", d[k]);
	return strcmp(s, hex) == 0;
}

static struct toc *parse_ok(const char *json, const char *what)
{
	struct toc *t = NULL;
	char msg[256];
	int r = toc_parse(json, strlen(json), &t, msg, sizeof msg);
	tap_ok(r == 0 && t, "%s parses", what);
	if (r < 0)
		tap_diag("%d: %s", r, msg);
	return t;
}

/* ---- eStargz ---- */

static const char estargz_toc[] =
	"{\n\t\"version\": 1,\n\t\"entries\": [\n"
	"\t\t{\"name\": \".no.prefetch.landmark\", \"type\": \"reg\", \"size\": 1, \"offset\": 85,"
	" \"digest\": \"" DIGEST_A "\", \"chunkDigest\": \"" DIGEST_A "\"},\n"
	"\t\t{\"name\": \".\", \"type\": \"dir\", \"modtime\": \"2023-11-14T22:13:20Z\", \"mode\": 493},\n"
	"\t\t{\"name\": \"big/f\", \"type\": \"reg\", \"size\": 10485760, \"modtime\": \"2023-11-14T22:13:20Z\","
	" \"mode\": 33188, \"uid\": 1234, \"gid\": 4294967295, \"userName\": \"alice\", \"groupName\": \"staff\","
	" \"offset\": 2371, \"innerOffset\": 512,"
	" \"xattrs\": {\"user.a\": \"YmFy\", \"trusted.b\": \"eQ==\", \"user.empty\": \"\", \"user.bin\": \"AAECAw==\"},"
	" \"digest\": \"" DIGEST_A "\", \"chunkSize\": 4194304, \"chunkDigest\": \"" DIGEST_B "\","
	" \"numLink\": 7, \"futureKey\": {\"x\": [1, 2]}},\n"
	"\t\t{\"name\": \"big/f\", \"type\": \"chunk\", \"offset\": 4197978, \"chunkOffset\": 4194304,"
	" \"chunkSize\": 4194304, \"chunkDigest\": \"" DIGEST_A "\"},\n"
	"\t\t{\"name\": \"big/f\", \"type\": \"chunk\", \"offset\": 8393585, \"chunkOffset\": 8388608,"
	" \"chunkDigest\": \"" DIGEST_B "\"},\n"
	"\t\t{\"name\": \"abs-link\", \"type\": \"symlink\", \"linkName\": \"/etc/hello\", \"mode\": 511},\n"
	"\t\t{\"name\": \"etc/hard\", \"type\": \"hardlink\", \"linkName\": \"big/f\", \"mode\": 420},\n"
	"\t\t{\"name\": \"etc/null\", \"type\": \"char\", \"mode\": 8630, \"devMajor\": 1, \"devMinor\": 3},\n"
	"\t\t{\"name\": \"etc/sda1\", \"type\": \"block\", \"mode\": 420, \"devMajor\": 8, \"devMinor\": 1},\n"
	"\t\t{\"name\": \"etc/fifo\", \"type\": \"fifo\", \"mode\": 420, \"modtime\": \"\"},\n"
	"\t\t{\"name\": \"\", \"type\": \"dir\", \"linkName\": \"\", \"mode\": 3565}\n"
	"\t]\n}\n";

static void test_estargz(void)
{
	struct toc *t = parse_ok(estargz_toc, "eStargz TOC");
	if (!t)
		return;
	tap_is_int(t->n, 11, "eStargz: 11 entries");
	tap_ok(!t->has_tarsplit_digest, "eStargz: no tar-split digest");

	const struct toc_entry *e = &t->entries[0];
	tap_is_str(e->name, ".no.prefetch.landmark", "landmark: name");
	tap_ok(e->type == TOC_REG && e->size == 1 && e->offset == 85 && e->has_digest &&
		       digest_is(e->digest, HEX_A) && e->has_chunk_digest && digest_is(e->chunk_digest, HEX_A),
	       "landmark: reg, size, offset, both digests");
	tap_ok(!e->has_mtime && e->mtime == 0 && e->mode == 0 && e->uid == 0 && e->gid == 0 && !e->link &&
		       !e->xattrs && e->n_xattrs == 0 && e->end_offset == 0 && e->chunk_size == 0 && !e->zeros,
	       "landmark: absent keys read as zero");

	e = &t->entries[1];
	tap_ok(e->type == TOC_DIR && !strcmp(e->name, ".") && e->mode == 0755 && e->has_mtime &&
		       e->mtime == 1700000000 && e->mtime_nsec == 0,
	       "root dir: mode, modtime");

	e = &t->entries[2];
	tap_is_str(e->name, "big/f", "reg: name");
	tap_ok(e->type == TOC_REG, "reg: type");
	tap_is_int(e->mode, 0644, "reg: mode 0100644 loses its type bits");
	tap_is_int(e->uid, 1234, "reg: uid");
	tap_is_int(e->gid, 4294967295LL, "reg: gid up to 2^32-1");
	tap_is_int(e->size, 10485760, "reg: size");
	tap_is_int(e->offset, 2371, "reg: offset");
	tap_is_int(e->inner_offset, 512, "reg: innerOffset");
	tap_is_int(e->chunk_size, 4194304, "reg: chunkSize");
	tap_is_int(e->chunk_offset, 0, "reg: chunkOffset absent");
	tap_ok(e->has_digest && digest_is(e->digest, HEX_A), "reg: digest");
	tap_ok(e->has_chunk_digest && digest_is(e->chunk_digest, HEX_B), "reg: chunkDigest");
	tap_is_int(e->n_xattrs, 4, "reg: 4 xattrs");
	if (e->n_xattrs == 4) {
		const struct toc_xattr *x = e->xattrs;
		tap_ok(!strcmp(x[0].name, "user.a") && x[0].len == 3 && !memcmp(x[0].value, "bar", 3),
		       "xattr 0: user.a = bar (TOC order kept)");
		tap_ok(!strcmp(x[1].name, "trusted.b") && x[1].len == 1 && x[1].value[0] == 'y',
		       "xattr 1: trusted.b = y (one padding byte)");
		tap_ok(!strcmp(x[2].name, "user.empty") && x[2].len == 0 && x[2].value, "xattr 2: empty value");
		tap_ok(!strcmp(x[3].name, "user.bin") && x[3].len == 4 && !memcmp(x[3].value, "\0\1\2\3", 4),
		       "xattr 3: binary value");
	}

	e = &t->entries[3];
	tap_ok(e->type == TOC_CHUNK && !strcmp(e->name, "big/f") && e->offset == 4197978 &&
		       e->chunk_offset == 4194304 && e->chunk_size == 4194304 && e->has_chunk_digest &&
		       digest_is(e->chunk_digest, HEX_A) && !e->has_digest && e->size == 0,
	       "chunk 1: offset, chunkOffset, chunkSize, chunkDigest");
	e = &t->entries[4];
	tap_ok(e->type == TOC_CHUNK && e->chunk_offset == 8388608 && e->chunk_size == 0 &&
		       digest_is(e->chunk_digest, HEX_B),
	       "chunk 2: chunkSize absent = to the end");

	e = &t->entries[5];
	tap_ok(e->type == TOC_SYMLINK && e->link && !strcmp(e->link, "/etc/hello") && e->mode == 0777,
	       "symlink: linkName, mode");
	e = &t->entries[6];
	tap_ok(e->type == TOC_HARDLINK && e->link && !strcmp(e->link, "big/f"), "hardlink: linkName");
	e = &t->entries[7];
	tap_ok(e->type == TOC_CHAR && e->dev_major == 1 && e->dev_minor == 3 && e->mode == 0666,
	       "char: devMajor, devMinor, mode 020666 & 07777");
	e = &t->entries[8];
	tap_ok(e->type == TOC_BLOCK && e->dev_major == 8 && e->dev_minor == 1, "block: devMajor, devMinor");
	e = &t->entries[9];
	tap_ok(e->type == TOC_FIFO && !e->has_mtime, "fifo: modtime \"\" is no modtime");
	e = &t->entries[10];
	tap_ok(e->type == TOC_DIR && e->name && !strcmp(e->name, "") && !e->link && e->mode == 06755,
	       "empty name kept, empty linkName is NULL, setuid/setgid kept");
	toc_free(t);
}

/* ---- containers/storage ---- */

static const char cs_toc[] =
	"{\"version\":1,\"entries\":["
	"{\"type\":\"dir\",\"name\":\"etc/\",\"mode\":493,\"modtime\":\"2023-11-15T00:13:20.1234567+02:00\","
	"\"accesstime\":\"0001-01-01T00:00:00Z\",\"changetime\":\"0001-01-01T00:00:00Z\"},"
	"{\"type\":\"reg\",\"name\":\"etc/.wh.gone\",\"mode\":420,\"modtime\":\"2023-11-14T22:13:21Z\"},"
	"{\"type\":\"reg\",\"name\":\"etc/sparse\",\"mode\":420,\"size\":5242884,\"uid\":7,\"gid\":8,"
	"\"modtime\":\"2023-11-14T17:13:20.5-05:00\",\"digest\":\"" DIGEST_A "\","
	"\"offset\":10491151,\"endOffset\":10491740,\"chunkSize\":5242880,\"chunkDigest\":\"" DIGEST_B "\","
	"\"chunkType\":\"zeros\",\"xattrs\":{\"user.mlfs\":\"dmFsdWUx\"}},"
	"{\"type\":\"chunk\",\"name\":\"etc/sparse\",\"offset\":10491723,\"chunkSize\":4,\"chunkOffset\":5242880,"
	"\"chunkDigest\":\"" DIGEST_A "\",\"chunkType\":\"\"},"
	"{\"type\":\"hardlink\",\"name\":\"etc/hard\",\"linkName\":\"etc/sparse\",\"mode\":420,"
	"\"xattrs\":{\"user.mlfs\":\"dmFsdWUx\"}},"
	"{\"type\":\"reg\",\"name\":\"etc/small\",\"mode\":420,\"size\":6,\"digest\":\"" DIGEST_B "\","
	"\"offset\":10490905,\"endOffset\":10490924,\"modtime\":\"1970-01-01T00:00:00Z\"}"
	"],\"tarSplitDigest\":\"" DIGEST_B "\"}";

static void test_containers_storage(void)
{
	struct toc *t = parse_ok(cs_toc, "containers/storage TOC");
	if (!t)
		return;
	tap_is_int(t->n, 6, "containers/storage: 6 entries");
	tap_ok(t->has_tarsplit_digest && digest_is(t->tarsplit_digest, HEX_B), "tarSplitDigest");

	const struct toc_entry *e = &t->entries[0];
	tap_ok(e->type == TOC_DIR && e->has_mtime && e->mtime == 1700000000 && e->mtime_nsec == 123456700,
	       "dir: modtime with +02:00 and nanoseconds");
	e = &t->entries[1];
	tap_ok(e->type == TOC_REG && !strcmp(e->name, "etc/.wh.gone") && e->size == 0 && !e->has_digest &&
		       e->offset == 0,
	       "whiteout: an empty reg without digest or offset");
	e = &t->entries[2];
	tap_ok(e->type == TOC_REG && e->size == 5242884 && e->uid == 7 && e->gid == 8 && e->offset == 10491151 &&
		       e->end_offset == 10491740 && e->chunk_size == 5242880 && e->zeros &&
		       digest_is(e->digest, HEX_A) && digest_is(e->chunk_digest, HEX_B),
	       "reg: offset, endOffset, first chunk of zeros");
	tap_ok(e->mtime == 1700000000 && e->mtime_nsec == 500000000, "reg: modtime -05:00 and .5");
	tap_ok(e->n_xattrs == 1 && !strcmp(e->xattrs[0].name, "user.mlfs") && e->xattrs[0].len == 6 &&
		       !memcmp(e->xattrs[0].value, "value1", 6),
	       "reg: xattr");
	e = &t->entries[3];
	tap_ok(e->type == TOC_CHUNK && !e->zeros && e->offset == 10491723 && e->chunk_size == 4 &&
		       e->chunk_offset == 5242880 && e->end_offset == 0,
	       "chunk: chunkType \"\" is data");
	e = &t->entries[4];
	tap_ok(e->type == TOC_HARDLINK && !strcmp(e->link, "etc/sparse") && e->n_xattrs == 1, "hardlink");
	e = &t->entries[5];
	tap_ok(e->has_mtime && e->mtime == 0 && e->end_offset == 10490924, "small file, mtime at the epoch");
	toc_free(t);
}

static void test_empty_and_times(void)
{

	struct toc *t = parse_ok("{\"version\":1,\"entries\":null}", "entries null (Go's nil slice)");
	tap_ok(t && t->n == 0 && !t->entries, "no entries");
	toc_free(t);
	t = parse_ok("{\"version\":1,\"entries\":[]}", "entries []");
	tap_ok(t && t->n == 0, "no entries");
	toc_free(t);

	static const struct {
		const char *when;
		long long sec;
		unsigned nsec;
	} times[] = {
		{ "1970-01-01T00:00:00Z", 0, 0 },
		{ "0001-01-01T00:00:00Z", -62135596800LL, 0 },
		{ "1969-12-31T23:59:59.999999999Z", -1, 999999999 },
		{ "2000-02-29T12:00:00z", 951825600, 0 },
		{ "2023-11-14t22:13:20.1234567891234Z", 1700000000, 123456789 },
		{ "2023-11-14T23:59:20+01:46", 1700000000, 0 },
		{ "9999-12-31T23:59:59Z", 253402300799LL, 0 },
		{ "2024-01-01T00:00:00-00:00", 1704067200, 0 },
	};
	for (size_t k = 0; k < sizeof times / sizeof times[0]; k++) {
		char json[256];
		snprintf(json, sizeof json, "{\"version\":1,\"entries\":[{\"name\":\"x\",\"type\":\"dir\",\"modtime\":\"%s\"}]}",
			 times[k].when);
		struct toc *tt = NULL;
		int r = toc_parse(json, strlen(json), &tt, NULL, 0);
		tap_ok(r == 0 && tt->entries[0].has_mtime && tt->entries[0].mtime == times[k].sec &&
			       tt->entries[0].mtime_nsec == times[k].nsec,
		       "modtime %s", times[k].when);
		if (r == 0 && (tt->entries[0].mtime != times[k].sec || tt->entries[0].mtime_nsec != times[k].nsec))
			tap_diag("got %lld.%09u", (long long)tt->entries[0].mtime, tt->entries[0].mtime_nsec);
		toc_free(tt);
	}
}

/* ---- inputs that must fail ---- */

#define E(body) "{\"version\":1,\"entries\":[" body "]}"
#define REG(extra) E("{\"name\":\"f\",\"type\":\"reg\"" extra "}")

static const struct {
	const char *json;
	int code;
	const char *want; /* in the message */
} bad[] = {
	{ "", EBADMSG, "not valid JSON" },
	{ "{\"version\":1,\"entries\":[{\"name\":\"f\",\"type\":\"reg\"}", EBADMSG, "not valid JSON" },
	{ "{\"version\":1,\"entries\":[]} x", EBADMSG, "not valid JSON" },
	{ "{\"version\":1,\"version\":1,\"entries\":[]}", EBADMSG, "duplicate" },
	{ REG(",\"size\":1,\"size\":2"), EBADMSG, "duplicate" },
	{ E("{\"name\":\"a\\u0000b\",\"type\":\"reg\"}"), EBADMSG, "not valid JSON" },
	{ REG(",\"xattrs\":{\"a\\u0000b\":\"\"}"), EBADMSG, "not valid JSON" },
	{ "{\"version\":1,\"entries\":[{\"name\":\"\xff\",\"type\":\"reg\"}]}", EBADMSG, "not valid JSON" },
	{ "[]", EPROTO, "not a JSON object" },
	{ "\"toc\"", EBADMSG, "not valid JSON" },
	{ "5", EBADMSG, "not valid JSON" },
	{ "{\"entries\":[]}", EPROTO, "version: missing" },
	{ "{\"version\":\"1\",\"entries\":[]}", EPROTO, "version: must be an integer" },
	{ "{\"version\":2,\"entries\":[]}", EPROTO, "version 2 is not supported" },
	{ "{\"version\":1}", EPROTO, "entries: missing" },
	{ "{\"version\":1,\"entries\":{}}", EPROTO, "entries: must be an array" },
	{ "{\"version\":1,\"entries\":[],\"tarSplitDigest\":\"sha256:abc\"}", EPROTO, "tarSplitDigest" },
	{ "{\"version\":1,\"entries\":[],\"tarSplitDigest\":5}", EPROTO, "tarSplitDigest" },
	{ E("{\"name\":\"f\",\"type\":\"reg\"},7"), EPROTO, "entries[1]: must be an object" },
	{ E("{\"type\":\"reg\"}"), EPROTO, "entries[0].name: missing" },
	{ E("{\"name\":null,\"type\":\"reg\"}"), EPROTO, "entries[0].name: must be a string" },
	{ E("{\"name\":5,\"type\":\"reg\"}"), EPROTO, "entries[0].name: must be a string" },
	{ E("{\"name\":\"f\"}"), EPROTO, "entries[0].type: missing" },
	{ E("{\"name\":\"f\",\"type\":1}"), EPROTO, "entries[0].type: must be a string" },
	{ E("{\"name\":\"f\",\"type\":\"socket\"}"), EPROTO, "entries[0].type: unknown type \"socket\"" },
	{ E("{\"name\":\"f\",\"type\":\"REG\"}"), EPROTO, "unknown type" },
	{ E("{\"name\":\"f\",\"type\":\"\"}"), EPROTO, "unknown type" },
	{ E("{\"name\":\"f\",\"type\":\"chunk\"}"), EPROTO, "entries[0].type: a \"chunk\" must follow" },
	{ E("{\"name\":\"f\",\"type\":\"reg\"},{\"name\":\"g\",\"type\":\"chunk\"}"), EPROTO, "entries[1].type" },
	{ E("{\"name\":\"f\",\"type\":\"dir\"},{\"name\":\"f\",\"type\":\"chunk\"}"), EPROTO, "entries[1].type" },
	{ REG(",\"size\":-1"), EPROTO, "entries[0].size: must not be negative" },
	{ REG(",\"size\":\"1\""), EPROTO, "entries[0].size: must be an integer, not a string" },
	{ REG(",\"size\":1.0"), EPROTO, "entries[0].size: must be an integer, not a real" },
	{ REG(",\"size\":true"), EPROTO, "entries[0].size: must be an integer, not a boolean" },
	{ REG(",\"size\":99999999999999999999"), EBADMSG, "not valid JSON" },
	{ REG(",\"offset\":-5"), EPROTO, "entries[0].offset: must not be negative" },
	{ REG(",\"endOffset\":-5"), EPROTO, "entries[0].endOffset" },
	{ REG(",\"chunkOffset\":[]"), EPROTO, "entries[0].chunkOffset" },
	{ REG(",\"chunkSize\":-1"), EPROTO, "entries[0].chunkSize" },
	{ REG(",\"innerOffset\":-1"), EPROTO, "entries[0].innerOffset" },
	{ REG(",\"mode\":-1"), EPROTO, "entries[0].mode" },
	{ REG(",\"mode\":4294967296"), EPROTO, "entries[0].mode: too large" },
	{ REG(",\"uid\":-1"), EPROTO, "entries[0].uid" },
	{ REG(",\"gid\":4294967296"), EPROTO, "entries[0].gid: too large" },
	{ REG(",\"devMajor\":-1"), EPROTO, "entries[0].devMajor" },
	{ REG(",\"devMinor\":{}"), EPROTO, "entries[0].devMinor" },
	{ REG(",\"linkName\":5"), EPROTO, "entries[0].linkName: must be a string" },
	{ REG(",\"modtime\":5"), EPROTO, "entries[0].modtime: must be a string" },
	{ REG(",\"modtime\":\"2023-11-14 22:13:20Z\""), EPROTO, "entries[0].modtime: not an RFC 3339 time" },
	{ REG(",\"modtime\":\"2023-11-14T22:13:20\""), EPROTO, "modtime" },
	{ REG(",\"modtime\":\"2023-11-14T22:13:20.Z\""), EPROTO, "modtime" },
	{ REG(",\"modtime\":\"2023-11-14T22:13:20Z \""), EPROTO, "modtime" },
	{ REG(",\"modtime\":\"2023-02-29T22:13:20Z\""), EPROTO, "modtime" },
	{ REG(",\"modtime\":\"1900-02-29T00:00:00Z\""), EPROTO, "modtime" },
	{ REG(",\"modtime\":\"2023-13-01T00:00:00Z\""), EPROTO, "modtime" },
	{ REG(",\"modtime\":\"2023-12-01T24:00:00Z\""), EPROTO, "modtime" },
	{ REG(",\"modtime\":\"2016-12-31T23:59:60Z\""), EPROTO, "modtime" },
	{ REG(",\"modtime\":\"2023-11-14T22:13:20+0200\""), EPROTO, "modtime" },
	{ REG(",\"modtime\":\"2023-11-14T22:13:20+24:00\""), EPROTO, "modtime" },
	{ REG(",\"modtime\":\"+2023-11-14T22:13:20Z\""), EPROTO, "modtime" },
	{ REG(",\"modtime\":\"2023-1-14T22:13:20Z\""), EPROTO, "modtime" },
	{ REG(",\"digest\":5"), EPROTO, "entries[0].digest: must be a string" },
	{ REG(",\"digest\":\"sha256:abc\""), EPROTO, "entries[0].digest: not \"sha256:\"" },
	{ REG(",\"digest\":\"" HEX_A "\""), EPROTO, "entries[0].digest" },
	{ REG(",\"digest\":\"sha512:" HEX_A "\""), EPROTO, "entries[0].digest" },
	{ REG(",\"digest\":\"sha256:" HEX_A "0\""), EPROTO, "entries[0].digest" },
	{ REG(",\"digest\":\"sha256:5891B5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03\""), EPROTO,
	  "entries[0].digest" },
	{ REG(",\"digest\":\"sha256:g891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03\""), EPROTO,
	  "entries[0].digest" },
	{ REG(",\"chunkDigest\":\"SHA256:" HEX_A "\""), EPROTO, "entries[0].chunkDigest" },
	{ REG(",\"chunkType\":\"hole\""), EPROTO, "entries[0].chunkType: unknown chunk type \"hole\"" },
	{ REG(",\"chunkType\":0"), EPROTO, "entries[0].chunkType: must be a string" },
	{ REG(",\"xattrs\":[]"), EPROTO, "entries[0].xattrs: must be an object" },
	{ REG(",\"xattrs\":\"user.a\""), EPROTO, "entries[0].xattrs: must be an object" },
	{ REG(",\"xattrs\":{\"user.a\":5}"), EPROTO, "entries[0].xattrs: \"user.a\" must be a base64 string" },
	{ REG(",\"xattrs\":{\"\":\"YmFy\"}"), EPROTO, "entries[0].xattrs: empty attribute name" },
	{ REG(",\"xattrs\":{\"user.a\":\"eQ=\"}"), EPROTO, "not valid base64" },
	{ REG(",\"xattrs\":{\"user.a\":\"eQ\"}"), EPROTO, "not valid base64" },
	{ REG(",\"xattrs\":{\"user.a\":\"e===\"}"), EPROTO, "not valid base64" },
	{ REG(",\"xattrs\":{\"user.a\":\"====\"}"), EPROTO, "not valid base64" },
	{ REG(",\"xattrs\":{\"user.a\":\"eQ==YmFy\"}"), EPROTO, "not valid base64" },
	{ REG(",\"xattrs\":{\"user.a\":\"eQ=a\"}"), EPROTO, "not valid base64" },
	{ REG(",\"xattrs\":{\"user.a\":\"Ym!y\"}"), EPROTO, "not valid base64" },
	{ REG(",\"xattrs\":{\"user.a\":\"Ym-y\"}"), EPROTO, "not valid base64" },
	{ REG(",\"xattrs\":{\"user.a\":\"YmFy\\t\"}"), EPROTO, "not valid base64" },
	{ REG(",\"xattrs\":{\"user.a\":\"Ym Fy\"}"), EPROTO, "not valid base64" },
};

static void test_bad(void)
{
	/* Go's StdEncoding, which stargz-snapshotter's TOC reader uses for
	 * []byte, skips CR and LF anywhere in base64: so does this reader. */
	struct toc *x = parse_ok(REG(",\"xattrs\":{\"user.a\":\"Ym\\r\\nFy\\n\"}"), "xattr base64 with line breaks");
	tap_ok(x && x->n == 1 && x->entries[0].n_xattrs == 1 && x->entries[0].xattrs[0].len == 3 &&
		       !memcmp(x->entries[0].xattrs[0].value, "bar", 3),
	       "line breaks skipped: bar");
	toc_free(x);
	for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
		struct toc *t = (struct toc *)&t; /* must come back NULL */
		char msg[256] = "unset";
		int r = toc_parse(bad[k].json, strlen(bad[k].json), &t, msg, sizeof msg);
		bool ok = r == -bad[k].code && !t && strstr(msg, bad[k].want) && !strchr(msg, '\n');
		tap_ok(ok, "refused (%s): %.60s", bad[k].want, bad[k].json);
		if (!ok)
			tap_diag("got %d '%s'", r, msg);
		if (!r)
			toc_free(t);
	}
}

/* Names, link targets, xattr names and values at their caps and one past. */
static void test_caps(void)
{
	static const struct {
		const char *pre, *post;
		size_t n;
		int code;
		const char *what;
	} caps[] = {
		{ "{\"name\":\"", "\",\"type\":\"reg\"}", TOC_NAME_MAX - 1, 0, "name of 4095 bytes" },
		{ "{\"name\":\"", "\",\"type\":\"reg\"}", TOC_NAME_MAX, EFBIG, "name of 4096 bytes" },
		{ "{\"name\":\"l\",\"type\":\"symlink\",\"linkName\":\"", "\"}", TOC_NAME_MAX - 1, 0,
		  "link of 4095 bytes" },
		{ "{\"name\":\"l\",\"type\":\"symlink\",\"linkName\":\"", "\"}", TOC_NAME_MAX, EFBIG,
		  "link of 4096 bytes" },
		{ "{\"name\":\"x\",\"type\":\"reg\",\"xattrs\":{\"", "\":\"\"}}", TOC_XATTR_NAME_MAX - 1, 0,
		  "xattr name of 255 bytes" },
		{ "{\"name\":\"x\",\"type\":\"reg\",\"xattrs\":{\"", "\":\"\"}}", TOC_XATTR_NAME_MAX, EFBIG,
		  "xattr name of 256 bytes" },
	};
	for (size_t k = 0; k < sizeof caps / sizeof caps[0]; k++) {
		_cleanup_free_ char *s = malloc(caps[k].n + 1), *json = NULL;
		memset(s, 'n', caps[k].n);
		s[caps[k].n] = '\0';
		if (asprintf(&json, E("%s%s%s"), caps[k].pre, s, caps[k].post) < 0)
			abort();
		struct toc *t = NULL;
		char msg[256] = "";
		int r = toc_parse(json, strlen(json), &t, msg, sizeof msg);
		tap_ok(r == -caps[k].code, "%s: %s", caps[k].what, caps[k].code ? "refused" : "accepted");
		if (r == 0) {
			const struct toc_entry *e = &t->entries[0];
			const char *got = k < 2 ? e->name : k < 4 ? e->link : e->xattrs[0].name;
			tap_ok(t->n == 1 && strlen(got) == caps[k].n, "%s: kept whole", caps[k].what);
		} else if (caps[k].code == 0) {
			tap_diag("%d %s", r, msg);
		}
		toc_free(t);
	}

	/* xattr values: 65535 bytes ("AAAA" decodes to 3 zero bytes) and 65536 */
	for (int extra = 0; extra < 2; extra++) {
		size_t quads = (TOC_XATTR_VALUE_MAX - 1) / 3;
		_cleanup_free_ char *v = malloc(quads * 4 + 5), *json = NULL;
		for (size_t q = 0; q < quads; q++)
			memcpy(v + 4 * q, "AAAA", 4);
		strcpy(v + 4 * quads, extra ? "AA==" : "");
		if (asprintf(&json, REG(",\"xattrs\":{\"user.big\":\"%s\"}"), v) < 0)
			abort();
		struct toc *t = NULL;
		int r = toc_parse(json, strlen(json), &t, NULL, 0);
		if (extra)
			tap_ok(r == -EFBIG && !t, "xattr value of 65536 bytes refused");
		else
			tap_ok(r == 0 && t->entries[0].xattrs[0].len == TOC_XATTR_VALUE_MAX - 1,
			       "xattr value of 65535 bytes accepted");
		toc_free(t);
	}
}

/* ---- real TOCs ---- */

static void test_real(void)
{
	size_t len;
	_cleanup_free_ char *j = read_data("toc-estargz.json", &len);
	struct toc *t = NULL;
	char msg[256] = "";
	int r = j ? toc_parse(j, len, &t, msg, sizeof msg) : -ENOENT;
	tap_ok(r == 0, "real eStargz TOC (ctr-remote 0.12) parses");
	if (r == 0) {
		tap_is_int(t->n, 44, "real eStargz TOC: 44 entries");
		const struct toc_entry *e = &t->entries[28];
		tap_ok(!strcmp(e->name, "big/random10m") && e->type == TOC_REG && e->size == 10485760 &&
			       e->offset == 2371 && e->chunk_size == 4194304,
		       "big/random10m: reg, first chunk of 4 MiB");
		tap_ok(t->entries[29].type == TOC_CHUNK && t->entries[30].type == TOC_CHUNK &&
			       t->entries[30].chunk_offset == 8388608 && t->entries[30].chunk_size == 0 &&
			       t->entries[30].offset == 8393585,
		       "big/random10m: two more chunks, the last to the end");
		e = &t->entries[35];
		tap_ok(e->type == TOC_HARDLINK && !strcmp(e->link, "etc/hello") && e->n_xattrs == 1 &&
			       !strcmp(e->xattrs[0].name, "user.mlfs") && e->xattrs[0].len == 6 &&
			       !memcmp(e->xattrs[0].value, "value1", 6) && e->mtime == 1700000000,
		       "etc/hello-hard: hardlink with xattr");
	} else {
		tap_diag("%d %s", r, msg);
	}
	toc_free(t);
	t = NULL;

	_cleanup_free_ char *k = read_data("toc-zstdchunked.json", &len);
	r = k ? toc_parse(k, len, &t, msg, sizeof msg) : -ENOENT;
	tap_ok(r == 0, "real zstd:chunked TOC (skopeo 1.9.3) parses");
	if (r == 0) {
		tap_is_int(t->n, 214, "real zstd:chunked TOC: 214 entries");
		const struct toc_entry *e = &t->entries[27];
		uint64_t sum = e->chunk_size, n = 1, prev_off = e->offset;
		bool ordered = true;
		for (size_t i = 28; i < t->n && t->entries[i].type == TOC_CHUNK; i++, n++) {
			ordered &= t->entries[i].chunk_offset == sum && t->entries[i].offset > prev_off;
			sum += t->entries[i].chunk_size;
			prev_off = t->entries[i].offset;
		}
		tap_ok(!strcmp(e->name, "big/random10m") && e->end_offset == 10490693 && n == 174 && sum == e->size &&
			       ordered && prev_off < e->end_offset,
		       "big/random10m: 174 chunks, contiguous, covering the file, ending before endOffset");
		e = &t->entries[207];
		tap_ok(!strcmp(e->name, "etc/sparse") && e->zeros && e->chunk_size == 5242880 &&
			       t->entries[208].type == TOC_CHUNK && !t->entries[208].zeros &&
			       t->entries[208].chunk_size == 4,
		       "etc/sparse: a zeros chunk then a data chunk");
		tap_ok(t->entries[0].mtime == 1700000000 && t->entries[0].has_mtime, "modtime");
	} else {
		tap_diag("%d %s", r, msg);
	}
	toc_free(t);
}

/* ---- footers ---- */

static void build_estargz(unsigned char *f, uint64_t off, bool legacy)
{
	size_t p = 0;
	static const unsigned char hdr[10] = { 0x1f, 0x8b, 8, 4, 0, 0, 0, 0, 0, 0xff };
	memcpy(f, hdr, 10);
	p = 10;
	f[p++] = legacy ? 22 : 26;
	f[p++] = 0;
	if (!legacy) {
		f[p++] = 'S';
		f[p++] = 'G';
		f[p++] = 22;
		f[p++] = 0;
	}
	char s[23];
	snprintf(s, sizeof s, "%016llxSTARGZ", (unsigned long long)off);
	memcpy(f + p, s, 22);
	p += 22;
	static const unsigned char tail[13] = { 1, 0, 0, 0xff, 0xff };
	memcpy(f + p, tail, 13);
}

static void test_estargz_footer(void)
{
	unsigned char buf[100], f[ESTARGZ_FOOTER_SIZE];
	uint64_t off = 0;
	size_t size = 0;
	bool legacy = true;

	build_estargz(f, 0xa02d5d, false);
	tap_ok(estargz_footer_parse(f, sizeof f, &off, &size, &legacy) == 0 && off == 0xa02d5d && size == 51 &&
		       !legacy,
	       "eStargz footer of 51 bytes");
	memset(buf, 0x5a, sizeof buf);
	memcpy(buf + sizeof buf - 51, f, 51);
	tap_ok(estargz_footer_parse(buf, sizeof buf, &off, &size, &legacy) == 0 && off == 0xa02d5d,
	       "eStargz footer at the end of a longer tail");

	build_estargz(f, INT64_MAX, false);
	tap_ok(estargz_footer_parse(f, 51, &off, &size, &legacy) == 0 && off == (uint64_t)INT64_MAX,
	       "offset 2^63-1");
	build_estargz(f, (uint64_t)INT64_MAX + 1, false);
	tap_ok(estargz_footer_parse(f, 51, &off, &size, &legacy) == -EBADMSG, "offset 2^63 refused");
	build_estargz(f, 0xabcdef, false);
	for (int k = 16; k < 32; k++)
		if (f[k] >= 'a')
			f[k] -= 32;
	tap_ok(estargz_footer_parse(f, 51, &off, &size, &legacy) == 0 && off == 0xabcdef, "uppercase hex");

	/* every byte matters but MTIME, XFL and OS (4..9), which gzip readers ignore */
	build_estargz(f, 0x1234, false);
	int refused = 0, kept = 0;
	for (size_t k = 0; k < 51; k++) {
		unsigned char g[51];
		memcpy(g, f, 51);
		g[k] ^= (k >= 16 && k < 32) ? 0x40 : 0x01; /* a hex digit stays no digit: '0'^0x40 = 'p' */
		int r = estargz_footer_parse(g, 51, &off, &size, &legacy);
		if (k >= 4 && k <= 9)
			kept += r == 0 && off == 0x1234;
		else
			refused += r == -EBADMSG;
	}
	tap_is_int(refused, 45, "eStargz footer: each of 45 bytes damaged -> refused");
	tap_is_int(kept, 6, "eStargz footer: MTIME, XFL, OS ignored");

	/* legacy */
	unsigned char l[ESTARGZ_LEGACY_FOOTER_SIZE];
	build_estargz(l, 0x1af, true);
	tap_ok(estargz_footer_parse(l, sizeof l, &off, &size, &legacy) == 0 && off == 0x1af && size == 47 && legacy,
	       "legacy stargz footer of 47 bytes");
	memset(buf, 0, sizeof buf);
	memcpy(buf + sizeof buf - 47, l, 47);
	tap_ok(estargz_footer_parse(buf, sizeof buf, &off, &size, &legacy) == 0 && off == 0x1af && legacy,
	       "legacy footer at the end of a longer tail");
	refused = 0;
	for (size_t k = 0; k < 47; k++) {
		if (k >= 4 && k <= 9)
			continue;
		unsigned char g[47];
		memcpy(g, l, 47);
		g[k] ^= (k >= 12 && k < 28) ? 0x40 : 0x01;
		refused += estargz_footer_parse(g, 47, &off, &size, &legacy) == -EBADMSG;
	}
	tap_is_int(refused, 41, "legacy footer: each of 41 bytes damaged -> refused");

	tap_ok(estargz_footer_parse(f, 46, &off, &size, &legacy) == -EBADMSG, "46 bytes: too short");
	tap_ok(estargz_footer_parse(f + 4, 47, &off, &size, &legacy) == -EBADMSG,
	       "the last 47 bytes of a new footer are no legacy footer");
	memset(buf, 0, sizeof buf);
	tap_ok(estargz_footer_parse(buf, sizeof buf, &off, &size, &legacy) == -EBADMSG, "zeros refused");

	size_t len;
	_cleanup_free_ char *real = read_data("footer-estargz.bin", &len);
	tap_ok(real && estargz_footer_parse((unsigned char *)real, len, &off, &size, &legacy) == 0 &&
		       off == 10497373 && size == 51 && !legacy,
	       "real eStargz footer (ctr-remote 0.12): TOC at 10497373");
}

static void put64(unsigned char *p, uint64_t v)
{
	for (int k = 0; k < 8; k++)
		p[k] = (unsigned char)(v >> (8 * k));
}

/* data 40, 56 or 64 bytes: returns the frame's size */
static size_t build_zstd(unsigned char *f, size_t data, const uint64_t v[7])
{
	f[0] = 0x50, f[1] = 0x2a, f[2] = 0x4d, f[3] = 0x18;
	f[4] = (unsigned char)data, f[5] = f[6] = f[7] = 0;
	memset(f + 8, 0, data);
	for (int k = 0; k < (data == 64 ? 7 : 4); k++)
		put64(f + 8 + 8 * k, v[k]);
	memcpy(f + 8 + (data == 64 ? 56 : 32), data == 64 ? "GNUlInUx" : "GnUlInUx", 8);
	return data + 8;
}

static void test_zstd_footer(void)
{
	static const uint64_t v[7] = { 10492148, 10680, 41844, 1, 10502836, 977, 5120 };
	unsigned char f[ZSTD_FOOTER_MAX_SIZE], buf[200];
	struct zstd_footer z;

	static const size_t datas[] = { 40, 56, 64 };
	for (size_t d = 0; d < 3; d++) {
		size_t data = datas[d], size = build_zstd(f, data, v);
		memset(&z, 0xee, sizeof z);
		int r = zstd_footer_parse(f, size, &z);
		tap_ok(r == 0 && z.footer_size == size && z.toc_off == v[0] && z.toc_len == v[1] &&
			       z.toc_ulen == v[2] && z.toc_type == 1,
		       "zstd footer with %zu data bytes: TOC position", data);
		if (data == 64)
			tap_ok(z.tarsplit_off == v[4] && z.tarsplit_len == v[5] && z.tarsplit_ulen == v[6],
			       "zstd footer with 64 data bytes: tar-split position");
		else
			tap_ok(z.tarsplit_off == 0 && z.tarsplit_len == 0 && z.tarsplit_ulen == 0,
			       "zstd footer with %zu data bytes: no tar-split", data);
		memset(buf, 0x28, sizeof buf);
		memcpy(buf + sizeof buf - size, f, size);
		tap_ok(zstd_footer_parse(buf, sizeof buf, &z) == 0 && z.footer_size == size && z.toc_len == v[1],
		       "zstd footer with %zu data bytes at the end of a longer tail", data);
		tap_ok(zstd_footer_parse(f + 1, size - 1, &z) == -EBADMSG, "one byte short: refused");

		/* the frame header, the magic, the type and the zero padding are checked */
		int refused = 0, checked = 0;
		for (size_t k = 0; k < size; k++) {
			size_t dk = k - 8;
			bool structural = k < 8 || (dk >= 24 && dk < 32) ||
					  (data == 64 ? dk >= 56 : dk >= 32);
			if (!structural)
				continue;
			unsigned char g[ZSTD_FOOTER_MAX_SIZE];
			memcpy(g, f, size);
			g[k] ^= 0x01;
			checked++;
			refused += zstd_footer_parse(g, size, &z) == -EBADMSG;
		}
		tap_ok(refused == checked, "zstd footer with %zu data bytes: each of %d structural bytes damaged -> refused",
		       data, checked);
	}

	/* values no writer produces */
	uint64_t w[7];
	memcpy(w, v, sizeof w);
	w[1] = 0;
	build_zstd(f, 40, w);
	tap_ok(zstd_footer_parse(f, 48, &z) == -EBADMSG, "TOC length 0 refused");
	memcpy(w, v, sizeof w);
	w[2] = 0;
	build_zstd(f, 40, w);
	tap_ok(zstd_footer_parse(f, 48, &z) == -EBADMSG, "TOC uncompressed length 0 refused");
	memcpy(w, v, sizeof w);
	w[0] = 7;
	build_zstd(f, 40, w);
	tap_ok(zstd_footer_parse(f, 48, &z) == -EBADMSG, "TOC offset below the frame header refused");
	memcpy(w, v, sizeof w);
	w[0] = UINT64_MAX - 5;
	build_zstd(f, 40, w);
	tap_ok(zstd_footer_parse(f, 48, &z) == -EBADMSG, "TOC offset + length overflowing refused");
	memcpy(w, v, sizeof w);
	w[3] = 2;
	build_zstd(f, 40, w);
	tap_ok(zstd_footer_parse(f, 48, &z) == -EBADMSG, "TOC type 2 refused");
	memcpy(w, v, sizeof w);
	w[4] = 0;
	build_zstd(f, 64, w);
	tap_ok(zstd_footer_parse(f, 72, &z) == -EBADMSG, "tar-split offset 0 refused");
	memcpy(w, v, sizeof w);
	w[5] = UINT64_MAX;
	build_zstd(f, 64, w);
	tap_ok(zstd_footer_parse(f, 72, &z) == -EBADMSG, "tar-split offset + length overflowing refused");
	build_zstd(f, 40, v);
	memcpy(f + 40, "GNUlInUx", 8);
	tap_ok(zstd_footer_parse(f, 48, &z) == -EBADMSG, "40 data bytes with the new magic refused");
	build_zstd(f, 64, v);
	memcpy(f + 64, "GnUlInUx", 8);
	tap_ok(zstd_footer_parse(f, 72, &z) == -EBADMSG, "64 data bytes with the old magic refused");
	memset(buf, 0, sizeof buf);
	tap_ok(zstd_footer_parse(buf, sizeof buf, &z) == -EBADMSG, "zeros refused");

	size_t len;
	_cleanup_free_ char *real = read_data("footer-zstdchunked.bin", &len);
	tap_ok(real && zstd_footer_parse((unsigned char *)real, len, &z) == 0 && z.footer_size == 48 &&
		       z.toc_off == 10492148 && z.toc_len == 10680 && z.toc_ulen == 41844 && z.toc_type == 1,
	       "real zstd:chunked footer (skopeo 1.9.3): 10492148:10680:41844:1");
}

static void test_position(void)
{
	uint64_t off = 1, len = 1, ulen = 1, type = 9;
	tap_ok(zstd_position_parse("10489702:2139:11015:1", &off, &len, &ulen, &type) == 0 && off == 10489702 &&
		       len == 2139 && ulen == 11015 && type == 1,
	       "manifest position");
	tap_ok(zstd_position_parse("18446744073709551615:0:007:1", &off, &len, &ulen, &type) == 0 &&
		       off == UINT64_MAX && len == 0 && ulen == 7,
	       "2^64-1, zero, leading zeros");
	type = 9;
	tap_ok(zstd_position_parse("1:2:3", &off, &len, &ulen, NULL) == 0 && off == 1 && len == 2 && ulen == 3 &&
		       type == 9,
	       "tar-split position (three fields)");
	static const char *const bad_pos[] = {
		"18446744073709551616:0:0:1", "1:99999999999999999999:3:1", "1:2:3", "1:2:3:4:5", "1:2:3:4 ",
		" 1:2:3:4", "-1:2:3:4", "+1:2:3:4", "1::3:4", "", ":::", "1:2:3:", "0x10:1:1:1", "1:2:3:4\n",
		"1,2,3,4", "1:2:3:1.0",
	};
	for (size_t k = 0; k < sizeof bad_pos / sizeof bad_pos[0]; k++)
		tap_ok(zstd_position_parse(bad_pos[k], &off, &len, &ulen, &type) == -EPROTO,
		       "manifest position %zu (\"%.*s\") refused", k, (int)strcspn(bad_pos[k], "\n"), bad_pos[k]);
	tap_ok(zstd_position_parse("1:2:3:4", &off, &len, &ulen, NULL) == -EPROTO,
	       "tar-split position with four fields refused");
	tap_ok(zstd_position_parse("1:2", &off, &len, &ulen, NULL) == -EPROTO,
	       "tar-split position with two fields refused");
	tap_ok(zstd_position_parse(NULL, &off, &len, &ulen, &type) == -EPROTO, "NULL refused");
}

int main(void)
{
	test_estargz();
	test_containers_storage();
	test_empty_and_times();
	test_bad();
	test_caps();
	test_real();
	test_estargz_footer();
	test_zstd_footer();
	test_position();
	return tap_done();
}
