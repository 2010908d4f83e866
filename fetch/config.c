/* The image config (OCI image-spec config.md; Docker's is the same for the
 * fields we read): platform, process defaults, and the diff_ids that tie
 * each layer to the digest of its uncompressed tar.  Untrusted, decoded
 * once into struct mlfs_config; other fields (history, labels, ...) ignored. */
#include "fetch/internal.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <jansson.h>

#include "common/cleanup.h"


static int field_err(struct mlfs_err *err, int code, const char *path, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static int field_err(struct mlfs_err *err, int code, const char *path, const char *fmt, ...)
{
	char why[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(why, sizeof why, fmt, ap);
	va_end(ap);
	return mlfs_err_set(err, code, "malformed image config: %s: %s", path, why);
}


/* obj[key] as a string owned by the tree.  Absent, or null when `nullable`,
 * leaves *out NULL. */
static int get_string(struct mlfs_err *err, json_t *obj, const char *path, const char *key,
		      bool required, bool nullable, const char **out)
{
	json_error_t e;
	json_t *v = json_object_get(obj, key);
	*out = NULL;
	if (!v || (nullable && json_is_null(v))) {
		if (required)
			return field_err(err, EPROTO, path, "missing");
		return 0;
	}
	if (json_unpack_ex(v, &e, 0, "s", out) < 0)
		return field_err(err, EPROTO, path, "must be a string, not %s", mlfs_json_type_name(v));
	return 0;
}

static int copy_string(struct mlfs_err *err, json_t *obj, const char *path, const char *key,
		       bool required, char *dst, size_t dst_len)
{
	const char *s;
	int r = get_string(err, obj, path, key, required, false, &s);
	if (r < 0 || !s)
		return r;
	size_t n = strlen(s);
	if (n >= dst_len)
		return field_err(err, EPROTO, path, "too long (%zu bytes, at most %zu)", n, dst_len - 1);
	memcpy(dst, s, n + 1);
	return 0;
}

static int dup_string(struct mlfs_err *err, json_t *obj, const char *path, const char *key,
		      char **out)
{
	const char *s;
	int r = get_string(err, obj, path, key, false, true, &s);
	if (r < 0 || !s)
		return r;
	*out = strdup(s);
	return *out ? 0 : mlfs_err_set(err, ENOMEM, "out of memory");
}


/* A JSON array of strings or null.  An empty array stays an empty list
 * (not NULL): `"Entrypoint": []` is a deliberate reset in Docker. */
static int dup_strv(struct mlfs_err *err, json_t *obj, const char *path, const char *key,
		    char ***out)
{
	json_t *arr = json_object_get(obj, key);
	*out = NULL;
	if (!arr || json_is_null(arr))
		return 0;
	if (!json_is_array(arr))
		return field_err(err, EPROTO, path, "must be an array of strings or null, not %s",
				 mlfs_json_type_name(arr));
	size_t n = json_array_size(arr);
	char **v = calloc(n + 1, sizeof *v);
	if (!v)
		return mlfs_err_set(err, ENOMEM, "out of memory");
	for (size_t i = 0; i < n; i++) {
		json_t *item = json_array_get(arr, i);
		if (!json_is_string(item)) {
			mlfs_strv_free(v);
			return mlfs_err_set(err, EPROTO, "malformed image config: %s[%zu]: must be a "
					    "string, not %s", path, i, mlfs_json_type_name(item));
		}
		v[i] = strdup(json_string_value(item));
		if (!v[i]) {
			mlfs_strv_free(v);
			return mlfs_err_set(err, ENOMEM, "out of memory");
		}
	}
	*out = v;
	return 0;
}

void mlfs_config_free(struct mlfs_config *c)
{
	if (!c)
		return;
	mlfs_strv_free(c->entrypoint);
	mlfs_strv_free(c->cmd);
	mlfs_strv_free(c->env);
	free(c->working_dir);
	free(c->user);
	free(c->diff_ids);
	free(c);
}

static inline void config_freep(struct mlfs_config **p) { mlfs_config_free(*p); }

static int parse_process(struct mlfs_err *err, json_t *root, struct mlfs_config *c)
{
	json_error_t e;
	json_t *proc = NULL;
	int r;

	if (json_unpack_ex(root, &e, 0, "{s?o}", "config", &proc) < 0)
		return mlfs_err_set(err, EPROTO, "malformed image config: %s", e.text);
	if (!proc || json_is_null(proc))
		return 0;
	if (!json_is_object(proc))
		return field_err(err, EPROTO, "config", "must be an object, not %s",
				 mlfs_json_type_name(proc));
	if ((r = dup_strv(err, proc, "config.Entrypoint", "Entrypoint", &c->entrypoint)) < 0 ||
	    (r = dup_strv(err, proc, "config.Cmd", "Cmd", &c->cmd)) < 0 ||
	    (r = dup_strv(err, proc, "config.Env", "Env", &c->env)) < 0 ||
	    (r = dup_string(err, proc, "config.WorkingDir", "WorkingDir", &c->working_dir)) < 0 ||
	    (r = dup_string(err, proc, "config.User", "User", &c->user)) < 0)
		return r;
	return 0;
}

static int parse_rootfs(struct mlfs_err *err, json_t *root, struct mlfs_config *c)
{
	json_error_t e;
	json_t *rootfs = NULL, *diff_ids = NULL;
	const char *type;
	int r;

	if (json_unpack_ex(root, &e, 0, "{s?o}", "rootfs", &rootfs) < 0)
		return mlfs_err_set(err, EPROTO, "malformed image config: %s", e.text);
	if (!rootfs)
		return field_err(err, EPROTO, "rootfs", "missing");
	if (!json_is_object(rootfs))
		return field_err(err, EPROTO, "rootfs", "must be an object, not %s",
				 mlfs_json_type_name(rootfs));
	if ((r = get_string(err, rootfs, "rootfs.type", "type", true, false, &type)) < 0)
		return r;
	if (strcmp(type, "layers") != 0)
		return field_err(err, EPROTO, "rootfs.type", "must be \"layers\"");

	diff_ids = json_object_get(rootfs, "diff_ids");
	if (!diff_ids)
		return field_err(err, EPROTO, "rootfs.diff_ids", "missing");
	if (!json_is_array(diff_ids))
		return field_err(err, EPROTO, "rootfs.diff_ids", "must be an array, not %s",
				 mlfs_json_type_name(diff_ids));
	size_t n = json_array_size(diff_ids);
	c->diff_ids = calloc(n ? n : 1, sizeof *c->diff_ids);
	if (!c->diff_ids)
		return mlfs_err_set(err, ENOMEM, "out of memory");
	for (size_t i = 0; i < n; i++) {
		json_t *item = json_array_get(diff_ids, i);
		const char *s = json_string_value(item);
		if (!s)
			return mlfs_err_set(err, EPROTO, "malformed image config: rootfs.diff_ids[%zu]: "
					    "must be a string, not %s", i, mlfs_json_type_name(item));
		r = mlfs_digest_validate(s);
		if (r == -ENOTSUP)
			return mlfs_err_set(err, EPROTONOSUPPORT, "image config: rootfs.diff_ids[%zu]: "
					    "unsupported digest algorithm (only sha256 is)", i);
		if (r < 0)
			return mlfs_err_set(err, EPROTO, "malformed image config: rootfs.diff_ids[%zu]: "
					    "not a valid sha256 digest", i);
		/* mlfs_digest_validate accepts exactly 71 characters */
		memcpy(c->diff_ids[i], s, strlen(s) + 1);
	}
	c->n_diff_ids = n;
	return 0;
}

/* RFC 3339 ("2024-01-02T03:04:05.5Z", "...+01:00"): the image's own
 * timestamp is informational, so a value that does not parse is ignored. */
static bool parse_rfc3339(const char *s, int64_t *out)
{
	struct tm tm = { 0 };
	const char *p = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
	if (!p)
		return false;
	if (*p == '.')
		for (p++; *p >= '0' && *p <= '9'; p++)
			;
	long offset = 0;
	if (*p == 'Z' || *p == 'z') {
		p++;
	} else if (*p == '+' || *p == '-') {
		/* Exactly "hh:mm", byte by byte: each test stops at the NUL, where
		 * sscanf("%2d:%2d") took "+1:2" and the skip of 6 left the string. */
		const char *t = p + 1;
		if (!isdigit((unsigned char)t[0]) || !isdigit((unsigned char)t[1]) || t[2] != ':' ||
		    !isdigit((unsigned char)t[3]) || !isdigit((unsigned char)t[4]))
			return false;
		int hh = (t[0] - '0') * 10 + (t[1] - '0'), mm = (t[3] - '0') * 10 + (t[4] - '0');
		if (hh > 23 || mm > 59)
			return false;
		offset = (hh * 60L + mm) * 60L * (*p == '-' ? -1 : 1);
		p = t + 5;
	} else {
		return false;
	}
	if (*p)
		return false;
	*out = (int64_t)timegm(&tm) - offset;
	return true;
}

int mlfs_config_parse(const void *buf, size_t len, struct mlfs_config **out, struct mlfs_err *err)
{
	_cleanup_(json_decrefp) json_t *root = NULL;
	_cleanup_(config_freep) struct mlfs_config *c = NULL;
	json_error_t e;
	int r;

	*out = NULL;
	if (len > MLFS_MANIFEST_MAX)
		return mlfs_err_set(err, EFBIG, "image config too large: %zu bytes, at most %u", len,
				    MLFS_MANIFEST_MAX);
	root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &e);
	if (!root)
		return mlfs_err_set(err, EPROTO, "malformed image config: line %d column %d: %s",
				    e.line, e.column, e.text);
	if (!json_is_object(root))
		return mlfs_err_set(err, EPROTO, "malformed image config: must be a JSON object, not %s",
				    mlfs_json_type_name(root));

	c = calloc(1, sizeof *c);
	if (!c)
		return mlfs_err_set(err, ENOMEM, "out of memory");
	struct mlfs_platform *p = &c->platform;
	if ((r = copy_string(err, root, "os", "os", true, p->os, sizeof p->os)) < 0 ||
	    (r = copy_string(err, root, "architecture", "architecture", true, p->arch,
			     sizeof p->arch)) < 0 ||
	    (r = copy_string(err, root, "variant", "variant", false, p->variant,
			     sizeof p->variant)) < 0 ||
	    (r = copy_string(err, root, "os.version", "os.version", false, p->os_version,
			     sizeof p->os_version)) < 0)
		return r;
	mlfs_platform_normalize(p);

	const char *created = NULL;
	if ((r = get_string(err, root, "created", "created", false, true, &created)) < 0)
		return r;
	c->has_created = created && parse_rfc3339(created, &c->created);

	if ((r = parse_process(err, root, c)) < 0 || (r = parse_rootfs(err, root, c)) < 0)
		return r;
	*out = steal_pointer(&c);
	return 0;
}
