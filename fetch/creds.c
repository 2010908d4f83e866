/* Registry credentials from the files podman, skopeo and docker write.
 *
 * Which file: the first of $REGISTRY_AUTH_FILE, ${XDG_RUNTIME_DIR}/containers/
 * auth.json and the Docker config ($DOCKER_CONFIG/config.json, or
 * ~/.docker/config.json only when $DOCKER_CONFIG is unset, as docker does)
 * that has something to say about the domain.  A missing file says nothing;
 * an unreadable or malformed one is an error rather than a silent anonymous
 * pull, because the user would then chase a 401 that is really a typo.
 *
 * Within one file docker's order applies: credHelpers[registry] names the
 * helper for that registry, else credsStore names one for all registries,
 * else the auths entry is used.  An empty credHelpers value means "this
 * registry uses auths" and so also shadows credsStore (docker reads it that
 * way).  Every file is read with the same rules: podman never writes
 * credsStore into auth.json, and a copied Docker config keeps working.
 *
 * Once a helper is chosen, its answer is final, including "credentials not
 * found": docker's native store then returns empty credentials without
 * looking at auths (whose entries are only "{}" placeholders next to a
 * credsStore), and we likewise do not fall through to later files.
 * An auths entry with nothing usable in it is such a placeholder too, and
 * the search moves on to the next file, as containers/image does.
 *
 * Keys are matched by registry only.  An exact key wins; otherwise keys
 * written as URLs ("https://host:5000/v1/") are compared by host[:port], and
 * the Docker Hub names (docker.io, index.docker.io, registry-1.docker.io)
 * are one registry.  A key without a scheme that has a path
 * ("quay.io/ns/repo") is a containers/image per-repository entry; it never
 * stands for the whole registry, so it is skipped.
 *
 * Secrets never reach a message or the log: not the decoded auth, not a
 * helper's output, and not jansson's parse errors either, which quote the
 * text near the error. */
#include "fetch/fetch.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <openssl/evp.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/log.h"

#define CREDS_FILE_MAX (1u << 20)        /* a config.json is a few KiB */
#define AUTH_B64_MAX (16u << 10)
#define HELPER_OUTPUT_MAX (64u << 10)
#define HELPER_TIMEOUT_MS 10000
/* Tests shorten the helper timeout through this; not a user setting. */
#define HELPER_TIMEOUT_ENV "MLFS_CRED_HELPER_TIMEOUT_MS"
/* Docker keys Hub credentials by its v1 index URL, and helpers store them
 * under that name, so that is what we must ask for. */
#define HUB_SERVER_URL "https://index.docker.io/v1/"
#define HELPER_NOT_FOUND "credentials not found"

static void secret_freep(char **p)
{
	if (*p) {
		explicit_bzero(*p, strlen(*p));
		free(*p);
	}
}

void mlfs_creds_clear(struct mlfs_creds *c)
{
	if (!c)
		return;
	secret_freep(&c->secret);
	free(c->username);
	*c = (struct mlfs_creds){ 0 };
}

/* ---- registry names ------------------------------------------------------ */

static bool is_hub(const char *host, size_t len)
{
	static const char *const names[] = { "docker.io", "index.docker.io", "registry-1.docker.io" };
	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
		if (strlen(names[i]) == len && !strncasecmp(host, names[i], len))
			return true;
	return false;
}

static bool key_names_domain(const char *key, const char *domain)
{
	const char *host = key;
	if (!strncasecmp(key, "https://", 8))
		host = key + 8;
	else if (!strncasecmp(key, "http://", 7))
		host = key + 7;
	size_t len = strcspn(host, "/");
	if (len == 0 || (host == key && host[len] == '/'))
		return false;
	size_t dlen = strlen(domain);
	/* Host names are case-insensitive; docker compares bytes, but a key
	 * that differs only in case can only have meant this registry. */
	if (len == dlen && !strncasecmp(host, domain, len))
		return true;
	return is_hub(host, len) && is_hub(domain, dlen);
}

/* The value for domain in a credHelpers or auths object, and its key. */
static json_t *find_entry(json_t *obj, const char *domain, const char **key_out)
{
	json_t *v = json_object_get(obj, domain);
	if (v) {
		*key_out = domain;
		return v;
	}
	const char *key;
	/* Object iteration follows file order, so ties go to the first key. */
	json_object_foreach (obj, key, v) {
		if (key_names_domain(key, domain)) {
			*key_out = key;
			return v;
		}
	}
	return NULL;
}

/* ---- "auth": base64("user:password") ------------------------------------- */

static bool b64_char(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '+' || c == '/';
}

/* 0, -EINVAL when malformed (no detail: the caller's message must not
 * describe the secret), -ENOMEM. */
static int decode_auth(const char *b64, char **user, char **pass)
{
	size_t n = strlen(b64);
	/* EVP_DecodeBlock alone is too lenient: it decodes '=' anywhere as
	 * zero bits and skips surrounding whitespace, so check the shape Go's
	 * StdEncoding (docker's decoder) accepts first. */
	if (n == 0 || n % 4 || n > AUTH_B64_MAX)
		return -EINVAL;
	size_t pad = 0;
	while (pad < 2 && b64[n - 1 - pad] == '=')
		pad++;
	for (size_t i = 0; i < n - pad; i++)
		if (!b64_char((unsigned char)b64[i]))
			return -EINVAL;

	size_t cap = n / 4 * 3;
	_cleanup_free_ unsigned char *buf = malloc(cap + 1);
	if (!buf)
		return -ENOMEM;
	int got = EVP_DecodeBlock(buf, (const unsigned char *)b64, (int)n);
	int r = 0;
	/* The block decoder always yields whole groups of 3 bytes, the padding
	 * positions included as zero bytes: drop those. */
	if (got < 0 || (size_t)got != cap) {
		r = -EINVAL;
		goto out;
	}
	size_t len = cap - pad;
	unsigned char *colon = memchr(buf, ':', len);
	if (!colon || colon == buf) { /* docker refuses an empty user name too */
		r = -EINVAL;
		goto out;
	}
	size_t ulen = (size_t)(colon - buf);
	const unsigned char *p = colon + 1;
	size_t plen = len - ulen - 1;
	/* Old docker versions wrote NUL-padded passwords; docker trims them. */
	while (plen && p[plen - 1] == '\0')
		plen--;
	while (plen && p[0] == '\0')
		p++, plen--;
	if (memchr(buf, '\0', ulen) || memchr(p, '\0', plen)) {
		r = -EINVAL;
		goto out;
	}
	*user = strndup((const char *)buf, ulen);
	*pass = strndup((const char *)p, plen);
	if (!*user || !*pass) {
		free(*user);
		secret_freep(pass);
		*user = *pass = NULL;
		r = -ENOMEM;
	}
out:
	explicit_bzero(buf, cap + 1);
	return r;
}

/* ---- credential helpers -------------------------------------------------- */

static int helper_timeout_ms(void)
{
	const char *s = getenv(HELPER_TIMEOUT_ENV);
	if (s && *s) {
		char *end;
		errno = 0;
		long v = strtol(s, &end, 10);
		if (!errno && !*end && v > 0 && v <= 600000)
			return (int)v;
	}
	return HELPER_TIMEOUT_MS;
}

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* posix_spawn's dup2(fd, 0) keeps O_CLOEXEC when fd already is 0 (a daemon
 * started with stdin closed), and the child would start without it. */
static int move_above_stdio(int *fd)
{
	if (*fd > 2)
		return 0;
	int n = fcntl(*fd, F_DUPFD_CLOEXEC, 3);
	if (n < 0)
		return -errno;
	close(*fd);
	*fd = n;
	return 0;
}

static int make_pipe(int *rd, int *wr)
{
	int p[2];
	if (pipe2(p, O_CLOEXEC) < 0)
		return -errno;
	*rd = p[0];
	*wr = p[1];
	int r = move_above_stdio(rd);
	return r < 0 ? r : move_above_stdio(wr);
}

struct helper_run {
	const char *prog;   /* "docker-credential-NAME" */
	const char *input;  /* what goes on its stdin */
	const char *file;   /* the config that named it, for messages */
	char *out;          /* HELPER_OUTPUT_MAX + 2 bytes, NUL-terminated */
	size_t out_len;
	int status;         /* from waitpid */
};

/* Runs `prog get`, feeding input and collecting stdout, within the timeout.
 * The child is always reaped before returning. */
static int helper_run(struct helper_run *h, struct mlfs_err *err)
{
	_cleanup_close_ int in_r = -1, in_w = -1, out_r = -1, out_w = -1;
	int r = make_pipe(&in_r, &in_w);
	if (r == 0)
		r = make_pipe(&out_r, &out_w);
	if (r < 0)
		return mlfs_err_set(err, -r, "%s: cannot create a pipe: %s", h->prog, strerror(-r));

	/* The whole input fits in the pipe buffer, so writing it before the
	 * child exists can neither block nor raise SIGPIPE in this process
	 * if the helper exits without reading it. */
	size_t len = strlen(h->input);
	if (len >= PIPE_BUF)
		return mlfs_err_set(err, EINVAL, "%s: server name too long", h->prog);
	for (size_t done = 0; done < len;) {
		ssize_t w = write(in_w, h->input + done, len - done);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return mlfs_err_set(err, errno, "%s: writing its input: %m", h->prog);
		done += (size_t)w;
	}
	close(steal_fd(&in_w));

	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	sigset_t none, pipe_only;
	sigemptyset(&none);
	sigemptyset(&pipe_only);
	sigaddset(&pipe_only, SIGPIPE);
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, in_r, STDIN_FILENO);
	posix_spawn_file_actions_adddup2(&fa, out_w, STDOUT_FILENO);
	posix_spawnattr_init(&attr);
	/* The daemon may block signals in its threads or ignore SIGPIPE; a
	 * helper should start with neither. */
	posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
	posix_spawnattr_setsigmask(&attr, &none);
	posix_spawnattr_setsigdefault(&attr, &pipe_only);
	char *argv[] = { (char *)h->prog, (char *)"get", NULL };
	pid_t pid;
	int e = posix_spawnp(&pid, h->prog, &fa, &attr, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&attr);
	if (e == ENOENT)
		return mlfs_err_set(err, ENOENT, "%s not found on PATH (configured in %s)", h->prog,
				    h->file);
	if (e)
		return mlfs_err_set(err, e, "cannot run %s (configured in %s): %s", h->prog, h->file,
				    strerror(e));
	close(steal_fd(&in_r));
	close(steal_fd(&out_w));

	int timeout = helper_timeout_ms();
	int64_t deadline = now_ms() + timeout;
	h->out_len = 0;
	for (;;) {
		int64_t left = deadline - now_ms();
		if (left <= 0) {
			r = -ETIMEDOUT;
			break;
		}
		struct pollfd pfd = { .fd = out_r, .events = POLLIN };
		int n = poll(&pfd, 1, (int)left);
		if (n < 0 && errno != EINTR) {
			r = -errno;
			break;
		}
		if (n <= 0)
			continue;
		/* Room for one byte past the cap, to tell "too big" from "full". */
		ssize_t got = read(out_r, h->out + h->out_len, HELPER_OUTPUT_MAX + 1 - h->out_len);
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0) {
			r = -errno;
			break;
		}
		if (got == 0)
			break;
		h->out_len += (size_t)got;
		if (h->out_len > HELPER_OUTPUT_MAX) {
			r = -EFBIG;
			break;
		}
	}
	h->out[h->out_len] = '\0';

	/* stdout closed is not exited: wait for the exit under the same
	 * deadline, then kill, so that one way or another it is reaped. */
	bool reaped = false;
	while (r == 0) {
		pid_t w = waitpid(pid, &h->status, WNOHANG);
		if (w == pid) {
			reaped = true;
			break;
		}
		if (w < 0 && errno != EINTR) {
			r = -errno;
			/* ECHILD: SIGCHLD is ignored and the kernel reaped it;
			 * the pid may already be reused, so do not signal it. */
			reaped = errno == ECHILD;
			break;
		}
		if (now_ms() >= deadline) {
			r = -ETIMEDOUT;
			break;
		}
		nanosleep(&(struct timespec){ .tv_nsec = 2 * 1000 * 1000 }, NULL);
	}
	if (!reaped) {
		kill(pid, SIGKILL);
		while (waitpid(pid, &h->status, 0) < 0 && errno == EINTR)
			;
	}

	if (r == -ETIMEDOUT)
		return mlfs_err_set(err, ETIMEDOUT,
				    "%s get did not answer within %d ms and was killed (configured in %s)",
				    h->prog, timeout, h->file);
	if (r == -EFBIG)
		return mlfs_err_set(err, EFBIG, "%s get wrote more than %u bytes (configured in %s)",
				    h->prog, HELPER_OUTPUT_MAX, h->file);
	if (r < 0)
		return mlfs_err_set(err, -r, "%s get (configured in %s): %s", h->prog, h->file,
				    strerror(-r));
	/* posix_spawn reports a failed exec by its return value only where it
	 * can share memory with the child (not under qemu-user, which turns
	 * vfork into fork): there the child exits 127, as a shell would. */
	if (WIFEXITED(h->status) && WEXITSTATUS(h->status) == 127 && h->out_len == 0)
		return mlfs_err_set(err, ENOENT, "%s not found on PATH (configured in %s)", h->prog, h->file);
	return 0;
}

static bool helper_said_not_found(const char *out)
{
	while (*out == ' ' || *out == '\t' || *out == '\n' || *out == '\r')
		out++;
	return !strncmp(out, HELPER_NOT_FOUND, strlen(HELPER_NOT_FOUND));
}

/* What a finished `get` said: 0 with *out filled or left empty, or <0. */
static int helper_answer(const struct helper_run *h, struct mlfs_creds *out, struct mlfs_err *err)
{
	if (WIFSIGNALED(h->status))
		return mlfs_err_set(err, EIO, "%s get for %s was killed by signal %d (configured in %s)",
				    h->prog, h->input, WTERMSIG(h->status), h->file);
	if (WEXITSTATUS(h->status) != 0) {
		if (helper_said_not_found(h->out)) {
			log_debug(MLFS_AREA_AUTH, "%s has no credentials for %s", h->prog, h->input);
			return 0;
		}
		/* Its output is not quoted: it is not ours to judge whether a
		 * failing helper printed something secret.  Its stderr, which
		 * helpers use for diagnostics, goes to ours. */
		return mlfs_err_set(err, EIO, "%s get for %s failed with exit status %d (configured in %s)",
				    h->prog, h->input, WEXITSTATUS(h->status), h->file);
	}

	json_error_t jerr;
	_cleanup_(json_decrefp) json_t *j = json_loadb(h->out, h->out_len, 0, &jerr);
	const char *user = NULL, *secret = NULL;
	if (!j || json_unpack_ex(j, &jerr, 0, "{s?s s?s}", "Username", &user, "Secret", &secret))
		return mlfs_err_set(err, EPROTO,
				    "%s get for %s: output is not the expected JSON object (configured in %s)",
				    h->prog, h->input, h->file);
	if ((!user || !*user) && (!secret || !*secret))
		return 0;
	out->identity_token = user && !strcmp(user, "<token>");
	if (!out->identity_token && !(out->username = strdup(user ? user : "")))
		return -ENOMEM;
	if (!(out->secret = strdup(secret ? secret : "")))
		return -ENOMEM;
	log_debug(MLFS_AREA_AUTH, "credentials for %s from %s", h->input, h->prog);
	return 0;
}

static int helper_lookup(const char *name, const char *domain, const char *file,
			 struct mlfs_creds *out, struct mlfs_err *err)
{
	/* A '/' would make posix_spawnp run a path instead of searching PATH. */
	if (!*name || strchr(name, '/'))
		return mlfs_err_set(err, EINVAL, "credentials file %s: invalid credential helper name \"%s\"", file,
				    name);
	_cleanup_free_ char *prog = NULL;
	if (asprintf(&prog, "docker-credential-%s", name) < 0)
		return -ENOMEM;
	_cleanup_free_ char *outbuf = malloc(HELPER_OUTPUT_MAX + 2);
	if (!outbuf)
		return -ENOMEM;
	struct helper_run h = {
		.prog = prog,
		.input = is_hub(domain, strlen(domain)) ? HUB_SERVER_URL : domain,
		.file = file,
		.out = outbuf,
	};
	int r = helper_run(&h, err);
	if (r == 0)
		r = helper_answer(&h, out, err);
	explicit_bzero(outbuf, HELPER_OUTPUT_MAX + 2);
	return r;
}

/* ---- one config file ----------------------------------------------------- */

/* *out NULL: the file does not exist (or is empty, which docker accepts). */
static int load_file(const char *path, json_t **out, struct mlfs_err *err)
{
	*out = NULL;
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0) {
		if (errno == ENOENT || errno == ENOTDIR)
			return 0;
		return mlfs_err_set(err, EINVAL, "credentials file %s: %m", path);
	}
	struct stat st;
	if (fstat(fd, &st) < 0)
		return mlfs_err_set(err, EINVAL, "credentials file %s: %m", path);
	if (!S_ISREG(st.st_mode))
		return mlfs_err_set(err, EINVAL, "credentials file %s: not a regular file", path);
	if (st.st_size > CREDS_FILE_MAX)
		return mlfs_err_set(err, EINVAL, "credentials file %s: larger than %u bytes", path,
				    CREDS_FILE_MAX);

	/* The file's size, not the maximum: a 1 MiB buffer would be mmap'd and,
	 * freed, raise glibc's mmap threshold for the whole process (see
	 * common/readfile.c, which is not used here: its growing buffer would
	 * leave copies of the secrets that explicit_bzero does not reach). */
	size_t cap = (size_t)st.st_size + 1;
	_cleanup_free_ char *buf = malloc(cap + 1);
	if (!buf)
		return -ENOMEM;
	size_t len = 0;
	int r = 0;
	for (;;) {
		ssize_t got = read(fd, buf + len, cap - len);
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0) {
			r = mlfs_err_set(err, EINVAL, "credentials file %s: %m", path);
			break;
		}
		if (got == 0)
			break;
		len += (size_t)got;
		if (len == cap) {
			r = mlfs_err_set(err, EINVAL, "credentials file %s: it grew while it was read; try again", path);
			break;
		}
	}
	if (r == 0 && len > 0) {
		json_error_t jerr;
		*out = json_loadb(buf, len, 0, &jerr);
		if (!*out)
			r = mlfs_err_set(err, EINVAL,
					 "credentials file %s: malformed JSON at line %d, column %d",
					 path, jerr.line, jerr.column);
		else if (!json_is_object(*out))
			r = mlfs_err_set(err, EINVAL, "credentials file %s: not a JSON object", path);
		if (r < 0 && *out) {
			json_decref(*out);
			*out = NULL;
		}
	}
	explicit_bzero(buf, len);
	return r;
}

/* 1 with *out filled from an auths entry, 0 when it holds nothing usable. */
static int entry_creds(json_t *e, const char *key, const char *domain, const char *path,
		       struct mlfs_creds *out, struct mlfs_err *err)
{
	const char *auth = NULL, *user = NULL, *pass = NULL, *token = NULL;
	json_error_t jerr;
	/* Unpack errors name types and keys, never values. */
	if (json_unpack_ex(e, &jerr, 0, "{s?s s?s s?s s?s}", "auth", &auth, "username", &user,
			   "password", &pass, "identitytoken", &token))
		return mlfs_err_set(err, EINVAL, "credentials file %s: auths entry \"%s\" for %s: %s",
				    path, key, domain, jerr.text);

	if (token && *token) {
		if (!(out->secret = strdup(token)))
			return -ENOMEM;
		out->identity_token = true;
		return 1;
	}
	if (auth && *auth) {
		int r = decode_auth(auth, &out->username, &out->secret);
		if (r == -EINVAL)
			return mlfs_err_set(err, EINVAL,
					    "credentials file %s: auths entry \"%s\" for %s: \"auth\" is not base64 of user:password",
					    path, key, domain);
		return r < 0 ? r : 1;
	}
	if (user && *user) {
		out->username = strdup(user);
		out->secret = strdup(pass ? pass : "");
		if (!out->username || !out->secret)
			return -ENOMEM;
		return 1;
	}
	return 0;
}

/* 1: this file decided (*out filled, or left empty by a helper that had
 * nothing); 0: the file has nothing for domain; <0: error. */
static int lookup_file(const char *path, const char *domain, struct mlfs_creds *out,
		       struct mlfs_err *err)
{
	_cleanup_(json_decrefp) json_t *root = NULL;
	int r = load_file(path, &root, err);
	if (r < 0 || !root)
		return r;

	json_t *auths = NULL, *helpers = NULL, *store = NULL;
	json_error_t jerr;
	if (json_unpack_ex(root, &jerr, 0, "{s?o s?o s?o}", "auths", &auths, "credHelpers", &helpers,
			   "credsStore", &store))
		return mlfs_err_set(err, EINVAL, "credentials file %s: %s", path, jerr.text);
	/* null is what Go writes for an empty map or string. */
	if (json_is_null(auths))
		auths = NULL;
	if (json_is_null(helpers))
		helpers = NULL;
	if (json_is_null(store))
		store = NULL;
	if ((auths && !json_is_object(auths)) || (helpers && !json_is_object(helpers)) ||
	    (store && !json_is_string(store)))
		return mlfs_err_set(err, EINVAL,
				    "credentials file %s: \"auths\" and \"credHelpers\" must be objects, \"credsStore\" a string",
				    path);

	const char *key = NULL, *helper = NULL;
	json_t *h = helpers ? find_entry(helpers, domain, &key) : NULL;
	if (h) {
		if (!json_is_string(h))
			return mlfs_err_set(err, EINVAL,
					    "credentials file %s: credHelpers entry \"%s\" is not a string",
					    path, key);
		helper = json_string_value(h);
	} else if (store) {
		helper = json_string_value(store);
	}
	if (helper && *helper) {
		r = helper_lookup(helper, domain, path, out, err);
		return r < 0 ? r : 1;
	}

	json_t *e = auths ? find_entry(auths, domain, &key) : NULL;
	if (!e)
		return 0;
	r = entry_creds(e, key, domain, path, out, err);
	if (r > 0)
		log_debug(MLFS_AREA_AUTH, "credentials for %s from %s (\"%s\")", domain, path, key);
	return r;
}

/* ---- the search ---------------------------------------------------------- */

static const char *env_nonempty(const char *name)
{
	const char *v = getenv(name);
	return v && *v ? v : NULL;
}

/* $HOME, else the password database, as docker's homedir lookup does; a
 * daemon started by an init system may have no HOME. */
static char *docker_config_path(void)
{
	char *path = NULL;
	const char *dir = env_nonempty("DOCKER_CONFIG");
	if (dir)
		return asprintf(&path, "%s/config.json", dir) < 0 ? NULL : path;
	const char *home = env_nonempty("HOME");
	if (home)
		return asprintf(&path, "%s/.docker/config.json", home) < 0 ? NULL : path;

	struct passwd pw, *res = NULL;
	long sz = sysconf(_SC_GETPW_R_SIZE_MAX);
	_cleanup_free_ char *buf = malloc(sz > 0 ? (size_t)sz : 16384);
	if (!buf || getpwuid_r(getuid(), &pw, buf, sz > 0 ? (size_t)sz : 16384, &res) || !res ||
	    !res->pw_dir || !*res->pw_dir)
		return NULL;
	return asprintf(&path, "%s/.docker/config.json", res->pw_dir) < 0 ? NULL : path;
}

int mlfs_creds_lookup(const char *domain, struct mlfs_creds *out, struct mlfs_err *err)
{
	*out = (struct mlfs_creds){ 0 };
	if (!domain || !*domain || strlen(domain) > 1024)
		return mlfs_err_set(err, EINVAL, "credentials lookup: invalid registry name");

	char *paths[3] = { NULL, NULL, NULL };
	const char *v;
	if ((v = env_nonempty("REGISTRY_AUTH_FILE")) && !(paths[0] = strdup(v)))
		goto nomem;
	if ((v = env_nonempty("XDG_RUNTIME_DIR")) &&
	    asprintf(&paths[1], "%s/containers/auth.json", v) < 0) {
		paths[1] = NULL;
		goto nomem;
	}
	paths[2] = docker_config_path();

	int r = 0;
	for (size_t i = 0; i < 3 && r == 0; i++)
		if (paths[i])
			r = lookup_file(paths[i], domain, out, err);
	for (size_t i = 0; i < 3; i++)
		free(paths[i]);
	if (r < 0) {
		mlfs_creds_clear(out);
		return r;
	}
	return 0;

nomem:
	for (size_t i = 0; i < 3; i++)
		free(paths[i]);
	return mlfs_err_set(err, ENOMEM, "credentials lookup: out of memory");
}
