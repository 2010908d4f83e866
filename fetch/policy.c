/* containers-policy.json(5): which file applies, and its JSON into structs.
 *
 * The file podman, skopeo, buildah and CRI-O read, parsed as
 * containers/image parses it (signature/policy_config.go):
 *
 *   { "default": [REQ, ...],                                  required
 *     "transports": { TRANSPORT: { SCOPE: [REQ, ...] } } }     optional
 *
 * (REQ: policyreq.c.)  A security policy with a typo must not quietly
 * mean something else, so containers/image refuses unknown and duplicate
 * keys, wrong types and empty requirement lists, and so does this parser.
 * Scope names of the docker transport are not validated (containers/image
 * does not either: a scope that cannot match is never used); other
 * transports are parsed for their requirements, then ignored.
 *
 * Which file: the one the command line names, then $MLFS_POLICY, then
 * containers/image's own search (the user's ~/.config/containers/, then
 * /etc/containers/).  None at all means no policy: every image is
 * accepted, as before policies existed (containers/image would refuse to
 * run; a mount helper that stopped working on hosts without the file
 * would be worse). */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/cleanup.h"
#include "common/readfile.h"
#include "fetch/internal.h"

#define POLICY_MAX (4u << 20) /* keys inline as keyData make a policy a few KiB each */

int mlfs_policy_locate_in(const char *option, const char *env, const char *home, const char *system_path,
			  char **path)
{
	struct stat st;
	*path = NULL;
	if (option && *option)
		return (*path = strdup(option)) ? 0 : -ENOMEM;
	if (env && *env)
		return (*path = strdup(env)) ? 0 : -ENOMEM;
	/* containers/image's order: the user's file, then the system's. */
	if (home && *home) {
		if (asprintf(path, "%s/.config/containers/policy.json", home) < 0)
			return *path = NULL, -ENOMEM;
		if (stat(*path, &st) == 0)
			return 0;
		free(*path);
		*path = NULL;
	}
	if (system_path && stat(system_path, &st) == 0)
		return (*path = strdup(system_path)) ? 0 : -ENOMEM;
	return 0;
}

int mlfs_policy_locate(const char *option, char **path)
{
	return mlfs_policy_locate_in(option, getenv("MLFS_POLICY"), getenv("HOME"), "/etc/containers/policy.json",
				     path);
}

/* ---- freeing ------------------------------------------------------------ */

static void reqs_clear(struct mlfs_policy_reqs *rs)
{
	for (size_t i = 0; rs->v && i < rs->n; i++)
		mlfs_policy_req_clear(&rs->v[i]);
	free(rs->v);
	rs->v = NULL;
	rs->n = 0;
}

void mlfs_policy_free(struct mlfs_policy *p)
{
	if (!p)
		return;
	reqs_clear(&p->def);
	for (size_t t = 0; t < p->n_transports; t++) {
		struct mlfs_policy_transport *tr = &p->transports[t];
		for (size_t s = 0; s < tr->n_scopes; s++) {
			free(tr->scopes[s].name);
			reqs_clear(&tr->scopes[s].reqs);
		}
		free(tr->scopes);
		free(tr->name);
	}
	free(p->transports);
	free(p->path);
	free(p);
}

/* ---- the file ----------------------------------------------------------- */

static int parse_reqs(const struct mlfs_policy_ctx *c, const char *where, json_t *j, struct mlfs_policy_reqs *rs)
{
	if (!json_is_array(j))
		return mlfs_policy_bad(c, where, "must be a list of requirements, not %s", mlfs_json_type_name(j));
	if (!json_array_size(j))
		return mlfs_policy_bad(c, where, "must list at least one requirement");
	if (!(rs->v = calloc(json_array_size(j), sizeof *rs->v)))
		return mlfs_policy_oom(c);
	size_t i;
	json_t *e;
	json_array_foreach(j, i, e) {
		char sub[600];
		snprintf(sub, sizeof sub, "%s[%zu]", where, i);
		rs->n = i + 1; /* what reqs_clear frees */
		int r = mlfs_policy_req_parse(c, sub, e, &rs->v[i]);
		if (r < 0)
			return r;
	}
	return 0;
}

static int parse_transport(const struct mlfs_policy_ctx *c, const char *name, json_t *j,
			   struct mlfs_policy_transport *t)
{
	char where[300], sub[600];
	snprintf(where, sizeof where, "transports.%s", name);
	if (!(t->name = strdup(name)))
		return mlfs_policy_oom(c);
	int r = mlfs_policy_want_object(c, where, j);
	if (r < 0)
		return r;
	if (json_object_size(j) && !(t->scopes = calloc(json_object_size(j), sizeof *t->scopes)))
		return mlfs_policy_oom(c);
	const char *scope;
	json_t *v;
	json_object_foreach(j, scope, v) {
		struct mlfs_policy_scope *s = &t->scopes[t->n_scopes++];
		if (!(s->name = strdup(scope)))
			return mlfs_policy_oom(c);
		snprintf(sub, sizeof sub, "%s \"%s\"", where, scope);
		if ((r = parse_reqs(c, sub, v, &s->reqs)) < 0)
			return r;
	}
	return 0;
}

static int parse_root(const struct mlfs_policy_ctx *c, json_t *root, struct mlfs_policy *p)
{
	static const char *const keys[] = { "default", "transports", NULL };
	int r = mlfs_policy_want_object(c, "the top level", root);
	if (r < 0 || (r = mlfs_policy_only_keys(c, "the top level", root, keys)) < 0)
		return r;
	json_t *def = json_object_get(root, "default"), *transports = json_object_get(root, "transports");
	if (!def)
		return mlfs_policy_bad(c, "the top level", "\"default\" is missing (say [{\"type\": \"reject\"}] "
				       "or [{\"type\": \"insecureAcceptAnything\"}])");
	if ((r = parse_reqs(c, "default", def, &p->def)) < 0 || !transports)
		return r;
	if ((r = mlfs_policy_want_object(c, "transports", transports)) < 0)
		return r;
	if (json_object_size(transports) &&
	    !(p->transports = calloc(json_object_size(transports), sizeof *p->transports)))
		return mlfs_policy_oom(c);
	const char *name;
	json_t *v;
	json_object_foreach(transports, name, v)
		if ((r = parse_transport(c, name, v, &p->transports[p->n_transports++])) < 0)
			return r;
	return 0;
}

int mlfs_policy_parse(const void *buf, size_t len, const char *name, struct mlfs_policy **out,
		      struct mlfs_err *err)
{
	struct mlfs_policy_ctx c = { .name = name ? name : "(policy)", .err = err };
	*out = NULL;
	json_error_t je;
	_cleanup_(json_decrefp) json_t *root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &je);
	if (!root)
		return mlfs_err_set(err, EINVAL, "invalid policy %s: line %d column %d: %s", c.name, je.line,
				    je.column, je.text);
	struct mlfs_policy *p = calloc(1, sizeof *p);
	if (!p || !(p->path = strdup(c.name))) {
		free(p);
		return mlfs_policy_oom(&c);
	}
	int r = parse_root(&c, root, p);
	if (r < 0) {
		mlfs_policy_free(p);
		return r;
	}
	*out = p;
	return 0;
}

int mlfs_policy_load(const char *path, struct mlfs_policy **out, struct mlfs_err *err)
{
	*out = NULL;
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return mlfs_err_set(err, errno, "cannot read the policy %s: %s (give another with --policy or "
				    "-o policy=, or skip it with --insecure-policy)", path, strerror(errno));
	_cleanup_free_ char *buf = NULL;
	size_t n = 0;
	int r = mlfs_read_whole(fd, POLICY_MAX, &buf, &n);
	if (r == -ENOMEM)
		return mlfs_err_set(err, ENOMEM, "reading the policy %s: out of memory", path);
	if (r == -EFBIG)
		return mlfs_err_set(err, EFBIG, "the policy %s is larger than %u MiB", path, POLICY_MAX >> 20);
	if (r < 0)
		return mlfs_err_set(err, EIO, "cannot read the policy %s: %s", path, strerror(-r));
	return mlfs_policy_parse(buf, n, path, out, err);
}
