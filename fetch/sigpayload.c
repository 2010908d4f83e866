/* The signed JSON of a container signature, read as containers/image reads
 * it (signature/simple.go for GPG simple signing, signature/internal/
 * sigstore_payload.go for sigstore):
 *
 *   { "critical": { "type": TYPE,
 *                   "image": { "docker-manifest-digest": "sha256:..." },
 *                   "identity": { "docker-reference": "host/repo:tag" } },
 *     "optional": { "creator": STRING?, "timestamp": INTEGER?, ...anything } }
 *
 * TYPE is "atomic container signature" (simple signing) or "cosign
 * container image signature" (sigstore, whose "optional" may be null, as
 * cosign writes it).  Exactly these critical fields, each once: a field
 * this reader does not know might be one the signer meant to restrict the
 * signature with, so it refuses rather than ignore it.  This only reads:
 * whether the digest and the reference are the right ones is for the
 * caller (policyverify.c, sigmatch.c), and this runs only on bytes whose
 * signature has already verified. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cleanup.h"
#include "fetch/internal.h"

int mlfs_why_set(char *why, size_t why_len, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(why, why_len, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

/* obj is an object with exactly the keys `want` (NULL-terminated). */
static int exact(json_t *obj, const char *where, const char *const *want, char *why, size_t why_len)
{
	if (!json_is_object(obj))
		return mlfs_why_set(why, why_len, "%s is not a JSON object", where);
	size_t n = 0;
	for (const char *const *w = want; *w; w++, n++)
		if (!json_object_get(obj, *w))
			return mlfs_why_set(why, why_len, "%s has no \"%s\"", where, *w);
	if (json_object_size(obj) != n) {
		const char *k;
		json_t *v;
		json_object_foreach(obj, k, v) {
			const char *const *w = want;
			while (*w && strcmp(*w, k))
				w++;
			if (!*w) {
				char shown[64];
				mlfs_printable(k, shown, sizeof shown);
				return mlfs_why_set(why, why_len, "%s has an unknown field \"%s\"", where, shown);
			}
		}
	}
	return 0;
}

static int get_str(json_t *obj, const char *key, const char *where, char **out, char *why, size_t why_len)
{
	json_t *v = json_object_get(obj, key);
	if (!json_is_string(v))
		return mlfs_why_set(why, why_len, "%s.%s is not a string", where, key);
	*out = strdup(json_string_value(v));
	return *out ? 0 : -ENOMEM;
}

static int parse_optional(json_t *opt, enum mlfs_sig_kind kind, struct mlfs_sig_payload *out, char *why,
			  size_t why_len)
{
	if (kind == MLFS_SIG_COSIGN && json_is_null(opt))
		return 0;
	if (!json_is_object(opt))
		return mlfs_why_set(why, why_len, "\"optional\" is not a JSON object");
	json_t *creator = json_object_get(opt, "creator"), *ts = json_object_get(opt, "timestamp");
	if (creator) {
		int r = get_str(opt, "creator", "optional", &out->creator, why, why_len);
		if (r < 0)
			return r;
	}
	if (ts) {
		/* Go reads it as a float64 and wants it integral. */
		double d = json_is_integer(ts) ? (double)json_integer_value(ts) : json_is_real(ts) ? json_real_value(ts)
												    : NAN;
		if (isnan(d) || d != floor(d) || d < -9.2e18 || d > 9.2e18)
			return mlfs_why_set(why, why_len, "optional.timestamp is not an integer");
		out->has_timestamp = true;
		out->timestamp = json_is_integer(ts) ? (int64_t)json_integer_value(ts) : (int64_t)d;
	}
	return 0;
}

int mlfs_sig_payload_parse(const void *buf, size_t len, enum mlfs_sig_kind kind, struct mlfs_sig_payload *out,
			   char *why, size_t why_len)
{
	static const char *const top[] = { "critical", "optional", NULL };
	static const char *const critical_keys[] = { "type", "image", "identity", NULL };
	static const char *const image_keys[] = { "docker-manifest-digest", NULL };
	static const char *const identity_keys[] = { "docker-reference", NULL };
	const char *type = kind == MLFS_SIG_SIMPLE ? "atomic container signature" : "cosign container image signature";
	memset(out, 0, sizeof *out);
	json_error_t je;
	_cleanup_(json_decrefp) json_t *root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &je);
	if (!root)
		return mlfs_why_set(why, why_len, "the signed content is not JSON (line %d: %s)", je.line, je.text);
	json_t *critical = json_object_get(root, "critical");
	int r = exact(root, "the signed content", top, why, why_len);
	if (r == 0)
		r = exact(critical, "\"critical\"", critical_keys, why, why_len);
	if (r < 0)
		return r;
	json_t *t = json_object_get(critical, "type");
	if (!json_is_string(t))
		return mlfs_why_set(why, why_len, "critical.type is not a string");
	if (strcmp(json_string_value(t), type)) {
		char shown[80];
		mlfs_printable(json_string_value(t), shown, sizeof shown);
		return mlfs_why_set(why, why_len, "critical.type is \"%s\", not \"%s\"", shown, type);
	}
	json_t *image = json_object_get(critical, "image"), *identity = json_object_get(critical, "identity");
	if ((r = exact(image, "critical.image", image_keys, why, why_len)) < 0 ||
	    (r = exact(identity, "critical.identity", identity_keys, why, why_len)) < 0 ||
	    (r = get_str(image, "docker-manifest-digest", "critical.image", &out->digest, why, why_len)) < 0 ||
	    (r = get_str(identity, "docker-reference", "critical.identity", &out->reference, why, why_len)) < 0 ||
	    (r = parse_optional(json_object_get(root, "optional"), kind, out, why, why_len)) < 0) {
		if (r == -ENOMEM)
			mlfs_why_set(why, why_len, "out of memory");
		mlfs_sig_payload_clear(out);
		return r == -ENOMEM ? r : -EINVAL;
	}
	return 0;
}

void mlfs_sig_payload_clear(struct mlfs_sig_payload *p)
{
	free(p->digest);
	free(p->reference);
	free(p->creator);
	memset(p, 0, sizeof *p);
}
