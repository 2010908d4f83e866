#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fetch/fetch.h"
#include "tap.h"

#define D64 "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
#define HEX64 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

struct good {
	const char *in;
	const char *domain, *path, *tag, *digest;
	const char *canonical;
};

static const struct good goods[] = {
	{ "golang", "docker.io", "library/golang", "latest", NULL, "docker.io/library/golang:latest" },
	{ "golang:1.22", "docker.io", "library/golang", "1.22", NULL, "docker.io/library/golang:1.22" },
	{ "ubuntu:22.04", "docker.io", "library/ubuntu", "22.04", NULL, "docker.io/library/ubuntu:22.04" },
	{ "library/golang", "docker.io", "library/golang", "latest", NULL, "docker.io/library/golang:latest" },
	{ "foo/bar", "docker.io", "foo/bar", "latest", NULL, "docker.io/foo/bar:latest" },
	{ "foo/bar/baz:1", "docker.io", "foo/bar/baz", "1", NULL, "docker.io/foo/bar/baz:1" },
	{ "my-registry/foo", "docker.io", "my-registry/foo", "latest", NULL, "docker.io/my-registry/foo:latest" },
	{ "docker.io/golang", "docker.io", "library/golang", "latest", NULL, "docker.io/library/golang:latest" },
	{ "docker.io/library/golang", "docker.io", "library/golang", "latest", NULL, "docker.io/library/golang:latest" },
	{ "docker.io/foo/bar", "docker.io", "foo/bar", "latest", NULL, "docker.io/foo/bar:latest" },
	{ "index.docker.io/golang", "docker.io", "library/golang", "latest", NULL, "docker.io/library/golang:latest" },
	{ "index.docker.io/foo/bar:x", "docker.io", "foo/bar", "x", NULL, "docker.io/foo/bar:x" },
	{ "localhost/foo", "localhost", "foo", "latest", NULL, "localhost/foo:latest" },
	{ "localhost:5000/foo:bar", "localhost:5000", "foo", "bar", NULL, "localhost:5000/foo:bar" },
	/* No '/': "localhost" is a repository and "5000" its tag. */
	{ "localhost", "docker.io", "library/localhost", "latest", NULL, "docker.io/library/localhost:latest" },
	{ "localhost:5000", "docker.io", "library/localhost", "5000", NULL, "docker.io/library/localhost:5000" },
	{ "127.0.0.1:5000/ns/repo:v1", "127.0.0.1:5000", "ns/repo", "v1", NULL, "127.0.0.1:5000/ns/repo:v1" },
	{ "ghcr.io/owner/image", "ghcr.io", "owner/image", "latest", NULL, "ghcr.io/owner/image:latest" },
	{ "quay.io/a/b@" D64, "quay.io", "a/b", NULL, D64, "quay.io/a/b@" D64 },
	{ "golang@" D64, "docker.io", "library/golang", NULL, D64, "docker.io/library/golang@" D64 },
	{ "golang:1.22@" D64, "docker.io", "library/golang", "1.22", D64, "docker.io/library/golang:1.22@" D64 },
	{ "[::1]:5000/x", "[::1]:5000", "x", "latest", NULL, "[::1]:5000/x:latest" },
	{ "[fe80::1]/x:t", "[fe80::1]", "x", "t", NULL, "[fe80::1]/x:t" },
	{ "[2001:DB8::1]:443/a/b@" D64, "[2001:DB8::1]:443", "a/b", NULL, D64, "[2001:DB8::1]:443/a/b@" D64 },
	{ "registry.example.com:443/a-b/c__d/e.f/g--h_i", "registry.example.com:443", "a-b/c__d/e.f/g--h_i",
	  "latest", NULL, "registry.example.com:443/a-b/c__d/e.f/g--h_i:latest" },
	{ "Registry.Example.COM/foo", "Registry.Example.COM", "foo", "latest", NULL, "Registry.Example.COM/foo:latest" },
	{ "xn--bcher-kva.example/foo", "xn--bcher-kva.example", "foo", "latest", NULL, "xn--bcher-kva.example/foo:latest" },
	{ "a.b/c", "a.b", "c", "latest", NULL, "a.b/c:latest" },
	{ "a-b.c:1/d", "a-b.c:1", "d", "latest", NULL, "a-b.c:1/d:latest" },
	{ "foo:TAG_with.Upper-1", "docker.io", "library/foo", "TAG_with.Upper-1", NULL, "docker.io/library/foo:TAG_with.Upper-1" },
	{ "example.com/foo:_tag", "example.com", "foo", "_tag", NULL, "example.com/foo:_tag" },
	{ "foo/" HEX64, "docker.io", "foo/" HEX64, "latest", NULL, "docker.io/foo/" HEX64 ":latest" },
	{ "a0/b1-2.c3", "docker.io", "a0/b1-2.c3", "latest", NULL, "docker.io/a0/b1-2.c3:latest" },
	{ "0", "docker.io", "library/0", "latest", NULL, "docker.io/library/0:latest" },
	{ "host:65535/x", "host:65535", "x", "latest", NULL, "host:65535/x:latest" },
};

struct bad {
	const char *in;
	const char *why; /* a substring of the message */
};

static const struct bad bads[] = {
	{ "", "empty" },
	{ "Golang", "must be lowercase" },
	{ "foo/Bar", "must be lowercase" },
	{ "localhost:5000/Foo", "must be lowercase" },
	{ "LOCALHOST/foo", "must be lowercase" },
	{ HEX64, "image ID" },
	{ HEX64 ":tag", "image ID" },
	{ HEX64 "@" D64, "image ID" },
	{ "foo:", "empty tag" },
	{ "foo@", "empty digest" },
	{ "foo:tag@", "empty digest" },
	{ "foo@sha256:abc", "malformed digest" },
	{ "foo@sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855", "malformed digest" },
	{ "foo@sha512:cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e",
	  "unsupported digest algorithm" },
	{ "foo@" HEX64, "malformed digest" },
	{ "foo@" D64 ":tag", "malformed digest" },
	{ "foo@bar@" D64, "malformed digest" },
	{ "foo:-bar", "invalid tag" },
	{ "foo:.bar", "invalid tag" },
	{ "foo:bar:baz", "invalid tag" },
	{ "foo:ba r", "invalid tag" },
	{ "foo:b+r", "invalid tag" },
	{ "foo//bar", "empty path component" },
	{ "/foo", "empty path component" },
	{ "foo/", "empty path component" },
	{ "localhost/", "repository name is empty" },
	{ ":tag", "repository name is empty" },
	{ "@" D64, "repository name is empty" },
	{ "-foo", "invalid repository name component" },
	{ "foo-", "invalid repository name component" },
	{ "foo_", "invalid repository name component" },
	{ "foo.", "invalid repository name component" },
	{ "foo..bar", "invalid repository name component" },
	{ "foo___bar", "invalid repository name component" },
	{ "foo._bar", "invalid repository name component" },
	{ "foo bar", "invalid repository name component" },
	{ "foo\tbar", "invalid repository name component" },
	{ "foo\nbar", "invalid repository name component" },
	{ "f\xc3\xb6o", "invalid repository name component" },
	{ "a_b.c/foo", "invalid registry host" },
	{ "-a.com/foo", "invalid registry host" },
	{ "a-.com/foo", "invalid registry host" },
	{ "a..com/foo", "invalid registry host" },
	{ ".a.com/foo", "invalid registry host" },
	{ "a.com./foo", "invalid registry host" },
	{ "a.com:/foo", "invalid registry host" },
	{ "a.com:x/foo", "invalid registry host" },
	{ "a.com:99999/foo", "invalid registry host" },
	{ ":5000/foo", "invalid registry host" },
	{ "[]:5000/x", "invalid registry host" },
	{ "[::1/x", "invalid registry host" },
	{ "[::g]/x", "invalid registry host" },
	{ "[::1]x/y", "invalid registry host" },
	{ "[::1]", "invalid repository name component" },
	{ "https://docker.io/foo", "no URL scheme (drop \"https://\")" },
	{ "http://localhost:5000/x", "no URL scheme" },
};

static void test_good(const struct good *g)
{
	struct mlfs_ref ref;
	struct mlfs_err err = { 0 };
	int r = mlfs_ref_parse(g->in, &ref, &err);
	tap_is_int(r, 0, g->in);
	if (r < 0) {
		tap_diag("%s", err.msg);
		return;
	}
	char name[300];
	snprintf(name, sizeof name, "%s: domain", g->in);
	tap_is_str(ref.domain, g->domain, name);
	snprintf(name, sizeof name, "%s: path", g->in);
	tap_is_str(ref.path, g->path, name);
	snprintf(name, sizeof name, "%s: tag", g->in);
	tap_is_str(ref.tag, g->tag, name);
	snprintf(name, sizeof name, "%s: digest", g->in);
	tap_is_str(ref.digest, g->digest, name);

	char *c = mlfs_ref_canonical(&ref);
	snprintf(name, sizeof name, "%s: canonical", g->in);
	tap_is_str(c, g->canonical, name);

	/* The canonical form is a fixed point. */
	struct mlfs_ref again;
	r = mlfs_ref_parse(c, &again, NULL);
	char *c2 = r == 0 ? mlfs_ref_canonical(&again) : NULL;
	snprintf(name, sizeof name, "%s: canonical re-parses to itself", g->in);
	tap_is_str(c2, c, name);
	free(c2);
	free(c);
	if (r == 0)
		mlfs_ref_clear(&again);
	mlfs_ref_clear(&ref);
}

static void test_bad(const struct bad *b)
{
	struct mlfs_ref ref;
	struct mlfs_err err = { 0 };
	char name[300];
	int r = mlfs_ref_parse(b->in, &ref, &err);
	snprintf(name, sizeof name, "refused: \"%.80s\"", b->in);
	for (char *p = name; *p; p++)
		if ((unsigned char)*p < 0x20)
			*p = '?';
	tap_ok(r == -EINVAL && err.code == EINVAL, "%s", name);
	tap_ok(strstr(err.msg, b->why) != NULL, "  says \"%s\"", b->why);
	if (!strstr(err.msg, b->why))
		tap_diag("message: %s", err.msg);
	tap_ok(!strncmp(err.msg, "invalid reference \"", 19) && !strchr(err.msg, '\n'),
	       "  one line naming the reference");
	tap_ok(!ref.domain && !ref.path && !ref.tag && !ref.digest, "  out left empty");
}

static void test_lengths(void)
{
	struct mlfs_ref ref;
	char buf[600];

	/* docker.io/library/ + 237 = 255 */
	memset(buf, 'a', 237);
	buf[237] = '\0';
	tap_is_int(mlfs_ref_parse(buf, &ref, NULL), 0, "name of exactly 255 characters");
	mlfs_ref_clear(&ref);
	buf[237] = 'a';
	buf[238] = '\0';
	struct mlfs_err err = { 0 };
	tap_is_int(mlfs_ref_parse(buf, &ref, &err), -EINVAL, "name of 256 characters refused");
	tap_ok(strstr(err.msg, "limit is 255") != NULL, "  says the limit");

	memcpy(buf, "foo:", 4);
	memset(buf + 4, 't', 128);
	buf[132] = '\0';
	tap_is_int(mlfs_ref_parse(buf, &ref, NULL), 0, "tag of 128 characters");
	mlfs_ref_clear(&ref);
	buf[132] = 't';
	buf[133] = '\0';
	tap_is_int(mlfs_ref_parse(buf, &ref, NULL), -EINVAL, "tag of 129 characters refused");

	memset(buf, 'x', sizeof buf - 1);
	buf[sizeof buf - 1] = '\0';
	buf[0] = 'X';
	tap_is_int(mlfs_ref_parse(buf, &ref, &err), -EINVAL, "very long input refused");
	tap_ok(strlen(err.msg) < sizeof err.msg - 1 && strstr(err.msg, "...\""),
	       "  message shortens the input");
	tap_ok(strchr(err.msg, '\n') == NULL, "  message is one line");

	tap_is_int(mlfs_ref_parse(NULL, &ref, NULL), -EINVAL, "NULL refused");
	tap_is_int(mlfs_ref_parse("foo\nbar", &ref, &err), -EINVAL, "newline refused");
	tap_ok(strstr(err.msg, "foo\\x0abar") != NULL, "  newline escaped in the message");
}

static void test_accessors(void)
{
	struct mlfs_ref ref;

	tap_is_int(mlfs_ref_parse("golang", &ref, NULL), 0, "parse golang");
	tap_is_str(mlfs_ref_api_host(&ref), "registry-1.docker.io", "docker.io talks to registry-1.docker.io");
	tap_is_str(mlfs_ref_reference(&ref), "latest", "reference is the default tag");
	mlfs_ref_clear(&ref);
	tap_ok(!ref.domain && !ref.path && !ref.tag && !ref.digest, "clear empties the struct");
	mlfs_ref_clear(&ref);
	tap_ok(1, "clearing twice is harmless");
	mlfs_ref_clear(NULL);

	tap_is_int(mlfs_ref_parse("index.docker.io/foo/bar", &ref, NULL), 0, "parse index.docker.io");
	tap_is_str(mlfs_ref_api_host(&ref), "registry-1.docker.io", "index.docker.io talks to registry-1.docker.io");
	mlfs_ref_clear(&ref);

	tap_is_int(mlfs_ref_parse("127.0.0.1:5000/x:1", &ref, NULL), 0, "parse local registry");
	tap_is_str(mlfs_ref_api_host(&ref), "127.0.0.1:5000", "other registries are their own API host");
	tap_is_str(mlfs_ref_reference(&ref), "1", "reference is the tag");
	mlfs_ref_clear(&ref);

	tap_is_int(mlfs_ref_parse("x.io/y:1.0@" D64, &ref, NULL), 0, "parse tag and digest");
	tap_is_str(mlfs_ref_reference(&ref), D64, "the digest wins over the tag");
	tap_is_str(ref.tag, "1.0", "the tag is kept");
	mlfs_ref_clear(&ref);

	tap_is_int(mlfs_ref_parse("x.io/y@" D64, &ref, NULL), 0, "parse digest only");
	tap_is_str(mlfs_ref_reference(&ref), D64, "reference is the digest");
	tap_ok(ref.tag == NULL, "no default tag with a digest");
	mlfs_ref_clear(&ref);

	struct mlfs_ref empty = { 0 };
	tap_ok(mlfs_ref_canonical(&empty) == NULL, "canonical of an empty ref is NULL");
	tap_ok(mlfs_ref_api_host(&empty) == NULL, "api host of an empty ref is NULL");
}

int main(void)
{
	for (size_t i = 0; i < sizeof goods / sizeof goods[0]; i++)
		test_good(&goods[i]);
	for (size_t i = 0; i < sizeof bads / sizeof bads[0]; i++)
		test_bad(&bads[i]);
	test_lengths();
	test_accessors();
	return tap_done();
}
