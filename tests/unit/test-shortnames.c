/* Short names (fetch/shortconf.c, fetch/shortname.c): the settings as
 * registries.conf files give them, merged in loading order, and the
 * decision table — alias, one or several search registries under each
 * short-name-mode, Docker's rule when no file exists, and the refusals. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/dirs.h"
#include "fetch/internal.h"
#include "conftree.h"
#include "tap.h"

static char root[64];

static void put(const char *rel, const char *text)
{
	conftree_put(root, rel, text);
}

static void drop(const char *rel)
{
	conftree_drop(root, rel);
}

/* "how: cand, cand (origin)" or "error: message", with the root shown as ROOT. */
static void show(int r, const struct mlfs_short_result *res, const struct mlfs_err *err, char *buf, size_t len)
{
	static const char *const how[] = { "qualified", "alias", "search", "docker" };
	char tmp[2048];
	if (r < 0) {
		snprintf(tmp, sizeof tmp, "error: %s", err->msg);
	} else {
		snprintf(tmp, sizeof tmp, "%s:", how[res->how]);
		for (size_t i = 0; i < res->n; i++)
			snprintf(tmp + strlen(tmp), sizeof tmp - strlen(tmp), "%s %s", i ? "," : "", res->candidates[i]);
		if (res->origin)
			snprintf(tmp + strlen(tmp), sizeof tmp - strlen(tmp), " (%s)", res->origin);
	}
	buf[0] = '\0';
	for (const char *p = tmp; *p;) {
		const char *at = strstr(p, root);
		size_t n = at ? (size_t)(at - p) : strlen(p);
		snprintf(buf + strlen(buf), len - strlen(buf), "%.*s%s", (int)n, p, at ? "ROOT" : "");
		p += n + (at ? strlen(root) : 0);
	}
}

/* Resolves `input` with the files now under root. */
static void expect(const char *input, const char *want, const char *name)
{
	struct mlfs_mirror_opts o = { .root = root, .home = "/nonexistent" };
	struct mlfs_short_result res;
	struct mlfs_err err = { 0 };
	int r = mlfs_shortname_resolve(input, &o, &res, &err);
	char got[2048];
	show(r, &res, &err, got, sizeof got);
	tap_is_str(got, want, name);
	if (r == 0)
		mlfs_short_result_clear(&res);
}

static void test_is_short(void)
{
	static const struct {
		const char *in;
		bool want;
	} t[] = {
		{ "busybox", true }, { "busybox:1.36", true }, { "library/busybox:1.36", true }, { "myorg/app", true },
		{ "busybox@sha256:0123", true }, { "a/b/c", true }, { "docker.io/busybox", false },
		{ "localhost/x", false }, { "localhost:5000/x", false }, { "127.0.0.1:5000/x:1", false },
		{ "quay.io/a/b@sha256:0", false }, { "localhostx/y", true },
	};
	for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
		tap_ok(mlfs_ref_is_short(t[i].in) == t[i].want, "%s is %sa short name", t[i].in, t[i].want ? "" : "not ");
}

#define D64 "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

static void test_decisions(void)
{
	/* Nothing at all: Docker's rule. */
	expect("busybox", "docker: busybox", "no registries.conf: Docker's rule");
	expect("myorg/app:1", "docker: myorg/app:1", "... for a two-part name too");
	expect("ghcr.io/a/b", "qualified: ghcr.io/a/b", "a registry in it: as written");
	expect("Busybox", "error: invalid reference \"Busybox\": repository name must be lowercase",
	       "an invalid reference is reported in the user's words");

	/* A drop-in alone is a configuration: the containers way. */
	put("etc/containers/registries.conf.d/shortnames.conf", "[aliases]\n\"busybox\" = \"docker.io/busybox\"\n"
							       "\"lib/x\" = \"127.0.0.1:5000/team/x\"\n");
	expect("busybox", "alias: docker.io/library/busybox (ROOT/etc/containers/registries.conf.d/shortnames.conf:2)",
	       "alias from a drop-in, value normalised");
	expect("busybox:1.36@" D64, "alias: docker.io/library/busybox:1.36@" D64
	       " (ROOT/etc/containers/registries.conf.d/shortnames.conf:2)", "tag and digest put back on the alias");
	expect("lib/x:2", "alias: 127.0.0.1:5000/team/x:2 (ROOT/etc/containers/registries.conf.d/shortnames.conf:3)",
	       "a two-part alias");
	expect("library/busybox", "error: short name \"library/busybox\" did not resolve to an alias and no "
	       "unqualified-search registries are defined in ROOT/etc/containers/registries.conf.d/shortnames.conf: "
	       "use a fully-qualified reference (e.g. docker.io/library/busybox) or add an alias or "
	       "unqualified-search-registries", "library/busybox is not the alias busybox; no search list: refused");

	/* registries.conf with search registries, drop-ins on top. */
	put("etc/containers/registries.conf", "unqualified-search-registries = [\"127.0.0.1:5000\"]\n");
	expect("myorg/app", "search: 127.0.0.1:5000/myorg/app (ROOT/etc/containers/registries.conf)",
	       "one search registry: used alone");
	expect("busybox", "alias: docker.io/library/busybox (ROOT/etc/containers/registries.conf.d/shortnames.conf:2)",
	       "an alias wins over the search list");
	put("etc/containers/registries.conf", "unqualified-search-registries = [\"127.0.0.1:5000\", \"docker.io\"]\n");
	expect("app:1", "search: 127.0.0.1:5000/app:1, docker.io/app:1 (ROOT/etc/containers/registries.conf)",
	       "two, permissive by default: each in order");
	put("etc/containers/registries.conf.d/50-mode.conf", "short-name-mode = \"enforcing\"\n");
	expect("app:1", "error: short name \"app:1\" is ambiguous: the unqualified-search registries of "
	       "ROOT/etc/containers/registries.conf give 127.0.0.1:5000/app:1, docker.io/app:1 and short-name-mode is "
	       "\"enforcing\" (ROOT/etc/containers/registries.conf.d/50-mode.conf); use a fully-qualified reference or "
	       "add an [aliases] entry for it", "two, enforcing: refused, naming the candidates");
	expect("lib/x", "alias: 127.0.0.1:5000/team/x (ROOT/etc/containers/registries.conf.d/shortnames.conf:3)",
	       "enforcing: an alias still resolves");
	put("etc/containers/registries.conf.d/60-mode.conf", "short-name-mode = \"disabled\"\n");
	expect("app", "search: 127.0.0.1:5000/app, docker.io/app (ROOT/etc/containers/registries.conf)",
	       "a later drop-in's mode wins: disabled tries each");
	put("etc/containers/registries.conf.d/zz-erase.conf", "[aliases]\n\"busybox\" = \"\"\n");
	expect("busybox", "search: 127.0.0.1:5000/busybox, docker.io/busybox (ROOT/etc/containers/registries.conf)",
	       "\"\" in a later file (name order: after shortnames.conf) erases an alias");
	put("etc/containers/registries.conf.d/80-one.conf", "unqualified-search-registries = [\"quay.io\"]\n");
	expect("app", "search: quay.io/app (ROOT/etc/containers/registries.conf.d/80-one.conf)",
	       "a later file's search list replaces the earlier");
	put("etc/containers/registries.conf.d/90-none.conf", "unqualified-search-registries = []\n");
	expect("app", "error: short name \"app\" did not resolve to an alias and no unqualified-search registries are "
	       "defined in ROOT/etc/containers/registries.conf.d/90-none.conf: use a fully-qualified reference (e.g. "
	       "docker.io/app) or add an alias or unqualified-search-registries", "... even with []");
	expect("docker.io/app", "qualified: docker.io/app", "qualified names ignore all of it");
	for (const char *const *f = (const char *const[]){ "50-mode", "60-mode", "zz-erase", "80-one", "90-none", NULL };
	     *f; f++) {
		char rel[128];
		snprintf(rel, sizeof rel, "etc/containers/registries.conf.d/%s.conf", *f);
		drop(rel);
	}

	/* Version 1's [registries.search] is the search list (ConvertToV2). */
	put("etc/containers/registries.conf", "[registries.search]\nregistries = [\"127.0.0.1:5000\", 'docker.io']\n");
	expect("app", "search: 127.0.0.1:5000/app, docker.io/app (ROOT/etc/containers/registries.conf)",
	       "[registries.search]: each in order");
	put("etc/containers/registries.conf", "[registries.search]\nregistries = [\"quay.io/ns\"]\n");
	expect("app", "error: ROOT/etc/containers/registries.conf:2: invalid unqualified-search-registries entry "
	       "\"quay.io/ns\": want a registry host[:port]", "[registries.search]: checked as the v2 list");
}

static void test_errors(void)
{
	static const struct {
		const char *text, *want, *name;
	} t[] = {
		{ "[aliases]\n\"busybox\" = \"busybox:1\"\n",
		  "error: ROOT/etc/containers/registries.conf:2: invalid alias \"busybox\" = \"busybox:1\": the value must "
		  "be a fully-qualified repository (registry/repository, no tag or digest)", "alias value not qualified" },
		{ "[aliases]\n\n\"x\" = \"quay.io/x:1\"\n",
		  "error: ROOT/etc/containers/registries.conf:3: invalid alias \"x\" = \"quay.io/x:1\": the value must be "
		  "a fully-qualified repository (registry/repository, no tag or digest)", "alias value with a tag" },
		{ "[aliases]\n\"quay.io/x\" = \"quay.io/x\"\n",
		  "error: ROOT/etc/containers/registries.conf:2: invalid alias name \"quay.io/x\": want a short name (no "
		  "registry, tag or digest)", "alias name with a registry" },
		{ "[aliases]\n\"x:1\" = \"quay.io/x\"\n",
		  "error: ROOT/etc/containers/registries.conf:2: invalid alias name \"x:1\": want a short name (no "
		  "registry, tag or digest)", "alias name with a tag" },
		{ "[aliases]\n\"x\" = 3\n", "error: ROOT/etc/containers/registries.conf:2: alias \"x\" must be a string",
		  "alias not a string" },
		{ "aliases = 1\n", "error: ROOT/etc/containers/registries.conf:1: \"aliases\" must be a table ([aliases])",
		  "aliases not a table" },
		{ "[aliases]\n\"x\" = \"quay.io/x\"\n\"x\" = \"quay.io/y\"\n", NULL, "an alias twice in one file" },
		{ "unqualified-search-registries = \"quay.io\"\n",
		  "error: ROOT/etc/containers/registries.conf:1: \"unqualified-search-registries\" must be an array of "
		  "strings", "search list not an array" },
		{ "unqualified-search-registries = [\"quay.io/ns\"]\n",
		  "error: ROOT/etc/containers/registries.conf:1: invalid unqualified-search-registries entry \"quay.io/ns\": "
		  "want a registry host[:port]", "search entry with a path" },
		{ "short-name-mode = \"prompt\"\n",
		  "error: ROOT/etc/containers/registries.conf:1: invalid short-name-mode \"prompt\" (enforcing, permissive "
		  "or disabled)", "unknown mode" },
		{ "[aliases\n", NULL, "a syntax error" },
	};
	for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
		put("etc/containers/registries.conf", t[i].text);
		if (t[i].want) {
			expect("x", t[i].want, t[i].name);
			continue;
		}
		struct mlfs_mirror_opts o = { .root = root, .home = "/nonexistent" };
		struct mlfs_short_result res;
		struct mlfs_err err = { 0 };
		int r = mlfs_shortname_resolve("x", &o, &res, &err);
		tap_ok(r == -EINVAL && strstr(err.msg, "/etc/containers/registries.conf:"), "%s: file:line (%s)", t[i].name,
		       err.msg);
	}
	drop("etc/containers/registries.conf");
}

int main(void)
{
	snprintf(root, sizeof root, "/tmp/mlfs-shortnames.XXXXXX");
	if (!mkdtemp(root))
		return 99;
	test_is_short();
	test_decisions();
	test_errors();
	char cmd[128];
	snprintf(cmd, sizeof cmd, "rm -rf %s", root);
	if (system(cmd) != 0)
		return 99;
	return tap_done();
}
