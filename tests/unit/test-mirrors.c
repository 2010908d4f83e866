/* Building a reference's endpoint list (fetch/mirrors.c) from each kind
 * of file — registries.conf and its drop-ins, containerd's hosts.toml,
 * Docker's daemon.json — in a throwaway configuration root, and which
 * one wins when several exist; the refusals (blocked, malformed). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/dirs.h"
#include "fetch/internal.h"
#include "conftree.h"
#include "tap.h"

static char root[64], home[128];

static void put(const char *rel, const char *text)
{
	conftree_put(root, rel, text);
}

static void drop(const char *rel)
{
	conftree_drop(root, rel);
}

/* "mirror host/repo [i] [d|t] [{Name: value|...}]; ...; upstream host/repo" */
static void describe(const struct mlfs_endpoints *e, char *buf, size_t len)
{
	buf[0] = '\0';
	for (size_t i = 0; i < e->n; i++) {
		const struct mlfs_endpoint *p = &e->v[i];
		size_t at = strlen(buf);
		snprintf(buf + at, len - at, "%s%s %s/%s%s%s", i ? "; " : "", p->mirror ? "mirror" : "upstream", p->host,
			 p->repo, p->insecure ? " i" : "",
			 p->pull == MLFS_PULL_DIGEST_ONLY ? " d" : p->pull == MLFS_PULL_TAG_ONLY ? " t" : "");
		if (p->headers) {
			at = strlen(buf);
			snprintf(buf + at, len - at, " {%.*s}", (int)strlen(p->headers) - 1, p->headers);
			for (char *c = buf + at; *c; c++)
				if (*c == '\n')
					*c = '|';
		}
	}
}

static int endpoints(const char *reference, const char *option, char *buf, size_t len, struct mlfs_err *err)
{
	struct mlfs_ref ref;
	struct mlfs_err e;
	if (mlfs_ref_parse(reference, &ref, &e) < 0) {
		tap_ok(false, "parse %s", reference);
		return -EINVAL;
	}
	struct mlfs_mirror_opts o = { .registries_conf = option, .root = root, .home = home };
	struct mlfs_endpoints eps;
	mlfs_err_clear(err);
	int r = mlfs_endpoints_for(&ref, &o, &eps, err);
	buf[0] = '\0';
	if (r == 0)
		describe(&eps, buf, len);
	mlfs_endpoints_clear(&eps);
	mlfs_ref_clear(&ref);
	return r;
}

static void expect(const char *reference, const char *option, const char *want, const char *name)
{
	char got[2048];
	struct mlfs_err err;
	int r = endpoints(reference, option, got, sizeof got, &err);
	if (r < 0)
		tap_diag("error: %s", err.msg);
	tap_is_str(got, want, name);
}

/* msg with "ROOT" standing for the configuration root. */
static void expect_error(const char *reference, const char *option, int code, const char *msg, const char *name)
{
	char got[2048], want[2048];
	struct mlfs_err err;
	int r = endpoints(reference, option, got, sizeof got, &err);
	tap_ok(r == -code, "%s: refused", name);
	const char *at = strstr(msg, "/tmp/ROOT");
	if (at)
		snprintf(want, sizeof want, "%.*s%s%s", (int)(at - msg), msg, root, at + strlen("/tmp/ROOT"));
	else
		snprintf(want, sizeof want, "%s", msg);
	tap_is_str(err.msg, want, name);
}

static const char regconf[] =
	"unqualified-search-registries = [\"docker.io\"]\n"
	"[[registry]]\n"
	"prefix = \"docker.io\"\n"
	"location = \"docker.io\"\n"
	"[[registry.mirror]]\n"
	"location = \"127.0.0.1:5001\"\n"
	"[[registry.mirror]]\n"
	"location = \"cache.example/hub/\"\n"
	"insecure = true\n"
	"pull-from-mirror = \"digest-only\"\n"
	"\n"
	"[[registry]]\n"
	"prefix = \"docker.io/library/busybox\"\n"
	"location = \"internal.example:5000/bb\"\n"
	"\n"
	"[[registry]]\n"
	"prefix = \"*.corp.example\"\n"
	"mirror-by-digest-only = true\n"
	"[[registry.mirror]]\n"
	"location = \"corp-mirror.example\"\n"
	"\n"
	"[[registry]]\n"
	"location = \"bad.example\"\n"
	"blocked = true\n"
	"\n"
	"[[registry]]\n"
	"prefix = \"tags.example\"\n"
	"location = \"tags.example\"\n"
	"insecure = true\n"
	"[[registry.mirror]]\n"
	"location = \"tagmirror.example\"\n"
	"pull-from-mirror = \"tag-only\"\n";

static void test_registries_conf(void)
{
	put("etc/containers/registries.conf", regconf);
	expect("127.0.0.1:5000/demo:1", NULL, "upstream 127.0.0.1:5000/demo", "no entry: the registry alone");
	expect("alpine", NULL,
	       "mirror 127.0.0.1:5001/library/alpine; mirror cache.example/hub/library/alpine i d; "
	       "upstream registry-1.docker.io/library/alpine",
	       "docker.io: mirrors in order (trailing slash dropped), then Docker Hub's API host");
	expect("busybox:1.36", NULL, "upstream internal.example:5000/bb",
	       "the longest prefix wins; location rewrites the repository");
	expect("docker.io/library/busyboxx", NULL,
	       "mirror 127.0.0.1:5001/library/busyboxx; mirror cache.example/hub/library/busyboxx i d; "
	       "upstream registry-1.docker.io/library/busyboxx", "a prefix matches at a path boundary only");
	expect("git.corp.example/team/app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", NULL,
	       "mirror corp-mirror.example/team/app d; upstream git.corp.example/team/app",
	       "wildcard prefix: the host's own location; mirror-by-digest-only");
	expect("corp.example/x", NULL, "upstream corp.example/x", "*.corp.example does not match corp.example");
	expect("tags.example/x", NULL, "mirror tagmirror.example/x t; upstream tags.example/x i", "tag-only, insecure");
	expect_error("bad.example/x/y:1", NULL, EACCES,
		     "bad.example/x/y: the registry is blocked by /tmp/ROOT/etc/containers/registries.conf "
		     "([[registry]] prefix \"bad.example\", blocked = true)", "blocked");
}

static void test_dropins_and_option(void)
{
	put("etc/containers/registries.conf.d/10-a.conf",
	    "[[registry]]\nprefix = \"docker.io\"\nlocation = \"docker.io\"\n"
	    "[[registry.mirror]]\nlocation = \"dropin-a.example\"\n");
	put("etc/containers/registries.conf.d/20-b.conf",
	    "[[registry]]\nprefix = \"docker.io\"\nlocation = \"docker.io\"\n"
	    "[[registry.mirror]]\nlocation = \"dropin-b.example\"\n");
	put("etc/containers/registries.conf.d/skip.txt", "not toml [");
	expect("alpine", NULL, "mirror dropin-b.example/library/alpine; upstream registry-1.docker.io/library/alpine",
	       "drop-ins in name order, the later overrides");
	expect("busybox", NULL, "upstream internal.example:5000/bb", "the main file's other entries stay");

	put("opt.conf", "[[registry]]\nprefix = \"quay.io\"\nlocation = \"quay.io\"\n"
			"[[registry.mirror]]\nlocation = \"q-mirror.example\"\n");
	char opt[256];
	snprintf(opt, sizeof opt, "%s/opt.conf", root);
	expect("quay.io/a/b", opt, "mirror q-mirror.example/a/b; upstream quay.io/a/b",
	       "--registries-conf replaces the main file");
	expect("busybox", opt, "mirror dropin-b.example/library/busybox; upstream registry-1.docker.io/library/busybox",
	       "... the drop-ins still apply (as skopeo's --registries-conf)");
	drop("etc/containers/registries.conf.d/10-a.conf");
	drop("etc/containers/registries.conf.d/20-b.conf");

	/* The user's file replaces the system's. */
	put("home/.config/containers/registries.conf",
	    "[[registry]]\nprefix = \"docker.io\"\nlocation = \"docker.io\"\n"
	    "[[registry.mirror]]\nlocation = \"user-mirror.example\"\n");
	expect("busybox", NULL, "mirror user-mirror.example/library/busybox; upstream registry-1.docker.io/library/busybox",
	       "$HOME/.config/containers/registries.conf replaces /etc's");
	drop("home/.config/containers/registries.conf");

	expect_error("busybox", "/nonexistent/r.conf", ENOENT,
		     "registries configuration /nonexistent/r.conf does not exist", "a missing --registries-conf");
}

static void test_conf_errors(void)
{
	static const struct { const char *text, *msg; } bad[] = {
		{ "[[registry]]\nprefix = \"a.io\"\nlocation = \"a.io\"\n[[registry.mirror]]\n"
		  "location = \"m.io\"\npull-from-mirror = \"sometimes\"\n",
		  "registries.conf:6: unsupported pull-from-mirror value \"sometimes\" (all, digest-only or tag-only)" },
		{ "[[registry]]\ninsecure = true\n",
		  "registries.conf:1: invalid condition: both location and prefix are unset" },
		{ "[[registry]]\nprefix = \"a.io\"\n",
		  "registries.conf:1: invalid condition: location is unset and prefix is not in the format: "
		  "*.example.com" },
		{ "[[registry]]\nlocation = \"https://a.io\"\n",
		  "registries.conf:2: invalid location \"https://a.io\": URI schemes are not supported" },
		{ "[[registry]]\nlocation = \"a.io\"\ninsecure = \"yes\"\n",
		  "registries.conf:3: \"insecure\" must be true or false" },
		{ "[[registry]]\nlocation = \"a.io\"\nmirror-by-digest-only = true\n[[registry.mirror]]\n"
		  "location = \"m.io\"\npull-from-mirror = \"all\"\n",
		  "registries.conf:6: cannot set mirror-by-digest-only for the registry and pull-from-mirror for a "
		  "mirror at the same time" },
		{ "[[registry]]\nlocation = \"a.io\"\n[[registry.mirror]]\ninsecure = true\n",
		  "registries.conf:3: invalid condition: mirror location is unset" },
		{ "[registry]\nlocation = \"a.io\"\n",
		  "registries.conf:1: \"registry\" must be an array of tables ([[registry]])" },
		{ "[[registry]]\nlocation = \"a.io\"\npull-from-mirror = \"all\"\n",
		  "registries.conf:3: pull-from-mirror must not be set for a non-mirror registry" },
		{ "[[registry]\n", "registries.conf:1: expected ']]' to end the table header" },
		{ "[[registry]]\nprefix = \"docker.io\"\nlocation = \"user@evil.example\"\n",
		  "registries.conf: location \"user@evil.example\" does not name a registry host and repository for "
		  "this reference" },
		{ "[[registry]]\nprefix = \"docker.io\"\nlocation = \"docker.io\"\n[[registry.mirror]]\n"
		  "location = \"m.example/Upper\"\n",
		  "registries.conf: location \"m.example/Upper\" does not name a registry host and repository for "
		  "this reference" },
		{ "[[registry]]\n\"pre\\nfix\" = 1\n\"pre\\nfix\" = 2\n",
		  "registries.conf:3: key \"pre\\x0afix\" is defined twice" },
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		put("etc/containers/registries.conf", bad[i].text);
		char want[1024];
		snprintf(want, sizeof want, "/tmp/ROOT/etc/containers/%s", bad[i].msg);
		expect_error("busybox", NULL, EINVAL, want, bad[i].msg);
	}
	char many[4096] = "[[registry]]\nlocation = \"docker.io\"\n";
	for (int i = 0; i < 16; i++)
		snprintf(many + strlen(many), sizeof many - strlen(many), "[[registry.mirror]]\nlocation = \"m%d.example\"\n", i);
	put("etc/containers/registries.conf", many);
	expect_error("busybox", NULL, E2BIG, "docker.io/library/busybox: /tmp/ROOT/etc/containers/registries.conf lists "
		     "16 mirrors for it: at most 15 are supported", "a bound on the endpoints");
	put("etc/containers/registries.conf", "[[registry]]\nlocation = \"a.io\"\nunknown-key = 1\n[other]\nx = 1\n");
	expect("busybox", NULL, "upstream registry-1.docker.io/library/busybox", "unknown keys are ignored");
	drop("etc/containers/registries.conf");
}

/* Version 1, converted as containers/image's ConvertToV2 does. */
static void test_v1(void)
{
	put("etc/containers/registries.conf",
	    "# an old file\n"
	    "[registries.search]\nregistries = ['docker.io', 'quay.io']\n\n"
	    "[registries.insecure]\nregistries = [\"ins.example:5000\", \"both.example/\"]\n\n"
	    "[registries.block]\nregistries = [\"bad.example\", \"both.example\"]\n");
	expect("ins.example:5000/x", NULL, "upstream ins.example:5000/x i", "[registries.insecure]: plain HTTP allowed");
	expect("ins.example/y", NULL, "upstream ins.example/y", "... that host and port only");
	expect("busybox", NULL, "upstream registry-1.docker.io/library/busybox", "other registries as they are");
	expect_error("bad.example/x/y:1", NULL, EACCES,
		     "bad.example/x/y: the registry is blocked by /tmp/ROOT/etc/containers/registries.conf "
		     "([registries.block] lists \"bad.example\")", "[registries.block]");
	expect_error("both.example/x", NULL, EACCES,
		     "both.example/x: the registry is blocked by /tmp/ROOT/etc/containers/registries.conf "
		     "([registries.block] lists \"both.example\")", "insecure and blocked: one entry, blocked");

	/* A v2 drop-in still applies on top of a v1 main file. */
	put("etc/containers/registries.conf.d/10-a.conf",
	    "[[registry]]\nprefix = \"ins.example:5000\"\nlocation = \"ins.example:5000\"\n"
	    "[[registry.mirror]]\nlocation = \"m.example\"\n");
	expect("ins.example:5000/x", NULL, "mirror m.example/x; upstream ins.example:5000/x",
	       "a drop-in's entry replaces the converted one");
	drop("etc/containers/registries.conf.d/10-a.conf");

	/* Empty v1 lists are no v1 at all: a v2 file may carry them. */
	put("etc/containers/registries.conf", "[registries.search]\nregistries = []\n"
					      "[[registry]]\nlocation = \"bad.example\"\nblocked = true\n");
	expect_error("bad.example/x", NULL, EACCES,
		     "bad.example/x: the registry is blocked by /tmp/ROOT/etc/containers/registries.conf "
		     "([[registry]] prefix \"bad.example\", blocked = true)", "empty v1 tables beside v2");

	static const struct { const char *file, *text, *msg; } bad[] = {
		{ "registries.conf", "unqualified-search-registries = ['a.io']\n[registries.search]\nregistries = ['b.io']\n",
		  "registries.conf:1: mixing sysregistry v1/v2 is not supported: this file has [registries.*] tables "
		  "and unqualified-search-registries" },
		{ "registries.conf", "[registries.block]\nregistries = ['b.io']\n[[registry]]\nlocation = 'a.io'\n",
		  "registries.conf:3: mixing sysregistry v1/v2 is not supported: this file has [registries.*] tables "
		  "and registry" },
		{ "registries.conf", "[registries.insecure]\nregistries = [1]\n",
		  "registries.conf:2: \"registries\" must be an array of strings in [registries.insecure" },
		{ "registries.conf", "[registries.block]\nregistries = ['https://b.io']\n",
		  "registries.conf:2: invalid location \"https://b.io\": URI schemes are not supported" },
		{ "registries.conf", "registries = ['a.io']\n",
		  "registries.conf:1: \"registries\" must be version 1's tables ([registries.search] ...)" },
		{ "registries.conf.d/x.conf", "[registries.search]\nregistries = ['b.io']\n",
		  "registries.conf.d/x.conf:1: registry must be in v2 format but is in v1 (a registries.conf.d drop-in "
		  "takes [[registry]] tables and unqualified-search-registries only)" },
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		char path[256], want[1024];
		snprintf(path, sizeof path, "etc/containers/%s", bad[i].file);
		put(path, bad[i].text);
		snprintf(want, sizeof want, "/tmp/ROOT/etc/containers/%s", bad[i].msg);
		expect_error("busybox", NULL, EINVAL, want, bad[i].msg);
		drop(path);
	}
}

static void test_hosts_and_daemon(void)
{
	put("etc/containerd/certs.d/127.0.0.1:5000/hosts.toml",
	    "server = \"http://127.0.0.1:5000\"\n"
	    "[host.\"http://127.0.0.1:5001\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
	    "[host.\"https://pull-only.example\"]\n  capabilities = [\"pull\"]\n  ca = [\"/etc/ca.pem\"]\n"
	    "[host.\"https://push-only.example\"]\n  capabilities = [\"push\"]\n"
	    "[host.\"https://path.example/v2/proxy\"]\n"
	    "[host.\"https://harbor.example/v2/hub-proxy/\"]\n  override_path = true\n"
	    "[host.\"https://root.example/v2\"]\n  override_path = true\n"
	    "[host.\"https://custom.example/api\"]\n  override_path = true\n"
	    "[host.\"https://noverify.example\"]\n  skip_verify = true\n");
	expect("127.0.0.1:5000/demo:1", NULL,
	       "mirror 127.0.0.1:5001/demo i; mirror pull-only.example/demo d; mirror harbor.example/hub-proxy/demo; "
	       "mirror root.example/demo; mirror noverify.example/demo i; upstream 127.0.0.1:5000/demo i",
	       "hosts.toml: hosts in order (pull only: digests; push only skipped; override_path under /v2 as a "
	       "repository prefix, other API roots skipped), then server");
	put("etc/containerd/certs.d/hdr.example/hosts.toml",
	    "server = \"https://hdr.example\"\n[header]\n  x-upstream = \"u\"\n"
	    "[host.\"https://m.example\"]\n  [host.\"https://m.example\".header]\n"
	    "    X-Custom = \"one\"\n    x-list = [\"a\", \"b c\"]\n");
	expect("hdr.example/app", NULL, "mirror m.example/app {X-Custom: one|x-list: a|x-list: b c}; "
	       "upstream hdr.example/app {x-upstream: u}", "hosts.toml headers: per host and the top-level server's");
	static const struct { const char *text, *msg; } bad_headers[] = {
		{ "[host.\"https://m.example\".header]\n  \"x y\" = \"1\"\n", "hosts.toml:2: \"x y\" is not a header name" },
		{ "[host.\"https://m.example\".header]\n  x = \"1\\r\\nInjected: yes\"\n",
		  "hosts.toml:2: header \"x\" must be a string or a list of strings, each on one line" },
		{ "[host.\"https://m.example\".header]\n  x = [1]\n",
		  "hosts.toml:2: header \"x\" must be a string or a list of strings, each on one line" },
		{ "[host.\"https://m.example\"]\n  header = 1\n", "hosts.toml:2: \"header\" must be a table of names" },
	};
	for (size_t i = 0; i < sizeof bad_headers / sizeof bad_headers[0]; i++) {
		char want[512];
		put("etc/containerd/certs.d/hdr.example/hosts.toml", bad_headers[i].text);
		snprintf(want, sizeof want, "/tmp/ROOT/etc/containerd/certs.d/hdr.example/%s", bad_headers[i].msg);
		expect_error("hdr.example/app", NULL, EINVAL, want, bad_headers[i].msg);
	}
	drop("etc/containerd/certs.d/hdr.example/hosts.toml");
	put("etc/containerd/certs.d/docker.io/hosts.toml", "[host.\"https://hub-mirror.example\"]\n");
	expect("alpine", NULL, "mirror hub-mirror.example/library/alpine; upstream registry-1.docker.io/library/alpine",
	       "hosts.toml without server: the registry itself");
	put("etc/docker/daemon.json", "{\"registry-mirrors\": [\"https://d-mirror.example\", \"http://10.1.1.1:5000/\"],"
				      " \"debug\": true}");
	expect("alpine", NULL, "mirror hub-mirror.example/library/alpine; upstream registry-1.docker.io/library/alpine",
	       "hosts.toml before daemon.json");
	drop("etc/containerd/certs.d/docker.io/hosts.toml");
	expect("alpine", NULL,
	       "mirror d-mirror.example/library/alpine; mirror 10.1.1.1:5000/library/alpine i; "
	       "upstream registry-1.docker.io/library/alpine", "daemon.json registry-mirrors");
	expect("quay.io/a/b", NULL, "upstream quay.io/a/b", "daemon.json: docker.io only");

	put("etc/containers/registries.conf", "[[registry]]\nlocation = \"docker.io\"\n[[registry.mirror]]\n"
					      "location = \"rc-mirror.example\"\n");
	expect("alpine", NULL, "mirror rc-mirror.example/library/alpine; upstream registry-1.docker.io/library/alpine",
	       "registries.conf before hosts.toml and daemon.json");
	expect("127.0.0.1:5000/demo", NULL,
	       "mirror 127.0.0.1:5001/demo i; mirror pull-only.example/demo d; mirror harbor.example/hub-proxy/demo; "
	       "mirror root.example/demo; mirror noverify.example/demo i; upstream 127.0.0.1:5000/demo i",
	       "... when it has an entry for the registry");
	drop("etc/containers/registries.conf");

	put("etc/docker/daemon.json", "{\"registry-mirrors\": [\"ftp://x\"]}");
	expect_error("alpine", NULL, EINVAL, "/tmp/ROOT/etc/docker/daemon.json: registry-mirrors[0]: not an http(s) URL "
		     "of a host", "daemon.json: a bad mirror URL");
	put("etc/docker/daemon.json", "{\"registry-mirrors\": ");
	expect_error("alpine", NULL, EINVAL, "/tmp/ROOT/etc/docker/daemon.json:1: unexpected token near end of file",
		     "daemon.json: bad JSON");
	drop("etc/docker/daemon.json");
	put("etc/containerd/certs.d/127.0.0.1:5000/hosts.toml", "server = 5\n");
	expect_error("127.0.0.1:5000/demo", NULL, EINVAL,
		     "/tmp/ROOT/etc/containerd/certs.d/127.0.0.1:5000/hosts.toml:1: \"server\" must be an http(s) URL "
		     "without a path", "hosts.toml: a bad server");
}

int main(void)
{
	snprintf(root, sizeof root, "/tmp/mlfs-mirrors.XXXXXX");
	if (!mkdtemp(root))
		return 99;
	snprintf(home, sizeof home, "%s/home", root);
	mlfs_mkdir_p(home, 0755);
	test_registries_conf();
	test_dropins_and_option();
	test_conf_errors();
	test_v1();
	test_hosts_and_daemon();
	char cmd[128];
	snprintf(cmd, sizeof cmd, "rm -rf %s", root);
	if (system(cmd) != 0)
		return 99;
	return tap_done();
}
