#include <errno.h>
#include <string.h>

#include "fs/mountopts.h"
#include "tap.h"

static int parse(struct mount_opts *o, struct mlfs_err *err, int argc, char **argv)
{
	mlfs_err_clear(err);
	return mount_opts_parse(argc, argv, o, err);
}


int main(void)
{
	struct mount_opts o;
	struct mlfs_err err;

	{
		char *a[] = { "mount.mlfs", "golang:1.22", "/mnt", NULL };
		tap_is_int(parse(&o, &err, 3, a), 0, "plain SPEC DIR");
		tap_is_str(o.ref, "golang:1.22", "ref");
		tap_is_str(o.mountpoint, "/mnt", "mountpoint");
		tap_is_int(o.jobs, MOUNT_DEFAULT_JOBS, "default jobs");
		tap_is_int(o.timeout_s, MOUNT_DEFAULT_TIMEOUT_S, "default timeout");
		tap_ok(!o.foreground && !o.suid && !o.dev && !o.offline, "defaults off");
		mount_opts_clear(&o);
	}
	{
		/* What mount(8) passes for an fstab line. */
		char *a[] = { "mount.mlfs", "127.0.0.1:5000/demo", "/mnt", "-n", "-o",
			      "rw=no,defaults", NULL };
		tap_is_int(parse(&o, &err, 6, a), -EINVAL, "rw=no is not an option");
	}
	{
		char *a[] = { "mount.mlfs", "r", "/m", "-n", "-s", "-o",
			      "ro,noauto,_netdev,x-systemd.automount,x-systemd.requires=network-online.target,nofail,"
			      "platform=linux/arm64,cache=/c,"
			      "insecure,offline,prefetch,jobs=8,timeout=5,allow_other,suid,dev",
			      NULL };
		tap_is_int(parse(&o, &err, 7, a), 0, "fstab-style options");
		tap_is_str(o.platform, "linux/arm64", "platform=");
		tap_is_str(o.cache_dir, "/c", "cache=");
		tap_ok(o.insecure && o.offline && o.prefetch && o.allow_other && o.suid && o.dev, "flags set");
		tap_is_int(o.jobs, 8, "jobs=8");
		tap_is_int(o.timeout_s, 5, "timeout=5");
		mount_opts_clear(&o);
	}
	{
		char *a[] = { "mount.mlfs", "r", "/m", "-o", "registries-conf=/etc/r.conf,registries-conf=/x/mine.conf",
			      NULL };
		tap_is_int(parse(&o, &err, 5, a), 0, "registries-conf=");
		tap_is_str(o.registries_conf, "/x/mine.conf", "registries-conf=: the last one counts");
		mount_opts_clear(&o);
		tap_ok(o.registries_conf == NULL, "registries-conf freed");
	}
	{
		char *a[] = { "mount.mlfs", "r", "/m", "-o",
			      "policy=/etc/p.json,registries.d=/etc/containers/registries.d,insecure-policy", NULL };
		tap_is_int(parse(&o, &err, 5, a), 0, "trust options");
		tap_is_str(o.policy, "/etc/p.json", "policy=");
		tap_is_str(o.registries_d, "/etc/containers/registries.d", "registries.d=");
		tap_ok(o.insecure_policy, "insecure-policy");
		mount_opts_clear(&o);
		tap_ok(!o.registries_d, "cleared");
	}
	{
		char *a[] = { "mount.mlfs", "-oplatform=linux/s390x", "r", "/m", "-d", NULL };
		tap_is_int(parse(&o, &err, 5, a), 0, "-oOPTS glued, flags before args");
		tap_is_str(o.platform, "linux/s390x", "glued platform");
		tap_ok(o.debug && o.foreground, "-d implies foreground");
		mount_opts_clear(&o);
	}
	{
		char *a[] = { "mount.mlfs", "r", "/m", "-o", "debug=fetch,layers", NULL };
		/* "layers" after a comma is its own option: unknown, so refused. */
		tap_is_int(parse(&o, &err, 5, a), -EINVAL, "debug=a,b splits at the comma");
		char *b[] = { "mount.mlfs", "r", "/m", "-o", "debug=fetch:layers", NULL };
		tap_is_int(parse(&o, &err, 5, b), 0, "debug=a:b");
		tap_is_str(o.debug_areas, "fetch:layers", "debug areas kept");
		tap_ok(o.debug && o.foreground, "debug= implies foreground");
		mount_opts_clear(&o);
	}
	/* Must fail, each with a message. */
	{
		/* mount(8) passes "rw" unless told "ro": the mount is read-only anyway. */
		char *a[] = { "mount.mlfs", "r", "/m", "-o", "rw,defaults", NULL };
		tap_is_int(parse(&o, &err, 5, a), 0, "rw from mount(8) accepted");
		mount_opts_clear(&o);
	}
	const char *bad[] = { "bogus", "jobs=0", "jobs=65", "jobs=x", "timeout=0", "timeout=-1",
			      "platform=", "cache=", "insecure=1", NULL };
	for (const char **b = bad; *b; b++) {
		char *a[] = { "mount.mlfs", "r", "/m", "-o", (char *)*b, NULL };
		int r = parse(&o, &err, 5, a);
		tap_ok(r < 0 && err.msg[0], "-o %s refused: %s", *b, err.msg);
	}
	{
		char *a[] = { "mount.mlfs", "r", NULL };
		tap_ok(parse(&o, &err, 2, a) == -EINVAL && strstr(err.msg, "usage"), "missing DIR");
	}
	{
		char *a[] = { "mount.mlfs", "r", "/m", "extra", NULL };
		tap_is_int(parse(&o, &err, 4, a), -EINVAL, "extra argument");
	}
	{
		char *a[] = { "mount.mlfs", "r", "/m", "-x", NULL };
		tap_is_int(parse(&o, &err, 4, a), -EINVAL, "unknown flag");
	}
	{
		char *a[] = { "mount.mlfs", "r", "/m", "-o", NULL };
		tap_is_int(parse(&o, &err, 4, a), -EINVAL, "-o without a list");
	}
	return tap_done();
}
