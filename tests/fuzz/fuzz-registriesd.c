/* The registries.d(5) YAML reader (fetch/registriesd.c) on arbitrary
 * bytes, as one file and then as a second file merged into the first.
 * Beyond memory errors (ASan, UBSan), the contract: a failure says so in
 * one line with the same code; a success leaves every scope named and
 * unique, and a lookaside lookup for any reference (its own scope names
 * included) answers a URL that ends with the repository path. */
#include <stdlib.h>
#include <string.h>

#include "fetch/internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);

static void check(const struct mlfs_registries_d *c)
{
	for (size_t i = 0; i < c->n_docker; i++) {
		if (!c->docker[i].scope || !c->docker[i].file)
			abort();
		for (size_t j = 0; j < i; j++)
			if (!strcmp(c->docker[i].scope, c->docker[j].scope))
				abort();
		if (c->docker[i].use_attachments < -1 || c->docker[i].use_attachments > 1)
			abort();
	}
	const char *refs[] = { "example.com/ns/app:1", "a.io/b@sha256:0000000000000000000000000000000000000000000000000000000000000000",
			       c->n_docker ? c->docker[0].scope : "x.io/y:z" };
	for (size_t i = 0; i < sizeof refs / sizeof refs[0]; i++) {
		const char *from = NULL;
		char *url = mlfs_registries_d_lookaside(c, refs[i], "ns/app", &from);
		size_t len = url ? strlen(url) : 0;
		if (!url || !from || len < 7 || strcmp(url + len - 7, "/ns/app"))
			abort();
		free(url);
		(void)mlfs_registries_d_attachments(c, refs[i]);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
	struct mlfs_registries_d *c = mlfs_registries_d_new("/fuzz");
	struct mlfs_err err = { 0 };
	if (!c)
		return 0;
	for (int round = 0; round < 2; round++) {
		err.code = 0;
		int r = mlfs_registries_d_parse(c, d, n, round ? "/fuzz/b.yaml" : "/fuzz/a.yaml", &err);
		if (r < 0 && (err.code != -r || !err.msg[0] || strchr(err.msg, '\n')))
			abort();
		if (r < 0)
			break;
		check(c);
	}
	mlfs_registries_d_free(c);
	return 0;
}
