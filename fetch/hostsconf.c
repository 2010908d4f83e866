/* containerd's certs.d/HOST/hosts.toml (containerd's
 * docs/hosts.md): `server` is the upstream (default: the host itself,
 * registry-1.docker.io for docker.io) and each [host."URL"] a mirror,
 * tried in the file's order before it.  A host's `capabilities` say what
 * it may be asked: "resolve" a tag, "pull" a blob or a manifest by
 * digest (a host with "pull" alone is a digest-only mirror).
 * `skip_verify` and an http:// URL make it insecure; `ca` (a file, or a
 * list of files: the first is used) adds a CA.
 *
 * A URL's path is the API root with `override_path = true` (containerd
 * otherwise appends /v2 to it).  Roots under /v2 are supported — Harbor's
 * proxy-cache projects, "https://harbor.example/v2/hub-proxy", serve
 * library/alpine as hub-proxy/library/alpine — by putting the part after
 * /v2 in front of the repository; any other root is skipped with a
 * warning.  `header` adds HTTP headers to every request to that host
 * (never to its token server).  Other keys (client) are ignored. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "fetch/internal.h"

/* Text from the file, fit for a one-line message. */
#define SHOW(k) mlfs_printable((k), (char[256]){ 0 }, 256)

/* "https://host:port/path" -> host:port, whether it said http, and the path. */
static int url_host(const char *url, char *host, size_t len, bool *plain, const char **path)
{
	const char *p = url;
	*plain = false;
	if (!strncmp(p, "https://", 8)) {
		p += 8;
	} else if (!strncmp(p, "http://", 7)) {
		p += 7;
		*plain = true;
	} else if (strstr(p, "://")) {
		return -EINVAL;
	}
	size_t n = strcspn(p, "/");
	if (!n || n >= len)
		return -EINVAL;
	memcpy(host, p, n);
	host[n] = '\0';
	*path = p + n;
	return 0;
}

/* The repository to ask a host for, given its URL's path (into *out):
 * 0, or 1 (and a warning) when its API root cannot be reached through
 * /v2/; -ENOMEM. */
static int host_repo(const char *name, int line, const char *url, const char *path, bool override,
		     const char *repo, char **out)
{
	size_t n = strlen(path);
	while (n && path[n - 1] == '/')
		n--;
	*out = NULL;
	if (!n || (n == 3 && !strncmp(path, "/v2", 3)))
		return (*out = strdup(repo)) ? 0 : -ENOMEM; /* the plain /v2 root */
	if (override && n > 4 && !strncmp(path, "/v2/", 4))
		return asprintf(out, "%.*s/%s", (int)(n - 4), path + 4, repo) < 0 ? (*out = NULL, -ENOMEM) : 0;
	log_warn(MLFS_AREA_FETCH, "%s:%d: host \"%s\": its API root %.*s%s is not supported (only /v2, and /v2/PREFIX "
		 "with override_path = true), skipped", name, line, SHOW(url), (int)n, path, override ? "" : "/v2");
	return 1;
}

static bool header_name_ok(const char *s)
{
	/* RFC 9110's token */
	return *s && s[strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-.^_`|~")] == '\0';
}

/* [host."URL".header]: name = "value" or ["value", ...], as lines
 * "Name: value" (*out malloc'd, NULL when none).  A value may not hold a
 * line break: it would start another header. */
static int headers_of(const char *name, const struct mlfs_toml *h, char **out, struct mlfs_err *err)
{
	*out = NULL;
	const struct mlfs_toml *t = mlfs_toml_get(h, "header");
	if (!t)
		return 0;
	if (t->kind != MLFS_TOML_TABLE)
		return mlfs_err_set(err, EINVAL, "%s:%d: \"header\" must be a table of names", name, t->line);
	size_t len = 0, cap = 0;
	char *buf = NULL;
	for (size_t i = 0; i < t->n; i++) {
		const struct mlfs_toml *v = t->v[i];
		size_t n = v->kind == MLFS_TOML_ARRAY ? v->n : 1;
		if (!header_name_ok(v->key)) {
			free(buf);
			return mlfs_err_set(err, EINVAL, "%s:%d: \"%s\" is not a header name", name, v->line, SHOW(v->key));
		}
		for (size_t j = 0; j < n; j++) {
			const struct mlfs_toml *s = v->kind == MLFS_TOML_ARRAY ? v->v[j] : v;
			if (s->kind != MLFS_TOML_STRING || strpbrk(s->str, "\r\n")) {
				free(buf);
				return mlfs_err_set(err, EINVAL, "%s:%d: header \"%s\" must be a string or a list of "
						    "strings, each on one line", name, s->line, SHOW(v->key));
			}
			size_t add = strlen(v->key) + 2 + strlen(s->str) + 1;
			if (len + add > 8192) {
				free(buf);
				return mlfs_err_set(err, EINVAL, "%s:%d: more than 8 KiB of headers", name, t->line);
			}
			if (len + add + 1 > cap) {
				char *nb = realloc(buf, cap = (len + add + 1) * 2);
				if (!nb) {
					free(buf);
					return mlfs_err_set(err, ENOMEM, "out of memory");
				}
				buf = nb;
			}
			len += (size_t)sprintf(buf + len, "%s: %s\n", v->key, s->str);
		}
	}
	*out = buf;
	return 0;
}

static int caps_of(const char *name, const struct mlfs_toml *h, bool *pull, bool *resolve, struct mlfs_err *err)
{
	const struct mlfs_toml *c = mlfs_toml_get(h, "capabilities");
	*pull = *resolve = true;
	if (!c)
		return 0;
	if (c->kind != MLFS_TOML_ARRAY)
		return mlfs_err_set(err, EINVAL, "%s:%d: \"capabilities\" must be an array of strings", name, c->line);
	*pull = *resolve = false;
	for (size_t i = 0; i < c->n; i++) {
		if (c->v[i]->kind != MLFS_TOML_STRING)
			return mlfs_err_set(err, EINVAL, "%s:%d: \"capabilities\" must be an array of strings", name,
					    c->line);
		if (!strcmp(c->v[i]->str, "pull"))
			*pull = true;
		else if (!strcmp(c->v[i]->str, "resolve"))
			*resolve = true;
	}
	return 0;
}

int mlfs_hostsconf_parse(const void *buf, size_t len, const char *name, const struct mlfs_ref *ref,
			 struct mlfs_endpoints *out, struct mlfs_err *err)
{
	struct mlfs_toml *root = NULL;
	int r = mlfs_toml_parse(buf, len, name, &root, err);
	if (r < 0)
		return r;
	const struct mlfs_toml *hosts = mlfs_toml_get(root, "host");
	if (hosts && hosts->kind != MLFS_TOML_TABLE)
		r = mlfs_err_set(err, EINVAL, "%s:%d: \"host\" must be a table of [host.\"URL\"] tables", name,
				 hosts->line);
	for (size_t i = 0; r == 0 && hosts && i < hosts->n; i++) {
		const struct mlfs_toml *h = hosts->v[i];
		char host[512];
		bool plain, pull, resolve, skip_verify = false;
		const char *path;
		if (h->kind != MLFS_TOML_TABLE) {
			r = mlfs_err_set(err, EINVAL, "%s:%d: host \"%s\" must be a table", name, h->line, SHOW(h->key));
			break;
		}
		if (url_host(h->key, host, sizeof host, &plain, &path) < 0) {
			r = mlfs_err_set(err, EINVAL, "%s:%d: host \"%s\" is not an http(s) URL", name, h->line,
					 SHOW(h->key));
			break;
		}
		const struct mlfs_toml *ov = mlfs_toml_get(h, "override_path");
		if (ov && ov->kind != MLFS_TOML_BOOL) {
			r = mlfs_err_set(err, EINVAL, "%s:%d: \"override_path\" must be true or false", name, ov->line);
			break;
		}
		if ((r = caps_of(name, h, &pull, &resolve, err)) < 0)
			break;
		const struct mlfs_toml *sv = mlfs_toml_get(h, "skip_verify");
		if (sv && sv->kind != MLFS_TOML_BOOL) {
			r = mlfs_err_set(err, EINVAL, "%s:%d: \"skip_verify\" must be true or false", name, sv->line);
			break;
		}
		skip_verify = sv && sv->b;
		const struct mlfs_toml *ca = mlfs_toml_get(h, "ca");
		const char *ca_file = NULL;
		if (ca && ca->kind == MLFS_TOML_STRING)
			ca_file = ca->str;
		else if (ca && ca->kind == MLFS_TOML_ARRAY && ca->n && ca->v[0]->kind == MLFS_TOML_STRING)
			ca_file = ca->v[0]->str;
		else if (ca) {
			r = mlfs_err_set(err, EINVAL, "%s:%d: \"ca\" must be a file name or a list of them", name, ca->line);
			break;
		}
		if (!pull && !resolve)
			continue; /* push-only */
		enum mlfs_pull_from mode = !resolve ? MLFS_PULL_DIGEST_ONLY : !pull ? MLFS_PULL_TAG_ONLY : MLFS_PULL_ALL;
		char *repo = NULL;
		if ((r = host_repo(name, h->line, h->key, path, ov && ov->b, ref->path, &repo)) != 0) {
			if (r < 0) {
				r = mlfs_err_set(err, ENOMEM, "out of memory");
				break;
			}
			r = 0;
			continue;
		}
		char *headers = NULL;
		if ((r = headers_of(name, h, &headers, err)) < 0) {
			free(repo);
			break;
		}
		r = mlfs_endpoints_add(out, host, repo, plain || skip_verify, true, mode, ca_file);
		free(repo);
		if (r == 0)
			out->v[out->n - 1].headers = headers;
		else
			free(headers);
		if (r == -EINVAL)
			r = mlfs_err_set(err, EINVAL, "%s:%d: host \"%s\" is not an http(s) URL", name, h->line,
					 SHOW(h->key));
		else if (r < 0)
			r = mlfs_err_set(err, -r, "out of memory");
	}
	if (r == 0) {
		/* The upstream: `server`, else the registry itself. */
		const struct mlfs_toml *s = mlfs_toml_get(root, "server");
		char host[512];
		bool plain = false;
		const char *path = "";
		if (s && (s->kind != MLFS_TOML_STRING || url_host(s->str, host, sizeof host, &plain, &path) < 0 ||
			  (*path && strcmp(path, "/") && strcmp(path, "/v2") && strcmp(path, "/v2/"))))
			r = mlfs_err_set(err, EINVAL, "%s:%d: \"server\" must be an http(s) URL without a path", name,
					 s->line);
		else if ((r = mlfs_endpoints_add(out, s ? host : ref->domain, ref->path, plain, false, MLFS_PULL_ALL,
						 NULL)) < 0)
			r = mlfs_err_set(err, -r, r == -EINVAL ? "%s: \"server\" is not an http(s) URL of a host"
							     : "%s: out of memory", name);
		else
			r = headers_of(name, root, &out->v[out->n - 1].headers, err); /* the top-level [header] */
	}
	mlfs_toml_free(root);
	return r;
}
