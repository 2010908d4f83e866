/* The short-name settings of containers-registries.conf(5), read the way
 * containers/image reads them (pkg/sysregistriesv2):
 *
 *   unqualified-search-registries = ["host[:port]", ...]
 *   short-name-mode = "enforcing" | "permissive" | "disabled"
 *   [aliases]
 *   "name" = "host/repository"
 *
 * Across files (registries.conf, then each drop-in in name order), a file
 * that sets the search list (even to []) or the mode replaces what came
 * before; aliases merge name by name, and "" erases an earlier alias (how
 * a drop-in undoes Debian's shortnames.conf).  An alias names a short
 * name (no registry, tag or digest) and a fully-qualified repository (no
 * tag or digest): anything else is an error naming file and line.
 *
 * The user's machine-written short-name-aliases.conf (under
 * /var/cache/containers or ~/.cache/containers) is not read: podman
 * records there what a person chose at a prompt, and mlfs never prompts.
 * What to do with these settings is shortname.c's business. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fetch/internal.h"

#define SHOW(k) mlfs_printable((k), (char[256]){ 0 }, 256)

static void alias_clear(struct mlfs_short_alias *a)
{
	free(a->name);
	free(a->value);
	free(a->source);
	memset(a, 0, sizeof *a);
}

static void search_clear(struct mlfs_shortconf *c)
{
	for (size_t i = 0; i < c->n_search; i++)
		free(c->search[i]);
	free(c->search);
	free(c->search_source);
	c->search = NULL;
	c->search_source = NULL;
	c->n_search = 0;
	c->search_set = false;
}

void mlfs_shortconf_clear(struct mlfs_shortconf *c)
{
	search_clear(c);
	for (size_t i = 0; i < c->n_aliases; i++)
		alias_clear(&c->aliases[i]);
	free(c->aliases);
	free(c->mode_source);
	memset(c, 0, sizeof *c);
}

/* Whether the part before any tag holds a ':' (a tag) or the string an '@' (a digest). */
static bool has_tag_or_digest(const char *s)
{
	const char *slash = strrchr(s, '/');
	return strchr(s, '@') || strchr(slash ? slash : s, ':');
}

int mlfs_shortconf_search(const struct mlfs_toml *v, const char *name, struct mlfs_shortconf *c, struct mlfs_err *err)
{
	if (v->kind != MLFS_TOML_ARRAY)
		return mlfs_err_set(err, EINVAL, "%s:%d: \"unqualified-search-registries\" must be an array of strings",
				    name, v->line);
	if (!(c->search = calloc(v->n ? v->n : 1, sizeof *c->search)))
		return mlfs_err_set(err, ENOMEM, "out of memory");
	c->search_set = true;
	for (size_t i = 0; i < v->n; i++) {
		const struct mlfs_toml *e = v->v[i];
		struct mlfs_ref ref;
		char probe[300];
		/* A registry host alone: "host/x" must parse with that host. */
		if (e->kind != MLFS_TOML_STRING || strlen(e->str) > 256 || strchr(e->str, '/') ||
		    (snprintf(probe, sizeof probe, "%s/x", e->str), mlfs_ref_parse(probe, &ref, NULL) < 0))
			return mlfs_err_set(err, EINVAL, "%s:%d: invalid unqualified-search-registries entry \"%s\": "
					    "want a registry host[:port]", name, e->line,
					    e->kind == MLFS_TOML_STRING ? SHOW(e->str) : "(not a string)");
		mlfs_ref_clear(&ref);
		if (!(c->search[i] = strdup(e->str)))
			return mlfs_err_set(err, ENOMEM, "out of memory");
		c->n_search = i + 1;
	}
	return 0;
}

static int parse_mode(const struct mlfs_toml *v, const char *name, struct mlfs_shortconf *c, struct mlfs_err *err)
{
	if (v->kind != MLFS_TOML_STRING)
		return mlfs_err_set(err, EINVAL, "%s:%d: \"short-name-mode\" must be a string", name, v->line);
	if (!*v->str)
		return 0; /* "" leaves it as it was */
	if (!strcmp(v->str, "enforcing"))
		c->mode = MLFS_SHORT_ENFORCING;
	else if (!strcmp(v->str, "permissive"))
		c->mode = MLFS_SHORT_PERMISSIVE;
	else if (!strcmp(v->str, "disabled"))
		c->mode = MLFS_SHORT_DISABLED;
	else
		return mlfs_err_set(err, EINVAL, "%s:%d: invalid short-name-mode \"%s\" (enforcing, permissive or "
				    "disabled)", name, v->line, SHOW(v->str));
	if (!(c->mode_source = strdup(name)))
		return mlfs_err_set(err, ENOMEM, "out of memory");
	return 0;
}

static int parse_alias(const struct mlfs_toml *v, const char *name, struct mlfs_short_alias *a,
		       struct mlfs_err *err)
{
	if (v->kind != MLFS_TOML_STRING)
		return mlfs_err_set(err, EINVAL, "%s:%d: alias \"%s\" must be a string", name, v->line, SHOW(v->key));
	struct mlfs_ref ref;
	if (has_tag_or_digest(v->key) || !mlfs_ref_is_short(v->key) || mlfs_ref_parse(v->key, &ref, NULL) < 0)
		return mlfs_err_set(err, EINVAL, "%s:%d: invalid alias name \"%s\": want a short name (no registry, "
				    "tag or digest)", name, v->line, SHOW(v->key));
	mlfs_ref_clear(&ref);
	if (asprintf(&a->source, "%s:%d", name, v->line) < 0) {
		a->source = NULL;
		return mlfs_err_set(err, ENOMEM, "out of memory");
	}
	if (!(a->name = strdup(v->key)))
		return mlfs_err_set(err, ENOMEM, "out of memory");
	if (!*v->str)
		return 0;
	if (has_tag_or_digest(v->str) || mlfs_ref_is_short(v->str) || mlfs_ref_parse(v->str, &ref, NULL) < 0)
		return mlfs_err_set(err, EINVAL, "%s:%d: invalid alias \"%s\" = \"%s\": the value must be a "
				    "fully-qualified repository (registry/repository, no tag or digest)", name, v->line,
				    SHOW(v->key), SHOW(v->str));
	int r = asprintf(&a->value, "%s/%s", ref.domain, ref.path);
	mlfs_ref_clear(&ref);
	if (r < 0) {
		a->value = NULL;
		return mlfs_err_set(err, ENOMEM, "out of memory");
	}
	return 0;
}

int mlfs_shortconf_parse(const struct mlfs_toml *root, const char *name, struct mlfs_shortconf *c,
			 struct mlfs_err *err)
{
	if (!(c->search_source = strdup(name)))
		return mlfs_err_set(err, ENOMEM, "out of memory");
	const struct mlfs_toml *v = mlfs_toml_get(root, "unqualified-search-registries");
	int r = v ? mlfs_shortconf_search(v, name, c, err) : 0;
	if (r == 0 && (v = mlfs_toml_get(root, "short-name-mode")))
		r = parse_mode(v, name, c, err);
	if (r < 0 || !(v = mlfs_toml_get(root, "aliases")))
		return r;
	if (v->kind != MLFS_TOML_TABLE)
		return mlfs_err_set(err, EINVAL, "%s:%d: \"aliases\" must be a table ([aliases])", name, v->line);
	if (!(c->aliases = calloc(v->n ? v->n : 1, sizeof *c->aliases)))
		return mlfs_err_set(err, ENOMEM, "out of memory");
	/* TOML itself refuses a name twice in one table. */
	for (size_t i = 0; r == 0 && i < v->n; i++) {
		c->n_aliases = i + 1;
		r = parse_alias(v->v[i], name, &c->aliases[i], err);
	}
	return r;
}

const struct mlfs_short_alias *mlfs_shortconf_alias(const struct mlfs_shortconf *c, const char *name)
{
	for (size_t i = 0; i < c->n_aliases; i++)
		if (!strcmp(c->aliases[i].name, name))
			return &c->aliases[i];
	return NULL;
}

int mlfs_shortconf_merge(struct mlfs_shortconf *into, struct mlfs_shortconf *from)
{
	/* Unset in every file so far: the first file read is where it would go. */
	if (from->search_set || !into->search_source) {
		search_clear(into);
		into->search = from->search;
		into->n_search = from->n_search;
		into->search_set = from->search_set;
		into->search_source = from->search_source;
		from->search = NULL;
		from->search_source = NULL;
		from->n_search = 0;
	}
	if (from->mode != MLFS_SHORT_UNSET) {
		free(into->mode_source);
		into->mode = from->mode;
		into->mode_source = from->mode_source;
		from->mode_source = NULL;
	}
	for (size_t i = 0; i < from->n_aliases; i++) {
		struct mlfs_short_alias *old = (struct mlfs_short_alias *)mlfs_shortconf_alias(into, from->aliases[i].name);
		if (old) {
			alias_clear(old);
			*old = from->aliases[i];
			memset(&from->aliases[i], 0, sizeof from->aliases[i]);
			continue;
		}
		struct mlfs_short_alias *nv = realloc(into->aliases, (into->n_aliases + 1) * sizeof *nv);
		if (!nv)
			return -ENOMEM;
		into->aliases = nv;
		into->aliases[into->n_aliases++] = from->aliases[i];
		memset(&from->aliases[i], 0, sizeof from->aliases[i]);
	}
	/* Moved items were zeroed or now belong to `into`: free only the array. */
	free(from->aliases);
	from->aliases = NULL;
	from->n_aliases = 0;
	mlfs_shortconf_clear(from);
	return 0;
}
