/* The table of contents (TOC) of a seekable layer, JSON into structs.
 *
 * The format.  Both seekable formats describe a layer with the TOC of CRFS
 * (google/crfs, "stargz.index.json"):
 *
 *   {"version": 1, "entries": [ENTRY, ...], "tarSplitDigest": "sha256:..."}
 *
 * "tarSplitDigest" is containers/storage >= 1.54 only.  An ENTRY is one tar
 * member (or one more chunk of a regular file), keys as Go's encoding/json
 * writes them, every one but "name" and "type" omitted when zero:
 *
 *   name         the tar member name, unnormalised ("a/b/", ".", "etc/x")
 *   type         dir reg symlink hardlink char block fifo chunk
 *   linkName     symlink target; for a hardlink the path of an earlier entry
 *   mode         the tar header's mode (type bits possible: we keep 07777)
 *   uid gid      numbers (userName/groupName are ignored)
 *   modtime      RFC 3339: eStargz whole seconds in UTC; containers/storage
 *                RFC 3339 nano, in the builder's time zone (accesstime and
 *                changetime, also written there, are ignored)
 *   size         a regular file's size
 *   devMajor devMinor
 *   xattrs       {"user.x": base64 of the value}
 *   digest       sha256 of a regular file's whole contents
 *   offset       blob offset where the compressed frame (zstd) or member
 *                (gzip) that yields this chunk's bytes starts
 *   endOffset    containers/storage: the end of the file's last frame
 *   chunkOffset  where this chunk starts in the file
 *   chunkSize    its length; 0/absent in eStargz = to the end of the file
 *   chunkDigest  sha256 of the chunk's uncompressed bytes
 *   chunkType    containers/storage: "" data, "zeros" a run of zeros (still
 *                stored as a frame that decompresses to the zeros)
 *   innerOffset  eStargz >= 0.13: bytes to skip after decompressing from
 *                offset (several small files share one gzip member)
 *
 * A regular file is a "reg" entry, which is also its first chunk, followed
 * directly by one "chunk" entry (same name, no metadata) per further chunk.
 * Whiteouts are not translated: ".wh.NAME" and ".wh..wh..opq" are plain empty
 * "reg" entries; hardlinks are "hardlink" entries.  eStargz TOCs also list its
 * landmark files (".prefetch.landmark", ".no.prefetch.landmark"), but not the
 * TOC itself.
 *
 * What is verified against what is the caller's business (the annotations
 * hold the TOC's digest; every chunk's bytes hash to chunkDigest, or digest for
 * a single-chunk file): this file only makes sure that every value it hands
 * out has the type, sign and range the format gives it, so that the caller
 * can do arithmetic on them without checking again.
 *
 * Decoding is in two passes over the jansson tree: the first sums the string
 * bytes and xattrs, so that the second copies every string into one arena
 * and every xattr into one array, with no allocation per entry. */
#include "layers/toc.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <jansson.h>

#include "common/base64.h"
#include "common/err.h"
#include "common/json.h"

/* What toc_parse hands out, and what it owns besides. */
struct toc_impl {
	struct toc pub;
	char *arena;                 /* every string and xattr value */
	struct toc_xattr *xattrs;    /* all entries' xattrs, entry after entry */
};

struct ctx {
	char *msg;
	size_t msglen;
	struct toc_impl *t;
	size_t arena_len, arena_cap;
	size_t n_xattrs, cap_xattrs;
};

static int fail(struct ctx *c, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int fail(struct ctx *c, int code, const char *fmt, ...)
{
	if (c->msg && c->msglen) {
		char raw[1024];
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(raw, sizeof raw, fmt, ap);
		va_end(ap);
		/* one line, whatever the input or jansson put in it */
		mlfs_escape(raw, strlen(raw), 0, c->msg, c->msglen);
	}
	return -code;
}

#define entry_fail(c, code, i, key, fmt, ...) \
	fail(c, code, "TOC entries[%zu].%s: " fmt, i, key, ##__VA_ARGS__)


/* ---- values ---- */

/* o[key] when present and not null. */
static json_t *get(json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);
	return json_is_null(v) ? NULL : v;
}

static int get_string(struct ctx *c, size_t i, json_t *o, const char *key, const char **s, size_t *len)
{
	json_t *v = get(o, key);
	*s = NULL;
	*len = 0;
	if (!v)
		return 0;
	if (!json_is_string(v))
		return entry_fail(c, EPROTO, i, key, "must be a string, not %s", mlfs_json_type_name(v));
	*s = json_string_value(v);
	*len = json_string_length(v);
	return 0;
}

static int get_uint(struct ctx *c, size_t i, json_t *o, const char *key, uint64_t max, uint64_t *out)
{
	json_t *v = get(o, key);
	*out = 0;
	if (!v)
		return 0;
	if (!json_is_integer(v))
		return entry_fail(c, EPROTO, i, key, "must be an integer, not %s", mlfs_json_type_name(v));
	json_int_t n = json_integer_value(v);
	if (n < 0)
		return entry_fail(c, EPROTO, i, key, "must not be negative (%lld)", (long long)n);
	if ((unsigned long long)n > max)
		return entry_fail(c, EPROTO, i, key, "too large (%lld)", (long long)n);
	*out = (uint64_t)n;
	return 0;
}

static int hexval(char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	return -1; /* uppercase too: digests are lowercase */
}

/* "sha256:" + 64 lowercase hex into 32 bytes. */
static bool digest_decode(const char *s, size_t len, uint8_t out[32])
{
	if (len != 7 + 64 || memcmp(s, "sha256:", 7) != 0)
		return false;
	for (size_t k = 0; k < 32; k++) {
		int hi = hexval(s[7 + 2 * k]), lo = hexval(s[8 + 2 * k]);
		if (hi < 0 || lo < 0)
			return false;
		out[k] = (uint8_t)(hi << 4 | lo);
	}
	return true;
}

/* An absent, null or "" digest is no digest (Go's omitempty). */
static int get_digest(struct ctx *c, size_t i, json_t *o, const char *key, bool *has, uint8_t out[32])
{
	const char *s;
	size_t len;
	int r = get_string(c, i, o, key, &s, &len);
	*has = false;
	if (r < 0 || !s || !len)
		return r;
	if (!digest_decode(s, len, out)) {
		char buf[80];
		return entry_fail(c, EPROTO, i, key, "not \"sha256:\" and 64 lowercase hex digits: \"%s\"",
				  mlfs_printable(s, buf, sizeof buf));
	}
	*has = true;
	return 0;
}

/* ---- RFC 3339 ---- */

static int digits(const char *p, int k)
{
	int v = 0;
	for (int j = 0; j < k; j++) {
		if (p[j] < '0' || p[j] > '9')
			return -1;
		v = v * 10 + (p[j] - '0');
	}
	return v;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
	y -= m <= 2;
	int64_t era = (y >= 0 ? y : y - 399) / 400;
	unsigned yoe = (unsigned)(y - era * 400);
	unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
	unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + (int64_t)doe - 719468;
}

static unsigned days_in_month(int y, int m)
{
	static const unsigned char dim[12] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
	bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
	return dim[m - 1] + (m == 2 && leap);
}

/* YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM), as Go's time writes it;
 * fractions beyond nanoseconds are truncated.  Leap seconds refused (Go does). */
static bool parse_rfc3339(const char *s, size_t n, int64_t *sec, uint32_t *nsec)
{
	if (n < 20 || s[4] != '-' || s[7] != '-' || (s[10] != 'T' && s[10] != 't') || s[13] != ':' ||
	    s[16] != ':')
		return false;
	int y = digits(s, 4), mo = digits(s + 5, 2), d = digits(s + 8, 2);
	int h = digits(s + 11, 2), mi = digits(s + 14, 2), se = digits(s + 17, 2);
	if (y < 0 || mo < 1 || mo > 12 || d < 1 || (unsigned)d > days_in_month(y, mo) || h < 0 || h > 23 ||
	    mi < 0 || mi > 59 || se < 0 || se > 59)
		return false;
	const char *p = s + 19, *end = s + n;
	uint32_t frac = 0;
	if (*p == '.') {
		int nd = 0;
		for (p++; p < end && *p >= '0' && *p <= '9'; p++, nd++)
			if (nd < 9)
				frac = frac * 10 + (uint32_t)(*p - '0');
		if (nd == 0)
			return false;
		for (; nd < 9; nd++)
			frac *= 10;
	}
	int off = 0;
	if (p < end && (*p == 'Z' || *p == 'z')) {
		p++;
	} else if (end - p >= 6 && (*p == '+' || *p == '-') && p[3] == ':') {
		int oh = digits(p + 1, 2), om = digits(p + 4, 2);
		if (oh < 0 || oh > 23 || om < 0 || om > 59)
			return false;
		off = (oh * 60 + om) * 60 * (*p == '-' ? -1 : 1);
		p += 6;
	} else {
		return false;
	}
	if (p != end)
		return false;
	*sec = days_from_civil(y, (unsigned)mo, (unsigned)d) * 86400 + h * 3600 + mi * 60 + se - off;
	*nsec = frac;
	return true;
}

/* ---- the arena ---- */

static void *arena_take(struct ctx *c, size_t n)
{
	if (n > c->arena_cap - c->arena_len)
		return NULL; /* pass 1 reserved less: cannot happen */
	void *p = c->t->arena + c->arena_len;
	c->arena_len += n;
	return p;
}

static const char *arena_str(struct ctx *c, const char *s, size_t n)
{
	char *p = arena_take(c, n + 1);
	if (p) {
		memcpy(p, s, n);
		p[n] = '\0';
	}
	return p;
}

/* Pass 1: the arena bytes and xattrs that pass 2 will need at most.  Values
 * of the wrong type are skipped here and refused there. */
static void measure(json_t *entries, size_t *arena, size_t *n_xattrs)
{
	size_t a = 0, nx = 0, i;
	json_t *e;
	json_array_foreach(entries, i, e) {
		json_t *v;
		if ((v = json_object_get(e, "name")) && json_is_string(v))
			a += json_string_length(v) + 1;
		if ((v = json_object_get(e, "linkName")) && json_is_string(v))
			a += json_string_length(v) + 1;
		if ((v = json_object_get(e, "xattrs")) && json_is_object(v)) {
			const char *k;
			json_t *x;
			json_object_foreach(v, k, x) {
				nx++;
				a += strlen(k) + 1;
				if (json_is_string(x))
					a += json_string_length(x) / 4 * 3;
			}
		}
	}
	*arena = a;
	*n_xattrs = nx;
}

/* ---- one entry ---- */

static const struct {
	const char *name;
	enum toc_type type;
} types[] = {
	{ "dir", TOC_DIR },   { "reg", TOC_REG },     { "symlink", TOC_SYMLINK }, { "hardlink", TOC_HARDLINK },
	{ "char", TOC_CHAR }, { "block", TOC_BLOCK }, { "fifo", TOC_FIFO },       { "chunk", TOC_CHUNK },
};

static int parse_xattrs(struct ctx *c, size_t i, json_t *o, struct toc_entry *e)
{
	json_t *obj = get(o, "xattrs");
	if (!obj)
		return 0;
	if (!json_is_object(obj))
		return entry_fail(c, EPROTO, i, "xattrs", "must be an object, not %s", mlfs_json_type_name(obj));
	if (c->n_xattrs + json_object_size(obj) > c->cap_xattrs)
		return fail(c, EPROTO, "TOC entries[%zu].xattrs: internal miscount", i);
	struct toc_xattr *first = c->t->xattrs + c->n_xattrs;
	const char *k;
	json_t *v;
	json_object_foreach(obj, k, v) {
		char buf[64];
		size_t kl = strlen(k);
		if (kl == 0)
			return entry_fail(c, EPROTO, i, "xattrs", "empty attribute name");
		if (kl >= TOC_XATTR_NAME_MAX)
			return entry_fail(c, EFBIG, i, "xattrs", "attribute name of %zu bytes (at most %d)", kl,
					  TOC_XATTR_NAME_MAX - 1);
		struct toc_xattr *x = &c->t->xattrs[c->n_xattrs++];
		if (!(x->name = arena_str(c, k, kl)))
			return fail(c, EPROTO, "TOC entries[%zu].xattrs: internal miscount", i);
		x->value = (const unsigned char *)"";
		x->len = 0;
		if (json_is_null(v))
			continue; /* Go's nil []byte: an empty value */
		if (!json_is_string(v))
			return entry_fail(c, EPROTO, i, "xattrs", "\"%s\" must be a base64 string, not %s",
					  mlfs_printable(k, buf, sizeof buf), mlfs_json_type_name(v));
		size_t sl = json_string_length(v);
		if (sl / 4 * 3 >= TOC_XATTR_VALUE_MAX + 3)
			return entry_fail(c, EFBIG, i, "xattrs", "\"%s\": value too large (at most %d bytes)",
					  mlfs_printable(k, buf, sizeof buf), TOC_XATTR_VALUE_MAX - 1);
		unsigned char *dst = arena_take(c, sl / 4 * 3);
		if (!dst)
			return fail(c, EPROTO, "TOC entries[%zu].xattrs: internal miscount", i);
		ssize_t n = mlfs_base64_decode(json_string_value(v), sl, dst);
		if (n < 0)
			return entry_fail(c, EPROTO, i, "xattrs", "\"%s\": value is not valid base64",
					  mlfs_printable(k, buf, sizeof buf));
		if (n >= TOC_XATTR_VALUE_MAX)
			return entry_fail(c, EFBIG, i, "xattrs", "\"%s\": value too large (at most %d bytes)",
					  mlfs_printable(k, buf, sizeof buf), TOC_XATTR_VALUE_MAX - 1);
		c->arena_len -= sl / 4 * 3 - (size_t)n; /* give back the padding's bytes */
		x->value = dst;
		x->len = (size_t)n;
	}
	e->xattrs = first;
	e->n_xattrs = (uint32_t)(c->t->xattrs + c->n_xattrs - first);
	if (!e->n_xattrs)
		e->xattrs = NULL;
	return 0;
}

static int parse_entry(struct ctx *c, size_t i, json_t *o, struct toc_entry *e)
{
	if (!json_is_object(o))
		return fail(c, EPROTO, "TOC entries[%zu]: must be an object, not %s", i, mlfs_json_type_name(o));

	const char *s;
	size_t len;
	char buf[64];
	int r;

	/* name */
	json_t *v = json_object_get(o, "name");
	if (!v)
		return entry_fail(c, EPROTO, i, "name", "missing");
	if (!json_is_string(v))
		return entry_fail(c, EPROTO, i, "name", "must be a string, not %s", mlfs_json_type_name(v));
	len = json_string_length(v);
	if (len >= TOC_NAME_MAX)
		return entry_fail(c, EFBIG, i, "name", "%zu bytes long (at most %d)", len, TOC_NAME_MAX - 1);
	if (!(e->name = arena_str(c, json_string_value(v), len)))
		return fail(c, EPROTO, "TOC entries[%zu]: internal miscount", i);

	/* type */
	v = json_object_get(o, "type");
	if (!v)
		return entry_fail(c, EPROTO, i, "type", "missing");
	if (!json_is_string(v))
		return entry_fail(c, EPROTO, i, "type", "must be a string, not %s", mlfs_json_type_name(v));
	s = json_string_value(v);
	for (size_t k = 0; k < sizeof types / sizeof types[0] && !e->type; k++)
		if (!strcmp(s, types[k].name))
			e->type = types[k].type;
	if (!e->type)
		return entry_fail(c, EPROTO, i, "type", "unknown type \"%s\"", mlfs_printable(s, buf, sizeof buf));
	if (e->type == TOC_CHUNK) {
		const struct toc_entry *prev = i ? e - 1 : NULL;
		if (!prev || (prev->type != TOC_REG && prev->type != TOC_CHUNK) || strcmp(prev->name, e->name))
			return entry_fail(c, EPROTO, i, "type",
					  "a \"chunk\" must follow the \"reg\" or \"chunk\" entry of the same name");
	}

	/* linkName */
	if ((r = get_string(c, i, o, "linkName", &s, &len)) < 0)
		return r;
	if (len >= TOC_NAME_MAX)
		return entry_fail(c, EFBIG, i, "linkName", "%zu bytes long (at most %d)", len, TOC_NAME_MAX - 1);
	if (len && !(e->link = arena_str(c, s, len)))
		return fail(c, EPROTO, "TOC entries[%zu]: internal miscount", i);

	/* numbers */
	uint64_t mode, uid, gid, major, minor;
	if ((r = get_uint(c, i, o, "mode", UINT32_MAX, &mode)) < 0 ||
	    (r = get_uint(c, i, o, "uid", UINT32_MAX, &uid)) < 0 ||
	    (r = get_uint(c, i, o, "gid", UINT32_MAX, &gid)) < 0 ||
	    (r = get_uint(c, i, o, "devMajor", UINT32_MAX, &major)) < 0 ||
	    (r = get_uint(c, i, o, "devMinor", UINT32_MAX, &minor)) < 0 ||
	    (r = get_uint(c, i, o, "size", INT64_MAX, &e->size)) < 0 ||
	    (r = get_uint(c, i, o, "offset", INT64_MAX, &e->offset)) < 0 ||
	    (r = get_uint(c, i, o, "endOffset", INT64_MAX, &e->end_offset)) < 0 ||
	    (r = get_uint(c, i, o, "chunkOffset", INT64_MAX, &e->chunk_offset)) < 0 ||
	    (r = get_uint(c, i, o, "chunkSize", INT64_MAX, &e->chunk_size)) < 0 ||
	    (r = get_uint(c, i, o, "innerOffset", INT64_MAX, &e->inner_offset)) < 0)
		return r;
	e->mode = (uint32_t)mode & 07777;
	e->uid = (int64_t)uid;
	e->gid = (int64_t)gid;
	e->dev_major = (uint32_t)major;
	e->dev_minor = (uint32_t)minor;

	/* modtime */
	if ((r = get_string(c, i, o, "modtime", &s, &len)) < 0)
		return r;
	if (len) {
		if (!parse_rfc3339(s, len, &e->mtime, &e->mtime_nsec))
			return entry_fail(c, EPROTO, i, "modtime", "not an RFC 3339 time: \"%s\"",
					  mlfs_printable(s, buf, sizeof buf));
		e->has_mtime = true;
	}

	/* digests */
	if ((r = get_digest(c, i, o, "digest", &e->has_digest, e->digest)) < 0 ||
	    (r = get_digest(c, i, o, "chunkDigest", &e->has_chunk_digest, e->chunk_digest)) < 0)
		return r;

	/* chunkType */
	if ((r = get_string(c, i, o, "chunkType", &s, &len)) < 0)
		return r;
	if (len) {
		if (strcmp(s, "zeros") != 0)
			return entry_fail(c, EPROTO, i, "chunkType", "unknown chunk type \"%s\"",
					  mlfs_printable(s, buf, sizeof buf));
		e->zeros = true;
	}

	return parse_xattrs(c, i, o, e);
}

/* ---- the whole TOC ---- */

static void impl_free(struct toc_impl *t)
{
	if (!t)
		return;
	free(t->pub.entries);
	free(t->arena);
	free(t->xattrs);
	free(t);
}

void toc_free(struct toc *t)
{
	/* pub is the first member */
	impl_free((struct toc_impl *)t);
}

static int parse_root(struct ctx *c, json_t *root)
{
	if (!json_is_object(root))
		return fail(c, EPROTO, "TOC is %s, not a JSON object", mlfs_json_type_name(root));

	json_t *v = json_object_get(root, "version");
	if (!v)
		return fail(c, EPROTO, "TOC version: missing");
	if (!json_is_integer(v))
		return fail(c, EPROTO, "TOC version: must be an integer, not %s", mlfs_json_type_name(v));
	if (json_integer_value(v) != 1)
		return fail(c, EPROTO, "TOC version %lld is not supported (only 1)",
			    (long long)json_integer_value(v));

	v = json_object_get(root, "tarSplitDigest");
	if (v && !json_is_null(v)) {
		if (!json_is_string(v))
			return fail(c, EPROTO, "TOC tarSplitDigest: must be a string, not %s", mlfs_json_type_name(v));
		if (json_string_length(v)) {
			if (!digest_decode(json_string_value(v), json_string_length(v), c->t->pub.tarsplit_digest))
				return fail(c, EPROTO, "TOC tarSplitDigest: not \"sha256:\" and 64 lowercase hex digits");
			c->t->pub.has_tarsplit_digest = true;
		}
	}

	/* Go writes a nil slice as null: a TOC of an empty layer. */
	json_t *entries = json_object_get(root, "entries");
	if (!entries)
		return fail(c, EPROTO, "TOC entries: missing");
	if (json_is_null(entries))
		return 0;
	if (!json_is_array(entries))
		return fail(c, EPROTO, "TOC entries: must be an array, not %s", mlfs_json_type_name(entries));
	size_t n = json_array_size(entries);
	if (n > TOC_MAX_ENTRIES)
		return fail(c, EFBIG, "TOC has %zu entries (at most %u)", n, TOC_MAX_ENTRIES);
	if (!n)
		return 0;

	measure(entries, &c->arena_cap, &c->cap_xattrs);
	c->t->pub.entries = calloc(n, sizeof *c->t->pub.entries);
	c->t->arena = malloc(c->arena_cap ? c->arena_cap : 1);
	c->t->xattrs = calloc(c->cap_xattrs ? c->cap_xattrs : 1, sizeof *c->t->xattrs);
	if (!c->t->pub.entries || !c->t->arena || !c->t->xattrs)
		return fail(c, ENOMEM, "TOC of %zu entries: out of memory", n);
	for (size_t i = 0; i < n; i++) {
		int r = parse_entry(c, i, json_array_get(entries, i), &c->t->pub.entries[i]);
		if (r < 0)
			return r;
		c->t->pub.n = i + 1;
	}
	return 0;
}

int toc_parse(const void *json, size_t len, struct toc **out, char *msg, size_t msglen)
{
	struct ctx c = { .msg = msg, .msglen = msglen };
	*out = NULL;
	if (msg && msglen)
		msg[0] = '\0';

	json_error_t je;
	json_auto_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &je);
	if (!root)
		return fail(&c, EBADMSG, "TOC is not valid JSON: %s (line %d, column %d)", je.text, je.line,
			    je.column);
	if (!(c.t = calloc(1, sizeof *c.t)))
		return fail(&c, ENOMEM, "TOC: out of memory");
	int r = parse_root(&c, root);
	if (r < 0) {
		impl_free(c.t);
		return r;
	}
	*out = &c.t->pub;
	return 0;
}
