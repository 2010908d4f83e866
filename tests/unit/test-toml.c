/* The TOML subset reader (fetch/toml.c): what registries.conf and
 * hosts.toml files hold parses into the right tree, and a list of inputs
 * that must fail, each with the file and line in its one-line message. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fetch/internal.h"
#include "tap.h"

static struct mlfs_toml *parse(const char *text, struct mlfs_err *err)
{
	struct mlfs_toml *t = NULL;
	mlfs_err_clear(err);
	int r = mlfs_toml_parse(text, strlen(text), "t.conf", &t, err);
	if ((r == 0) != (t != NULL))
		tap_ok(false, "a tree exactly when it succeeds (r=%d)", r);
	return t;
}

static const struct mlfs_toml *path(const struct mlfs_toml *t, const char *a, const char *b, const char *c)
{
	t = mlfs_toml_get(t, a);
	if (t && b)
		t = mlfs_toml_get(t, b);
	if (t && c)
		t = mlfs_toml_get(t, c);
	return t;
}

static void test_registries_conf(void)
{
	static const char text[] =
		"# a comment\n"
		"unqualified-search-registries = [\"docker.io\", 'quay.io',]  # trailing comma\n"
		"short-name-mode = \"enforcing\"\n"
		"\n"
		"[[registry]]\n"
		"prefix = \"docker.io\"\r\n"
		"location = \"mirror.local:5000/hub\"\n"
		"insecure = false\n"
		"[[registry.mirror]]\n"
		"location = \"m1.example\"\n"
		"pull-from-mirror = \"digest-only\"\n"
		"[[registry.mirror]]\n"
		"\"location\" = 'C:\\no\\escapes'\n"
		"\n"
		"[[registry]]\n"
		"location = \"q.io\"\n"
		"blocked = true\n"
		"a.b.\"c.d\" = -42\n"
		"big = 9_223_372_036_854_775_807\n"
		"small = -9223372036854775808\n"
		"esc = \"tab\\there \\u00e9 \\U0001F600 \\\"q\\\" \\\\\"\n"
		"arr = [\n  \"x\", # inside\n  [1, 2],\n  { k = true },\n]\n"
		"inl = { a = 1, b.c = \"d\" }\n"
		"\n"
		"[aliases]\n"
		"  \"opensuse/leap\" = \"registry.opensuse.org/opensuse/leap\"\n"
		"[x.y]\n"
		"z = 1\n"
		"[x]\n"
		"w = 2\n";
	struct mlfs_err err;
	struct mlfs_toml *t = parse(text, &err);
	tap_ok(t != NULL, "a registries.conf with every construct parses (%s)", err.msg);
	if (!t)
		return;
	const struct mlfs_toml *u = mlfs_toml_get(t, "unqualified-search-registries");
	tap_ok(u && u->kind == MLFS_TOML_ARRAY && u->n == 2 && !strcmp(u->v[1]->str, "quay.io"),
	       "array of strings, literal string, trailing comma");
	const struct mlfs_toml *regs = mlfs_toml_get(t, "registry");
	tap_ok(regs && regs->of_tables && regs->n == 2, "[[registry]] twice: an array of two tables");
	if (regs && regs->n == 2) {
		const struct mlfs_toml *r0 = regs->v[0], *r1 = regs->v[1];
		tap_is_str(path(r0, "location", NULL, NULL)->str, "mirror.local:5000/hub", "CRLF line end");
		const struct mlfs_toml *m = mlfs_toml_get(r0, "mirror");
		tap_ok(m && m->of_tables && m->n == 2, "[[registry.mirror]] goes into the last [[registry]]");
		if (m && m->n == 2) {
			tap_is_str(path(m->v[0], "pull-from-mirror", NULL, NULL)->str, "digest-only", "mirror key");
			tap_is_str(path(m->v[1], "location", NULL, NULL)->str, "C:\\no\\escapes",
				   "quoted key, literal string keeps backslashes");
		}
		tap_ok(path(r1, "blocked", NULL, NULL)->b, "boolean");
		const struct mlfs_toml *cd = path(r1, "a", "b", "c.d");
		tap_ok(cd && cd->kind == MLFS_TOML_INT && cd->i == -42, "dotted key with a quoted dot, negative integer");
		tap_ok(path(r1, "big", NULL, NULL)->i == INT64_MAX, "INT64_MAX with underscores");
		tap_ok(path(r1, "small", NULL, NULL)->i == INT64_MIN, "INT64_MIN");
		tap_is_str(path(r1, "esc", NULL, NULL)->str, "tab\there \xc3\xa9 \xf0\x9f\x98\x80 \"q\" \\", "escapes");
		const struct mlfs_toml *arr = path(r1, "arr", NULL, NULL);
		tap_ok(arr && arr->n == 3 && arr->v[1]->kind == MLFS_TOML_ARRAY && arr->v[1]->n == 2 &&
		       arr->v[2]->kind == MLFS_TOML_TABLE && mlfs_toml_get(arr->v[2], "k")->b,
		       "multi-line array with comments, nested array and inline table");
		tap_is_str(path(r1, "inl", "b", "c")->str, "d", "inline table with a dotted key");
	}
	tap_is_str(path(t, "aliases", "opensuse/leap", NULL)->str, "registry.opensuse.org/opensuse/leap",
		   "quoted key with a slash (shortnames.conf)");
	tap_ok(path(t, "x", "y", "z")->i == 1 && path(t, "x", "w", NULL)->i == 2,
	       "[x] after [x.y] defines the implicit table");
	mlfs_toml_free(t);

	t = parse("", &err);
	tap_ok(t && t->n == 0, "empty file: empty table");
	mlfs_toml_free(t);
	t = parse("\xef\xbb\xbfk = 1", &err);
	tap_ok(t && path(t, "k", NULL, NULL)->i == 1, "BOM, no final newline");
	mlfs_toml_free(t);
}

static void test_hosts_toml(void)
{
	static const char text[] =
		"server = \"https://registry-1.docker.io\"\n"
		"\n"
		"[host.\"https://mirror.example:5000\"]\n"
		"  capabilities = [\"pull\", \"resolve\"]\n"
		"  skip_verify = true\n"
		"  ca = \"/etc/certs/mirror.pem\"\n"
		"[host.\"https://mirror.example:5000\".header]\n"
		"  x-custom = [\"a\"]\n"
		"[host.\"http://10.0.0.1\"]\n"
		"  capabilities = [\"pull\"]\n";
	struct mlfs_err err;
	struct mlfs_toml *t = parse(text, &err);
	tap_ok(t != NULL, "a hosts.toml parses (%s)", err.msg);
	const struct mlfs_toml *h = mlfs_toml_get(t, "host");
	tap_ok(h && h->n == 2 && !strcmp(h->v[0]->key, "https://mirror.example:5000") &&
	       !strcmp(h->v[1]->key, "http://10.0.0.1"), "[host.\"URL\"] tables keep the file's order");
	tap_ok(h && h->n == 2 && path(h->v[0], "header", "x-custom", NULL) != NULL, "a sub-table of a host");
	mlfs_toml_free(t);
}

static void test_must_fail(void)
{
	static const struct { const char *text, *msg; } bad[] = {
		{ "a = 1\na = 2\n", "t.conf:2: key \"a\" is defined twice" },
		{ "[t]\n[t]\n", "t.conf:2: table \"t\" is defined twice (first on line 1)" },
		{ "a = 1\n[a]\n", "t.conf:2: table \"a\" is defined twice (first on line 1)" },
		{ "a = 1\n[[a]]\n", "t.conf:2: \"a\" is already defined (line 1) and is not an array of tables" },
		{ "a = {b = 1}\na.c = 2\n", "t.conf:2: \"a\" is already defined (line 1) and is not a table that can be extended" },
		{ "a = [1]\n[[a]]\n", "t.conf:2: \"a\" is already defined (line 1) and is not an array of tables" },
		{ "a = 1 b = 2\n", "t.conf:1: unexpected 'b' after the value: one key = value per line" },
		{ "a = \"x\n", "t.conf:1: unterminated string" },
		{ "a = \"\"\"x\"\"\"\n", "t.conf:1: multi-line strings are not supported" },
		{ "a = '''x'''\n", "t.conf:1: multi-line strings are not supported" },
		{ "a = 1.5\n", "t.conf:1: floats, dates and times are not supported" },
		{ "a = 1979-05-27\n", "t.conf:1: floats, dates and times are not supported" },
		{ "a = inf\n", "t.conf:1: floats are not supported" },
		{ "a = 0x10\n", "t.conf:1: hexadecimal, octal and binary integers are not supported" },
		{ "a = 012\n", "t.conf:1: leading zeros in an integer" },
		{ "a = 9223372036854775808\n", "t.conf:1: integer out of range" },
		{ "a = 1__0\n", "t.conf:1: misplaced '_' in a number" },
		{ "a = \"\\x\"\n", "t.conf:1: unknown escape \\x" },
		{ "a = \"\\u00\"\n", "t.conf:1: short \\u escape" },
		{ "a = \"\\ud800\"\n", "t.conf:1: \\u escape of U+D800 is not allowed here" },
		{ "a = \"\\u0000\"\n", "t.conf:1: \\u escape of U+0000 is not allowed here" },
		{ "a = \"x\x01\"\n", "t.conf:1: control character 0x01 in a string" },
		{ "a = \n", "t.conf:1: expected a value" },
		{ "a\n", "t.conf:1: expected '=' after the key \"a\"" },
		{ "= 1\n", "t.conf:1: expected a key, found '='" },
		{ "\n\n[a\n", "t.conf:3: expected ']' to end the table header" },
		{ "[[a]\n", "t.conf:1: expected ']]' to end the table header" },
		{ "a = [1, 2\n", "t.conf:2: expected ',' or ']' in an array" },
		{ "a = [1,\n", "t.conf:2: unterminated array" },
		{ "a = [1 2]\n", "t.conf:1: expected ',' or ']' in an array" },
		{ "a = {b = 1,\n c = 2}\n", "t.conf:1: expected a key" },
		{ "a = yes\n", "t.conf:1: invalid value starting with 'y'" },
		{ "a = truex\n", "t.conf:1: invalid value starting with 't'" },
		{ "a = [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]\n",
		  "t.conf:1: values nested too deeply" },
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		struct mlfs_err err;
		struct mlfs_toml *t = parse(bad[i].text, &err);
		tap_ok(!t && err.code == EINVAL, "refused: %s", bad[i].msg);
		tap_is_str(err.msg, bad[i].msg, "  its message");
		mlfs_toml_free(t);
	}
	struct mlfs_err err;
	struct mlfs_toml *t = NULL;
	tap_ok(mlfs_toml_parse("a = 1\0", 6, "t.conf", &t, &err) == -EINVAL && !t, "a NUL byte is refused");
}

/* The real files on this machine (Debian's containers-common), when there. */
static void test_system_files(void)
{
	static const char *files[] = { "/etc/containers/registries.conf",
				       "/etc/containers/registries.conf.d/shortnames.conf" };
	for (size_t i = 0; i < 2; i++) {
		FILE *f = fopen(files[i], "re");
		if (!f) {
			tap_ok(true, "# SKIP %s is not there", files[i]);
			continue;
		}
		static char buf[1 << 20];
		size_t n = fread(buf, 1, sizeof buf, f);
		fclose(f);
		struct mlfs_err err;
		struct mlfs_toml *t = NULL;
		tap_ok(mlfs_toml_parse(buf, n, files[i], &t, &err) == 0, "%s parses (%s)", files[i], err.msg);
		mlfs_toml_free(t);
	}
}

int main(void)
{
	test_registries_conf();
	test_hosts_toml();
	test_must_fail();
	test_system_files();
	return tap_done();
}
