/* A signature identity of a containers-policy.json(5) requirement
 * (signedIdentity, baseLayerIdentity), parsed as containers/image parses
 * it (signature/policy_config.go):
 *
 *   {"type": "matchRepoDigestOrExact" | "matchExact" | "matchRepository"}
 *   {"type": "exactReference", "dockerReference": REF}    REF has a tag or a digest
 *   {"type": "exactRepository", "dockerRepository": REPO}
 *   {"type": "remapIdentity", "prefix": P, "signedPrefix": P}
 *
 * REF and REPO are references as users type them (fetch/ref.c, a little
 * stricter than Docker's ParseNormalizedNamed: see there).  P is a
 * registry host[:port], or a repository name that starts with one, as
 * containers/image's validateIdentityRemappingPrefix accepts: matched
 * against names, never tags, so "docker.io/library:latest" is refused. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/cleanup.h"
#include "fetch/internal.h"

static bool is_alnum(char ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9');
}

/* containers/image's reference.DomainRegexp, whole: host[:port], host
 * being dot-separated [A-Za-z0-9-] labels (no '-' at either end) or a
 * bracketed IPv6 address. */
static bool is_domain(const char *s, size_t n)
{
	size_t i = 0;
	if (n && s[0] == '[') {
		while (++i < n && (is_alnum(s[i]) || s[i] == ':'))
			;
		if (i == 1 || i >= n || s[i++] != ']')
			return false;
	} else {
		do {
			size_t start = i += (i > 0);
			while (i < n && (is_alnum(s[i]) || s[i] == '-'))
				i++;
			if (i == start || s[start] == '-' || s[i - 1] == '-')
				return false;
		} while (i < n && s[i] == '.');
	}
	if (i < n && s[i++] == ':') {
		size_t digits = i;
		while (i < n && s[i] >= '0' && s[i] <= '9')
			i++;
		return i == n && i > digits;
	}
	return i == n;
}

/* [a-z0-9]+ (([._]|__|-+)[a-z0-9]+)* */
static bool is_path_component(const char *s, size_t n)
{
	size_t i = 0;
	for (;;) {
		size_t start = i;
		while (i < n && ((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9')))
			i++;
		if (i == start)
			return false;
		if (i == n)
			return true;
		if (s[i] == '.' || (s[i] == '_' && (i + 1 >= n || s[i + 1] != '_')))
			i++;
		else if (s[i] == '_')
			i += 2;
		else if (s[i] == '-')
			while (i < n && s[i] == '-')
				i++;
		else
			return false;
	}
}

/* remapIdentity's prefixes: a domain, or a name that starts with one. */
static bool prefix_ok(const char *s)
{
	size_t n = strlen(s);
	const char *slash = memchr(s, '/', n);
	if (!slash)
		return is_domain(s, n);
	if (!is_domain(s, (size_t)(slash - s)))
		return false;
	for (const char *p = slash + 1;;) {
		const char *end = strchrnul(p, '/');
		if (!is_path_component(p, (size_t)(end - p)))
			return false;
		if (!*end)
			return true;
		p = end + 1;
	}
}

/* A reference as containers/image's ParseNormalizedNamed takes it;
 * *name_only: neither a tag nor a digest. */
static int check_reference(const struct mlfs_policy_ctx *c, const char *where, const char *key,
			   const char *s, bool *name_only)
{
	struct mlfs_ref ref;
	struct mlfs_err e = { 0 };
	if (mlfs_ref_parse(s, &ref, &e) < 0)
		return mlfs_policy_bad(c, where, "\"%s\": %s", key, e.msg);
	mlfs_ref_clear(&ref);
	const char *slash = strrchr(s, '/');
	*name_only = !strchr(s, '@') && !strchr(slash ? slash : s, ':');
	return 0;
}

int mlfs_policy_identity_parse(const struct mlfs_policy_ctx *c, const char *where, json_t *j,
			  struct mlfs_policy_identity *id)
{
	static const char *const only_type[] = { "type", NULL };
	static const char *const exact_ref[] = { "type", "dockerReference", NULL };
	static const char *const exact_repo[] = { "type", "dockerRepository", NULL };
	static const char *const remap[] = { "type", "prefix", "signedPrefix", NULL };
	_cleanup_free_ char *type = NULL;
	bool name_only;
	int r = mlfs_policy_want_object(c, where, j);
	if (r < 0 || (r = mlfs_policy_get_string(c, where, j, "type", true, &type)) < 0)
		return r;
	static const struct {
		const char *name;
		enum mlfs_prm_type type;
	} plain[] = {
		{ "matchRepoDigestOrExact", MLFS_PRM_MATCH_REPO_DIGEST_OR_EXACT },
		{ "matchExact", MLFS_PRM_MATCH_EXACT },
		{ "matchRepository", MLFS_PRM_MATCH_REPOSITORY },
	};
	for (size_t i = 0; i < sizeof plain / sizeof plain[0]; i++)
		if (!strcmp(type, plain[i].name)) {
			id->type = plain[i].type;
			return mlfs_policy_only_keys(c, where, j, only_type);
		}
	if (!strcmp(type, "exactReference")) {
		id->type = MLFS_PRM_EXACT_REFERENCE;
		if ((r = mlfs_policy_only_keys(c, where, j, exact_ref)) < 0 ||
		    (r = mlfs_policy_get_string(c, where, j, "dockerReference", true, &id->reference)) < 0 ||
		    (r = check_reference(c, where, "dockerReference", id->reference, &name_only)) < 0)
			return r;
		if (name_only)
			return mlfs_policy_bad(c, where, "\"dockerReference\" \"%s\" has neither a tag nor a digest",
					       id->reference);
		return 0;
	}
	if (!strcmp(type, "exactRepository")) {
		id->type = MLFS_PRM_EXACT_REPOSITORY;
		if ((r = mlfs_policy_only_keys(c, where, j, exact_repo)) < 0 ||
		    (r = mlfs_policy_get_string(c, where, j, "dockerRepository", true, &id->reference)) < 0)
			return r;
		return check_reference(c, where, "dockerRepository", id->reference, &name_only);
	}
	if (!strcmp(type, "remapIdentity")) {
		id->type = MLFS_PRM_REMAP_IDENTITY;
		if ((r = mlfs_policy_only_keys(c, where, j, remap)) < 0 ||
		    (r = mlfs_policy_get_string(c, where, j, "prefix", true, &id->prefix)) < 0 ||
		    (r = mlfs_policy_get_string(c, where, j, "signedPrefix", true, &id->signed_prefix)) < 0)
			return r;
		if (!prefix_ok(id->prefix))
			return mlfs_policy_bad(c, where, "\"prefix\" \"%s\" is neither a registry host nor a "
					       "repository under one", id->prefix);
		if (!prefix_ok(id->signed_prefix))
			return mlfs_policy_bad(c, where, "\"signedPrefix\" \"%s\" is neither a registry host nor "
					       "a repository under one", id->signed_prefix);
		return 0;
	}
	return mlfs_policy_bad(c, where, "unknown identity type \"%s\" (matchRepoDigestOrExact, matchExact, "
			       "matchRepository, exactReference, exactRepository or remapIdentity)", type);
}
