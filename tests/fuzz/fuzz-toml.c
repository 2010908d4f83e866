/* The TOML subset reader (fetch/toml.c) and what reads its trees:
 * registries.conf (fetch/regconf.c and shortconf.c, short names decided by
 * shortname.c, with prefix matching and the endpoint
 * lists it gives) and containerd's hosts.toml (fetch/hostsconf.c).
 * Beyond memory errors (ASan, UBSan), the contract: a failure returns
 * nothing and a one-line message with the same code; a tree has a key on
 * every table member and none on array items, an array of tables holds
 * only tables; an endpoint list ends with its one upstream. */
#include <stdlib.h>
#include <string.h>

#include "fetch/internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);

static void check_tree(const struct mlfs_toml *t, int depth)
{
	if (depth > 200)
		abort();
	for (size_t i = 0; i < t->n; i++) {
		const struct mlfs_toml *c = t->v[i];
		if (t->kind == MLFS_TOML_TABLE && !c->key)
			abort();
		if (t->kind == MLFS_TOML_ARRAY && c->key)
			abort();
		if (t->of_tables && c->kind != MLFS_TOML_TABLE)
			abort();
		if (c->kind == MLFS_TOML_STRING && !c->str)
			abort();
		check_tree(c, depth + 1);
	}
	if ((t->kind != MLFS_TOML_TABLE && t->kind != MLFS_TOML_ARRAY) && t->n)
		abort();
}

static void check_err(int r, const struct mlfs_err *err)
{
	if (err->code != -r || !err->msg[0] || strchr(err->msg, '\n'))
		abort();
}

static void check_endpoints(const struct mlfs_endpoints *e)
{
	if (!e->n || e->v[e->n - 1].mirror)
		abort();
	for (size_t i = 0; i < e->n; i++)
		if (!e->v[i].host[0] || !e->v[i].repo[0] || !e->v[i].domain[0] || (i + 1 < e->n && !e->v[i].mirror))
			abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
	struct mlfs_err err = { 0 };
	struct mlfs_toml *t = NULL;
	int r = mlfs_toml_parse(d, n, "fuzz.toml", &t, &err);
	if (r < 0) {
		if (t)
			abort();
		check_err(r, &err);
		return 0;
	}
	check_tree(t, 0);
	mlfs_toml_free(t);

	static const char *const names[] = { "docker.io/library/busybox", "127.0.0.1:5000/demo", "a.b.example.com/x/y",
					     "quay.io/a" };
	struct mlfs_regconf conf = { 0 };
	memset(&err, 0, sizeof err);
	r = mlfs_regconf_parse(d, n, "fuzz.conf", n % 2 /* as a drop-in, half the time */, &conf, &err);
	if (r < 0)
		check_err(r, &err);
	for (size_t i = 0; r == 0 && i < sizeof names / sizeof names[0]; i++) {
		const struct mlfs_regconf_registry *m = mlfs_regconf_match(&conf, names[i]);
		if (!m)
			continue;
		struct mlfs_endpoints e = { 0 };
		memset(&err, 0, sizeof err);
		int q = mlfs_regconf_endpoints(m, names[i], &e, &err);
		if (q < 0)
			check_err(q, &err);
		else
			check_endpoints(&e);
		mlfs_endpoints_clear(&e);
	}
	/* Its short-name settings (shortconf.c) deciding a few names (shortname.c). */
	static const char *const shorts[] = { "busybox", "library/busybox:1", "a/b@sha256:"
					      "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef" };
	for (size_t i = 0; r == 0 && i < sizeof shorts / sizeof shorts[0]; i++) {
		struct mlfs_short_result res;
		memset(&err, 0, sizeof err);
		int q = mlfs_shortname_decide(shorts[i], &conf.shorts, true, &res, &err);
		if (q < 0) {
			check_err(q, &err);
			continue;
		}
		for (size_t j = 0; j < res.n; j++) {
			struct mlfs_ref ref;
			if (mlfs_ref_parse(res.candidates[j], &ref, NULL) == 0)
				mlfs_ref_clear(&ref);
		}
		mlfs_short_result_clear(&res);
	}
	mlfs_regconf_clear(&conf);

	struct mlfs_ref ref = { .domain = (char *)"127.0.0.1:5000", .path = (char *)"demo", .tag = (char *)"1" };
	struct mlfs_endpoints e = { 0 };
	memset(&err, 0, sizeof err);
	r = mlfs_hostsconf_parse(d, n, "hosts.toml", &ref, &e, &err);
	if (r < 0)
		check_err(r, &err);
	else
		check_endpoints(&e);
	mlfs_endpoints_clear(&e);
	return 0;
}
