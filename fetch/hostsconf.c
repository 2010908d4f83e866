/* containerd's certs.d/HOST/hosts.toml (containerd's
 * docs/hosts.md): `server` is the upstream (default: the host itself,
 * registry-1.docker.io for docker.io) and each [host."URL"] a mirror,
 * tried in the file's order before it.  A host's `capabilities` say what
 * it may be asked: "resolve" a tag, "pull" a blob or a manifest by
 * digest (a host with "pull" alone is a digest-only mirror).
 * `skip_verify` and an http:// URL make it insecure; `ca` (a file, or a
 * list of files: the first is used) adds a CA.  A URL with a path
 * (containerd's override_path) is not supported: that host is skipped
 * with a warning.  Other keys (header, client, override_path) are ignored. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "fetch/internal.h"

/* Text from the file, fit for a one-line message. */
#define SHOW(k) mlfs_printable((k), (char[256]){ 0 }, 256)

/* "https://host:port" -> host:port, and whether it said http. */
static int url_host(const char *url, char *host, size_t len, bool *plain, bool *has_path)
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
	const char *rest = p + n;
	*has_path = *rest && strcmp(rest, "/") && strcmp(rest, "/v2") && strcmp(rest, "/v2/");
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
		bool plain, has_path, pull, resolve, skip_verify = false;
		if (h->kind != MLFS_TOML_TABLE) {
			r = mlfs_err_set(err, EINVAL, "%s:%d: host \"%s\" must be a table", name, h->line, SHOW(h->key));
			break;
		}
		if (url_host(h->key, host, sizeof host, &plain, &has_path) < 0) {
			r = mlfs_err_set(err, EINVAL, "%s:%d: host \"%s\" is not an http(s) URL", name, h->line,
					 SHOW(h->key));
			break;
		}
		if (has_path) {
			log_warn(MLFS_AREA_FETCH, "%s:%d: host \"%s\" has a path (override_path): not supported, skipped",
				 name, h->line, SHOW(h->key));
			continue;
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
		r = mlfs_endpoints_add(out, host, ref->path, plain || skip_verify, true, mode, ca_file);
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
		bool plain = false, has_path = false;
		if (s && (s->kind != MLFS_TOML_STRING || url_host(s->str, host, sizeof host, &plain, &has_path) < 0 ||
			  has_path))
			r = mlfs_err_set(err, EINVAL, "%s:%d: \"server\" must be an http(s) URL without a path", name,
					 s->line);
		else if ((r = mlfs_endpoints_add(out, s ? host : ref->domain, ref->path, plain, false, MLFS_PULL_ALL,
						 NULL)) < 0)
			r = mlfs_err_set(err, -r, r == -EINVAL ? "%s: \"server\" is not an http(s) URL of a host"
							     : "%s: out of memory", name);
	}
	mlfs_toml_free(root);
	return r;
}
