#include "fs/mountopts.h"

#include "fs/cli/units.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* What --help prints; the test of the man page reads it, so an option
 * missing here or there fails it. */
static const struct {
	const char *name;
	const char *help;
} known[] = {
	{ "platform=OS/ARCH[/VARIANT]", "mount that platform of a multi-platform image (default: this host's)" },
	{ "cache=DIR", "the cache (default: $MLFS_CACHE, else $XDG_CACHE_HOME/mlfs or /var/cache/mlfs)" },
	{ "insecure", "allow plain HTTP and unverified TLS for this registry" },
	{ "offline", "no network: everything must be in the cache already" },
	{ "prefetch", "fetch the layers right after mounting (seekable ones: every chunk)" },
	{ "jobs=N", "layers fetched in parallel (default 4)" },
	{ "timeout=S", "seconds a request waits for its layers before EIO (default 300)" },
	{ "cache-max=SIZE", "evict least recently used layers to keep the cache under SIZE" },
	{ "keep-blobs", "keep compressed layer blobs after their layers are indexed" },
	{ "policy=FILE", "the containers-policy.json to enforce" },
	{ "insecure-policy", "enforce no policy" },
	{ "registries.d=DIR", "where signatures are looked for (registries.d(5); default /etc/containers/registries.d)" },
	{ "registries-conf=FILE", "the containers-registries.conf to read mirrors from (instead of /etc/containers/...)" },
	{ "allow_other", "let other users in (the kernel checks permissions)" },
	{ "suid", "honour setuid bits" },
	{ "dev", "honour device nodes" },
	{ "debug[=AREAS]", "debug logs (AREAS: some of main:fetch:auth:layers:fs), in the foreground" },
};

/* Accepted for fstab and mount(8)'s sake; they change nothing for a
 * read-only, per-user FUSE filesystem. */
static const char *const ignored[] = {
	"defaults", "auto", "noauto", "user", "users", "nouser", "owner", "group", "_netdev",
	/* mount(8) always passes rw or ro; the mount is read-only either way. */
	"nofail", "ro", "rw", "nosuid", "nodev", "exec", "noexec", "atime", "noatime", "relatime",
	"nodiratime", "sync", "async", "loud", "silent", NULL,
};

static int parse_uint(const char *v, unsigned max, unsigned *out)
{
	char *end;
	errno = 0;
	unsigned long n = strtoul(v, &end, 10);
	if (!*v || *end || errno || n == 0 || n > max)
		return -EINVAL;
	*out = (unsigned)n;
	return 0;
}

static int set_string(char **slot, const char *v)
{
	free(*slot);
	*slot = strdup(v);
	return *slot ? 0 : -ENOMEM;
}

static int parse_one(struct mount_opts *o, const char *opt, struct mlfs_err *err)
{
	const char *eq = strchr(opt, '=');
	size_t klen = eq ? (size_t)(eq - opt) : strlen(opt);
	const char *v = eq ? eq + 1 : NULL;
#define KEY(k) (klen == strlen(k) && !strncmp(opt, k, klen))
	if (KEY("platform") && v && *v)
		return set_string(&o->platform, v);
	if (KEY("cache") && v && *v)
		return set_string(&o->cache_dir, v);
	if (KEY("policy") && v && *v)
		return set_string(&o->policy, v);
	if (KEY("registries-conf") && v && *v)
		return set_string(&o->registries_conf, v);
	if (KEY("registries.d") && v && *v)
		return set_string(&o->registries_d, v);
	if (KEY("jobs") && v) {
		if (parse_uint(v, 64, &o->jobs) < 0)
			return mlfs_err_set(err, EINVAL, "jobs=%s: give a number from 1 to 64", v);
		return 0;
	}
	if (KEY("timeout") && v) {
		if (parse_uint(v, 86400, &o->timeout_s) < 0)
			return mlfs_err_set(err, EINVAL, "timeout=%s: give seconds, from 1 to 86400", v);
		return 0;
	}
	if (KEY("cache-max") && v) {
		if (mlfs_parse_size(v, &o->cache_max) < 0)
			return mlfs_err_set(err, EINVAL, "cache-max=%s: give a size such as 500M, 16G or 1.5GiB", v);
		return 0;
	}
	if (KEY("debug")) {
		o->debug = true;
		return v ? set_string(&o->debug_areas, v) : 0;
	}
	/* fstab's userspace options, values and all (x-systemd.requires=UNIT) */
	if (klen >= 2 && !strncmp(opt, "x-", 2))
		return 0;
	if (v)
		goto unknown;
	if (KEY("insecure"))
		o->insecure = true;
	else if (KEY("offline"))
		o->offline = true;
	else if (KEY("prefetch"))
		o->prefetch = true;
	else if (KEY("keep-blobs"))
		o->keep_blobs = true;
	else if (KEY("insecure-policy"))
		o->insecure_policy = true;
	else if (KEY("allow_other"))
		o->allow_other = true;
	else if (KEY("suid"))
		o->suid = true;
	else if (KEY("dev"))
		o->dev = true;
	else {
		for (const char *const *p = ignored; *p; p++)
			if (KEY(*p))
				return 0;
		goto unknown;
	}
	return 0;
#undef KEY
unknown:
	return mlfs_err_set(err, EINVAL, "unknown mount option \"%s\"", opt);
}

static int parse_list(struct mount_opts *o, const char *list, struct mlfs_err *err)
{
	char *dup = strdup(list), *save = NULL;
	if (!dup)
		return mlfs_err_set(err, ENOMEM, "out of memory");
	int r = 0;
	for (char *opt = strtok_r(dup, ",", &save); opt && r == 0; opt = strtok_r(NULL, ",", &save))
		r = parse_one(o, opt, err);
	free(dup);
	return r;
}

int mount_opts_parse(int argc, char **argv, struct mount_opts *o, struct mlfs_err *err)
{
	memset(o, 0, sizeof *o);
	o->jobs = MOUNT_DEFAULT_JOBS;
	o->timeout_s = MOUNT_DEFAULT_TIMEOUT_S;
	int r = 0;
	const char *max = getenv("MLFS_CACHE_MAX");
	if (max && *max && mlfs_parse_size(max, &o->cache_max) < 0)
		r = mlfs_err_set(err, EINVAL, "MLFS_CACHE_MAX=%s: give a size such as 500M, 16G or 1.5GiB", max);
	for (int i = 1; i < argc && r == 0; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "-o")) {
			if (++i >= argc)
				r = mlfs_err_set(err, EINVAL, "-o needs a list of options");
			else
				r = parse_list(o, argv[i], err);
		} else if (!strncmp(a, "-o", 2)) {
			r = parse_list(o, a + 2, err);
		} else if (!strcmp(a, "-f")) {
			o->foreground = true;
		} else if (!strcmp(a, "-d")) {
			o->debug = o->foreground = true;
		} else if (!strcmp(a, "-n") || !strcmp(a, "-s") || !strcmp(a, "-v")) {
			/* mount(8): no mtab, sloppy, verbose: nothing to do */
		} else if (a[0] == '-' && a[1]) {
			r = mlfs_err_set(err, EINVAL, "unknown flag %s", a);
		} else if (!o->ref) {
			o->ref = a;
		} else if (!o->mountpoint) {
			o->mountpoint = a;
		} else {
			r = mlfs_err_set(err, EINVAL, "unexpected argument \"%s\"", a);
		}
	}
	if (r == 0 && o->debug)
		o->foreground = true;
	if (r == 0 && (!o->ref || !o->mountpoint))
		r = mlfs_err_set(err, EINVAL, "usage: mount.mlfs REF DIR [-o OPTION,...] [-f] [-d] "
				 "(mount.mlfs --help lists the options)");
	if (r < 0)
		mount_opts_clear(o);
	return r;
}

void mount_opts_clear(struct mount_opts *o)
{
	free(o->platform);
	free(o->cache_dir);
	free(o->debug_areas);
	free(o->policy);
	free(o->registries_conf);
	o->registries_conf = NULL;
	free(o->registries_d);
	o->platform = o->cache_dir = o->debug_areas = o->policy = o->registries_d = NULL;
}

void mount_opts_usage(FILE *f)
{
	fprintf(f, "usage: mount.mlfs REF DIR [-o OPTION,...] [-f] [-d]\n"
		"       mlfs mount REF DIR [-o OPTION,...] [-f] [-d]\n"
		"       mount -t mlfs REF DIR [-o OPTION,...]\n\noptions:\n");
	for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
		fprintf(f, "  %-28s %s\n", known[i].name, known[i].help);
	fprintf(f, "  %-28s %s\n  %-28s %s\n", "-f", "stay in the foreground, logging to stderr (else syslog)",
		"-d", "debug logs, in the foreground");
	fprintf(f, "\nmount(8)'s and fstab's own options (defaults, noauto, _netdev, nofail, x-systemd.*, ro, rw, ...)\n"
		"are accepted and ignored: the mount is always read-only.  Details: man 8 mount.mlfs\n");
}
