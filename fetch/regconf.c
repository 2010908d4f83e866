/* containers-registries.conf(5), version 2, as containers/image reads it
 * (pkg/sysregistriesv2): the [[registry]] tables and their mirrors.
 *
 * A [[registry]] applies to the references its `prefix` matches: the
 * prefix itself, or the prefix followed by '/', ':' or '@' (so
 * "example.com/ns" matches "example.com/ns/app" but not
 * "example.com/nsx"); "*.example.com" matches any host ending in
 * ".example.com".  The longest match wins.  `location` replaces the
 * matched part (a rewrite); each [[registry.mirror]]'s `location` does the
 * same for that mirror.  Unknown keys are ignored, as containers/image
 * does; wrong types and the combinations it refuses are errors.  The
 * short-name settings of the same files are shortconf.c's.
 *
 * Version 1 ([registries.search], [registries.insecure],
 * [registries.block], each a `registries` list) is still read, converted
 * as containers/image's ConvertToV2 does: the search list becomes
 * unqualified-search-registries, each insecure or blocked host a
 * [[registry]] of that prefix and location.  A file may not mix the two
 * versions, and a drop-in must be version 2. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "fetch/internal.h"

/* Text from the file, fit for a one-line message. */
#define SHOW(k) mlfs_printable((k), (char[256]){ 0 }, 256)

struct ctx {
	const char *name;
	struct mlfs_err *err;
};

static int bad_at(const struct ctx *c, int line, const char *what, const char *detail)
{
	return mlfs_err_set(c->err, EINVAL, "%s:%d: %s%s", c->name, line, what, detail);
}

/* A location (containers/image's parseLocation): a string, trailing '/'
 * dropped, the schemes containers/image refuses refused too. */
static int parse_location(const struct ctx *c, const struct mlfs_toml *v, const char *key, char **out)
{
	if (v->kind != MLFS_TOML_STRING)
		return mlfs_err_set(c->err, EINVAL, "%s:%d: \"%s\" must be a string", c->name, v->line, key);
	if (!strncmp(v->str, "http://", 7) || !strncmp(v->str, "https://", 8))
		return mlfs_err_set(c->err, EINVAL, "%s:%d: invalid %s \"%s\": URI schemes are not supported", c->name,
				    v->line, key, SHOW(v->str));
	size_t n = strlen(v->str);
	while (n && v->str[n - 1] == '/')
		n--;
	if (!(*out = strndup(v->str, n)))
		return mlfs_err_set(c->err, ENOMEM, "out of memory");
	return 0;
}

/* An optional location member. */
static int get_location(const struct ctx *c, const struct mlfs_toml *t, const char *key, char **out)
{
	*out = NULL;
	const struct mlfs_toml *v = mlfs_toml_get(t, key);
	return v ? parse_location(c, v, key, out) : 0;
}

static int get_bool(const struct ctx *c, const struct mlfs_toml *t, const char *key, bool *out)
{
	const struct mlfs_toml *v = mlfs_toml_get(t, key);
	if (!v)
		return 0;
	if (v->kind != MLFS_TOML_BOOL)
		return mlfs_err_set(c->err, EINVAL, "%s:%d: \"%s\" must be true or false", c->name, v->line, key);
	*out = v->b;
	return 0;
}

static void registry_clear(struct mlfs_regconf_registry *r)
{
	for (size_t i = 0; i < r->n_mirrors; i++) {
		free(r->mirrors[i].location);
		free(r->mirrors[i].ca_file);
	}
	free(r->mirrors);
	free(r->prefix);
	free(r->location);
	free(r->source);
	memset(r, 0, sizeof *r);
}

void mlfs_regconf_clear(struct mlfs_regconf *c)
{
	for (size_t i = 0; i < c->n; i++)
		registry_clear(&c->v[i]);
	free(c->v);
	c->v = NULL;
	c->n = 0;
	mlfs_shortconf_clear(&c->shorts);
}

static int parse_mirror(const struct ctx *c, const struct mlfs_toml *t, bool digest_only,
			struct mlfs_regconf_mirror *m)
{
	int r = get_location(c, t, "location", &m->location);
	if (r == 0)
		r = get_bool(c, t, "insecure", &m->insecure);
	if (r < 0)
		return r;
	if (!m->location || !*m->location)
		return bad_at(c, t->line, "invalid condition: mirror location is unset", "");
	const struct mlfs_toml *p = mlfs_toml_get(t, "pull-from-mirror");
	if (!p)
		return 0;
	if (p->kind != MLFS_TOML_STRING)
		return bad_at(c, p->line, "\"pull-from-mirror\" must be a string", "");
	if (digest_only && *p->str)
		return bad_at(c, p->line, "cannot set mirror-by-digest-only for the registry and pull-from-mirror for "
			      "a mirror at the same time", "");
	if (!*p->str || !strcmp(p->str, "all"))
		m->pull = MLFS_PULL_ALL;
	else if (!strcmp(p->str, "digest-only"))
		m->pull = MLFS_PULL_DIGEST_ONLY;
	else if (!strcmp(p->str, "tag-only"))
		m->pull = MLFS_PULL_TAG_ONLY;
	else
		return mlfs_err_set(c->err, EINVAL, "%s:%d: unsupported pull-from-mirror value \"%s\" (all, digest-only "
				    "or tag-only)", c->name, p->line, SHOW(p->str));
	return 0;
}

static int parse_registry(const struct ctx *c, const struct mlfs_toml *t, struct mlfs_regconf_registry *reg)
{
	int r = get_location(c, t, "location", &reg->location);
	if (r == 0)
		r = get_location(c, t, "prefix", &reg->prefix);
	if (r == 0)
		r = get_bool(c, t, "insecure", &reg->insecure);
	if (r == 0)
		r = get_bool(c, t, "blocked", &reg->blocked);
	if (r == 0)
		r = get_bool(c, t, "mirror-by-digest-only", &reg->digest_only);
	if (r < 0)
		return r;
	if (reg->location && !*reg->location) {
		free(reg->location);
		reg->location = NULL;
	}
	if (!reg->prefix || !*reg->prefix) {
		free(reg->prefix);
		reg->prefix = NULL;
		if (!reg->location)
			return bad_at(c, t->line, "invalid condition: both location and prefix are unset", "");
		if (!(reg->prefix = strdup(reg->location)))
			return mlfs_err_set(c->err, ENOMEM, "out of memory");
	} else if (strncmp(reg->prefix, "*.", 2) && !reg->location) {
		return bad_at(c, t->line, "invalid condition: location is unset and prefix is not in the format: "
			      "*.example.com", "");
	}
	if (mlfs_toml_get(t, "pull-from-mirror"))
		return bad_at(c, mlfs_toml_get(t, "pull-from-mirror")->line,
			      "pull-from-mirror must not be set for a non-mirror registry", "");
	const struct mlfs_toml *ms = mlfs_toml_get(t, "mirror");
	if (!ms)
		return 0;
	if (ms->kind != MLFS_TOML_ARRAY)
		return bad_at(c, ms->line, "\"mirror\" must be an array of tables ([[registry.mirror]])", "");
	if (!(reg->mirrors = calloc(ms->n ? ms->n : 1, sizeof *reg->mirrors)))
		return mlfs_err_set(c->err, ENOMEM, "out of memory");
	for (size_t i = 0; i < ms->n; i++) {
		if (ms->v[i]->kind != MLFS_TOML_TABLE)
			return bad_at(c, ms->v[i]->line, "a mirror must be a table", "");
		reg->n_mirrors = i + 1;
		if ((r = parse_mirror(c, ms->v[i], reg->digest_only, &reg->mirrors[i])) < 0)
			return r;
	}
	return 0;
}

/* Adds reg to the config, replacing an entry with the same prefix (a later
 * file overrides an earlier one; in one file, the first one counts, as
 * containers/image keeps it). */
static int merge(struct mlfs_regconf *conf, struct mlfs_regconf_registry *reg, bool same_file_first)
{
	for (size_t i = 0; i < conf->n; i++) {
		if (strcmp(conf->v[i].prefix, reg->prefix))
			continue;
		if (same_file_first && !strcmp(conf->v[i].source, reg->source)) {
			registry_clear(reg);
			return 0;
		}
		registry_clear(&conf->v[i]);
		conf->v[i] = *reg;
		memset(reg, 0, sizeof *reg);
		return 0;
	}
	struct mlfs_regconf_registry *nv = realloc(conf->v, (conf->n + 1) * sizeof *nv);
	if (!nv)
		return -ENOMEM;
	conf->v = nv;
	conf->v[conf->n++] = *reg;
	memset(reg, 0, sizeof *reg);
	return 0;
}

/* ---- version 1 ---------------------------------------------------------- */

/* [registries.KEY] registries = [...]: the array, NULL when absent; *r < 0 when malformed. */
static const struct mlfs_toml *v1_list(const struct ctx *c, const struct mlfs_toml *v1, const char *key, int *r)
{
	const struct mlfs_toml *t = mlfs_toml_get(v1, key), *a = t ? mlfs_toml_get(t, "registries") : NULL;
	if (t && t->kind != MLFS_TOML_TABLE)
		*r = bad_at(c, t->line, "[registries] must hold tables: ", key);
	else if (a && a->kind != MLFS_TOML_ARRAY)
		*r = bad_at(c, a->line, "\"registries\" must be an array of strings in [registries.", key);
	for (size_t i = 0; *r == 0 && a && i < a->n; i++)
		if (a->v[i]->kind != MLFS_TOML_STRING)
			*r = bad_at(c, a->v[i]->line, "\"registries\" must be an array of strings in [registries.", key);
	return *r == 0 && a && a->n ? a : NULL;
}

/* One host of a v1 list as its [[registry]] (made once: blocked, then insecure). */
static int v1_flag(const struct ctx *c, struct mlfs_regconf *mine, const struct mlfs_toml *host, bool blocked)
{
	struct mlfs_regconf_registry reg = { 0 };
	int r = parse_location(c, host, "location", &reg.location);
	if (r < 0)
		return r;
	for (size_t i = 0; i < mine->n; i++)
		if (!strcmp(mine->v[i].prefix, reg.location)) {
			*(blocked ? &mine->v[i].blocked : &mine->v[i].insecure) = true;
			free(reg.location);
			return 0;
		}
	if (!(reg.prefix = strdup(reg.location)) || !(reg.source = strdup(c->name)))
		r = mlfs_err_set(c->err, ENOMEM, "out of memory");
	*(blocked ? &reg.blocked : &reg.insecure) = true;
	reg.v1 = true;
	if (r == 0 && merge(mine, &reg, true) < 0)
		r = mlfs_err_set(c->err, ENOMEM, "out of memory");
	registry_clear(&reg);
	return r;
}

/* 1 when root is a version-1 file (its hosts converted into mine, its
 * search list in *search), 0 when not. */
static int parse_v1(const struct ctx *c, const struct mlfs_toml *root, bool drop_in, struct mlfs_regconf *mine,
		    const struct mlfs_toml **search_out)
{
	*search_out = NULL;
	const struct mlfs_toml *v1 = mlfs_toml_get(root, "registries");
	if (!v1)
		return 0;
	if (v1->kind != MLFS_TOML_TABLE)
		return bad_at(c, v1->line, "\"registries\" must be version 1's tables ([registries.search] ...)", "");
	int r = 0;
	const struct mlfs_toml *search = v1_list(c, v1, "search", &r), *insecure = v1_list(c, v1, "insecure", &r),
			       *block = v1_list(c, v1, "block", &r);
	if (r < 0 || (!search && !insecure && !block))
		return r; /* empty lists: nothing of version 1 is set */
	if (drop_in)
		return bad_at(c, v1->line, "registry must be in v2 format but is in v1 (a registries.conf.d drop-in "
			      "takes [[registry]] tables and unqualified-search-registries only)", "");
	static const char *const v2_keys[] = { "registry", "unqualified-search-registries", "short-name-mode",
					       "aliases", "credential-helpers" };
	for (size_t i = 0; i < sizeof v2_keys / sizeof v2_keys[0]; i++) {
		const struct mlfs_toml *v = mlfs_toml_get(root, v2_keys[i]);
		if (v && (v->kind != MLFS_TOML_ARRAY && v->kind != MLFS_TOML_TABLE ? true : v->n > 0))
			return bad_at(c, v->line, "mixing sysregistry v1/v2 is not supported: this file has [registries.*] "
				      "tables and ", v2_keys[i]);
	}
	for (size_t i = 0; block && r == 0 && i < block->n; i++)
		r = v1_flag(c, mine, block->v[i], true);
	for (size_t i = 0; insecure && r == 0 && i < insecure->n; i++)
		r = v1_flag(c, mine, insecure->v[i], false);
	*search_out = search;
	return r < 0 ? r : 1;
}

int mlfs_regconf_parse(const void *buf, size_t len, const char *name, bool drop_in, struct mlfs_regconf *conf,
		       struct mlfs_err *err)
{
	struct mlfs_toml *root = NULL;
	int r = mlfs_toml_parse(buf, len, name, &root, err);
	if (r < 0)
		return r;
	struct ctx c = { name, err };
	const struct mlfs_toml *regs = mlfs_toml_get(root, "registry");
	if (regs && (regs->kind != MLFS_TOML_ARRAY || !regs->of_tables))
		r = bad_at(&c, regs->line, "\"registry\" must be an array of tables ([[registry]])", "");
	/* Parsed aside first: a file with an error changes nothing. */
	struct mlfs_regconf mine = { 0 };
	const struct mlfs_toml *v1_search = NULL;
	int v1 = 0;
	if (r == 0 && (v1 = parse_v1(&c, root, drop_in, &mine, &v1_search)) < 0)
		r = v1;
	for (size_t i = 0; r == 0 && !v1 && regs && i < regs->n; i++) {
		struct mlfs_regconf_registry reg = { 0 };
		r = parse_registry(&c, regs->v[i], &reg);
		if (r == 0 && !(reg.source = strdup(name)))
			r = mlfs_err_set(err, ENOMEM, "out of memory");
		if (r == 0 && merge(&mine, &reg, true) < 0)
			r = mlfs_err_set(err, ENOMEM, "out of memory");
		registry_clear(&reg);
	}
	if (r == 0)
		r = mlfs_shortconf_parse(root, name, &mine.shorts, err);
	if (r == 0 && v1_search)
		r = mlfs_shortconf_search(v1_search, name, &mine.shorts, err);
	for (size_t i = 0; r == 0 && i < mine.n; i++)
		if (merge(conf, &mine.v[i], false) < 0)
			r = mlfs_err_set(err, ENOMEM, "out of memory");
	if (r == 0 && mlfs_shortconf_merge(&conf->shorts, &mine.shorts) < 0)
		r = mlfs_err_set(err, ENOMEM, "out of memory");
	mlfs_regconf_clear(&mine);
	mlfs_toml_free(root);
	return r;
}

/* How much of `name` the prefix matches, or -1 (containers/image's
 * refMatchingPrefix, on a name without tag or digest). */
static long prefix_match(const char *name, const char *prefix)
{
	size_t n = strlen(name), p = strlen(prefix);
	if (!strncmp(prefix, "*.", 2)) {
		/* The host part only: ".example.com" at the end of it. */
		size_t host = strcspn(name, "/");
		const char *dot = prefix + 1;
		size_t d = strlen(dot);
		if (host < d || strncmp(name + host - d, dot, d))
			return -1;
		return (long)host;
	}
	if (n < p || strncmp(name, prefix, p))
		return -1;
	if (n == p || name[p] == '/' || name[p] == ':' || name[p] == '@')
		return (long)p;
	return -1;
}

const struct mlfs_regconf_registry *mlfs_regconf_match(const struct mlfs_regconf *c, const char *name)
{
	const struct mlfs_regconf_registry *best = NULL;
	long best_len = -1;
	for (size_t i = 0; i < c->n; i++) {
		long m = prefix_match(name, c->v[i].prefix);
		if (m > best_len) {
			best_len = m;
			best = &c->v[i];
		}
	}
	return best;
}

/* location + what follows the matched prefix -> domain and repository. */
static int add_rewritten(struct mlfs_endpoints *out, const char *location, const char *rest, bool insecure,
			 bool mirror, enum mlfs_pull_from pull, const char *ca_file, const char *source,
			 struct mlfs_err *err)
{
	size_t dl = strcspn(location, "/");
	char *domain = strndup(location, dl);
	char *repo = NULL;
	int r = 0;
	if (!domain || asprintf(&repo, "%s%s", location[dl] ? location + dl + 1 : "",
				location[dl] ? rest : (*rest == '/' ? rest + 1 : rest)) < 0) {
		repo = NULL;
		r = mlfs_err_set(err, ENOMEM, "out of memory");
	} else if ((r = mlfs_endpoints_add(out, domain, repo, insecure, mirror, pull, ca_file)) == -EINVAL) {
		r = mlfs_err_set(err, EINVAL, "%s: location \"%s\" does not name a registry host and repository for "
				 "this reference", source, SHOW(location));
	} else if (r < 0) {
		r = mlfs_err_set(err, -r, "out of memory");
	}
	free(domain);
	free(repo);
	return r;
}

int mlfs_regconf_endpoints(const struct mlfs_regconf_registry *reg, const char *name, struct mlfs_endpoints *out,
			   struct mlfs_err *err)
{
	long m = prefix_match(name, reg->prefix);
	if (m < 0)
		return mlfs_err_set(err, EINVAL, "%s does not match the prefix %s", name, SHOW(reg->prefix));
	const char *rest = name + m;
	int r = 0;
	for (size_t i = 0; r == 0 && i < reg->n_mirrors; i++) {
		const struct mlfs_regconf_mirror *mi = &reg->mirrors[i];
		r = add_rewritten(out, mi->location, rest, mi->insecure, true,
				  reg->digest_only ? MLFS_PULL_DIGEST_ONLY : mi->pull, mi->ca_file, reg->source, err);
	}
	if (r == 0) {
		/* A wildcard entry has no location: the reference's own host. */
		if (reg->location)
			r = add_rewritten(out, reg->location, rest, reg->insecure, false, MLFS_PULL_ALL, NULL,
					  reg->source, err);
		else
			r = add_rewritten(out, name, "", reg->insecure, false, MLFS_PULL_ALL, NULL, reg->source, err);
	}
	return r;
}
