/* Where the shared cache lives.  One cache for every mount of a user, so
 * the order mirrors what such a user would set: the mount option, then the
 * environment, then the XDG location, and for root the system location.
 *
 * The result is always absolute: the daemon changes to / when it detaches,
 * and a relative cache would then point somewhere else. */
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fetch/fetch.h"

static char *absolute(const char *path, const char *suffix)
{
	char *out = NULL;
	if (path[0] == '/') {
		if (asprintf(&out, "%s%s", path, suffix) < 0)
			return NULL;
		return out;
	}
	char cwd[4096];
	if (!getcwd(cwd, sizeof cwd) || asprintf(&out, "%s/%s%s", cwd, path, suffix) < 0)
		return NULL;
	return out;
}

char *mlfs_cache_dir_default(const char *option)
{
	if (option && *option)
		return absolute(option, "");
	const char *env = getenv("MLFS_CACHE");
	if (env && *env)
		return absolute(env, "");
	env = getenv("XDG_CACHE_HOME");
	if (env && env[0] == '/') /* the XDG spec: a relative value is invalid, ignore it */
		return absolute(env, "/mlfs");
	if (geteuid() == 0)
		return strdup("/var/cache/mlfs");
	env = getenv("HOME");
	if (!env || env[0] != '/') {
		/* Not /tmp: a cache there could be planted by another user. */
		struct passwd *pw = getpwuid(geteuid());
		env = pw && pw->pw_dir && pw->pw_dir[0] == '/' ? pw->pw_dir : NULL;
	}
	return env ? absolute(env, "/.cache/mlfs") : NULL;
}
