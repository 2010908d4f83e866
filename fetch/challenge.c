/* WWW-Authenticate (RFC 7235 section 4.1), first challenge only:
 *
 *   challenge  = auth-scheme [ 1*SP ( token68 / #auth-param ) ]
 *   auth-param = token BWS "=" BWS ( token / quoted-string )
 *
 * The grammar is ambiguous where challenges meet: in
 * `Bearer realm="x", Basic realm="y"` the comma ends both a parameter and a
 * challenge.  What decides is the token after a comma: followed by "=" it is
 * another parameter, otherwise it is the next challenge's scheme.
 *
 * The header comes from whoever answered the request; the realm it names is
 * where credentials may be sent, so a header we cannot read exactly is
 * refused rather than guessed at. */
#include "fetch/fetch.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static bool is_ows(char c)
{
	return c == ' ' || c == '\t';
}

static bool is_tchar(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       (c && strchr("!#$%&'*+-.^_`|~", c));
}

static bool is_token68_char(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       (c && strchr("-._~+/", c));
}

/* qdtext and the octet after a backslash: HTAB, SP, VCHAR, obs-text. */
static bool is_qchar(unsigned char c)
{
	return c == '\t' || (c >= 0x20 && c != 0x7f);
}

static size_t token_len(const char *p)
{
	size_t n = 0;
	while (is_tchar((unsigned char)p[n]))
		n++;
	return n;
}

/* *pp points at the opening quote; on success it points past the closing
 * one and *out (when out is not NULL) holds the unescaped value. */
static int parse_quoted(const char **pp, char **out)
{
	const char *p = *pp + 1, *q = p;
	size_t n = 0;

	for (; *q != '"'; q++, n++) {
		if (*q == '\\')
			q++;
		if (!*q || !is_qchar((unsigned char)*q))
			return -EINVAL;
	}
	if (out) {
		char *v = malloc(n + 1);
		if (!v)
			return -ENOMEM;
		for (size_t i = 0; i < n; i++, p++) {
			if (*p == '\\')
				p++;
			v[i] = *p;
		}
		v[n] = '\0';
		*out = v;
	}
	*pp = q + 1;
	return 0;
}

/* The field an auth-param's value goes to, or NULL for parameters we ignore. */
static char **param_slot(struct mlfs_challenge *c, const char *name, size_t n)
{
	static const struct {
		const char *name;
		size_t off;
	} known[] = {
		{ "realm", offsetof(struct mlfs_challenge, realm) },
		{ "service", offsetof(struct mlfs_challenge, service) },
		{ "scope", offsetof(struct mlfs_challenge, scope) },
		{ "error", offsetof(struct mlfs_challenge, error) },
	};
	for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
		if (strlen(known[i].name) == n && strncasecmp(name, known[i].name, n) == 0)
			return (char **)((char *)c + known[i].off);
	return NULL;
}

/* Past "scheme 1*SP": is the rest of this challenge a token68?  It is when
 * token68 characters and trailing "=" run up to the end or a comma. */
static bool at_token68(const char *p)
{
	const char *q = p;
	while (is_token68_char((unsigned char)*q))
		q++;
	if (q == p)
		return false;
	while (*q == '=')
		q++;
	while (is_ows(*q))
		q++;
	return *q == '\0' || *q == ',';
}

static int parse_params(const char *p, struct mlfs_challenge *c)
{
	bool after_comma = false;

	for (;;) {
		while (is_ows(*p) || *p == ',') {
			after_comma |= *p == ',';
			p++;
		}
		if (!*p)
			return 0;

		const char *name = p;
		size_t n = token_len(p);
		if (n == 0)
			return -EINVAL;
		p += n;
		while (is_ows(*p))
			p++;
		if (*p != '=')
			/* The next challenge's scheme: it may only follow a comma. */
			return after_comma ? 0 : -EINVAL;
		p++;
		while (is_ows(*p))
			p++;

		char **slot = param_slot(c, name, n);
		if (slot && *slot)
			return -EINVAL; /* RFC 7235: each name at most once per challenge */
		if (*p == '"') {
			int r = parse_quoted(&p, slot);
			if (r < 0)
				return r;
		} else {
			size_t vn = token_len(p);
			if (vn == 0)
				return -EINVAL;
			if (slot && !(*slot = strndup(p, vn)))
				return -ENOMEM;
			p += vn;
		}

		while (is_ows(*p))
			p++;
		if (*p && *p != ',')
			return -EINVAL;
		after_comma = false;
	}
}

int mlfs_challenge_parse(const char *header, struct mlfs_challenge *out)
{
	memset(out, 0, sizeof *out);
	if (!header)
		return -EINVAL;

	const char *p = header;
	/* "#" lists allow empty elements */
	while (is_ows(*p) || *p == ',')
		p++;
	size_t n = token_len(p);
	if (n == 0 || n >= sizeof out->scheme)
		return -EINVAL;
	for (size_t i = 0; i < n; i++)
		out->scheme[i] = (p[i] >= 'A' && p[i] <= 'Z') ? p[i] - 'A' + 'a' : p[i];
	p += n;

	if (*p == '\0' || *p == ',')
		return 0; /* a scheme without parameters */
	if (!is_ows(*p))
		return -EINVAL;
	while (is_ows(*p))
		p++;
	if (at_token68(p))
		return 0; /* nothing in a token68 that we use */

	int r = parse_params(p, out);
	if (r < 0)
		mlfs_challenge_clear(out);
	return r;
}

void mlfs_challenge_clear(struct mlfs_challenge *c)
{
	free(c->realm);
	free(c->service);
	free(c->scope);
	free(c->error);
	memset(c, 0, sizeof *c);
}
