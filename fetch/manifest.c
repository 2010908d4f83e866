/* Image indexes (OCI index, Docker manifest list) and image manifests (OCI,
 * Docker schema 2) into structs.
 *
 * The body comes from a registry and is untrusted.  It is decoded once:
 * every field we use is type-checked with json_unpack_ex and copied out, and
 * the JSON tree is dropped before returning, so nothing downstream touches
 * json_t.  Fields we do not use (annotations, artifactType, data, ...) are
 * ignored rather than refused, as the specs ask of readers.
 *
 * Errors carry the path of the offending field ("layers[2].digest") so that
 * a user looking at a broken image knows where to look. */
#include "fetch/internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>

#include "common/cleanup.h"


#define SCHEMA1_MSG "schema1 manifests are not supported (deprecated by Docker): " \
		    "push the image again with a current tool"

/* What is being parsed, for messages: "index", "manifest". */
struct where {
	const char *what;
	struct mlfs_err *err;
};

static int field_err(const struct where *w, int code, const char *path, const char *key,
		     const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static int field_err(const struct where *w, int code, const char *path, const char *key,
		     const char *fmt, ...)
{
	char why[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(why, sizeof why, fmt, ap);
	va_end(ap);
	return mlfs_err_set(w->err, code, "malformed %s: %s%s%s: %s", w->what, path,
			    *path && *key ? "." : "", key, why);
}


/* obj[key] as a string; *out stays NULL when absent and !required.  The
 * string belongs to the JSON tree. */
static int get_string(const struct where *w, json_t *obj, const char *path, const char *key,
		      bool required, const char **out)
{
	json_error_t e;
	*out = NULL;
	if (json_unpack_ex(obj, &e, 0, "{s?s}", key, out) < 0)
		return field_err(w, EPROTO, path, key, "must be a string, not %s",
				 mlfs_json_type_name(json_object_get(obj, key)));
	if (required && !*out)
		return field_err(w, EPROTO, path, key, "missing");
	return 0;
}

/* obj[key] as an object or array (json_type), borrowed; NULL when absent. */
static int get_container(const struct where *w, json_t *obj, const char *path, const char *key,
			 json_type type, bool required, json_t **out)
{
	json_error_t e;
	*out = NULL;
	if (json_unpack_ex(obj, &e, 0, "{s?o}", key, out) < 0)
		return mlfs_err_set(w->err, EPROTO, "malformed %s: %s", w->what, e.text);
	if (!*out) {
		if (required)
			return field_err(w, EPROTO, path, key, "missing");
		return 0;
	}
	if (json_typeof(*out) != type)
		return field_err(w, EPROTO, path, key, "must be %s, not %s",
				 type == JSON_OBJECT ? "an object" : "an array",
				 mlfs_json_type_name(*out));
	return 0;
}

static int copy_field(const struct where *w, const char *path, const char *key, const char *s,
		      char *dst, size_t dst_len)
{
	size_t n = strlen(s);
	if (n >= dst_len)
		return field_err(w, EPROTO, path, key, "too long (%zu bytes, at most %zu)", n,
				 dst_len - 1);
	memcpy(dst, s, n + 1);
	return 0;
}

static int parse_platform(const struct where *w, json_t *obj, const char *path,
			  struct mlfs_platform *p)
{
	static const struct {
		const char *key;
		bool required;
		size_t off, len;
	} fields[] = {
		{ "os", true, offsetof(struct mlfs_platform, os), sizeof p->os },
		{ "architecture", true, offsetof(struct mlfs_platform, arch), sizeof p->arch },
		{ "variant", false, offsetof(struct mlfs_platform, variant), sizeof p->variant },
		{ "os.version", false, offsetof(struct mlfs_platform, os_version), sizeof p->os_version },
	};
	memset(p, 0, sizeof *p);
	for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
		const char *s;
		int r = get_string(w, obj, path, fields[i].key, fields[i].required, &s);
		if (r < 0)
			return r;
		if (s) {
			r = copy_field(w, path, fields[i].key, s, (char *)p + fields[i].off,
				       fields[i].len);
			if (r < 0)
				return r;
		}
	}
	mlfs_platform_normalize(p);
	return 0;
}

void mlfs_strv_free(char **v)
{
	if (!v)
		return;
	for (char **p = v; *p; p++)
		free(*p);
	free(v);
}

static int parse_urls(const struct where *w, json_t *arr, const char *path, char ***out)
{
	size_t n = json_array_size(arr);
	*out = NULL;
	if (n == 0)
		return 0;
	char **v = calloc(n + 1, sizeof *v);
	if (!v)
		return mlfs_err_set(w->err, ENOMEM, "out of memory");
	for (size_t i = 0; i < n; i++) {
		json_t *item = json_array_get(arr, i);
		if (!json_is_string(item)) {
			char key[32];
			snprintf(key, sizeof key, "urls[%zu]", i);
			mlfs_strv_free(v);
			return field_err(w, EPROTO, path, key, "must be a string, not %s",
					 mlfs_json_type_name(item));
		}
		v[i] = strdup(json_string_value(item));
		if (!v[i]) {
			mlfs_strv_free(v);
			return mlfs_err_set(w->err, ENOMEM, "out of memory");
		}
	}
	*out = v;
	return 0;
}

/* The annotations mlfs acts on, copied out; the rest are ignored.  The
 * spec makes every value a string: one that is not is refused. */
static int parse_annotations(const struct where *w, json_t *ann, const char *path,
			     struct mlfs_descriptor *d)
{
	static const struct { const char *key; size_t off; } known[] = {
		{ "containerd.io/snapshot/stargz/toc.digest", offsetof(struct mlfs_descriptor, toc_digest) },
		{ "io.github.containers.zstd-chunked.manifest-checksum",
		  offsetof(struct mlfs_descriptor, zstd_toc_checksum) },
		{ "io.containers.zstd-chunked.manifest-checksum",
		  offsetof(struct mlfs_descriptor, zstd_toc_checksum) },
		{ "io.github.containers.zstd-chunked.manifest-position",
		  offsetof(struct mlfs_descriptor, zstd_toc_position) },
		{ "io.containers.zstd-chunked.manifest-position",
		  offsetof(struct mlfs_descriptor, zstd_toc_position) },
	};
	char apath[128];
	snprintf(apath, sizeof apath, "%s.annotations", path);
	for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
		const char *v;
		int r = get_string(w, ann, apath, known[i].key, false, &v);
		if (r < 0)
			return r;
		char **slot = (char **)((char *)d + known[i].off);
		if (!v || *slot) /* the newer name, listed first, wins */
			continue;
		if (!(*slot = strdup(v)))
			return mlfs_err_set(w->err, ENOMEM, "out of memory");
	}
	return 0;
}

static void descriptor_clear(struct mlfs_descriptor *d)
{
	free(d->media_type);
	mlfs_strv_free(d->urls);
	free(d->toc_digest);
	free(d->zstd_toc_checksum);
	free(d->zstd_toc_position);
	memset(d, 0, sizeof *d);
}

/* path names the descriptor itself: "config", "layers[2]", "manifests[0]". */
static int parse_descriptor(const struct where *w, json_t *obj, const char *path,
			    struct mlfs_descriptor *d)
{
	const char *media_type, *digest;
	json_int_t size = -1;
	json_t *platform, *urls, *ann;
	json_error_t e;
	int r;

	memset(d, 0, sizeof *d);
	if (!json_is_object(obj))
		return field_err(w, EPROTO, path, "", "must be an object, not %s", mlfs_json_type_name(obj));

	if ((r = get_string(w, obj, path, "mediaType", true, &media_type)) < 0 ||
	    (r = get_string(w, obj, path, "digest", true, &digest)) < 0)
		return r;
	if (!json_object_get(obj, "size"))
		return field_err(w, EPROTO, path, "size", "missing");
	if (json_unpack_ex(obj, &e, 0, "{s:I}", "size", &size) < 0)
		return field_err(w, EPROTO, path, "size", "must be an integer, not %s",
				 mlfs_json_type_name(json_object_get(obj, "size")));
	if (size < 0)
		return field_err(w, EPROTO, path, "size", "negative (%" PRId64 ")", (int64_t)size);
	if ((r = get_container(w, obj, path, "platform", JSON_OBJECT, false, &platform)) < 0 ||
	    (r = get_container(w, obj, path, "urls", JSON_ARRAY, false, &urls)) < 0 ||
	    (r = get_container(w, obj, path, "annotations", JSON_OBJECT, false, &ann)) < 0)
		return r;

	r = mlfs_digest_validate(digest);
	if (r == -ENOTSUP) {
		char buf[32];
		/* the algorithm name only, and not too much of it */
		return field_err(w, EPROTONOSUPPORT, path, "digest",
				 "unsupported algorithm %.*s (only sha256 is)",
				 (int)strcspn(digest, ":"), mlfs_printable(digest, buf, sizeof buf));
	}
	if (r < 0)
		return field_err(w, EPROTO, path, "digest", "not a valid sha256 digest");
	/* mlfs_digest_validate accepts exactly 71 characters */
	memcpy(d->digest, digest, strlen(digest) + 1);
	d->size = size;

	if (platform) {
		char ppath[128];
		snprintf(ppath, sizeof ppath, "%s.platform", path);
		if ((r = parse_platform(w, platform, ppath, &d->platform)) < 0)
			return r;
		d->has_platform = true;
	}

	d->media = mlfs_media_from_string(media_type);
	d->media_type = strdup(media_type);
	if (!d->media_type)
		return mlfs_err_set(w->err, ENOMEM, "out of memory");
	if ((urls && (r = parse_urls(w, urls, path, &d->urls)) < 0) ||
	    (ann && (r = parse_annotations(w, ann, path, d)) < 0)) {
		descriptor_clear(d);
		return r;
	}
	return 0;
}

static const char *media_kind(enum mlfs_media m)
{
	switch (m) {
	case MLFS_MEDIA_OCI_INDEX: return "an OCI image index";
	case MLFS_MEDIA_DOCKER_LIST: return "a Docker manifest list";
	case MLFS_MEDIA_OCI_MANIFEST: return "an OCI image manifest";
	case MLFS_MEDIA_DOCKER_MANIFEST: return "a Docker image manifest";
	case MLFS_MEDIA_DOCKER_SCHEMA1: return "a schema1 manifest";
	case MLFS_MEDIA_OCI_CONFIG:
	case MLFS_MEDIA_DOCKER_CONFIG: return "an image config";
	case MLFS_MEDIA_LAYER_TAR:
	case MLFS_MEDIA_LAYER_GZIP:
	case MLFS_MEDIA_LAYER_ZSTD: return "a layer";
	case MLFS_MEDIA_UNKNOWN: break;
	}
	return "an unknown type";
}

/* Loads the body and checks what both kinds of document share: size,
 * syntax, schemaVersion, and a mediaType that agrees with the Content-Type.
 * *media becomes the type the document is, falling back to `fallback` when
 * neither the Content-Type nor the body says. */
static int load_document(const struct where *w, const void *buf, size_t len,
			 bool (*is_kind)(enum mlfs_media), enum mlfs_media fallback,
			 enum mlfs_media *media, json_t **out)
{
	_cleanup_(json_decrefp) json_t *root = NULL;
	json_error_t e;
	json_int_t version = 0;
	const char *body_type;
	char tbuf[96];
	int r;

	*out = NULL;
	if (len > MLFS_MANIFEST_MAX)
		return mlfs_err_set(w->err, EFBIG, "%s too large: %zu bytes, at most %u", w->what,
				    len, MLFS_MANIFEST_MAX);
	if (*media == MLFS_MEDIA_DOCKER_SCHEMA1)
		return mlfs_err_set(w->err, EPROTONOSUPPORT, SCHEMA1_MSG);
	if (*media != MLFS_MEDIA_UNKNOWN && !is_kind(*media))
		return mlfs_err_set(w->err, EPROTO, "expected an image %s, but the registry sent %s",
				    w->what, media_kind(*media));

	root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &e);
	if (!root)
		return mlfs_err_set(w->err, EPROTO, "malformed %s: line %d column %d: %s", w->what,
				    e.line, e.column, e.text);
	if (!json_is_object(root))
		return mlfs_err_set(w->err, EPROTO, "malformed %s: must be a JSON object, not %s",
				    w->what, mlfs_json_type_name(root));

	if (!json_object_get(root, "schemaVersion"))
		return field_err(w, EPROTO, "", "schemaVersion", "missing");
	if (json_unpack_ex(root, &e, 0, "{s:I}", "schemaVersion", &version) < 0)
		return field_err(w, EPROTO, "", "schemaVersion", "must be an integer, not %s",
				 mlfs_json_type_name(json_object_get(root, "schemaVersion")));
	if (version == 1)
		return mlfs_err_set(w->err, EPROTONOSUPPORT, SCHEMA1_MSG);
	if (version != 2)
		return field_err(w, EPROTO, "", "schemaVersion", "must be 2, not %" PRId64,
				 (int64_t)version);

	if ((r = get_string(w, root, "", "mediaType", false, &body_type)) < 0)
		return r;
	if (body_type) {
		enum mlfs_media m = mlfs_media_from_string(body_type);
		if (!is_kind(m))
			return mlfs_err_set(w->err, EPROTO,
					    "expected an image %s, but the body's mediaType is %s (%s)",
					    w->what, media_kind(m),
					    mlfs_printable(body_type, tbuf, sizeof tbuf));
		if (*media != MLFS_MEDIA_UNKNOWN && m != *media)
			return mlfs_err_set(w->err, EPROTO,
					    "malformed %s: mediaType %s disagrees with the Content-Type (%s)",
					    w->what, mlfs_printable(body_type, tbuf, sizeof tbuf),
					    media_kind(*media));
		*media = m;
	}
	if (*media == MLFS_MEDIA_UNKNOWN)
		*media = fallback;
	*out = steal_pointer(&root);
	return 0;
}

/* ---- indexes ------------------------------------------------------------ */

void mlfs_index_free(struct mlfs_index *idx)
{
	if (!idx)
		return;
	for (size_t i = 0; i < idx->n_manifests; i++)
		descriptor_clear(&idx->manifests[i]);
	free(idx->manifests);
	free(idx);
}

static inline void index_freep(struct mlfs_index **p) { mlfs_index_free(*p); }

int mlfs_index_parse(const void *buf, size_t len, enum mlfs_media media,
		     struct mlfs_index **out, struct mlfs_err *err)
{
	const struct where w = { "index", err };
	_cleanup_(json_decrefp) json_t *root = NULL;
	_cleanup_(index_freep) struct mlfs_index *idx = NULL;
	json_t *manifests;
	int r;

	*out = NULL;
	r = load_document(&w, buf, len, mlfs_media_is_index, MLFS_MEDIA_OCI_INDEX, &media, &root);
	if (r < 0)
		return r;
	/* Without a mediaType only the shape tells an index from a manifest
	 * (image-spec asks readers to guard against this confusion). */
	if (json_object_get(root, "config") || json_object_get(root, "layers"))
		return mlfs_err_set(err, EPROTO, "expected an image index, but the body has "
				    "config or layers: an image manifest?");
	if ((r = get_container(&w, root, "", "manifests", JSON_ARRAY, true, &manifests)) < 0)
		return r;

	idx = calloc(1, sizeof *idx);
	if (!idx)
		return mlfs_err_set(err, ENOMEM, "out of memory");
	idx->media = media;
	size_t n = json_array_size(manifests);
	idx->manifests = calloc(n ? n : 1, sizeof *idx->manifests);
	if (!idx->manifests)
		return mlfs_err_set(err, ENOMEM, "out of memory");
	for (size_t i = 0; i < n; i++) {
		char path[32];
		snprintf(path, sizeof path, "manifests[%zu]", i);
		r = parse_descriptor(&w, json_array_get(manifests, i), path, &idx->manifests[i]);
		if (r < 0)
			return r;
		idx->n_manifests++;
	}
	*out = steal_pointer(&idx);
	return 0;
}

/* ---- manifests ---------------------------------------------------------- */

void mlfs_manifest_free(struct mlfs_manifest *m)
{
	if (!m)
		return;
	descriptor_clear(&m->config);
	for (size_t i = 0; i < m->n_layers; i++)
		descriptor_clear(&m->layers[i]);
	free(m->layers);
	free(m);
}

static inline void manifest_freep(struct mlfs_manifest **p) { mlfs_manifest_free(*p); }

int mlfs_manifest_parse(const void *buf, size_t len, enum mlfs_media media,
			struct mlfs_manifest **out, struct mlfs_err *err)
{
	const struct where w = { "manifest", err };
	_cleanup_(json_decrefp) json_t *root = NULL;
	_cleanup_(manifest_freep) struct mlfs_manifest *m = NULL;
	json_t *config, *layers;
	char tbuf[96];
	int r;

	*out = NULL;
	r = load_document(&w, buf, len, mlfs_media_is_manifest, MLFS_MEDIA_OCI_MANIFEST, &media,
			  &root);
	if (r < 0)
		return r;
	if (json_object_get(root, "manifests"))
		return mlfs_err_set(err, EPROTO, "expected an image manifest, but the body has "
				    "manifests: an image index?");
	if ((r = get_container(&w, root, "", "config", JSON_OBJECT, true, &config)) < 0 ||
	    (r = get_container(&w, root, "", "layers", JSON_ARRAY, true, &layers)) < 0)
		return r;

	m = calloc(1, sizeof *m);
	if (!m)
		return mlfs_err_set(err, ENOMEM, "out of memory");
	m->media = media;
	if ((r = parse_descriptor(&w, config, "config", &m->config)) < 0)
		return r;
	/* Artifacts (Helm charts, signatures, ...) use OCI manifests too, with
	 * their own config type: there is no filesystem to mount in them. */
	if (m->config.media != MLFS_MEDIA_OCI_CONFIG && m->config.media != MLFS_MEDIA_DOCKER_CONFIG)
		return mlfs_err_set(err, EPROTONOSUPPORT,
				    "not a container image: config media type %s is not an image config",
				    mlfs_printable(m->config.media_type, tbuf, sizeof tbuf));

	size_t n = json_array_size(layers);
	m->layers = calloc(n ? n : 1, sizeof *m->layers);
	if (!m->layers)
		return mlfs_err_set(err, ENOMEM, "out of memory");
	for (size_t i = 0; i < n; i++) {
		char path[32];
		snprintf(path, sizeof path, "layers[%zu]", i);
		r = parse_descriptor(&w, json_array_get(layers, i), path, &m->layers[i]);
		if (r < 0)
			return r;
		m->n_layers++;
		if (!mlfs_media_is_layer(m->layers[i].media))
			return mlfs_err_set(err, EPROTONOSUPPORT, "%s: unsupported layer media type %s",
					    path, mlfs_printable(m->layers[i].media_type, tbuf, sizeof tbuf));
	}
	*out = steal_pointer(&m);
	return 0;
}
