/* What a reference without a registry means ("busybox",
 * "library/busybox:1.36", "myorg/app"), decided the way containers/image's
 * pkg/shortnames decides it for podman run without a terminal (mlfs never
 * prompts):
 *
 *   1. a registry in the reference: as written;
 *   2. an [aliases] entry for the name (tag and digest stripped, then put
 *      back on the alias's value): that, alone;
 *   3. unqualified-search-registries: one entry is used alone; with
 *      several, "enforcing" refuses (a terminal would have prompted) and
 *      "permissive" or "disabled" try each, in order, until one has the
 *      image (image.c walks them);
 *   4. no alias and no search registry: Docker's rule (docker.io, and
 *      library/ for a one-part name) only when no registries.conf nor
 *      drop-in exists at all — with one, podman's refusal.
 *
 * A search registry completes the name as typed: "busybox" on
 * "127.0.0.1:5000" is 127.0.0.1:5000/busybox, and on docker.io
 * docker.io/library/busybox (ref.c normalises).  Which image a short name
 * means is a security decision (a squatted namespace on the first search
 * registry wins), so the chosen, fully-qualified name is what the policy,
 * the mirrors and the cache see, and --debug=fetch tells how it was
 * chosen. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "fetch/internal.h"

#define SHOW(k) mlfs_printable((k), (char[256]){ 0 }, 256)

/* Until the short-name-mode is set: containers/image's default
 * (defaultShortNameMode) and containers-registries.conf(5)'s. */
#define DEFAULT_MODE MLFS_SHORT_PERMISSIVE

bool mlfs_ref_is_short(const char *s)
{
	size_t name = strcspn(s, "@");
	const char *slash = memchr(s, '/', name);
	if (!slash)
		return true;
	size_t first = (size_t)(slash - s);
	return !memchr(s, '.', first) && !memchr(s, ':', first) && !(first == 9 && !memcmp(s, "localhost", 9));
}

void mlfs_short_result_clear(struct mlfs_short_result *r)
{
	for (size_t i = 0; i < r->n; i++)
		free(r->candidates[i]);
	free(r->candidates);
	free(r->origin);
	memset(r, 0, sizeof *r);
}

static int add(struct mlfs_short_result *out, const char *a, const char *b, const char *c)
{
	char **nv = realloc(out->candidates, (out->n + 1) * sizeof *nv);
	if (!nv)
		return -ENOMEM;
	out->candidates = nv;
	if (asprintf(&nv[out->n], "%s%s%s", a, b, c) < 0)
		return -ENOMEM;
	out->n++;
	return 0;
}

static const char *mode_name(enum mlfs_short_mode m)
{
	return m == MLFS_SHORT_ENFORCING ? "enforcing" : m == MLFS_SHORT_DISABLED ? "disabled" : "permissive";
}

/* all: every candidate whatever the mode (what a cache may hold under the name). */
static int decide(const char *input, const struct mlfs_shortconf *c, bool have_conf, bool all,
		  struct mlfs_short_result *out, struct mlfs_err *err)
{
	if (!mlfs_ref_is_short(input)) {
		out->how = MLFS_SHORT_QUALIFIED;
		return add(out, input, "", "");
	}
	/* The name without tag or digest is what an alias names. */
	size_t name_len = strcspn(input, "@");
	const char *slash = memrchr(input, '/', name_len);
	const char *colon = memchr(slash ? slash : input, ':', name_len - (size_t)((slash ? slash : input) - input));
	if (colon)
		name_len = (size_t)(colon - input);
	char *name = strndup(input, name_len);
	if (!name)
		return -ENOMEM;
	const struct mlfs_short_alias *a = mlfs_shortconf_alias(c, name);
	free(name);
	if (a && a->value) {
		out->how = MLFS_SHORT_BY_ALIAS;
		if (!(out->origin = strdup(a->source)))
			return -ENOMEM;
		return add(out, a->value, input + name_len, "");
	}
	if (!c->n_search) {
		if (have_conf)
			return mlfs_err_set(err, EINVAL, "short name \"%s\" did not resolve to an alias and no "
					    "unqualified-search registries are defined in %s: use a fully-qualified "
					    "reference (e.g. docker.io/%s) or add an alias or unqualified-search-registries",
					    SHOW(input), c->search_source ? c->search_source : "registries.conf",
					    SHOW(input));
		out->how = MLFS_SHORT_BY_DOCKER;
		return add(out, input, "", "");
	}
	enum mlfs_short_mode mode = c->mode ? c->mode : DEFAULT_MODE;
	if (c->n_search > 1 && mode == MLFS_SHORT_ENFORCING && !all) {
		char list[512] = "";
		for (size_t i = 0; i < c->n_search; i++) {
			size_t at = strlen(list);
			snprintf(list + at, sizeof list - at, "%s%s/%s", i ? ", " : "", c->search[i], input);
		}
		return mlfs_err_set(err, EINVAL, "short name \"%s\" is ambiguous: the unqualified-search registries of "
				    "%s give %s and short-name-mode is \"enforcing\" (%s); use a fully-qualified "
				    "reference or add an [aliases] entry for it", SHOW(input), c->search_source,
				    SHOW(list), c->mode_source ? c->mode_source : "the default");
	}
	out->how = MLFS_SHORT_BY_SEARCH;
	if (!(out->origin = strdup(c->search_source)))
		return -ENOMEM;
	for (size_t i = 0; i < c->n_search; i++)
		if (add(out, c->search[i], "/", input) < 0)
			return -ENOMEM;
	return 0;
}

static int decide_checked(const char *input, const struct mlfs_shortconf *c, bool have_conf, bool all,
			  struct mlfs_short_result *out, struct mlfs_err *err)
{
	memset(out, 0, sizeof *out);
	/* The reference as typed must be valid before it is completed, so a
	 * mistake is reported in the user's own words. */
	struct mlfs_ref ref;
	int r = mlfs_ref_parse(input, &ref, err);
	if (r < 0)
		return r;
	mlfs_ref_clear(&ref);
	r = decide(input, c, have_conf, all, out, err);
	if (r == -ENOMEM)
		mlfs_err_set(err, ENOMEM, "out of memory");
	if (r < 0)
		mlfs_short_result_clear(out);
	return r;
}

int mlfs_shortname_decide(const char *input, const struct mlfs_shortconf *c, bool have_conf,
			  struct mlfs_short_result *out, struct mlfs_err *err)
{
	return decide_checked(input, c, have_conf, false, out, err);
}

int mlfs_ref_candidates(const char *input, char ***out, struct mlfs_err *err)
{
	*out = NULL;
	struct mlfs_regconf conf = { 0 };
	struct mlfs_short_result res = { 0 };
	bool found = false;
	int r = mlfs_regconf_load(NULL, &conf, &found, err);
	if (r == 0)
		r = decide_checked(input, &conf.shorts, found, true, &res, err);
	mlfs_regconf_clear(&conf);
	if (r < 0)
		return r;
	/* Moved out, NULL-terminated. */
	char **v = realloc(res.candidates, (res.n + 1) * sizeof *v);
	if (!v) {
		mlfs_short_result_clear(&res);
		return mlfs_err_set(err, ENOMEM, "out of memory");
	}
	v[res.n] = NULL;
	res.candidates = NULL;
	res.n = 0;
	mlfs_short_result_clear(&res);
	*out = v;
	return 0;
}

void mlfs_ref_candidates_free(char **v)
{
	for (size_t i = 0; v && v[i]; i++)
		free(v[i]);
	free(v);
}

int mlfs_shortname_resolve(const char *input, const struct mlfs_mirror_opts *opts, struct mlfs_short_result *out,
			   struct mlfs_err *err)
{
	memset(out, 0, sizeof *out);
	if (input && !mlfs_ref_is_short(input))
		return mlfs_shortname_decide(input, &(struct mlfs_shortconf){ 0 }, false, out, err);
	struct mlfs_regconf conf = { 0 };
	bool found = false;
	int r = mlfs_regconf_load(opts, &conf, &found, err);
	if (r == 0)
		r = mlfs_shortname_decide(input, &conf.shorts, found, out, err);
	if (r == 0 && out->how == MLFS_SHORT_BY_ALIAS)
		log_debug(MLFS_AREA_FETCH, "short name %s: alias %s (%s)", SHOW(input), out->candidates[0], out->origin);
	else if (r == 0 && out->how == MLFS_SHORT_BY_DOCKER)
		log_debug(MLFS_AREA_FETCH, "short name %s: no registries.conf: Docker's rule (docker.io)", SHOW(input));
	else if (r == 0)
		for (size_t i = 0; i < out->n; i++)
			log_debug(MLFS_AREA_FETCH, "short name %s: unqualified-search registry %zu of %zu (%s, "
				  "short-name-mode %s): %s", SHOW(input), i + 1, out->n, out->origin,
				  mode_name(conf.shorts.mode ? conf.shorts.mode : DEFAULT_MODE), out->candidates[i]);
	mlfs_regconf_clear(&conf);
	return r;
}
