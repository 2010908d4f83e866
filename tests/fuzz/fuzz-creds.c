/* The credentials file parser (fetch/creds.c: docker's config.json and
 * containers' auth.json) on arbitrary bytes.  The parser is static, so the
 * input goes through the public mlfs_creds_lookup() as $REGISTRY_AUTH_FILE
 * (a memfd, read through /proc/self/fd: no disk I/O per input), looked up
 * for Docker Hub and for a registry with a port, which take different
 * paths through the key matching.  The other sources point at nothing and
 * PATH at an empty directory, so a credHelpers or credsStore entry fails to
 * spawn instead of running whatever docker-credential-* this machine has.
 *
 * The contract, beyond memory errors: a failure leaves *out empty and sets
 * a one-line message with the same code; a success either found nothing
 * (all empty) or returned a secret, with a username unless it is an
 * identity token. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "fetch/fetch.h"

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);
int LLVMFuzzerInitialize(int *argc, char ***argv);

static int fd = -1;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	mlfs_log_setup(MLFS_LOG_ERROR, 0, false);
	fd = memfd_create("fuzz-creds", MFD_CLOEXEC);
	if (fd < 0)
		abort();
	static char path[64], empty[64];
	snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
	snprintf(empty, sizeof empty, "/tmp/mlfs-fuzz-creds-%d", (int)getpid());
	(void)!mkdir(empty, 0700);
	if (setenv("REGISTRY_AUTH_FILE", path, 1) || setenv("PATH", empty, 1) || setenv("HOME", empty, 1) ||
	    setenv("DOCKER_CONFIG", empty, 1) || unsetenv("XDG_RUNTIME_DIR") ||
	    setenv("MLFS_CRED_HELPER_TIMEOUT_MS", "1000", 1))
		abort();
	return 0;
}

static void check(int r, const struct mlfs_creds *c, const struct mlfs_err *err)
{
	if (r < 0) {
		if (c->username || c->secret || c->identity_token)
			abort();
		if (err->code != -r || !err->msg[0] || strchr(err->msg, '\n'))
			abort();
		return;
	}
	if (r != 0)
		abort();
	if (!c->secret) {
		if (c->username || c->identity_token)
			abort();
		return;
	}
	if (c->identity_token ? c->username != NULL : c->username == NULL)
		abort();
	(void)strlen(c->secret);
	if (c->username)
		(void)strlen(c->username);
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
	if (ftruncate(fd, 0) < 0 || (n && pwrite(fd, d, n, 0) != (ssize_t)n))
		abort();
	static const char *const domains[] = { "docker.io", "registry.example:5000" };
	for (size_t i = 0; i < sizeof domains / sizeof domains[0]; i++) {
		struct mlfs_creds c;
		struct mlfs_err err = { 0 };
		int r = mlfs_creds_lookup(domains[i], &c, &err);
		check(r, &c, &err);
		mlfs_creds_clear(&c);
	}
	return 0;
}
