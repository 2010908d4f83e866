/* mlfs mount / mount.mlfs: resolve the image, mount, daemonise, serve.
 *
 * The order matters to the user: everything that can fail with a clear
 * message (reference, auth, manifest, platform, the mountpoint) happens
 * while the command still has its terminal and before anything is
 * mounted, so a failure exits non-zero and leaves no mount behind.  The
 * parent process exits only once the mount is up; layer fetching starts
 * in the daemon, on first need (or right away with -o prefetch). */
#include "fs/fs.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "fs/cli/cli.h"
#include "fs/mountopts.h"

#define STOP_GRACE_S 10 /* a cancelled download ends within about a second */

/* -o options for libfuse and the kernel, from ours. */
static int fuse_argv(const struct mount_opts *o, struct fuse_args *args)
{
	char opts[4096];
	snprintf(opts, sizeof opts, "ro,default_permissions,fsname=%s,subtype=mlfs%s%s%s", o->ref,
		 o->allow_other ? ",allow_other" : "", o->suid ? ",suid" : ",nosuid", o->dev ? ",dev" : ",nodev");
	if (fuse_opt_add_arg(args, "mlfs") < 0 || fuse_opt_add_arg(args, "-o") < 0 ||
	    fuse_opt_add_arg(args, opts) < 0)
		return -ENOMEM;
	return 0;
}

static int serve(struct mlfs_fs *fs, const struct mount_opts *o, struct mlfs_err *err)
{
	struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
	int r = fuse_argv(o, &args);
	if (r < 0) {
		fuse_opt_free_args(&args);
		return mlfs_err_set(err, -r, "out of memory");
	}
	struct fuse_session *se = fuse_session_new(&args, &mlfs_ops, sizeof mlfs_ops, fs);
	fuse_opt_free_args(&args);
	if (!se)
		return mlfs_err_set(err, EINVAL, "cannot start a FUSE session (see the message above)");
	if (fuse_set_signal_handlers(se) < 0) {
		fuse_session_destroy(se);
		return mlfs_err_set(err, EIO, "cannot install signal handlers");
	}
	if (fuse_session_mount(se, o->mountpoint) < 0) {
		fuse_remove_signal_handlers(se);
		fuse_session_destroy(se);
		return mlfs_err_set(err, EIO, "cannot mount on %s: is /dev/fuse there, and are you root?",
				    o->mountpoint);
	}
	if (!o->foreground) {
		mlfs_log_setup(o->debug ? MLFS_LOG_DEBUG : MLFS_LOG_INFO, 0, true);
		if (fuse_daemonize(0) < 0) {
			fuse_session_unmount(se);
			fuse_remove_signal_handlers(se);
			fuse_session_destroy(se);
			return mlfs_err_set(err, EIO, "cannot daemonise");
		}
	}
	struct fuse_loop_config *cfg = fuse_loop_cfg_create();
	if (!cfg) {
		fuse_session_unmount(se);
		fuse_remove_signal_handlers(se);
		fuse_session_destroy(se);
		return mlfs_err_set(err, ENOMEM, "out of memory");
	}
	fuse_loop_cfg_set_clone_fd(cfg, 0);
	fuse_loop_cfg_set_idle_threads(cfg, 4);
	/* Requests waiting for layers are parked and hold no thread; these
	 * are for reads that fetch chunks of seekable layers. */
	fuse_loop_cfg_set_max_threads(cfg, 128);
	fs->se = se;
	r = fuse_session_loop_mt(se, cfg);
	fuse_loop_cfg_destroy(cfg);
	/* While the session can still take replies: parked requests are
	 * answered, downloads cancelled, loading threads joined. */
	loader_stop(fs->loader, STOP_GRACE_S);
	fs->stop_tried = true;
	fuse_session_unmount(se);
	fuse_remove_signal_handlers(se);
	/* libfuse "restores" the SIGPIPE disposition it found, which main()
	 * had set to ignore; a loader still writing to a pipe must not die. */
	signal(SIGPIPE, SIG_IGN);
	fs->se = NULL;
	fuse_session_destroy(se);
	return r < 0 ? mlfs_err_set(err, -r, "the FUSE session ended with an error") : 0;
}

int mlfs_cmd_mount(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "-o")) {
			i++;
		} else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
			mount_opts_usage(stdout);
			return 0;
		} else if (!strcmp(argv[i], "-V") || !strcmp(argv[i], "--version")) {
			cli_print_version(stdout);
			return 0;
		}
	}
	struct mlfs_err err = { 0 };
	struct mount_opts o;
	if (mount_opts_parse(argc, argv, &o, &err) < 0)
		return cli_fail(&err);
	unsigned areas = 0;
	if (o.debug_areas && mlfs_log_parse_areas(o.debug_areas, &areas) < 0) {
		mlfs_err_set(&err, EINVAL, "unknown area in debug=%s", o.debug_areas);
		mount_opts_clear(&o);
		return cli_fail(&err);
	}
	if (o.debug)
		mlfs_log_setup(MLFS_LOG_DEBUG, areas ? areas : MLFS_AREA_ALL, false);
	else
		mlfs_log_setup(o.foreground ? MLFS_LOG_INFO : MLFS_LOG_WARN, 0, false);

	struct stat st;
	int r = 0;
	if (stat(o.mountpoint, &st) < 0)
		r = mlfs_err_set(&err, errno, "mountpoint %s: %s", o.mountpoint, strerror(errno));
	else if (!S_ISDIR(st.st_mode))
		r = mlfs_err_set(&err, ENOTDIR, "mountpoint %s is not a directory", o.mountpoint);

	struct mlfs_fs fs = { .prefetch = o.prefetch };
	struct mlfs_image_opts io = { .platform = o.platform, .cache_dir = o.cache_dir,
				      .insecure = o.insecure, .offline = o.offline, .wait_s = o.timeout_s,
				      .cache_max = o.cache_max, .keep_blobs = o.keep_blobs,
				      .policy = o.policy, .insecure_policy = o.insecure_policy,
				      .progress = mlfs_stats_progress, .progress_priv = &fs.stats,
				      .registries_conf = o.registries_conf,
				      .registries_d = o.registries_d };
	if (r == 0)
		cli_cache_startup(o.cache_dir);
	if (r == 0)
		r = mlfs_image_open(o.ref, &io, &fs.img, &err);
	if (r == 0 && (r = loader_new(fs.img, o.jobs, o.timeout_s, o.prefetch, &fs.loader)) < 0)
		mlfs_err_set(&err, -r, "out of memory");
	if (r == 0)
		r = serve(&fs, &o, &err);
	if (fs.loader && !fs.stop_tried)
		loader_stop(fs.loader, STOP_GRACE_S); /* the session never ran */
	if (loader_free(fs.loader) == -EBUSY) {
		/* A loading thread outlived loader_stop's grace (stuck outside
		 * libcurl): it uses the image and libcurl, so neither may be torn
		 * down under it, and exit handlers (OpenSSL's) must not run
		 * either.  What it leaves in the cache is a .partial file the
		 * next run resumes. */
		int status = r < 0 ? cli_fail(&err) : 0;
		fflush(NULL);
		_exit(status);
	}
	mlfs_image_free(fs.img);
	mount_opts_clear(&o);
	return r < 0 ? cli_fail(&err) : 0;
}
