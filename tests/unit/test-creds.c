/* Credential lookup against real files and real helper processes: every
 * case builds its own config files under a temporary root, points the
 * environment at them (HOME too, so the user's own config never leaks in)
 * and puts shell-script helpers first on PATH. */
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fetch/fetch.h"
#include "tap.h"

static char root[PATH_MAX];
static char auth_file[PATH_MAX];   /* $REGISTRY_AUTH_FILE */
static char run_dir[PATH_MAX];     /* $XDG_RUNTIME_DIR */
static char run_file[PATH_MAX];    /* its containers/auth.json */
static char docker_dir[PATH_MAX];  /* $DOCKER_CONFIG */
static char docker_file[PATH_MAX];
static char home_dir[PATH_MAX];    /* $HOME */
static char home_file[PATH_MAX];   /* its .docker/config.json */
static char bin_dir[PATH_MAX];
static char pid_file[PATH_MAX];

static struct mlfs_creds C;
static struct mlfs_err E;

static void die(const char *what)
{
	perror(what);
	exit(99);
}

static void write_file(const char *path, const char *text, mode_t mode)
{
	FILE *f = fopen(path, "w");
	if (!f || fputs(text, f) == EOF || fclose(f) != 0)
		die(path);
	if (chmod(path, mode) < 0)
		die(path);
}

static void put(const char *path, const char *json)
{
	write_file(path, json, 0600);
}

static void helper(const char *name, const char *body)
{
	char path[PATH_MAX * 2], text[4096];
	snprintf(path, sizeof path, "%s/docker-credential-%s", bin_dir, name);
	snprintf(text, sizeof text, "#!/bin/sh\n%s\n", body);
	write_file(path, text, 0755);
}

static void mkdir_p(const char *path)
{
	char buf[PATH_MAX];
	snprintf(buf, sizeof buf, "%s", path);
	for (char *p = buf + 1; *p; p++) {
		if (*p == '/') {
			*p = '\0';
			mkdir(buf, 0700);
			*p = '/';
		}
	}
	if (mkdir(buf, 0700) < 0 && errno != EEXIST)
		die(buf);
}

/* Every case starts from: all four sources configured by environment,
 * none of their files present. */
static void reset(void)
{
	const char *files[] = { auth_file, run_file, docker_file, home_file, pid_file };
	for (size_t i = 0; i < sizeof files / sizeof files[0]; i++)
		if (unlink(files[i]) < 0 && errno != ENOENT && errno != EISDIR)
			die(files[i]);
	rmdir(auth_file);
	setenv("REGISTRY_AUTH_FILE", auth_file, 1);
	setenv("XDG_RUNTIME_DIR", run_dir, 1);
	setenv("DOCKER_CONFIG", docker_dir, 1);
	setenv("HOME", home_dir, 1);
	unsetenv("MLFS_CRED_HELPER_TIMEOUT_MS");
}

static int look(const char *domain)
{
	mlfs_creds_clear(&C);
	mlfs_err_clear(&E);
	return mlfs_creds_lookup(domain, &C, &E);
}

static bool is_empty(void)
{
	return !C.username && !C.secret && !C.identity_token;
}

static void expect_user(const char *domain, const char *user, const char *secret, const char *name)
{
	int r = look(domain);
	tap_is_int(r, 0, name);
	if (r)
		tap_diag("%s", E.msg);
	tap_is_str(C.username, user, name);
	tap_is_str(C.secret, secret, name);
	tap_ok(!C.identity_token, "%s: not an identity token", name);
}

static void expect_none(const char *domain, const char *name)
{
	int r = look(domain);
	tap_is_int(r, 0, name);
	if (r)
		tap_diag("%s", E.msg);
	tap_ok(is_empty(), "%s: no credentials", name);
}

static void expect_err(const char *domain, int code, const char *must_say, const char *must_not_say,
		       const char *name)
{
	int r = look(domain);
	tap_is_int(r, -code, name);
	tap_diag("%s", E.msg);
	tap_ok(is_empty(), "%s: credentials left empty", name);
	if (must_say) {
		tap_ok(strstr(E.msg, must_say) != NULL, "%s: message names %s", name, must_say);
		if (!strstr(E.msg, must_say))
			tap_diag("message: %s", E.msg);
	}
	if (must_not_say) {
		tap_ok(strstr(E.msg, must_not_say) == NULL, "%s: message keeps the secret out", name);
		if (strstr(E.msg, must_not_say))
			tap_diag("message: %s", E.msg);
	}
}

static int count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	if (!d)
		return -1;
	int n = 0;
	while (readdir(d))
		n++;
	closedir(d);
	return n;
}

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static pid_t read_pid(void)
{
	FILE *f = fopen(pid_file, "r");
	long pid = 0;
	if (f) {
		if (fscanf(f, "%ld", &pid) != 1)
			pid = 0;
		fclose(f);
	}
	return (pid_t)pid;
}

/* ---- sources and their order --------------------------------------------- */

static void test_sources(void)
{
	reset();
	expect_none("reg.example", "no files at all");

	reset();
	unsetenv("REGISTRY_AUTH_FILE");
	unsetenv("XDG_RUNTIME_DIR");
	unsetenv("DOCKER_CONFIG");
	expect_none("reg.example", "no variables but HOME, and no files");

	reset();
	put(auth_file, "{\"auths\":{\"reg.example\":{\"auth\":\"dTE6cDE=\"}}}");
	put(run_file, "{\"auths\":{\"reg.example\":{\"auth\":\"dTI6cDI=\"}}}");
	put(docker_file, "{\"auths\":{\"reg.example\":{\"auth\":\"dTM6cDM=\"}}}");
	expect_user("reg.example", "u1", "p1", "REGISTRY_AUTH_FILE comes first");

	unlink(auth_file);
	expect_user("reg.example", "u2", "p2", "missing REGISTRY_AUTH_FILE: XDG_RUNTIME_DIR next");

	put(auth_file, "{\"auths\":{\"other.example\":{\"auth\":\"dTE6cDE=\"}}}");
	expect_user("reg.example", "u2", "p2", "REGISTRY_AUTH_FILE without the registry: next file");

	put(auth_file, "{\"auths\":{\"reg.example\":{}}}");
	expect_user("reg.example", "u2", "p2", "an empty auths entry is a placeholder: next file");

	setenv("REGISTRY_AUTH_FILE", "", 1);
	put(auth_file, "{\"auths\":{\"reg.example\":{\"auth\":\"dTE6cDE=\"}}}");
	expect_user("reg.example", "u2", "p2", "empty REGISTRY_AUTH_FILE is unset");

	reset();
	put(run_file, "{\"auths\":{\"reg.example\":{\"auth\":\"dTI6cDI=\"}}}");
	put(docker_file, "{\"auths\":{\"reg.example\":{\"auth\":\"dTM6cDM=\"}}}");
	put(home_file, "{\"auths\":{\"reg.example\":{\"auth\":\"dTQ6cDQ=\"}}}");
	expect_user("reg.example", "u2", "p2", "XDG_RUNTIME_DIR before the Docker config");

	unsetenv("XDG_RUNTIME_DIR");
	expect_user("reg.example", "u3", "p3", "DOCKER_CONFIG when XDG_RUNTIME_DIR is unset");

	unlink(docker_file);
	expect_none("reg.example", "DOCKER_CONFIG set but empty dir: ~/.docker not read");

	unsetenv("DOCKER_CONFIG");
	expect_user("reg.example", "u4", "p4", "HOME/.docker/config.json without DOCKER_CONFIG");

	setenv("DOCKER_CONFIG", "", 1);
	expect_user("reg.example", "u4", "p4", "empty DOCKER_CONFIG is unset");

	reset();
	put(auth_file, "");
	put(run_file, "{\"auths\":{\"reg.example\":{\"auth\":\"dTI6cDI=\"}}}");
	expect_user("reg.example", "u2", "p2", "an empty file is like a missing one");

	reset();
	put(auth_file, "{}");
	put(run_file, "{\"auths\":null,\"credHelpers\":null,\"credsStore\":null}");
	put(docker_file, "{\"auths\":{\"reg.example\":{\"auth\":\"dTM6cDM=\"}}}");
	expect_user("reg.example", "u3", "p3", "{} and nulls are empty configs");
}

/* ---- auths entries and key matching -------------------------------------- */

static void test_entries(void)
{
	reset();
	put(docker_file, "{\"auths\":{\"reg.example\":{\"auth\":\"dXNlcjpwYXNz\",\"email\":\"x@y\"}}}");
	expect_user("reg.example", "user", "pass", "auth without padding");

	put(docker_file, "{\"auths\":{\"reg.example\":{\"auth\":\"YWI6Y2Q=\"}}}");
	expect_user("reg.example", "ab", "cd", "auth with one '='");

	put(docker_file, "{\"auths\":{\"reg.example\":{\"auth\":\"YWJjZDplZg==\"}}}");
	expect_user("reg.example", "abcd", "ef", "auth with two '='");

	put(docker_file, "{\"auths\":{\"reg.example\":{\"auth\":\"YTpiOmM=\"}}}");
	expect_user("reg.example", "a", "b:c", "password keeps its colons");

	put(docker_file, "{\"auths\":{\"reg.example\":{\"auth\":\"dXNlcjpwdwAA\"}}}");
	expect_user("reg.example", "user", "pw", "trailing NULs trimmed from the password");

	put(docker_file, "{\"auths\":{\"reg.example\":{\"username\":\"alice\",\"password\":\"pw\"}}}");
	expect_user("reg.example", "alice", "pw", "username + password fields");

	put(docker_file, "{\"auths\":{\"reg.example\":{\"auth\":\"dXNlcjpwYXNz\",\"username\":\"alice\",\"password\":\"pw\"}}}");
	expect_user("reg.example", "user", "pass", "auth wins over username + password");

	put(docker_file, "{\"auths\":{\"reg.example\":{\"identitytoken\":\"tok-1\",\"auth\":\"dXNlcjpwYXNz\"}}}");
	tap_is_int(look("reg.example"), 0, "identitytoken");
	tap_ok(C.identity_token, "identitytoken: flagged");
	tap_is_str(C.username, NULL, "identitytoken: no user name");
	tap_is_str(C.secret, "tok-1", "identitytoken: token is the secret");

	/* Docker Hub under each of its names. */
	const char *hub_keys[] = { "https://index.docker.io/v1/", "index.docker.io", "docker.io",
				   "registry-1.docker.io" };
	for (size_t i = 0; i < sizeof hub_keys / sizeof hub_keys[0]; i++) {
		char json[256], name[128];
		snprintf(json, sizeof json, "{\"auths\":{\"%s\":{\"auth\":\"aHViOnB3\"}}}", hub_keys[i]);
		snprintf(name, sizeof name, "docker.io matches key %s", hub_keys[i]);
		put(docker_file, json);
		expect_user("docker.io", "hub", "pw", name);
	}
	put(docker_file, "{\"auths\":{\"https://index.docker.io/v1/\":{\"auth\":\"aHViOnB3\"}}}");
	expect_none("quay.io", "a Hub key does not match another registry");
	put(docker_file, "{\"auths\":{\"docker.io.evil.example\":{\"auth\":\"aHViOnB3\"}}}");
	expect_none("docker.io", "a key that merely starts with docker.io does not match");

	/* URL-form keys. */
	put(docker_file, "{\"auths\":{\"https://host.example:5000/v1/\":{\"auth\":\"dTE6cDE=\"}}}");
	expect_user("host.example:5000", "u1", "p1", "https URL key with port and path");
	expect_none("host.example", "URL key's port must match");
	put(docker_file, "{\"auths\":{\"http://plain.example\":{\"auth\":\"dTE6cDE=\"}}}");
	expect_user("plain.example", "u1", "p1", "http URL key without path");
	put(docker_file, "{\"auths\":{\"HTTPS://Case.Example/\":{\"auth\":\"dTE6cDE=\"}}}");
	expect_user("case.example", "u1", "p1", "scheme and host compared without case");
	put(docker_file, "{\"auths\":{\"https://reg.example/v1/\":{\"auth\":\"dTE6cDE=\"},\"reg.example\":{\"auth\":\"dTI6cDI=\"}}}");
	expect_user("reg.example", "u2", "p2", "an exact key wins over an earlier URL key");
	put(docker_file, "{\"auths\":{\"https://reg.example/v1/\":{\"auth\":\"dTE6cDE=\"},\"http://reg.example\":{\"auth\":\"dTI6cDI=\"}}}");
	expect_user("reg.example", "u1", "p1", "between URL keys, the first in the file");

	/* containers' per-repository keys. */
	put(docker_file, "{\"auths\":{\"quay.io/ns/repo\":{\"auth\":\"dTE6cDE=\"}}}");
	expect_none("quay.io", "a repository key is not the registry's");
	put(docker_file, "{\"auths\":{\"quay.io/ns/repo\":{\"auth\":\"!!\"},\"quay.io\":{\"auth\":\"dTI6cDI=\"}}}");
	expect_user("quay.io", "u2", "p2", "repository keys sit beside registry keys");
}

static void test_bad_files(void)
{
	reset();
	put(docker_file, "{\"auths\":{\"reg.example\":{\"auth\":\"!!!!\"}}}");
	expect_err("reg.example", EINVAL, docker_file, "!!!!", "auth with bad characters");
	tap_ok(strstr(E.msg, "reg.example") != NULL, "bad auth: message names the registry");

	put(docker_file, "{\"auths\":{\"reg.example\":{\"auth\":\"dXNlcjpwYXNz=\"}}}");
	expect_err("reg.example", EINVAL, "reg.example", "dXNlcjpwYXNz", "auth of bad length");
	put(docker_file, "{\"auths\":{\"reg.example\":{\"auth\":\"YWI6Y2Q\"}}}");
	expect_err("reg.example", EINVAL, docker_file, NULL, "auth without its padding");
	put(docker_file, "{\"auths\":{\"reg.example\":{\"auth\":\"YW=6Y2Q=\"}}}");
	expect_err("reg.example", EINVAL, docker_file, NULL, "'=' inside auth");
	put(docker_file, "{\"auths\":{\"reg.example\":{\"auth\":\"YWI6Y2Q===\"}}}");
	expect_err("reg.example", EINVAL, docker_file, NULL, "three '=' in auth");
	put(docker_file, "{\"auths\":{\"reg.example\":{\"auth\":\" YWI6Y2Q=\"}}}");
	expect_err("reg.example", EINVAL, docker_file, NULL, "whitespace in auth");
	put(docker_file, "{\"auths\":{\"reg.example\":{\"auth\":\"bm9jb2xvbnNlY3JldA==\"}}}");
	expect_err("reg.example", EINVAL, docker_file, "nocolonsecret", "auth without ':'");
	put(docker_file, "{\"auths\":{\"reg.example\":{\"auth\":\"OnBhc3M=\"}}}");
	expect_err("reg.example", EINVAL, docker_file, NULL, "auth with an empty user name");
	put(docker_file, "{\"auths\":{\"reg.example\":{\"auth\":5}}}");
	expect_err("reg.example", EINVAL, docker_file, NULL, "auth that is not a string");
	put(docker_file, "{\"auths\":{\"reg.example\":\"dXNlcjpwYXNz\"}}");
	expect_err("reg.example", EINVAL, docker_file, "dXNlcjpwYXNz", "an entry that is not an object");
	put(docker_file, "{\"auths\":{\"other.example\":{\"auth\":\"!!!!\"}},\"x\":1}");
	expect_none("reg.example", "a broken entry for another registry is not our problem");

	put(docker_file, "{\"auths\":{\"reg.example\":{\"auth\":\"c2VjcmV0cGFzcw");
	expect_err("reg.example", EINVAL, docker_file, "c2VjcmV0cGFzcw", "truncated JSON");
	put(docker_file, "{\"auths\": {\"reg.example\": {\"auth\": c2VjcmV0cGFzcw}}}");
	expect_err("reg.example", EINVAL, "malformed JSON", "c2VjcmV0cGFzcw", "unquoted token in JSON");
	put(docker_file, "[]");
	expect_err("reg.example", EINVAL, docker_file, NULL, "top level is not an object");
	put(docker_file, "{\"auths\":[]}");
	expect_err("reg.example", EINVAL, docker_file, NULL, "auths is not an object");
	put(docker_file, "{\"credsStore\":7}");
	expect_err("reg.example", EINVAL, docker_file, NULL, "credsStore is not a string");
	put(docker_file, "{\"credHelpers\":{\"reg.example\":true}}");
	expect_err("reg.example", EINVAL, docker_file, NULL, "credHelpers value is not a string");

	/* An error stops the search: a later file is not a silent fallback. */
	reset();
	put(auth_file, "{\"auths\":");
	put(docker_file, "{\"auths\":{\"reg.example\":{\"auth\":\"dTM6cDM=\"}}}");
	expect_err("reg.example", EINVAL, auth_file, NULL, "malformed first file is an error");

	reset();
	mkdir_p(auth_file);
	expect_err("reg.example", EINVAL, auth_file, NULL, "a directory is not a credentials file");

	reset();
	put(auth_file, "{}");
	chmod(auth_file, 0);
	if (geteuid() == 0) {
		tap_ok(true, "unreadable file # SKIP running as root");
	} else {
		expect_err("reg.example", EINVAL, auth_file, NULL, "unreadable file");
	}

	reset();
	tap_is_int(look(""), -EINVAL, "empty registry name refused");
}

/* ---- helpers ------------------------------------------------------------- */

/* Answers with Username "u-<what it read on stdin>" so tests see the server URL. */
#define CREDS_HELPER                                                                      \
	"[ \"$1\" = get ] || exit 3\n"                                                    \
	"read -r url\n"                                                                   \
	"printf '{\"ServerURL\":\"%s\",\"Username\":\"u-%s\",\"Secret\":\"s3cret\"}\\n' " \
	"\"$url\" \"$url\""

static void test_helpers(void)
{
	reset();
	helper("mlfstest", CREDS_HELPER);
	helper("mlfsother", "cat >/dev/null; echo '{\"Username\":\"other\",\"Secret\":\"o\"}'");
	helper("mlfsnotfound", "echo 'credentials not found in native keychain'; exit 1");
	helper("mlfstoken", "echo '{\"ServerURL\":\"x\",\"Username\":\"<token>\",\"Secret\":\"id-tok\"}'");

	put(docker_file, "{\"credHelpers\":{\"reg.example:5000\":\"mlfstest\"}}");
	expect_user("reg.example:5000", "u-reg.example:5000", "s3cret",
		    "credHelpers: helper gets the domain on stdin");

	put(docker_file, "{\"credHelpers\":{\"https://index.docker.io/v1/\":\"mlfstest\"}}");
	expect_user("docker.io", "u-https://index.docker.io/v1/", "s3cret",
		    "credHelpers for Docker Hub: key and server URL are the v1 index");

	put(docker_file, "{\"credsStore\":\"mlfstest\"}");
	expect_user("docker.io", "u-https://index.docker.io/v1/", "s3cret", "credsStore for Docker Hub");

	put(docker_file, "{\"credsStore\":\"mlfsother\",\"credHelpers\":{\"reg.example\":\"mlfstest\"}}");
	expect_user("reg.example", "u-reg.example", "s3cret", "credHelpers wins over credsStore");
	expect_user("elsewhere.example", "other", "o", "credsStore for registries without credHelpers");

	put(docker_file, "{\"credsStore\":\"mlfstest\",\"auths\":{\"reg.example\":{\"auth\":\"dTE6cDE=\"}}}");
	expect_user("reg.example", "u-reg.example", "s3cret", "credsStore wins over auths");

	put(docker_file, "{\"credsStore\":\"mlfstest\",\"credHelpers\":{\"reg.example\":\"\"},"
			 "\"auths\":{\"reg.example\":{\"auth\":\"dTE6cDE=\"}}}");
	expect_user("reg.example", "u1", "p1", "empty credHelpers value: auths, not credsStore");

	put(docker_file, "{\"credsStore\":\"\",\"auths\":{\"reg.example\":{\"auth\":\"dTE6cDE=\"}}}");
	expect_user("reg.example", "u1", "p1", "empty credsStore: auths");

	put(docker_file, "{\"credHelpers\":{\"reg.example\":\"mlfstoken\"}}");
	tap_is_int(look("reg.example"), 0, "helper <token>");
	tap_ok(C.identity_token, "helper <token>: identity token");
	tap_is_str(C.username, NULL, "helper <token>: no user name");
	tap_is_str(C.secret, "id-tok", "helper <token>: token is the secret");

	/* Not found from the chosen helper is final, as in docker. */
	reset();
	put(auth_file, "{\"credHelpers\":{\"reg.example\":\"mlfsnotfound\"},"
		       "\"auths\":{\"reg.example\":{\"auth\":\"dTE6cDE=\"}}}");
	put(run_file, "{\"auths\":{\"reg.example\":{\"auth\":\"dTI6cDI=\"}}}");
	expect_none("reg.example", "helper says not found: no fallback to auths or later files");

	helper("mlfsempty", "echo '{\"ServerURL\":\"x\",\"Username\":\"\",\"Secret\":\"\"}'");
	put(auth_file, "{\"credsStore\":\"mlfsempty\"}");
	expect_none("reg.example", "helper answering empty credentials: none");

	reset();
	put(docker_file, "{\"credsStore\":\"nosuch\"}");
	char want[PATH_MAX * 2];
	snprintf(want, sizeof want, "docker-credential-nosuch not found on PATH (configured in %s)",
		 docker_file);
	expect_err("reg.example", ENOENT, want, NULL, "helper not installed");

	put(docker_file, "{\"credsStore\":\"../bin/mlfstest\"}");
	expect_err("reg.example", EINVAL, "../bin/mlfstest", NULL, "helper name with '/' refused");

	helper("mlfsfail", "echo 'some error about hunter2'; exit 2");
	put(docker_file, "{\"credsStore\":\"mlfsfail\"}");
	expect_err("reg.example", EIO, "exit status 2", "hunter2", "failing helper");

	helper("mlfssignal", "kill -9 $$");
	put(docker_file, "{\"credsStore\":\"mlfssignal\"}");
	expect_err("reg.example", EIO, "signal 9", NULL, "helper killed by a signal");

	helper("mlfsgarbage", "echo 'Username: hunter2'");
	put(docker_file, "{\"credsStore\":\"mlfsgarbage\"}");
	expect_err("reg.example", EPROTO, "docker-credential-mlfsgarbage", "hunter2",
		   "helper output that is not JSON");

	helper("mlfsarray", "echo '[\"hunter2\"]'");
	put(docker_file, "{\"credsStore\":\"mlfsarray\"}");
	expect_err("reg.example", EPROTO, NULL, "hunter2", "helper output of the wrong shape");

	helper("mlfsbig", "head -c 70000 /dev/zero | tr '\\0' a");
	put(docker_file, "{\"credsStore\":\"mlfsbig\"}");
	expect_err("reg.example", EFBIG, "docker-credential-mlfsbig", NULL, "helper output over 64 KiB");

	helper("mlfsnoexec", "exit 0");
	char path[PATH_MAX * 2];
	snprintf(path, sizeof path, "%s/docker-credential-mlfsnoexec", bin_dir);
	chmod(path, 0644);
	put(docker_file, "{\"credsStore\":\"mlfsnoexec\"}");
	/* Even root may not exec a file without any x bit. */
	tap_ok(look("reg.example") < 0, "helper without exec permission fails");
	tap_ok(strstr(E.msg, "docker-credential-mlfsnoexec") != NULL, "no exec permission: message names it");
}

static void test_helper_timeouts(void)
{
	char body[PATH_MAX * 2];

	reset();
	setenv("MLFS_CRED_HELPER_TIMEOUT_MS", "300", 1);
	snprintf(body, sizeof body, "echo $$ > '%s'\nexec sleep 30", pid_file);
	helper("mlfshang", body);
	put(docker_file, "{\"credsStore\":\"mlfshang\"}");
	int64_t t0 = now_ms();
	expect_err("reg.example", ETIMEDOUT, "docker-credential-mlfshang", NULL, "hanging helper");
	int64_t took = now_ms() - t0;
	tap_ok(took >= 250 && took < 3000, "hanging helper: given up after the timeout (%lld ms)",
	       (long long)took);
	pid_t pid = read_pid();
	tap_ok(pid > 0 && kill(pid, 0) < 0 && errno == ESRCH, "hanging helper: killed and reaped");

	/* Closing stdout is not the same as exiting. */
	reset();
	setenv("MLFS_CRED_HELPER_TIMEOUT_MS", "300", 1);
	snprintf(body, sizeof body, "echo $$ > '%s'\nexec >&-\nexec sleep 30", pid_file);
	helper("mlfslinger", body);
	put(docker_file, "{\"credsStore\":\"mlfslinger\"}");
	t0 = now_ms();
	expect_err("reg.example", ETIMEDOUT, NULL, NULL, "helper lingering after closing stdout");
	took = now_ms() - t0;
	tap_ok(took < 3000, "lingering helper: given up after the timeout (%lld ms)", (long long)took);
	pid = read_pid();
	tap_ok(pid > 0 && kill(pid, 0) < 0 && errno == ESRCH, "lingering helper: killed and reaped");

	/* A helper that never reads its stdin must not hurt us (SIGPIPE). */
	reset();
	helper("mlfsdeaf", "exec 0<&-\necho '{\"Username\":\"deaf\",\"Secret\":\"d\"}'");
	put(docker_file, "{\"credsStore\":\"mlfsdeaf\"}");
	expect_user("reg.example", "deaf", "d", "helper that ignores its stdin");
}

static void test_no_fd_leak(void)
{
	reset();
	put(docker_file, "{\"credsStore\":\"mlfstest\"}");
	int before = count_fds();
	for (int i = 0; i < 5; i++)
		look("reg.example");
	put(docker_file, "{\"credsStore\":\"nosuch\"}");
	look("reg.example");
	put(docker_file, "{\"auths\":{\"reg.example\":{\"auth\":\"dTE6cDE=\"}}}");
	look("reg.example");
	tap_is_int(count_fds(), before, "no file descriptor leaked");

	mlfs_creds_clear(&C);
	mlfs_creds_clear(&C);
	tap_ok(is_empty(), "mlfs_creds_clear is idempotent");
}

static void under_root(char *dst, const char *rel)
{
	int n = snprintf(dst, PATH_MAX, "%s/%s", root, rel);
	if (n < 0 || n >= PATH_MAX) {
		fprintf(stderr, "path too long: %s/%s\n", root, rel);
		exit(99);
	}
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(path);
}

int main(void)
{
	const char *tmp = getenv("TMPDIR");
	snprintf(root, sizeof root, "%s/mlfs-test-creds.XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(root))
		die("mkdtemp");
	under_root(auth_file, "auth.json");
	under_root(run_dir, "run");
	under_root(run_file, "run/containers/auth.json");
	under_root(docker_dir, "docker");
	under_root(docker_file, "docker/config.json");
	under_root(home_dir, "home");
	under_root(home_file, "home/.docker/config.json");
	under_root(bin_dir, "bin");
	under_root(pid_file, "helper.pid");
	char dir[PATH_MAX];
	mkdir_p(bin_dir);
	mkdir_p(docker_dir);
	under_root(dir, "run/containers");
	mkdir_p(dir);
	under_root(dir, "home/.docker");
	mkdir_p(dir);

	const char *path = getenv("PATH");
	char *newpath;
	if (asprintf(&newpath, "%s:%s", bin_dir, path && *path ? path : "/usr/bin:/bin") < 0)
		die("asprintf");
	setenv("PATH", newpath, 1);
	free(newpath);

	test_sources();
	test_entries();
	test_bad_files();
	test_helpers();
	test_helper_timeouts();
	test_no_fd_leak();

	mlfs_creds_clear(&C);
	nftw(root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	return tap_done();
}
