/* registries.d(5): where an image's signatures are stored.
 *
 * A directory of *.yaml files, merged, as containers/image reads them
 * (docker/registries_d.go):
 *
 *   default-docker:              optional, at most one across all files
 *     lookaside: URL             (or the older "sigstore:")
 *     use-sigstore-attachments: BOOL   (or the older "use-cosign-attachments:")
 *   docker:                      optional; a scope at most once across all files
 *     SCOPE:                     "host[:port]", "host/ns", "host/ns/repo", "host/ns/repo:tag", "*.host"
 *       lookaside: URL
 *       ...
 *
 * For an image, the most specific scope that sets a lookaside wins (the
 * order of containers-policy.json's scopes: policymatch.c), then
 * default-docker, then the built-in file:///var/lib/containers/sigstore
 * (root) or ~/.local/share/containers/sigstore.  "lookaside-staging" and
 * "sigstore-staging" are where skopeo writes; mlfs only reads.
 *
 * Parsed with libyaml (a YAML reader is not something to write by hand).
 * containers/image decodes with Go's non-strict YAML, so unknown keys are
 * ignored here too; a value of the wrong kind (a list where a URL is
 * expected) is an error, as there.  Aliases are followed only the three
 * levels the format has, so a file of nested aliases costs nothing. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <yaml.h>

#include "common/cleanup.h"
#include "common/log.h"
#include "common/readfile.h"
#include "fetch/internal.h"

const char *mlfs_yaml_version(void)
{
	return yaml_get_version_string();
}

#define REGD_FILE_MAX (1u << 20)
#define REGD_FILES_MAX 1024
#define REGD_SCOPES_MAX 4096

char *mlfs_registries_d_locate(const char *option)
{
	if (option && *option)
		return strdup(option);
	const char *home = getenv("HOME");
	struct stat st;
	if (home && *home) {
		char *user = NULL;
		if (asprintf(&user, "%s/.config/containers/registries.d", home) < 0)
			return NULL;
		if (stat(user, &st) == 0)
			return user;
		free(user);
	}
	return strdup("/etc/containers/registries.d");
}

struct mlfs_registries_d *mlfs_registries_d_new(const char *dir)
{
	struct mlfs_registries_d *c = calloc(1, sizeof *c);
	if (c && !(c->dir = strdup(dir ? dir : ""))) {
		free(c);
		return NULL;
	}
	return c;
}

static void ns_clear(struct mlfs_regd_ns *ns)
{
	free(ns->scope);
	free(ns->lookaside);
	free(ns->file);
}

void mlfs_registries_d_free(struct mlfs_registries_d *c)
{
	if (!c)
		return;
	if (c->default_docker) {
		ns_clear(c->default_docker);
		free(c->default_docker);
	}
	for (size_t i = 0; i < c->n_docker; i++)
		ns_clear(&c->docker[i]);
	free(c->docker);
	free(c->dir);
	free(c);
}

/* ---- one file ----------------------------------------------------------- */

struct regd_ctx {
	yaml_document_t *doc;
	const char *name;
	struct mlfs_err *err;
};

static int bad(const struct regd_ctx *x, const yaml_node_t *n, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int bad(const struct regd_ctx *x, const yaml_node_t *n, const char *fmt, ...)
{
	char what[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(what, sizeof what, fmt, ap);
	va_end(ap);
	if (n)
		return mlfs_err_set(x->err, EINVAL, "invalid registries.d file %s: line %zu: %s", x->name,
				    (size_t)n->start_mark.line + 1, what);
	return mlfs_err_set(x->err, EINVAL, "invalid registries.d file %s: %s", x->name, what);
}

static const char *scalar(const yaml_node_t *n)
{
	return n && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

/* A plain null (~, null, nothing): what Go reads as "absent". */
static bool is_null(const yaml_node_t *n)
{
	const char *s = scalar(n);
	return s && n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
	       (!*s || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") || !strcmp(s, "NULL"));
}

static int get_string(const struct regd_ctx *x, const char *key, const yaml_node_t *v, char **out)
{
	if (is_null(v))
		return 0;
	const char *s = scalar(v);
	if (!s)
		return bad(x, v, "\"%s\" must be a string", key);
	free(*out);
	*out = *s ? strdup(s) : NULL;
	return *s && !*out ? mlfs_err_set(x->err, ENOMEM, "out of memory") : 0;
}

static int get_bool(const struct regd_ctx *x, const char *key, const yaml_node_t *v, int *out)
{
	static const char *const yes[] = { "true", "True", "TRUE", "yes", "Yes", "YES", "on", "On", "ON" };
	static const char *const no[] = { "false", "False", "FALSE", "no", "No", "NO", "off", "Off", "OFF" };
	if (is_null(v))
		return 0;
	const char *s = scalar(v);
	if (s && v->data.scalar.style == YAML_PLAIN_SCALAR_STYLE)
		for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
			if (!strcmp(s, yes[i]))
				return *out = 1, 0;
			if (!strcmp(s, no[i]))
				return *out = 0, 0;
		}
	return bad(x, v, "\"%s\" must be true or false", key);
}

/* A configuration section: lookaside, sigstore, use-*-attachments. */
static int parse_ns(const struct regd_ctx *x, const yaml_node_t *n, struct mlfs_regd_ns *ns)
{
	_cleanup_free_ char *sigstore = NULL;
	ns->use_attachments = -1;
	if (!(ns->file = strdup(x->name)))
		return mlfs_err_set(x->err, ENOMEM, "out of memory");
	if (is_null(n))
		return 0;
	if (n->type != YAML_MAPPING_NODE)
		return bad(x, n, "a configuration section must be a mapping");
	for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
		const yaml_node_t *k = yaml_document_get_node(x->doc, p->key);
		const yaml_node_t *v = yaml_document_get_node(x->doc, p->value);
		const char *key = scalar(k);
		int r = 0;
		if (!key)
			return bad(x, k, "a key must be a string");
		if (!strcmp(key, "lookaside"))
			r = get_string(x, key, v, &ns->lookaside);
		else if (!strcmp(key, "sigstore"))
			r = get_string(x, key, v, &sigstore);
		else if (!strcmp(key, "use-sigstore-attachments") || !strcmp(key, "use-cosign-attachments"))
			r = get_bool(x, key, v, &ns->use_attachments);
		else if (!strcmp(key, "lookaside-staging") || !strcmp(key, "sigstore-staging")) {
			char *ignored = NULL;
			r = get_string(x, key, v, &ignored); /* where skopeo writes: type-checked, unused */
			free(ignored);
		} else
			log_debug(MLFS_AREA_FETCH, "%s: unknown key \"%s\" ignored", x->name, key);
		if (r < 0)
			return r;
	}
	if (!ns->lookaside)
		ns->lookaside = steal_pointer(&sigstore);
	return 0;
}

/* Duplicate keys in one mapping: Go's YAML refuses them, and so here. */
static int no_duplicates(const struct regd_ctx *x, const yaml_node_t *n)
{
	for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++)
		for (yaml_node_pair_t *q = n->data.mapping.pairs.start; q < p; q++) {
			const char *a = scalar(yaml_document_get_node(x->doc, p->key));
			const char *b = scalar(yaml_document_get_node(x->doc, q->key));
			if (a && b && !strcmp(a, b))
				return bad(x, yaml_document_get_node(x->doc, p->key), "\"%s\" appears twice", a);
		}
	return 0;
}

static struct mlfs_regd_ns *find_scope(const struct mlfs_registries_d *c, const char *scope, size_t len)
{
	for (size_t i = 0; i < c->n_docker; i++)
		if (strlen(c->docker[i].scope) == len && !memcmp(c->docker[i].scope, scope, len))
			return &c->docker[i];
	return NULL;
}

static int parse_docker(const struct regd_ctx *x, struct mlfs_registries_d *c, const yaml_node_t *n)
{
	if (is_null(n))
		return 0;
	if (n->type != YAML_MAPPING_NODE)
		return bad(x, n, "\"docker\" must be a mapping of scopes");
	int r;
	size_t count = (size_t)(n->data.mapping.pairs.top - n->data.mapping.pairs.start);
	if (c->n_docker + count > REGD_SCOPES_MAX)
		return bad(x, n, "more than %u scopes", REGD_SCOPES_MAX);
	struct mlfs_regd_ns *v = realloc(c->docker, (c->n_docker + count + 1) * sizeof *v);
	if (!v)
		return mlfs_err_set(x->err, ENOMEM, "out of memory");
	c->docker = v;
	for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
		const yaml_node_t *k = yaml_document_get_node(x->doc, p->key);
		const char *scope = scalar(k);
		if (!scope)
			return bad(x, k, "a scope must be a string");
		const struct mlfs_regd_ns *had = find_scope(c, scope, strlen(scope));
		if (had)
			return bad(x, k, "the docker scope \"%s\" is also defined in %s (define each scope once)",
				   scope, had->file);
		struct mlfs_regd_ns *ns = &c->docker[c->n_docker++];
		memset(ns, 0, sizeof *ns);
		if (!(ns->scope = strdup(scope)))
			return mlfs_err_set(x->err, ENOMEM, "out of memory");
		if ((r = parse_ns(x, yaml_document_get_node(x->doc, p->value), ns)) < 0)
			return r;
	}
	return 0;
}

static int parse_root(const struct regd_ctx *x, struct mlfs_registries_d *c, const yaml_node_t *root)
{
	if (!root || is_null(root))
		return 0; /* an empty file */
	if (root->type != YAML_MAPPING_NODE)
		return bad(x, root, "the top level must be a mapping (default-docker:, docker:)");
	int r = no_duplicates(x, root);
	if (r < 0)
		return r;
	for (yaml_node_pair_t *p = root->data.mapping.pairs.start; p < root->data.mapping.pairs.top; p++) {
		const yaml_node_t *k = yaml_document_get_node(x->doc, p->key);
		const yaml_node_t *v = yaml_document_get_node(x->doc, p->value);
		const char *key = scalar(k);
		if (!key)
			return bad(x, k, "a key must be a string");
		if (!strcmp(key, "docker")) {
			if ((r = parse_docker(x, c, v)) < 0)
				return r;
		} else if (!strcmp(key, "default-docker")) {
			if (is_null(v))
				continue;
			if (c->default_docker)
				return bad(x, k, "\"default-docker\" is also defined in %s (define it once)",
					   c->default_docker->file);
			if (!(c->default_docker = calloc(1, sizeof *c->default_docker)))
				return mlfs_err_set(x->err, ENOMEM, "out of memory");
			if ((r = parse_ns(x, v, c->default_docker)) < 0)
				return r;
		} else {
			log_debug(MLFS_AREA_FETCH, "%s: unknown key \"%s\" ignored", x->name, key);
		}
	}
	return 0;
}

int mlfs_registries_d_parse(struct mlfs_registries_d *c, const void *buf, size_t len, const char *name,
			    struct mlfs_err *err)
{
	yaml_parser_t parser;
	yaml_document_t doc;
	struct regd_ctx x = { .doc = &doc, .name = name, .err = err };
	if (!yaml_parser_initialize(&parser))
		return mlfs_err_set(err, ENOMEM, "out of memory");
	yaml_parser_set_input_string(&parser, buf, len);
	if (!yaml_parser_load(&parser, &doc)) {
		int r = bad(&x, NULL, "line %zu column %zu: %s", (size_t)parser.problem_mark.line + 1,
			    (size_t)parser.problem_mark.column + 1, parser.problem ? parser.problem : "not YAML");
		yaml_parser_delete(&parser);
		return r;
	}
	int r = parse_root(&x, c, yaml_document_get_root_node(&doc));
	yaml_document_delete(&doc);
	/* A second document in the file: Go reads the first only; so here. */
	yaml_parser_delete(&parser);
	return r;
}

static int load_file(struct mlfs_registries_d *c, const char *path, struct mlfs_err *err)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return mlfs_err_set(err, errno, "cannot read %s: %s", path, strerror(errno));
	_cleanup_free_ char *buf = NULL;
	size_t n = 0;
	int r = mlfs_read_whole(fd, REGD_FILE_MAX, &buf, &n);
	if (r == -ENOMEM)
		return mlfs_err_set(err, ENOMEM, "out of memory");
	if (r == -EFBIG)
		return mlfs_err_set(err, EFBIG, "%s is larger than %u MiB", path, REGD_FILE_MAX >> 20);
	if (r < 0)
		return mlfs_err_set(err, EIO, "cannot read %s: %s", path, strerror(-r));
	return mlfs_registries_d_parse(c, buf, n, path, err);
}

static int by_name(const struct dirent **a, const struct dirent **b)
{
	return strcmp((*a)->d_name, (*b)->d_name);
}

static int yaml_file(const struct dirent *d)
{
	size_t n = strlen(d->d_name);
	return n > 5 && !strcmp(d->d_name + n - 5, ".yaml");
}

int mlfs_registries_d_load(const char *dir, struct mlfs_registries_d **out, struct mlfs_err *err)
{
	struct dirent **names = NULL;
	*out = NULL;
	struct mlfs_registries_d *c = mlfs_registries_d_new(dir);
	if (!c)
		return mlfs_err_set(err, ENOMEM, "out of memory");
	int n = scandir(dir, &names, yaml_file, by_name);
	if (n < 0 && errno != ENOENT) {
		int e = errno;
		mlfs_registries_d_free(c);
		return mlfs_err_set(err, e, "cannot read the registries.d directory %s: %s", dir, strerror(e));
	}
	int r = n > REGD_FILES_MAX ? mlfs_err_set(err, E2BIG, "%s holds more than %d .yaml files", dir,
						  REGD_FILES_MAX) : 0;
	for (int i = 0; i < n; i++) {
		char *path = NULL;
		if (r == 0 && asprintf(&path, "%s/%s", dir, names[i]->d_name) < 0)
			r = mlfs_err_set(err, ENOMEM, "out of memory"), path = NULL;
		if (r == 0)
			r = load_file(c, path, err);
		free(path);
		free(names[i]);
	}
	free(names);
	if (r < 0) {
		mlfs_registries_d_free(c);
		return r;
	}
	*out = c;
	return 0;
}

/* ---- lookups ------------------------------------------------------------ */

struct regd_find {
	const struct mlfs_registries_d *c;
	const struct mlfs_regd_ns *ns;
	bool attachments;                /* looking for use-*-attachments, not a lookaside */
};

static int regd_match(void *priv, const char *scope, size_t len)
{
	struct regd_find *f = priv;
	const struct mlfs_regd_ns *ns = find_scope(f->c, scope, len);
	if (ns && (f->attachments ? ns->use_attachments >= 0 : ns->lookaside != NULL)) {
		f->ns = ns;
		return 1;
	}
	return 0;
}

char *mlfs_registries_d_lookaside(const struct mlfs_registries_d *c, const char *identity, const char *repo_path,
				  const char **from)
{
	struct regd_find f = { .c = c };
	_cleanup_free_ char *builtin = NULL;
	const char *base;
	if (mlfs_policy_scopes_walk(identity, regd_match, &f)) {
		base = f.ns->lookaside;
		*from = f.ns->scope;
	} else if (c->default_docker && c->default_docker->lookaside) {
		base = c->default_docker->lookaside;
		*from = "default-docker";
	} else {
		const char *home = getenv("HOME");
		if (geteuid() != 0 && home && *home) {
			if (asprintf(&builtin, "file://%s/.local/share/containers/sigstore", home) < 0)
				return NULL;
			base = builtin;
		} else {
			base = "file:///var/lib/containers/sigstore";
		}
		*from = "the built-in default";
	}
	/* "file:///x/" + "/repo" would give "//repo": containers/image appends
	 * to the URL's path the same way, and the same files are meant. */
	char *url = NULL;
	if (asprintf(&url, "%s/%s", base, repo_path) < 0)
		return NULL;
	return url;
}

bool mlfs_registries_d_attachments(const struct mlfs_registries_d *c, const char *identity)
{
	struct regd_find f = { .c = c, .attachments = true };
	if (mlfs_policy_scopes_walk(identity, regd_match, &f))
		return f.ns->use_attachments > 0;
	return c->default_docker && c->default_docker->use_attachments > 0;
}
