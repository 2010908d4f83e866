/* Which endpoints serve a reference: its mirrors in order, then the
 * upstream (its registry, or where `location` rewrites it to).
 *
 * Three tools keep mirror settings in three places; the first that
 * configures the reference's registry is used, the others are not merged
 * in (a mirror list is an ordered decision, and mixing two tools' lists
 * would make an order nobody wrote):
 *   1. containers-registries.conf(5): podman, skopeo, buildah, CRI-O;
 *   2. containerd's certs.d/HOST/hosts.toml;
 *   3. Docker's daemon.json "registry-mirrors" (docker.io only).
 * registries.conf first because it can also block a registry or rewrite
 * its location, which the others cannot express.  This file only builds
 * the list; registry.c walks it per request. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/cleanup.h"
#include "common/log.h"
#include "common/readfile.h"
#include "fetch/internal.h"

#define MAX_CONFIG_BYTES (1u << 20)
/* Every request may walk the whole list: a bound on what one costs. */
#define MAX_ENDPOINTS 16

void mlfs_endpoints_clear(struct mlfs_endpoints *e)
{
	for (size_t i = 0; i < e->n; i++) {
		free(e->v[i].domain);
		free(e->v[i].host);
		free(e->v[i].repo);
		free(e->v[i].ca_file);
		free(e->v[i].headers);
	}
	free(e->v);
	free(e->source);
	memset(e, 0, sizeof *e);
}

/* What goes into a URL: a host[:port] (or [v6]:port) and a repository
 * path, nothing that could become userinfo, a query or another path. */
static bool valid_domain(const char *s)
{
	return *s && strlen(s) < 256 && s[strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-:[]")] == '\0';
}

static bool valid_repo(const char *s)
{
	return *s && *s != '/' && strlen(s) < 1024 && !strstr(s, "//") && !strstr(s, "..") &&
	       s[strlen(s) - 1] != '/' && s[strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789._-/")] == '\0';
}

int mlfs_endpoints_add(struct mlfs_endpoints *e, const char *domain, const char *repo, bool insecure, bool mirror,
		       enum mlfs_pull_from pull, const char *ca_file)
{
	if (!valid_domain(domain) || !valid_repo(repo))
		return -EINVAL;
	struct mlfs_endpoint *nv = realloc(e->v, (e->n + 1) * sizeof *nv);
	if (!nv)
		return -ENOMEM;
	e->v = nv;
	bool hub = !strcmp(domain, "docker.io") || !strcmp(domain, "index.docker.io");
	struct mlfs_endpoint ep = {
		.domain = strdup(hub ? "docker.io" : domain),
		.host = strdup(hub ? "registry-1.docker.io" : domain),
		.repo = strdup(repo),
		.insecure = insecure,
		.mirror = mirror,
		.pull = pull,
		.ca_file = ca_file ? strdup(ca_file) : NULL,
	};
	if (!ep.domain || !ep.host || !ep.repo || (ca_file && !ep.ca_file)) {
		free(ep.domain);
		free(ep.host);
		free(ep.repo);
		free(ep.ca_file);
		return -ENOMEM;
	}
	e->v[e->n++] = ep;
	return 0;
}

/* A whole small file; -ENOENT quietly when it is not there. */
static int read_file(const char *path, char **buf, size_t *len, struct mlfs_err *err)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT || errno == ENOTDIR ? -ENOENT
							   : mlfs_err_set(err, errno, "cannot read %s: %s", path, strerror(errno));
	int r = mlfs_read_whole(fd, MAX_CONFIG_BYTES, buf, len);
	if (r == -ENOMEM)
		return mlfs_err_set(err, ENOMEM, "out of memory");
	if (r < 0)
		return mlfs_err_set(err, EFBIG, "cannot read %s: unreadable or larger than %u bytes", path,
				    MAX_CONFIG_BYTES);
	return 0;
}

static int load_regconf_file(const char *path, bool must_exist, bool drop_in, struct mlfs_regconf *conf, bool *found,
			     struct mlfs_err *err)
{
	char *buf = NULL;
	size_t len = 0;
	int r = read_file(path, &buf, &len, err);
	if (r == -ENOENT)
		return must_exist ? mlfs_err_set(err, ENOENT, "registries configuration %s does not exist", path) : 0;
	if (r < 0)
		return r;
	log_debug(MLFS_AREA_FETCH, "reading %s", path);
	r = mlfs_regconf_parse(buf, len, path, drop_in, conf, err);
	free(buf);
	*found = true;
	return r;
}

static int by_name(const struct dirent **a, const struct dirent **b)
{
	return strcmp((*a)->d_name, (*b)->d_name);
}

static int conf_file(const struct dirent *de)
{
	size_t n = strlen(de->d_name);
	return de->d_name[0] != '.' && n > 5 && !strcmp(de->d_name + n - 5, ".conf");
}

/* registries.conf.d/: every *.conf, in name order, each overriding the ones before. */
static int load_dropins(const char *dir, struct mlfs_regconf *conf, bool *found, struct mlfs_err *err)
{
	struct dirent **names = NULL;
	int n = scandir(dir, &names, conf_file, by_name);
	if (n < 0)
		return 0;
	int r = 0;
	for (int i = 0; i < n; i++) {
		char path[4096];
		snprintf(path, sizeof path, "%s/%s", dir, names[i]->d_name);
		if (r == 0)
			r = load_regconf_file(path, false, true, conf, found, err);
		free(names[i]);
	}
	free(names);
	return r;
}

/* containers/image's choice of files: --registries-conf FILE, else the
 * user's file if it exists (then only the user's drop-ins), else the
 * system's; with FILE or the system file, both drop-in directories. */
static int load_registries_conf(const char *root, const char *home, const char *option, struct mlfs_regconf *conf,
				bool *found, struct mlfs_err *err)
{
	char sys[4096], sys_d[4096], user[4096] = "", user_d[4096] = "";
	snprintf(sys, sizeof sys, "%s/etc/containers/registries.conf", root);
	snprintf(sys_d, sizeof sys_d, "%s/etc/containers/registries.conf.d", root);
	if (home && *home) {
		snprintf(user, sizeof user, "%s/.config/containers/registries.conf", home);
		snprintf(user_d, sizeof user_d, "%s/.config/containers/registries.conf.d", home);
	}
	struct stat st;
	int r;
	if (option) {
		r = load_regconf_file(option, true, false, conf, found, err);
	} else if (user[0] && stat(user, &st) == 0) {
		r = load_regconf_file(user, false, false, conf, found, err);
		if (r == 0)
			r = load_dropins(user_d, conf, found, err);
		return r;
	} else {
		r = load_regconf_file(sys, false, false, conf, found, err);
	}
	if (r == 0)
		r = load_dropins(sys_d, conf, found, err);
	if (r == 0 && user_d[0])
		r = load_dropins(user_d, conf, found, err);
	return r;
}

static void config_places(const struct mlfs_mirror_opts *opts, const char **root, const char **home)
{
	*root = opts && opts->root ? opts->root : getenv("MLFS_CONFIG_ROOT");
	*home = opts && opts->home ? opts->home : getenv("HOME");
	if (!*root)
		*root = "";
}

int mlfs_regconf_load(const struct mlfs_mirror_opts *opts, struct mlfs_regconf *conf, bool *found,
		      struct mlfs_err *err)
{
	const char *root, *home;
	config_places(opts, &root, &home);
	*found = false;
	return load_registries_conf(root, home, opts ? opts->registries_conf : NULL, conf, found, err);
}

static int from_registries_conf(const struct mlfs_mirror_opts *opts, const char *name, struct mlfs_endpoints *out,
				struct mlfs_err *err)
{
	struct mlfs_regconf conf = { 0 };
	bool found = false;
	int r = mlfs_regconf_load(opts, &conf, &found, err);
	const struct mlfs_regconf_registry *m = r == 0 ? mlfs_regconf_match(&conf, name) : NULL;
	if (m && m->blocked)
		r = mlfs_err_set(err, EACCES, "%s: the registry is blocked by %s (%s \"%s\"%s)", name, m->source,
				 m->v1 ? "[registries.block] lists" : "[[registry]] prefix",
				 mlfs_printable(m->prefix, (char[256]){ 0 }, 256), m->v1 ? "" : ", blocked = true");
	else if (m && (r = mlfs_regconf_endpoints(m, name, out, err)) == 0 && !(out->source = strdup(m->source)))
		r = mlfs_err_set(err, ENOMEM, "out of memory");
	mlfs_regconf_clear(&conf);
	return r;
}

static int from_file(const char *path, const struct mlfs_ref *ref, struct mlfs_endpoints *out,
		     int (*parse)(const void *, size_t, const char *, const struct mlfs_ref *, struct mlfs_endpoints *,
				  struct mlfs_err *),
		     struct mlfs_err *err)
{
	char *buf = NULL;
	size_t len = 0;
	int r = read_file(path, &buf, &len, err);
	if (r == -ENOENT)
		return 0;
	if (r < 0)
		return r;
	log_debug(MLFS_AREA_FETCH, "reading %s", path);
	r = parse(buf, len, path, ref, out, err);
	free(buf);
	if (r == 0 && out->n && !(out->source = strdup(path)))
		r = mlfs_err_set(err, ENOMEM, "out of memory");
	return r;
}

int mlfs_endpoints_for(const struct mlfs_ref *ref, const struct mlfs_mirror_opts *opts, struct mlfs_endpoints *out,
		       struct mlfs_err *err)
{
	static const struct mlfs_mirror_opts defaults = { 0 };
	if (!opts)
		opts = &defaults;
	memset(out, 0, sizeof *out);
	const char *root, *home;
	config_places(opts, &root, &home);
	(void)home;
	_cleanup_free_ char *name = NULL;
	if (asprintf(&name, "%s/%s", ref->domain, ref->path) < 0)
		return mlfs_err_set(err, ENOMEM, "out of memory");

	int r = from_registries_conf(opts, name, out, err);
	if (r == 0 && !out->n) {
		char path[4096];
		snprintf(path, sizeof path, "%s/etc/containerd/certs.d/%s/hosts.toml", root, ref->domain);
		r = from_file(path, ref, out, mlfs_hostsconf_parse, err);
	}
	if (r == 0 && !out->n && !strcmp(ref->domain, "docker.io")) {
		char path[4096];
		snprintf(path, sizeof path, "%s/etc/docker/daemon.json", root);
		r = from_file(path, ref, out, mlfs_dockerconf_parse, err);
	}
	if (r == 0 && !out->n && (r = mlfs_endpoints_add(out, ref->domain, ref->path, false, false, MLFS_PULL_ALL,
							  NULL)) < 0)
		mlfs_err_set(err, -r, "out of memory");
	if (r == 0 && out->n > MAX_ENDPOINTS)
		r = mlfs_err_set(err, E2BIG, "%s: %s lists %zu mirrors for it: at most %d are supported", name,
				 out->source, out->n - 1, MAX_ENDPOINTS - 1);
	if (r < 0) {
		mlfs_endpoints_clear(out);
		return r;
	}
	for (size_t i = 0; i < out->n; i++)
		log_debug(MLFS_AREA_FETCH, "%s: endpoint %zu: %s %s/%s%s%s", name, i + 1,
			  out->v[i].mirror ? "mirror" : "upstream", out->v[i].host, out->v[i].repo,
			  out->v[i].insecure ? " (insecure)" : "",
			  out->v[i].pull == MLFS_PULL_DIGEST_ONLY ? " (digests only)"
			  : out->v[i].pull == MLFS_PULL_TAG_ONLY  ? " (tags only)" : "");
	if (out->source)
		log_debug(MLFS_AREA_FETCH, "%s: endpoints from %s", name, out->source);
	return 0;
}
