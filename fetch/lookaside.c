/* Signatures from a lookaside store (containers/image's
 * docs/signature-protocols.md): beside the registry, under a base URL
 * that registries.d names, each signature of a manifest is one file,
 *
 *   <base>/<repo path>@sha256=<hex>/signature-1, signature-2, ...
 *
 * numbered from 1 up to the first that is missing.  file:// is read from
 * the disk, http:// and https:// through the program's one HTTP client
 * (http.c); a 404 there, like a missing file, ends the list, any other
 * answer is an error (a store that cannot be read must not look empty).
 * The base comes from the administrator's configuration, not from the
 * registry, so its host is reached whatever its address (the client's
 * "home"); a redirect elsewhere follows the usual rule.  Offline, an
 * http(s) store refuses: it cannot be asked (policyverify.c reads what
 * the last online run kept instead, sigcache.c). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <curl/curl.h>

#include "common/cleanup.h"
#include "fetch/internal.h"

struct mlfs_lookaside {
	char *base;
	char *dir;                       /* file://: the decoded path; NULL for http(s) */
	struct mlfs_http *http;          /* http(s):// */
	bool offline;
};

static int file_path(const char *url, char **path)
{
	CURLU *u = curl_url();
	*path = NULL;
	if (!u)
		return -ENOMEM;
	char *p = NULL;
	int r = curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
				curl_url_get(u, CURLUPART_PATH, &p, CURLU_URLDECODE) == CURLUE_OK
			? 0
			: -EINVAL;
	if (r == 0 && !(*path = strdup(p)))
		r = -ENOMEM;
	curl_free(p);
	curl_url_cleanup(u);
	return r;
}

int mlfs_lookaside_new(const char *base, bool offline, struct mlfs_lookaside **out, struct mlfs_err *err)
{
	char shown[512];
	mlfs_printable(base, shown, sizeof shown);
	*out = NULL;
	struct mlfs_lookaside *l = calloc(1, sizeof *l);
	if (!l || !(l->base = strdup(base))) {
		free(l);
		return mlfs_err_set(err, ENOMEM, "out of memory");
	}
	l->offline = offline;
	int r = 0;
	if (!strncasecmp(base, "file://", 7)) {
		if ((r = file_path(base, &l->dir)) < 0)
			mlfs_err_set(err, -r, "the lookaside store %s is not a valid file:// URL", shown);
	} else if (!strncasecmp(base, "http://", 7) || !strncasecmp(base, "https://", 8)) {
		char scheme[16], host[512];
		if (mlfs_url_scheme_host(base, scheme, sizeof scheme, host, sizeof host) < 0) {
			r = mlfs_err_set(err, EINVAL, "the lookaside store %s is not a valid URL", shown);
		} else if (!offline) {
			struct mlfs_http_opts ho = { .verify_tls = true, .home_host = host };
			if (mlfs_http_new(&ho, &l->http) < 0)
				r = mlfs_err_set(err, ENOMEM, "out of memory");
		}
	} else {
		r = mlfs_err_set(err, EINVAL, "the lookaside store %s: only file://, http:// and https:// are "
				 "supported", shown);
	}
	if (r < 0) {
		mlfs_lookaside_free(l);
		return r;
	}
	*out = l;
	return 0;
}

void mlfs_lookaside_free(struct mlfs_lookaside *l)
{
	if (!l)
		return;
	mlfs_http_free(l->http);
	free(l->base);
	free(l->dir);
	free(l);
}

bool mlfs_lookaside_remote(const struct mlfs_lookaside *l)
{
	return !l->dir;
}

/* "@sha256=<hex>/signature-<n>" after the repository. */
static char *suffix(const char *digest, unsigned n)
{
	const char *colon = strchr(digest, ':');
	char *s = NULL;
	if (!colon || asprintf(&s, "@%.*s=%s/signature-%u", (int)(colon - digest), digest, colon + 1, n) < 0)
		return NULL;
	return s;
}

char *mlfs_lookaside_url(const struct mlfs_lookaside *l, const char *digest, unsigned n)
{
	_cleanup_free_ char *s = suffix(digest, n);
	char *url = NULL;
	if (!s || asprintf(&url, "%s%s", l->base, s) < 0)
		return NULL;
	return url;
}

static int get_file(const char *path, void **buf, size_t *len, struct mlfs_err *err)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	if (fd < 0 && errno == ENOENT)
		return -ENOENT;
	if (fd < 0 || fstat(fd, &st) < 0)
		return mlfs_err_set(err, errno, "cannot read the signature %s: %s", path, strerror(errno));
	if (!S_ISREG(st.st_mode) || st.st_size > (off_t)MLFS_SIGNATURE_MAX)
		return mlfs_err_set(err, EFBIG, "the signature %s is not a regular file of at most %u MiB", path,
				    MLFS_SIGNATURE_MAX >> 20);
	_cleanup_free_ char *b = malloc((size_t)st.st_size + 1);
	if (!b)
		return mlfs_err_set(err, ENOMEM, "out of memory");
	size_t got = 0;
	while (got < (size_t)st.st_size) {
		ssize_t n = read(fd, b + got, (size_t)st.st_size - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return mlfs_err_set(err, n < 0 ? errno : EIO, "cannot read the signature %s", path);
		got += (size_t)n;
	}
	*buf = steal_pointer(&b);
	*len = got;
	return 0;
}

static int get_http(struct mlfs_lookaside *l, const char *url, void **buf, size_t *len, struct mlfs_err *err)
{
	struct mlfs_http_request req = { .url = url, .max_body = MLFS_SIGNATURE_MAX };
	struct mlfs_http_response resp = { 0 };
	int r = mlfs_http_send(l->http, &req, &resp, err);
	if (r == -EFBIG)
		r = mlfs_err_set(err, EFBIG, "the signature %s is larger than %u MiB", url, MLFS_SIGNATURE_MAX >> 20);
	else if (r == 0 && resp.status == 404)
		r = -ENOENT;
	else if (r == 0 && resp.status != 200)
		r = mlfs_err_set(err, EIO, "the signature %s: HTTP %ld", url, resp.status);
	else if (r == 0) {
		*buf = steal_pointer(&resp.body);
		*len = resp.body_len;
		if (!*buf && !(*buf = calloc(1, 1)))
			r = mlfs_err_set(err, ENOMEM, "out of memory");
	}
	mlfs_http_response_clear(&resp);
	return r;
}

int mlfs_lookaside_get(struct mlfs_lookaside *l, const char *digest, unsigned n, void **buf, size_t *len,
		       struct mlfs_err *err)
{
	*buf = NULL;
	*len = 0;
	_cleanup_free_ char *s = suffix(digest, n);
	_cleanup_free_ char *where = NULL;
	if (!s || asprintf(&where, "%s%s", l->dir ? l->dir : l->base, s) < 0)
		return mlfs_err_set(err, ENOMEM, "out of memory");
	if (l->dir)
		return get_file(where, buf, len, err);
	if (l->offline)
		return mlfs_err_set(err, ENETUNREACH, "the signatures are at %s, which cannot be read offline "
				    "(mount without offline, or keep them in a file:// lookaside store)", l->base);
	return get_http(l, where, buf, len, err);
}
