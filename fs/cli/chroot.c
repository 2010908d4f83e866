/* mlfs chroot [-o OPTIONS] REF [COMMAND [ARG...]]: a writable, disposable
 * chroot of any image.
 *
 * The whole chroot lives in a mount namespace of its own, made private at
 * once: the image's FUSE mount, the overlayfs on it (upper layer in a
 * tmpfs, or in -o upper=DIR), /proc, /sys and a small /dev are mounted
 * there and nowhere else, so the host's mount table never shows them and
 * they vanish with the namespace, whatever happens to the processes.  The
 * processes in it are tied to this one: the FUSE daemon (`mlfs mount -f`,
 * run from our own binary) and the command get PR_SET_PDEATHSIG, so a
 * `kill -9` of mlfs chroot ends them too and with them the namespace.  On
 * a normal end the overlay is detached first, then the daemon is asked to
 * stop (SIGTERM: it unmounts and exits), then the work directory goes.
 *
 * The image is resolved here first (the same options the mount takes),
 * for its config — Env, WorkingDir, the architecture for the binfmt check
 * — and the daemon mounts exactly that manifest (REF pinned to its digest).
 *
 * Exit status: the command's, 128 + N when a signal N ended it, and as
 * podman run: 125 when mlfs itself failed, 126 when the command could not
 * be run, 127 when it was not found. */
#include "fs/cli/cli.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/dirs.h"
#include "common/log.h"
#include "fs/mountopts.h"

#define EXIT_MLFS 125
#define EXIT_CANNOT_RUN 126
#define EXIT_NOT_FOUND 127
#define MOUNT_WAIT_S 600 /* the daemon resolves before it mounts: a slow registry */

struct chroot_args {
	const char *ref;
	char *opts;          /* -o options for the mount, upper= taken out */
	char *upper;         /* -o upper=DIR */
	char **command;      /* NULL: the default shell */
};

static int usage(FILE *f)
{
	fprintf(f, "usage: mlfs chroot [-o OPTION,...] REF [COMMAND [ARG...]]\n\n"
		"options: those of mount.mlfs (mount.mlfs --help), and\n"
		"  upper=DIR   keep the chroot's changes in DIR/upper (DIR/work is overlayfs's)\n");
	return EXIT_MLFS;
}

static int append_opt(char **list, const char *opt)
{
	char *n = NULL;
	if (asprintf(&n, "%s%s%s", *list ? *list : "", *list ? "," : "", opt) < 0)
		return -ENOMEM;
	free(*list);
	*list = n;
	return 0;
}

static int parse_args(int argc, char **argv, struct chroot_args *a)
{
	int i = 1;
	for (; i < argc; i++) {
		const char *o = NULL;
		if (!strcmp(argv[i], "--")) {
			i++;
			break;
		} else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
			return 1;
		} else if (!strcmp(argv[i], "-o") && i + 1 < argc) {
			o = argv[++i];
		} else if (!strncmp(argv[i], "-o", 2) && argv[i][2]) {
			o = argv[i] + 2;
		} else if (argv[i][0] == '-') {
			fprintf(stderr, "mlfs: error: chroot: unknown option %s\n", argv[i]);
			return -EINVAL;
		} else {
			break;
		}
		char *copy = strdup(o), *save = NULL;
		if (!copy)
			return -ENOMEM;
		int r = 0;
		for (char *t = strtok_r(copy, ",", &save); t && r == 0; t = strtok_r(NULL, ",", &save)) {
			if (!strncmp(t, "upper=", 6) && t[6]) {
				free(a->upper);
				a->upper = strdup(t + 6);
				r = a->upper ? 0 : -ENOMEM;
			} else {
				r = append_opt(&a->opts, t);
			}
		}
		free(copy);
		if (r < 0)
			return r;
	}
	if (i >= argc)
		return -EINVAL;
	a->ref = argv[i++];
	a->command = i < argc ? argv + i : NULL;
	return 0;
}

/* qemu-user's name for an OCI architecture. */
static const char *qemu_name(const char *arch)
{
	static const char *const map[][2] = {
		{ "arm64", "aarch64" }, { "arm", "arm" }, { "s390x", "s390x" }, { "ppc64le", "ppc64le" },
		{ "386", "i386" }, { "amd64", "x86_64" }, { "riscv64", "riscv64" }, { "mips64le", "mips64el" },
		{ "loong64", "loongarch64" },
	};
	for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
		if (!strcmp(arch, map[i][0]))
			return map[i][1];
	return arch;
}

/* Whether this host runs the image's programs: natively, or through a
 * registered, enabled binfmt_misc handler (qemu-user-static's). */
static int check_runnable(const struct mlfs_platform *img, struct mlfs_err *err)
{
	struct mlfs_platform host;
	if (mlfs_platform_host(&host) < 0 || !strcmp(host.arch, img->arch) ||
	    (!strcmp(host.arch, "amd64") && !strcmp(img->arch, "386")))
		return 0;
	const char *q = qemu_name(img->arch);
	char path[128], line[64] = "";
	snprintf(path, sizeof path, "/proc/sys/fs/binfmt_misc/qemu-%s", q);
	FILE *f = fopen(path, "re");
	if (f) {
		if (!fgets(line, sizeof line, f))
			line[0] = '\0';
		fclose(f);
	}
	if (!strncmp(line, "enabled", 7))
		return 0;
	return mlfs_err_set(err, ENOEXEC, "the image is linux/%s%s%s and this host (%s) has no %s binfmt_misc "
			    "handler for it: install qemu-user-static (it registers one), or run "
			    "`update-binfmts --enable qemu-%s`", img->arch, img->variant[0] ? "/" : "",
			    img->variant, host.arch, f ? "enabled" : "registered", q);
}

static int mountf(const char *src, const char *target, const char *type, unsigned long flags, const char *data,
		  struct mlfs_err *err)
{
	if (mount(src, target, type, flags, data) < 0)
		return mlfs_err_set(err, errno, "cannot mount %s on %s: %s", type ? type : src, target,
				    strerror(errno));
	return 0;
}

/* root/PATH, for the places under the chroot's root. */
static const char *under(const char *root, const char *path, char *buf, size_t len)
{
	if (snprintf(buf, len, "%s/%s", root, path) >= (int)len)
		buf[0] = '\0'; /* too long: names nothing */
	return buf;
}

/* /proc, /sys, a small /dev, and the host's resolv.conf, in root. */
static int furnish(const char *root, struct mlfs_err *err)
{
	char p[PATH_MAX], q[PATH_MAX];
	static const char *const dirs[] = { "proc", "sys", "dev", "etc", "tmp" };
	struct stat st;
	bool had_tmp = lstat(under(root, "tmp", p, sizeof p), &st) == 0;
	for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++)
		if (mlfs_mkdir_p(under(root, dirs[i], p, sizeof p), 0755) < 0)
			return mlfs_err_set(err, errno, "cannot make %s in the chroot: %s", p, strerror(errno));
	if (!had_tmp)
		chmod(under(root, "tmp", p, sizeof p), 01777); /* mkdir's mode passes the umask */
	int r;
	if ((r = mountf("proc", under(root, "proc", p, sizeof p), "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL,
			err)) < 0 ||
	    (r = mountf("sysfs", under(root, "sys", p, sizeof p), "sysfs",
			MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL, err)) < 0 ||
	    (r = mountf("tmpfs", under(root, "dev", p, sizeof p), "tmpfs", MS_NOSUID | MS_NOEXEC,
			"mode=755,size=1m", err)) < 0)
		return r;
	/* Devices bind-mounted from the host: no mknod needed, no devtmpfs shown. */
	static const char *const devs[] = { "null", "zero", "full", "random", "urandom", "tty" };
	for (size_t i = 0; i < sizeof devs / sizeof devs[0]; i++) {
		snprintf(q, sizeof q, "/dev/%s", devs[i]);
		snprintf(p, sizeof p, "%s/dev/%s", root, devs[i]);
		int fd = open(p, O_WRONLY | O_CREAT | O_CLOEXEC, 0666);
		if (fd >= 0)
			close(fd);
		if ((r = mountf(q, p, NULL, MS_BIND, NULL, err)) < 0)
			return r;
	}
	if (mkdir(under(root, "dev/pts", p, sizeof p), 0755) < 0 || mkdir(under(root, "dev/shm", q, sizeof q), 01777) < 0)
		return mlfs_err_set(err, errno, "cannot make /dev/pts and /dev/shm in the chroot: %s", strerror(errno));
	if ((r = mountf("devpts", p, "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=620", err)) < 0 ||
	    (r = mountf("tmpfs", q, "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777", err)) < 0)
		return r;
	static const char *const links[][2] = {
		{ "pts/ptmx", "dev/ptmx" }, { "/proc/self/fd", "dev/fd" }, { "/proc/self/fd/0", "dev/stdin" },
		{ "/proc/self/fd/1", "dev/stdout" }, { "/proc/self/fd/2", "dev/stderr" },
	};
	for (size_t i = 0; i < sizeof links / sizeof links[0]; i++)
		if (symlink(links[i][0], under(root, links[i][1], p, sizeof p)) < 0)
			return mlfs_err_set(err, errno, "cannot make %s: %s", p, strerror(errno));
	/* A copy, not a bind mount: the chroot may rewrite its own. */
	int in = open("/etc/resolv.conf", O_RDONLY | O_CLOEXEC);
	if (in >= 0) {
		under(root, "etc/resolv.conf", p, sizeof p);
		unlink(p); /* maybe a symlink into a /run the chroot does not have */
		int out = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
		char buf[8192];
		ssize_t n;
		while (out >= 0 && (n = read(in, buf, sizeof buf)) > 0)
			if (write(out, buf, (size_t)n) != n)
				break;
		if (out >= 0)
			close(out);
		close(in);
	}
	return 0;
}

/* The image's shell when its command is one, else /bin/sh. */
static char **default_command(const struct mlfs_config *c)
{
	static char *sh[] = { (char *)"/bin/sh", NULL };
	if ((!c->entrypoint || !c->entrypoint[0]) && c->cmd && c->cmd[0] && !c->cmd[1]) {
		size_t n = strlen(c->cmd[0]);
		if (c->cmd[0][0] == '/' && n >= 2 && !strcmp(c->cmd[0] + n - 2, "sh"))
			return c->cmd;
	}
	return sh;
}

/* The command's environment: the image's Env, PATH and HOME as runtimes
 * default them, TERM from ours (the terminal is ours). */
static char **command_env(const struct mlfs_config *c)
{
	size_t n = 0;
	while (c->env && c->env[n])
		n++;
	char **env = calloc(n + 4, sizeof *env);
	if (!env)
		return NULL;
	bool path = false, home = false, term = false;
	size_t k = 0;
	for (size_t i = 0; i < n; i++) {
		path |= !strncmp(c->env[i], "PATH=", 5);
		home |= !strncmp(c->env[i], "HOME=", 5);
		term |= !strncmp(c->env[i], "TERM=", 5);
		env[k++] = c->env[i];
	}
	if (!path)
		env[k++] = (char *)"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
	if (!home)
		env[k++] = (char *)"HOME=/root";
	static char termvar[128];
	const char *t = getenv("TERM");
	if (!term && t && snprintf(termvar, sizeof termvar, "TERM=%s", t) < (int)sizeof termvar)
		env[k++] = termvar;
	return env;
}

/* In the child: become the command, in the chroot. */
static void run_command(const char *root, const struct mlfs_config *c, char **command, const sigset_t *mask)
{
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	sigprocmask(SIG_SETMASK, mask, NULL);
	char **env = command_env(c);
	if (!env || chroot(root) < 0) {
		fprintf(stderr, "mlfs: error: chroot into %s: %s\n", root, strerror(errno));
		_exit(EXIT_MLFS);
	}
	const char *wd = c->working_dir && c->working_dir[0] ? c->working_dir : "/";
	if (chdir(wd) < 0 && chdir("/") < 0)
		_exit(EXIT_MLFS);
	extern char **environ;
	environ = env; /* execvp searches the PATH of environ */
	execvp(command[0], command);
	int e = errno;
	fprintf(stderr, "mlfs: error: cannot run %s in the chroot: %s\n", command[0], strerror(e));
	_exit(e == ENOENT ? EXIT_NOT_FOUND : EXIT_CANNOT_RUN);
}

/* In the child: become the FUSE daemon for `ref` on `lower`, its messages
 * in `log`. */
static void run_daemon(const char *ref, const char *lower, const char *opts, const char *log, const sigset_t *mask)
{
	prctl(PR_SET_PDEATHSIG, SIGTERM);
	sigprocmask(SIG_SETMASK, mask, NULL);
	int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	int null = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (fd < 0 || null < 0 || dup2(null, 0) < 0 || dup2(null, 1) < 0 || dup2(fd, 2) < 0)
		_exit(EXIT_MLFS);
	if (opts)
		execl("/proc/self/exe", "mlfs", "mount", ref, lower, "-f", "-o", opts, (char *)NULL);
	else
		execl("/proc/self/exe", "mlfs", "mount", ref, lower, "-f", (char *)NULL);
	_exit(EXIT_MLFS);
}

/* Copies the daemon's log to stderr: all of it (`all`), or its warnings
 * and errors. */
static void show_log(const char *log, bool all)
{
	FILE *f = fopen(log, "re");
	char line[4096];
	while (f && fgets(line, sizeof line, f))
		if (all || strstr(line, ": error: ") || strstr(line, ": warning: "))
			fputs(line, stderr);
	if (f)
		fclose(f);
}

static void remove_work(const char *work)
{
	static const char *const files[] = { "mount.log", "pid" }, *const dirs[] = { "lower", "root", "rw" };
	char p[PATH_MAX];
	for (size_t i = 0; i < 2; i++)
		unlink(under(work, files[i], p, sizeof p));
	for (size_t i = 0; i < 3; i++)
		rmdir(under(work, dirs[i], p, sizeof p));
	rmdir(work);
}

/* Work directories of chroots that were killed (their mounts went with
 * their namespace; these empty directories stayed). */
static void remove_stale_work(const char *parent)
{
	DIR *d = opendir(parent);
	struct dirent *de;
	while (d && (de = readdir(d))) {
		char work[PATH_MAX], p[PATH_MAX];
		if (strncmp(de->d_name, "mlfs-chroot.", 12) || strlen(de->d_name) != 18)
			continue;
		snprintf(work, sizeof work, "%s/%s", parent, de->d_name);
		FILE *f = fopen(under(work, "pid", p, sizeof p), "re");
		long pid = 0;
		if (f) {
			if (fscanf(f, "%ld", &pid) != 1)
				pid = 0;
			fclose(f);
		}
		/* No pid yet: a chroot between mkdtemp and writing it. */
		if (pid <= 0 || kill((pid_t)pid, 0) == 0 || errno != ESRCH)
			continue;
		remove_work(work);
	}
	if (d)
		closedir(d);
}

static bool mounted(const char *dir, const char *parent)
{
	struct stat a, b;
	return stat(dir, &a) == 0 && stat(parent, &b) == 0 && a.st_dev != b.st_dev;
}

/* Waits for the daemon's mount, or its failure: 0, or -1 after showing why. */
static int wait_mounted(pid_t daemon, const char *lower, const char *work, const char *log)
{
	for (long ms = 0; ms < MOUNT_WAIT_S * 1000L; ms += 20) {
		if (mounted(lower, work))
			return 0;
		int st;
		if (waitpid(daemon, &st, WNOHANG) == daemon) {
			show_log(log, true);
			return -1;
		}
		nanosleep(&(struct timespec){ 0, 20 * 1000000L }, NULL);
	}
	show_log(log, true);
	fprintf(stderr, "mlfs: error: the image was not mounted within %d s\n", MOUNT_WAIT_S);
	return -1;
}

/* Supervises the command: forwards SIGTERM and SIGHUP to it, lets the
 * terminal's SIGINT and SIGQUIT reach it alone, and returns its exit
 * status in the shell's convention. */
static int supervise(pid_t child, pid_t daemon, const sigset_t *waited)
{
	for (;;) {
		siginfo_t si;
		int sig = sigwaitinfo(waited, &si);
		if (sig == SIGTERM || sig == SIGHUP) {
			kill(child, sig);
			continue;
		}
		if (sig != SIGCHLD)
			continue;
		int st;
		pid_t p;
		while ((p = waitpid(-1, &st, WNOHANG)) > 0) {
			if (p == child)
				return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
			if (p == daemon)
				fprintf(stderr, "mlfs: warning: the image's FUSE daemon ended before the command\n");
		}
	}
}

static void stop_daemon(pid_t daemon)
{
	if (kill(daemon, SIGTERM) < 0)
		return;
	for (int i = 0; i < 1000; i++) { /* 10 s: it cancels downloads and unmounts */
		if (waitpid(daemon, NULL, WNOHANG) != 0)
			return;
		nanosleep(&(struct timespec){ 0, 10 * 1000000L }, NULL);
	}
	kill(daemon, SIGKILL);
	waitpid(daemon, NULL, 0);
}

int mlfs_cmd_chroot(int argc, char **argv)
{
	struct chroot_args a = { 0 };
	struct mlfs_err err = { 0 };
	int r = parse_args(argc, argv, &a);
	if (r != 0) {
		free(a.opts);
		free(a.upper);
		if (r == 1) { /* --help */
			usage(stdout);
			return 0;
		}
		return r == -EINVAL ? usage(stderr) : EXIT_MLFS;
	}
	mlfs_log_setup(MLFS_LOG_WARN, 0, false);
	/* The mount's own parser checks the options, before anything happens. */
	struct mount_opts mo;
	char *margv[] = { (char *)"mlfs chroot", (char *)a.ref, (char *)"/", (char *)"-o", a.opts, NULL };
	if (mount_opts_parse(a.opts ? 5 : 3, margv, &mo, &err) < 0) {
		free(a.opts);
		free(a.upper);
		cli_fail(&err);
		return EXIT_MLFS;
	}
	int status = EXIT_MLFS;
	struct mlfs_image *img = NULL;
	char *pinned = NULL, work[] = "/run/mlfs-chroot.XXXXXX";
	char lower[64], root[64], rw[64], log[64], upper[PATH_MAX], wdir[PATH_MAX];
	bool made = false, ns = false;
	pid_t daemon = -1;
	struct mlfs_image_opts io = { .platform = mo.platform, .cache_dir = mo.cache_dir, .insecure = mo.insecure,
				      .offline = mo.offline, .wait_s = mo.timeout_s, .policy = mo.policy,
				      .insecure_policy = mo.insecure_policy, .registries_conf = mo.registries_conf,
				      .registries_d = mo.registries_d };
	if (geteuid() != 0) {
		mlfs_err_set(&err, EPERM, "mlfs chroot needs root (mount namespaces, overlayfs, chroot)");
		goto fail;
	}
	if (mlfs_image_open(a.ref, &io, &img, &err) < 0 || check_runnable(&img->config->platform, &err) < 0)
		goto fail;
	/* The policy accepted REF here; the daemon mounts exactly that
	 * manifest, under a pinned name the policy's scopes may not know. */
	if (append_opt(&a.opts, "insecure-policy") < 0 ||
	    asprintf(&pinned, "%s/%s@%s", img->ref.domain, img->ref.path, img->manifest_digest) < 0) {
		mlfs_err_set(&err, ENOMEM, "out of memory");
		goto fail;
	}
	remove_stale_work("/run");
	remove_stale_work("/tmp");
	if (!mkdtemp(work) && (memcpy(work, "/tmp", 4), !mkdtemp(work))) {
		mlfs_err_set(&err, errno, "cannot make a work directory: %s", strerror(errno));
		goto fail;
	}
	made = true;
	char pidfile[64];
	FILE *pf = fopen(under(work, "pid", pidfile, sizeof pidfile), "we");
	if (pf) {
		fprintf(pf, "%ld\n", (long)getpid());
		fclose(pf);
	}
	snprintf(lower, sizeof lower, "%s/lower", work);
	snprintf(root, sizeof root, "%s/root", work);
	snprintf(rw, sizeof rw, "%s/rw", work);
	snprintf(log, sizeof log, "%s/mount.log", work);
	if (mkdir(lower, 0755) < 0 || mkdir(root, 0755) < 0 || mkdir(rw, 0700) < 0) {
		mlfs_err_set(&err, errno, "cannot make directories in %s: %s", work, strerror(errno));
		goto fail;
	}
	/* Everything from here is mounted in our namespace only. */
	if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) {
		mlfs_err_set(&err, errno, "cannot make a private mount namespace: %s", strerror(errno));
		goto fail;
	}
	ns = true;
	sigset_t waited, old;
	sigemptyset(&waited);
	sigaddset(&waited, SIGCHLD);
	sigaddset(&waited, SIGTERM);
	sigaddset(&waited, SIGHUP);
	sigaddset(&waited, SIGINT);
	sigaddset(&waited, SIGQUIT);
	sigprocmask(SIG_BLOCK, &waited, &old);
	fflush(NULL);
	daemon = fork();
	if (daemon == 0)
		run_daemon(pinned, lower, a.opts, log, &old);
	if (daemon < 0 || wait_mounted(daemon, lower, work, log) < 0) {
		if (daemon < 0)
			mlfs_err_set(&err, errno, "cannot start the FUSE daemon: %s", strerror(errno));
		daemon = -1;
		goto fail;
	}
	if (a.upper) {
		if (strpbrk(a.upper, ",:")) {
			mlfs_err_set(&err, EINVAL, "upper=%s: overlayfs cannot take a path with ',' or ':'", a.upper);
			goto fail;
		}
		snprintf(upper, sizeof upper, "%s/upper", a.upper);
		snprintf(wdir, sizeof wdir, "%s/work", a.upper);
	} else {
		if (mountf("tmpfs", rw, "tmpfs", 0, "mode=755", &err) < 0)
			goto fail;
		snprintf(upper, sizeof upper, "%s/upper", rw);
		snprintf(wdir, sizeof wdir, "%s/work", rw);
	}
	if (mlfs_mkdir_p(upper, 0755) < 0 || mlfs_mkdir_p(wdir, 0755) < 0) {
		mlfs_err_set(&err, errno, "cannot make %s and %s: %s", upper, wdir, strerror(errno));
		goto fail;
	}
	char ovl[3 * PATH_MAX];
	snprintf(ovl, sizeof ovl, "lowerdir=%s,upperdir=%s,workdir=%s", lower, upper, wdir);
	if (mountf("overlay", root, "overlay", 0, ovl, &err) < 0 || furnish(root, &err) < 0)
		goto fail;
	char **command = a.command ? a.command : default_command(img->config);
	fflush(NULL);
	pid_t child = fork();
	if (child == 0)
		run_command(root, img->config, command, &old);
	if (child < 0) {
		mlfs_err_set(&err, errno, "cannot start the command: %s", strerror(errno));
		goto fail;
	}
	status = supervise(child, daemon, &waited);
	goto out;
fail:
	if (err.msg[0])
		cli_fail(&err);
out:
	if (ns) {
		umount2(root, MNT_DETACH);
		umount2(rw, MNT_DETACH);
	}
	if (daemon > 0) {
		stop_daemon(daemon);
		show_log(log, false);
	}
	if (made)
		remove_work(work);
	free(pinned);
	mlfs_image_free(img);
	mount_opts_clear(&mo);
	free(a.opts);
	free(a.upper);
	return status;
}
