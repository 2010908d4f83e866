/* One host's client, mirror or upstream: its TLS material (certs.d, a
 * hosts.toml CA), its credentials and the auth dance with it.
 *
 * Auth is learnt, not configured: the first request goes out bare, a 401
 * names the scheme (Bearer with a realm, or Basic), and from then on every
 * request of this client carries the right header up front, so a mount
 * pays the challenge round trip once, not per blob.  Credentials are read
 * only when the host asks for them (credential helpers can be slow, and
 * anonymous pulls need none), and under the host's own name: a mirror's
 * are never a registry's, and nothing of one host's reaches another. */
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <openssl/crypto.h>

#include "common/cleanup.h"
#include "common/log.h"
#include "fetch/internal.h"

#define DEFAULT_CERTS_DIRS "/etc/docker/certs.d:/etc/containers/certs.d"
/* A mirror that cannot be reached is left alone this long, so a dead one
 * costs one timeout, not one per request. */
#define MIRROR_DOWN_S 30

/* A PEM file's text appended to *ca_pem (extra CAs). */
static void load_ca_file(const char *path, char **ca_pem, size_t *ca_len)
{
	_cleanup_fclose_ FILE *f = fopen(path, "re");
	char buf[8192];
	size_t got, before = *ca_len;
	while (f && (got = fread(buf, 1, sizeof buf, f)) > 0) {
		/* +2: the separating newline and the NUL. */
		char *nb = realloc(*ca_pem, *ca_len + got + 2);
		if (!nb)
			break;
		*ca_pem = nb;
		memcpy(*ca_pem + *ca_len, buf, got);
		*ca_len += got;
		(*ca_pem)[*ca_len] = '\0';
	}
	if (*ca_len > before) {
		(*ca_pem)[(*ca_len)++] = '\n';
		(*ca_pem)[*ca_len] = '\0';
		log_debug(MLFS_AREA_FETCH, "trusting CA %s", path);
	} else if (!f) {
		log_warn(MLFS_AREA_FETCH, "cannot read the CA file %s: %s", path, strerror(errno));
	}
}

/* certs.d/<host>/: *.crt are extra CAs, NAME.cert + NAME.key a client cert
 * (Docker's and containers' layout). */
static void load_certs_dir(const char *dir, char **ca_pem, size_t *ca_len, char **cert, char **key)
{
	DIR *d = opendir(dir);
	if (!d)
		return;
	struct dirent *de;
	while ((de = readdir(d))) {
		size_t n = strlen(de->d_name);
		char path[4096];
		snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
		if (n > 4 && !strcmp(de->d_name + n - 4, ".crt")) {
			load_ca_file(path, ca_pem, ca_len);
		} else if (n > 5 && !strcmp(de->d_name + n - 5, ".cert") && !*cert) {
			char keypath[4096];
			snprintf(keypath, sizeof keypath, "%s/%.*s.key", dir, (int)(n - 5), de->d_name);
			if (access(keypath, R_OK) == 0) {
				*cert = strdup(path);
				*key = strdup(keypath);
			}
		}
	}
	closedir(d);
}

void mlfs_epclient_clear(struct mlfs_epclient *ep)
{
	mlfs_http_free(ep->http);
	mlfs_token_cache_free(ep->tokens);
	mlfs_creds_clear(&ep->creds);
	mlfs_challenge_clear(&ep->challenge);
	pthread_mutex_destroy(&ep->lock);
	free(ep->scheme);
	free(ep->domain);
	free(ep->api_host);
	free(ep->repo);
}

int mlfs_epclient_init(struct mlfs_epclient *ep, const struct mlfs_endpoint *spec,
		       const struct mlfs_registry_opts *opts, struct mlfs_err *err)
{
	pthread_mutex_init(&ep->lock, NULL);
	ep->domain = strdup(spec->domain);
	ep->api_host = strdup(spec->host);
	ep->repo = strdup(spec->repo);
	ep->insecure = spec->insecure || opts->insecure;
	ep->mirror = spec->mirror;
	ep->pull = spec->pull;
	ep->scheme = strdup(mlfs_host_is_loopback(spec->host) ? "http" : "https");

	_cleanup_free_ char *ca_pem = NULL, *cert = NULL, *key = NULL;
	size_t ca_len = 0;
	_cleanup_free_ char *dirs = strdup(opts->certs_dirs ? opts->certs_dirs : DEFAULT_CERTS_DIRS);
	if (!ep->domain || !ep->api_host || !ep->repo || !ep->scheme || !dirs)
		return mlfs_err_set(err, ENOMEM, "out of memory");
	char *save = NULL;
	for (char *d = strtok_r(dirs, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
		char path[4096];
		snprintf(path, sizeof path, "%s/%s", d, ep->domain);
		load_certs_dir(path, &ca_pem, &ca_len, &cert, &key);
		if (strcmp(ep->domain, ep->api_host)) {
			snprintf(path, sizeof path, "%s/%s", d, ep->api_host);
			load_certs_dir(path, &ca_pem, &ca_len, &cert, &key);
		}
	}
	if (spec->ca_file)
		load_ca_file(spec->ca_file, &ca_pem, &ca_len);

	struct mlfs_http_opts hopts = {
		.connect_timeout_s = opts->connect_timeout_s,
		.low_speed_time_s = opts->low_speed_time_s,
		/* A mirror is one of several ways: fail over soon, not after
		 * the backoff the last endpoint deserves. */
		.max_retries = spec->mirror ? 1 : opts->max_retries,
		.verify_tls = !ep->insecure,
		.ca_pem = ca_pem,
		.client_cert = cert,
		.client_key = key,
		.home_host = ep->api_host,
		.any_destination = ep->insecure,
		.headers = spec->headers,
	};
	int r = mlfs_http_new(&hopts, &ep->http);
	if (r == 0)
		r = mlfs_token_cache_new(&ep->tokens);
	if (r < 0)
		return mlfs_err_set(err, -r, "cannot set up HTTP for %s", spec->domain);
	return 0;
}

/* The credentials for this registry, looked up once. */
static int registry_creds(struct mlfs_epclient *ep, struct mlfs_creds *out, struct mlfs_err *err)
{
	pthread_mutex_lock(&ep->lock);
	bool loaded = ep->creds_loaded;
	pthread_mutex_unlock(&ep->lock);
	if (!loaded) {
		/* A credential helper may take seconds: not under the lock.  Two
		 * threads may both ask it; the first answer is kept. */
		struct mlfs_creds c = { 0 };
		int r = mlfs_creds_lookup(ep->domain, &c, err);
		if (r < 0)
			return r;
		pthread_mutex_lock(&ep->lock);
		if (!ep->creds_loaded) {
			ep->creds = c;
			ep->creds_loaded = true;
			memset(&c, 0, sizeof c);
		}
		pthread_mutex_unlock(&ep->lock);
		mlfs_creds_clear(&c);
	}
	pthread_mutex_lock(&ep->lock);
	*out = ep->creds; /* shallow: owned by reg, never changed once loaded */
	pthread_mutex_unlock(&ep->lock);
	return 0;
}

/* Authorization for the next request, from what the registry said last. */
static int auth_header(struct mlfs_epclient *ep, const char *scope, bool force, char **hdr,
		       struct mlfs_err *err)
{
	struct mlfs_challenge ch = { 0 };
	pthread_mutex_lock(&ep->lock);
	snprintf(ch.scheme, sizeof ch.scheme, "%s", ep->challenge.scheme);
	ch.realm = ep->challenge.realm ? strdup(ep->challenge.realm) : NULL;
	ch.service = ep->challenge.service ? strdup(ep->challenge.service) : NULL;
	pthread_mutex_unlock(&ep->lock);

	int r = 0;
	*hdr = NULL;
	if (!ch.scheme[0])
		goto out;
	struct mlfs_creds creds;
	r = registry_creds(ep, &creds, err);
	if (r < 0)
		goto out;
	if (!strcmp(ch.scheme, "bearer")) {
		r = mlfs_token_get(ep->tokens, ep->http, &ch, scope, &creds, force, hdr, err);
	} else if (!strcmp(ch.scheme, "basic")) {
		if (!creds.username || !creds.secret)
			r = mlfs_err_set(err, EACCES,
					 "unauthorized: %s needs credentials: log in with `docker login %s`, or set "
					 "REGISTRY_AUTH_FILE", ep->domain, ep->domain);
		else if (!(*hdr = mlfs_basic_auth_header(creds.username, creds.secret)))
			r = mlfs_err_set(err, ENOMEM, "out of memory");
	} else {
		r = mlfs_err_set(err, EPROTONOSUPPORT, "%s asks for unsupported authentication \"%s\"",
				 ep->domain, ch.scheme);
	}
out:
	mlfs_challenge_clear(&ch);
	return r;
}

static void remember_challenge(struct mlfs_epclient *ep, struct mlfs_challenge *ch)
{
	pthread_mutex_lock(&ep->lock);
	mlfs_challenge_clear(&ep->challenge);
	ep->challenge = *ch;
	memset(ch, 0, sizeof *ch);
	pthread_mutex_unlock(&ep->lock);
}

static int status_error(struct mlfs_epclient *ep, const struct mlfs_http_response *resp,
			const char *what, bool sent_auth, struct mlfs_err *err)
{
	char text[512];
	mlfs_registry_error_text(resp->body, resp->body_len, text, sizeof text);
	const char *sep = text[0] ? ": " : "";
	switch (resp->status) {
	case 401:
		return mlfs_err_set(err, EACCES, "unauthorized: %s refused %s for %s%s%s: check your credentials "
				    "(docker login %s, or REGISTRY_AUTH_FILE)", ep->domain,
				    sent_auth ? "the credentials" : "anonymous access", what, sep, text, ep->domain);
	case 403:
		return mlfs_err_set(err, EACCES, "denied: %s does not allow pulling %s%s%s", ep->domain, what,
				    sep, text);
	case 404:
		return mlfs_err_set(err, ENOENT, "not found: %s%s%s: check the repository name and tag", what,
				    sep, text);
	case 429:
		return mlfs_err_set(err, EAGAIN, "%s: too many requests to %s: try again later%s%s", what,
				    ep->domain, sep, text);
	default:
		return mlfs_err_set(err, EIO, "%s: HTTP %ld from %s%s%s", what, resp->status, ep->domain, sep,
				    text);
	}
}

/* Learn the scheme from a 401, renew a refused token: see internal.h. */
int mlfs_epclient_send(struct mlfs_epclient *ep, const char *what, const char *url_path,
		       struct mlfs_http_request *req, struct mlfs_http_response *resp, struct mlfs_err *err)
{
	char scope[1024];
	snprintf(scope, sizeof scope, "repository:%s:pull", ep->repo);
	_cleanup_free_ char *hdr = NULL;
	int r = auth_header(ep, scope, false, &hdr, err);
	if (r < 0)
		return r;
	/* A sink already fed by an earlier round (a token that expired in the
	 * middle of a download) continues where it stopped. */
	off_t base = req->range_start, got = 0;
	for (int round = 0;; round++) {
		char url[4096];
		pthread_mutex_lock(&ep->lock);
		snprintf(url, sizeof url, "%s://%s%s", ep->scheme, ep->api_host, url_path);
		pthread_mutex_unlock(&ep->lock);
		req->url = url;
		req->authorization = hdr;
		req->range_start = base + got;
		r = mlfs_http_send(ep->http, req, resp, err);
		got += resp->delivered;
		if (r == -ECONNABORTED && ep->insecure && round == 0) {
			/* Docker's rule for insecure registries: HTTPS first, then plain HTTP. */
			pthread_mutex_lock(&ep->lock);
			bool switched = !strcmp(ep->scheme, "https");
			if (switched) {
				free(ep->scheme);
				ep->scheme = strdup("http");
			}
			pthread_mutex_unlock(&ep->lock);
			if (switched) {
				log_info(MLFS_AREA_FETCH, "%s: no TLS, falling back to plain HTTP (insecure)", ep->domain);
				continue;
			}
		}
		if (r < 0)
			goto out;
		if (resp->status != 401 || round >= 2)
			break;
		struct mlfs_challenge ch = { 0 };
		if (!resp->www_authenticate || mlfs_challenge_parse(resp->www_authenticate, &ch) < 0) {
			mlfs_challenge_clear(&ch);
			break;
		}
		bool had = hdr != NULL;
		bool basic_refused = had && !strcmp(ch.scheme, "basic");
		remember_challenge(ep, &ch);
		if (basic_refused)
			break;
		free(hdr);
		hdr = NULL;
		r = auth_header(ep, scope, had, &hdr, err);
		if (r < 0)
			goto out;
		if (!hdr)
			break;
	}
	if (resp->status != 200 && resp->status != 206)
		r = status_error(ep, resp, what, hdr != NULL, err);
out:
	if (hdr)
		OPENSSL_cleanse(hdr, strlen(hdr));
	/* What the sink got in all rounds: the next endpoint resumes there. */
	resp->delivered = got;
	req->range_start = base;
	return r;
}

bool mlfs_epclient_down(struct mlfs_epclient *ep)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	pthread_mutex_lock(&ep->lock);
	bool down = now.tv_sec < ep->down_until.tv_sec;
	pthread_mutex_unlock(&ep->lock);
	return down;
}

void mlfs_epclient_mark_down(struct mlfs_epclient *ep)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	pthread_mutex_lock(&ep->lock);
	ep->down_until.tv_sec = now.tv_sec + MIRROR_DOWN_S;
	pthread_mutex_unlock(&ep->lock);
}
