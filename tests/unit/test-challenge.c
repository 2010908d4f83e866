/* WWW-Authenticate parsing: what Docker Hub, ghcr.io, distribution and
 * Harbor send, RFC 7235 corner cases, and headers that must be refused. */
#include <errno.h>
#include <stdio.h>

#include "fetch/fetch.h"
#include "tap.h"

struct want {
	const char *header;
	int r;
	const char *scheme, *realm, *service, *scope, *error;
};

#define BAD(h) { .header = h, .r = -EINVAL }

static const struct want cases[] = {
	/* as the registries send them */
	{ "Bearer realm=\"https://auth.docker.io/token\",service=\"registry.docker.io\","
	  "scope=\"repository:library/golang:pull\"",
	  0, "bearer", "https://auth.docker.io/token", "registry.docker.io",
	  "repository:library/golang:pull", NULL },
	{ "Bearer realm=\"https://ghcr.io/token\",service=\"ghcr.io\",scope=\"repository:user/image:pull\"",
	  0, "bearer", "https://ghcr.io/token", "ghcr.io", "repository:user/image:pull", NULL },
	{ "Bearer realm=\"http://127.0.0.1:5001/auth\",service=\"Docker registry\","
	  "scope=\"repository:x:pull,push\",error=\"insufficient_scope\"",
	  0, "bearer", "http://127.0.0.1:5001/auth", "Docker registry", "repository:x:pull,push",
	  "insufficient_scope" },
	{ "Basic realm=\"Registry Realm\"", 0, "basic", "Registry Realm", NULL, NULL, NULL },
	{ "Bearer realm=\"https://auth.example/token\",error=\"invalid_token\"", 0, "bearer",
	  "https://auth.example/token", NULL, NULL, "invalid_token" },

	/* RFC 7235 syntax */
	{ "BEARER Realm=\"x\", SERVICE=registry.example", 0, "bearer", "x", "registry.example", NULL, NULL },
	{ "Bearer  realm = \"x\" ,\tservice=\"y\"  ", 0, "bearer", "x", "y", NULL, NULL },
	{ "Bearer\trealm=\"x\"", 0, "bearer", "x", NULL, NULL, NULL },
	{ "Bearer realm=\"a\\\"b\\\\c\\d\"", 0, "bearer", "a\"b\\cd", NULL, NULL, NULL },
	{ "Bearer realm=\"x\",scope=\"repository:a:pull repository:b:pull,push\"", 0, "bearer", "x", NULL,
	  "repository:a:pull repository:b:pull,push", NULL },
	{ "Bearer realm=\"\"", 0, "bearer", "", NULL, NULL, NULL },
	{ "Bearer realm=\"x\",foo=\"bar\",charset=UTF-8,Foo-Bar=\"a=b, c\"", 0, "bearer", "x", NULL, NULL, NULL },
	{ "Bearer realm=\"x\",,service=\"y\",", 0, "bearer", "x", "y", NULL, NULL },
	{ ", Bearer realm=\"x\"", 0, "bearer", "x", NULL, NULL, NULL },
	{ "Bearer ,realm=\"x\"", 0, "bearer", "x", NULL, NULL, NULL },
	{ "Basic realm=\"caf\xc3\xa9\"", 0, "basic", "caf\xc3\xa9", NULL, NULL, NULL },
	{ "Bearer realm=\"tab\there\"", 0, "bearer", "tab\there", NULL, NULL, NULL },

	/* several challenges: the first one wins */
	{ "Bearer realm=\"x\", Basic realm=\"y\"", 0, "bearer", "x", NULL, NULL, NULL },
	{ "Basic realm=\"y\", Bearer realm=\"x\",service=\"s\"", 0, "basic", "y", NULL, NULL, NULL },
	{ "Bearer realm=\"x\",service=\"s\",Basic realm=\"y\"", 0, "bearer", "x", "s", NULL, NULL },
	{ "Basic, Bearer realm=\"x\"", 0, "basic", NULL, NULL, NULL, NULL },
	{ "Negotiate YIIGhgYJKoZIhvcSAQICAQ==, Bearer realm=\"x\"", 0, "negotiate", NULL, NULL, NULL, NULL },

	/* schemes without parameters */
	{ "Basic", 0, "basic", NULL, NULL, NULL, NULL },
	{ "Negotiate YIIGhgYJKoZIhvcSAQICAQ==", 0, "negotiate", NULL, NULL, NULL, NULL },
	{ "Bearer   ", 0, "bearer", NULL, NULL, NULL, NULL },

	/* malformed */
	BAD(""),
	BAD("   "),
	BAD(",,"),
	BAD("=\"x\""),
	BAD("\"Bearer\" realm=\"x\""),
	BAD("Bearer=x"),
	BAD("Bearer realm=\"x"),
	BAD("Bearer realm=\"x\\"),
	BAD("Bearer realm=\"x\\\""),
	BAD("Bearer realm=\"x\" service=\"y\""),
	BAD("Bearer realm \"x\""),
	BAD("Bearer realm=\"x\",realm=\"y\""),
	BAD("Bearer realm=\"x\",REALM=\"y\""),
	BAD("Bearer realm=\"a\x01" "b\""),
	BAD("Bearer realm=\"a\x7f" "b\""),
	BAD("Bearer realm=a b"),
	BAD("Bearer realm=@x"),
	BAD("Bearer realm=\"x\",service=registry.example:5000"), /* ':' is not a tchar */
	BAD("Bearer realm=x;y"),
	BAD("Bearer realm=\"x\"garbage"),
	BAD("Bearer realm=\"x\",service=\"y\" junk"),
	BAD("Bearer realm=\"x\",=\"y\""),
	BAD("Averyveryverylongscheme realm=\"x\""),
	BAD("Bearer\nrealm=\"x\""),
};

int main(void)
{
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		const struct want *w = &cases[i];
		struct mlfs_challenge c;
		char name[160];
		snprintf(name, sizeof name, "[%s]", w->header);
		for (char *p = name; *p; p++)
			if ((unsigned char)*p < 0x20)
				*p = '?'; /* TAP lines are lines */

		int r = mlfs_challenge_parse(w->header, &c);
		tap_is_int(r, w->r, name);
		if (w->r < 0) {
			/* a failure leaves nothing to free and nothing half-parsed */
			tap_ok(!c.realm && !c.service && !c.scope && !c.error, "%s cleared", name);
			continue;
		}
		tap_is_str(c.scheme, w->scheme, "  scheme");
		tap_is_str(c.realm, w->realm, "  realm");
		tap_is_str(c.service, w->service, "  service");
		tap_is_str(c.scope, w->scope, "  scope");
		tap_is_str(c.error, w->error, "  error");
		mlfs_challenge_clear(&c);
		mlfs_challenge_clear(&c);
	}

	struct mlfs_challenge c;
	tap_is_int(mlfs_challenge_parse(NULL, &c), -EINVAL, "NULL header");
	return tap_done();
}
