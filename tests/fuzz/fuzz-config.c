/* The image config parser (fetch/config.c) on arbitrary bytes: beyond
 * memory errors (ASan, UBSan), the contract: a failure returns nothing and
 * a one-line message with the same code; a success returns a platform whose
 * strings fit their arrays, lists that end, diff_ids that are digests, and
 * a "created" that is only set when the timestamp parsed.  fuzz-manifest
 * also feeds its inputs here; this target's seeds are configs (timestamps,
 * process fields, rootfs), so its corpus grows where configs differ. */
#include <stdlib.h>
#include <string.h>

#include "fetch/fetch.h"

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);

static void check_strv(char **v)
{
	for (; v && *v; v++)
		(void)strlen(*v);
}

static void check_str(const char *s, size_t cap)
{
	if (strnlen(s, cap) == cap)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
	struct mlfs_config *c = NULL;
	struct mlfs_err err = { 0 };
	int r = mlfs_config_parse(d, n, &c, &err);
	if (r < 0) {
		if (c || err.code != -r || !err.msg[0] || strchr(err.msg, '\n'))
			abort();
		return 0;
	}
	if (!c)
		abort();
	check_str(c->platform.os, sizeof c->platform.os);
	check_str(c->platform.arch, sizeof c->platform.arch);
	check_str(c->platform.variant, sizeof c->platform.variant);
	check_str(c->platform.os_version, sizeof c->platform.os_version);
	check_strv(c->entrypoint);
	check_strv(c->cmd);
	check_strv(c->env);
	if (c->working_dir)
		(void)strlen(c->working_dir);
	if (c->user)
		(void)strlen(c->user);
	for (size_t j = 0; j < c->n_diff_ids; j++)
		if (mlfs_digest_validate(c->diff_ids[j]) != 0)
			abort();
	if (!c->has_created && c->created != 0)
		abort();
	mlfs_config_free(c);
	return 0;
}
