/* Where the shared cache lives.  One cache for every mount of a user, so
 * the order mirrors what such a user would set: the mount option, then the
 * environment, then the XDG location, and for root the system location. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fetch/fetch.h"

char *mlfs_cache_dir_default(const char *option)
{
	if (option && *option)
		return strdup(option);
	const char *env = getenv("MLFS_CACHE");
	if (env && *env)
		return strdup(env);
	env = getenv("XDG_CACHE_HOME");
	char *out = NULL;
	if (env && *env && asprintf(&out, "%s/mlfs", env) >= 0)
		return out;
	if (geteuid() == 0)
		return strdup("/var/cache/mlfs");
	env = getenv("HOME");
	if (asprintf(&out, "%s/.cache/mlfs", env && *env ? env : "/tmp") >= 0)
		return out;
	return NULL;
}
