/* Image references, parsed the way Docker's distribution/reference
 * (normalize.go + regexp.go) parses what users type:
 *
 *   reference := name [ ":" tag ] [ "@" digest ]
 *   name      := [ domain "/" ] path          (at most 255 characters)
 *   domain    := host [ ":" port ]            host: DNS-ish name or "[" IPv6 "]"
 *   path      := component ( "/" component )*
 *   component := [a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*
 *   tag       := [A-Za-z0-9_] [A-Za-z0-9_.-]{0,127}
 *
 * The first '/'-separated part is a domain only if it looks like one (has a
 * '.' or ':', or is "localhost"): "foo/bar" is Docker Hub's foo/bar, not a
 * host called foo.  That guess, the docker.io / library/ defaults and the
 * index.docker.io alias are what make "golang" mean
 * docker.io/library/golang:latest everywhere, so they must match Docker's
 * exactly or credentials and cached digests stop lining up.
 *
 * Deliberate differences, all refusing what could never be pulled: a
 * domain that is not a valid host (Docker silently treats "a_b.c/x" as a
 * path with no domain), a port above 65535, a URL ("https://host/x"), and a
 * 64-hex name even with a tag or digest (Docker refuses only the bare
 * string; either way it is an image ID pasted by mistake). */
#include "fetch/fetch.h"

#include "common/escape.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NAME_MAX_LEN 255
#define TAG_MAX_LEN 128

static const char docker_domain[] = "docker.io";
static const char docker_legacy_domain[] = "index.docker.io";
static const char docker_api_host[] = "registry-1.docker.io";
static const char official_prefix[] = "library/";

static bool is_lower_alnum(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

static bool is_alnum(char c)
{
	return is_lower_alnum(c) || (c >= 'A' && c <= 'Z');
}

static bool is_hex(char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static int ref_fail(struct mlfs_err *err, const char *input, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int ref_fail(struct mlfs_err *err, const char *input, const char *fmt, ...)
{
	char q[256], what[512], clean[512];
	va_list ap;
	/* Input goes into a one-line message, between quotes. */
	mlfs_escape(input, strlen(input), MLFS_ESC_QUOTES, q, sizeof q);
	va_start(ap, fmt);
	vsnprintf(what, sizeof what, fmt, ap);
	va_end(ap);
	mlfs_escape(what, strlen(what), 0, clean, sizeof clean);
	return mlfs_err_set(err, EINVAL, "invalid reference \"%s\": %s", q, clean);
}

/* [a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )* */
static bool path_component_ok(const char *s, size_t n)
{
	size_t i = 0;
	for (;;) {
		size_t start = i;
		while (i < n && is_lower_alnum(s[i]))
			i++;
		if (i == start)
			return false;
		if (i == n)
			return true;
		if (s[i] == '.') {
			i++;
		} else if (s[i] == '_') {
			i++;
			if (i < n && s[i] == '_')
				i++;
		} else if (s[i] == '-') {
			while (i < n && s[i] == '-')
				i++;
		} else {
			return false;
		}
	}
}

static bool port_ok(const char *s, size_t n)
{
	unsigned long v = 0;
	if (n == 0)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (unsigned long)(s[i] - '0');
		if (v > 65535)
			return false;
	}
	return true;
}

/* host [":" port], host being dot-separated labels of [A-Za-z0-9-] that
 * neither start nor end with '-', or a bracketed IPv6 address. */
static bool domain_ok(const char *s, size_t n)
{
	size_t i = 0;
	if (n > 0 && s[0] == '[') {
		i = 1;
		while (i < n && (is_hex(s[i]) || s[i] == ':'))
			i++;
		if (i == 1 || i >= n || s[i] != ']')
			return false;
		i++;
	} else {
		for (;;) {
			size_t start = i;
			while (i < n && (is_alnum(s[i]) || s[i] == '-'))
				i++;
			if (i == start || s[start] == '-' || s[i - 1] == '-')
				return false;
			if (i < n && s[i] == '.') {
				i++;
				continue;
			}
			break;
		}
	}
	if (i == n)
		return true;
	if (s[i] != ':')
		return false;
	return port_ok(s + i + 1, n - i - 1);
}

static bool tag_ok(const char *s, size_t n)
{
	if (n == 0 || n > TAG_MAX_LEN || !(is_alnum(s[0]) || s[0] == '_'))
		return false;
	for (size_t i = 1; i < n; i++)
		if (!(is_alnum(s[i]) || s[i] == '_' || s[i] == '.' || s[i] == '-'))
			return false;
	return true;
}

static bool is_image_id(const char *s, size_t n)
{
	if (n != 64)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return true;
}

static int check_path(const char *input, const char *path, size_t n, struct mlfs_err *err)
{
	if (n == 0)
		return ref_fail(err, input, "repository name is empty");
	/* Docker reports case before anything else: "Ubuntu" is far more
	 * often a typo than an attempt at an exotic character. */
	for (size_t i = 0; i < n; i++)
		if (path[i] >= 'A' && path[i] <= 'Z')
			return ref_fail(err, input, "repository name must be lowercase");
	size_t start = 0;
	for (size_t i = 0; i <= n; i++) {
		if (i < n && path[i] != '/')
			continue;
		if (i == start)
			return ref_fail(err, input, "empty path component in repository name");
		if (!path_component_ok(path + start, i - start))
			return ref_fail(err, input,
					"invalid repository name component \"%.*s\" (lowercase letters "
					"and digits, separated by '.', '_', '__' or dashes)",
					(int)(i - start > 64 ? 64 : i - start), path + start);
		start = i + 1;
	}
	return 0;
}

void mlfs_ref_clear(struct mlfs_ref *ref)
{
	if (!ref)
		return;
	free(ref->domain);
	free(ref->path);
	free(ref->tag);
	free(ref->digest);
	memset(ref, 0, sizeof *ref);
}

int mlfs_ref_parse(const char *s, struct mlfs_ref *out, struct mlfs_err *err)
{
	memset(out, 0, sizeof *out);
	if (!s || !*s)
		return ref_fail(err, s ? s : "", "empty reference");

	/* The most common mistake with a registry host: pasting a URL. */
	const char *scheme = strstr(s, "://");
	if (scheme && scheme < strchrnul(s, '/'))
		return ref_fail(err, s, "a reference has no URL scheme (drop \"%.*s://\")",
				(int)(scheme - s > 16 ? 16 : scheme - s), s);

	/* Neither name nor tag may contain '@', so the first one starts the digest. */
	const char *at = strchr(s, '@');
	size_t name_tag_len = at ? (size_t)(at - s) : strlen(s);
	const char *digest = at ? at + 1 : NULL;

	/* The tag follows a ':' after the last '/': colons before it belong to a
	 * port or an IPv6 address. */
	const char *last_slash = memrchr(s, '/', name_tag_len);
	const char *tag_from = last_slash ? last_slash + 1 : s;
	const char *colon = memchr(tag_from, ':', name_tag_len - (size_t)(tag_from - s));
	size_t name_len = colon ? (size_t)(colon - s) : name_tag_len;
	const char *tag = colon ? colon + 1 : NULL;
	size_t tag_len = colon ? name_tag_len - name_len - 1 : 0;

	if (name_len == 0)
		return ref_fail(err, s, "repository name is empty");
	if (is_image_id(s, name_len))
		return ref_fail(err, s, "a 64-character hexadecimal string is an image ID, "
					"not a repository name");

	const char *slash = memchr(s, '/', name_len);
	const char *domain = docker_domain, *path = s;
	size_t domain_len = strlen(docker_domain), path_len = name_len;
	if (slash) {
		size_t first_len = (size_t)(slash - s);
		if (memchr(s, '.', first_len) || memchr(s, ':', first_len) ||
		    (first_len == 9 && !memcmp(s, "localhost", 9))) {
			domain = s;
			domain_len = first_len;
			path = slash + 1;
			path_len = name_len - first_len - 1;
		}
	}
	if (domain_len == strlen(docker_legacy_domain) &&
	    !memcmp(domain, docker_legacy_domain, domain_len)) {
		domain = docker_domain;
		domain_len = strlen(docker_domain);
	}
	/* Docker Hub's one-part names live under library/. */
	bool official = domain_len == strlen(docker_domain) &&
			!memcmp(domain, docker_domain, domain_len) && !memchr(path, '/', path_len);

	if (!domain_ok(domain, domain_len))
		return ref_fail(err, s, "invalid registry host \"%.*s\"",
				(int)(domain_len > 128 ? 128 : domain_len), domain);
	int r = check_path(s, path, path_len, err);
	if (r < 0)
		return r;
	size_t full_len = domain_len + 1 + (official ? strlen(official_prefix) : 0) + path_len;
	if (full_len > NAME_MAX_LEN)
		return ref_fail(err, s, "name is %zu characters long, the limit is %d", full_len,
				NAME_MAX_LEN);

	if (colon && tag_len == 0)
		return ref_fail(err, s, "empty tag after ':'");
	if (colon && !tag_ok(tag, tag_len))
		return ref_fail(err, s,
				"invalid tag \"%.*s\" (up to 128 letters, digits, '_', '.' or '-', "
				"not starting with '.' or '-')",
				(int)(tag_len > 128 ? 128 : tag_len), tag);

	if (digest) {
		if (!*digest)
			return ref_fail(err, s, "empty digest after '@'");
		r = mlfs_digest_validate(digest);
		if (r == -ENOTSUP)
			return ref_fail(err, s, "unsupported digest algorithm (only sha256 is supported)");
		if (r < 0)
			return ref_fail(err, s, "malformed digest (want \"sha256:\" and 64 lowercase "
						"hex digits)");
	}

	struct mlfs_ref ref = { 0 };
	ref.domain = strndup(domain, domain_len);
	if (asprintf(&ref.path, "%s%.*s", official ? official_prefix : "", (int)path_len, path) < 0)
		ref.path = NULL;
	if (colon)
		ref.tag = strndup(tag, tag_len);
	else if (!digest)
		ref.tag = strdup("latest");
	if (digest)
		ref.digest = strdup(digest);
	if (!ref.domain || !ref.path || ((colon || !digest) && !ref.tag) || (digest && !ref.digest)) {
		mlfs_ref_clear(&ref);
		return mlfs_err_set(err, ENOMEM, "parsing a reference: out of memory");
	}
	*out = ref;
	return 0;
}

char *mlfs_ref_canonical(const struct mlfs_ref *ref)
{
	char *s;
	if (!ref || !ref->domain || !ref->path)
		return NULL;
	if (asprintf(&s, "%s/%s%s%s%s%s", ref->domain, ref->path, ref->tag ? ":" : "",
		     ref->tag ? ref->tag : "", ref->digest ? "@" : "",
		     ref->digest ? ref->digest : "") < 0)
		return NULL;
	return s;
}

const char *mlfs_ref_api_host(const struct mlfs_ref *ref)
{
	if (!ref || !ref->domain)
		return NULL;
	if (!strcmp(ref->domain, docker_domain))
		return docker_api_host;
	return ref->domain;
}

const char *mlfs_ref_reference(const struct mlfs_ref *ref)
{
	if (!ref)
		return NULL;
	return ref->digest ? ref->digest : ref->tag;
}
