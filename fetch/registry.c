/* The registry's /v2/ API: manifests and blobs, with the auth dance.
 *
 * Auth is learnt, not configured: the first request goes out bare, a 401
 * names the scheme (Bearer with a realm, or Basic), and from then on every
 * request of this client carries the right header up front, so a mount
 * pays the challenge round trip once, not per blob.  Credentials are read
 * only when a registry asks for them: credential helpers can be slow, and
 * anonymous pulls need none. */
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/crypto.h>

#include "common/cleanup.h"
#include "common/log.h"
#include "fetch/internal.h"

#define DEFAULT_CERTS_DIRS "/etc/docker/certs.d:/etc/containers/certs.d"

struct mlfs_registry {
	char *domain;           /* as in the reference: credentials are keyed by it */
	char *api_host;
	bool insecure;
	struct mlfs_http *http;
	struct mlfs_token_cache *tokens;

	pthread_mutex_t lock;   /* protects everything below */
	char *scheme;           /* "https" or "http"; may fall back once for insecure hosts */
	bool creds_loaded;
	struct mlfs_creds creds;
	struct mlfs_challenge challenge; /* the last one seen, scheme "" until a 401 */
};

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
			}
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

int mlfs_registry_new(const struct mlfs_ref *ref, const struct mlfs_registry_opts *opts,
		      struct mlfs_registry **out, struct mlfs_err *err)
{
	static const struct mlfs_registry_opts defaults = { 0 };
	if (!opts)
		opts = &defaults;
	struct mlfs_registry *reg = calloc(1, sizeof *reg);
	if (!reg)
		return mlfs_err_set(err, ENOMEM, "out of memory");
	pthread_mutex_init(&reg->lock, NULL);
	reg->domain = strdup(ref->domain);
	reg->api_host = strdup(mlfs_ref_api_host(ref));
	reg->insecure = opts->insecure;
	bool loopback = mlfs_host_is_loopback(reg->api_host);
	reg->scheme = strdup(loopback ? "http" : "https");

	_cleanup_free_ char *ca_pem = NULL, *cert = NULL, *key = NULL;
	size_t ca_len = 0;
	_cleanup_free_ char *dirs = strdup(opts->certs_dirs ? opts->certs_dirs : DEFAULT_CERTS_DIRS);
	if (!reg->domain || !reg->api_host || !reg->scheme || !dirs) {
		mlfs_registry_free(reg);
		return mlfs_err_set(err, ENOMEM, "out of memory");
	}
	char *save = NULL;
	for (char *d = strtok_r(dirs, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
		char path[4096];
		snprintf(path, sizeof path, "%s/%s", d, reg->domain);
		load_certs_dir(path, &ca_pem, &ca_len, &cert, &key);
		if (strcmp(reg->domain, reg->api_host)) {
			snprintf(path, sizeof path, "%s/%s", d, reg->api_host);
			load_certs_dir(path, &ca_pem, &ca_len, &cert, &key);
		}
	}

	struct mlfs_http_opts hopts = {
		.connect_timeout_s = opts->connect_timeout_s,
		.low_speed_time_s = opts->low_speed_time_s,
		.max_retries = opts->max_retries,
		.verify_tls = !opts->insecure,
		.ca_pem = ca_pem,
		.client_cert = cert,
		.client_key = key,
		.home_host = reg->api_host,
		.any_destination = opts->insecure,
	};
	int r = mlfs_http_new(&hopts, &reg->http);
	if (r == 0)
		r = mlfs_token_cache_new(&reg->tokens);
	if (r < 0) {
		mlfs_registry_free(reg);
		return mlfs_err_set(err, -r, "cannot set up HTTP for %s", ref->domain);
	}
	*out = reg;
	return 0;
}

void mlfs_registry_cancel(struct mlfs_registry *reg)
{
	mlfs_http_cancel(reg->http);
}

bool mlfs_registry_cancelled(const struct mlfs_registry *reg)
{
	return mlfs_http_cancelled(reg->http);
}

void mlfs_registry_free(struct mlfs_registry *reg)
{
	if (!reg)
		return;
	mlfs_http_free(reg->http);
	mlfs_token_cache_free(reg->tokens);
	mlfs_creds_clear(&reg->creds);
	mlfs_challenge_clear(&reg->challenge);
	pthread_mutex_destroy(&reg->lock);
	free(reg->scheme);
	free(reg->domain);
	free(reg->api_host);
	free(reg);
}

void mlfs_fetched_clear(struct mlfs_fetched *f)
{
	free(f->body);
	memset(f, 0, sizeof *f);
}

/* The credentials for this registry, looked up once. */
static int registry_creds(struct mlfs_registry *reg, struct mlfs_creds *out, struct mlfs_err *err)
{
	pthread_mutex_lock(&reg->lock);
	bool loaded = reg->creds_loaded;
	pthread_mutex_unlock(&reg->lock);
	if (!loaded) {
		/* A credential helper may take seconds: not under the lock.  Two
		 * threads may both ask it; the first answer is kept. */
		struct mlfs_creds c = { 0 };
		int r = mlfs_creds_lookup(reg->domain, &c, err);
		if (r < 0)
			return r;
		pthread_mutex_lock(&reg->lock);
		if (!reg->creds_loaded) {
			reg->creds = c;
			reg->creds_loaded = true;
			memset(&c, 0, sizeof c);
		}
		pthread_mutex_unlock(&reg->lock);
		mlfs_creds_clear(&c);
	}
	pthread_mutex_lock(&reg->lock);
	*out = reg->creds; /* shallow: owned by reg, never changed once loaded */
	pthread_mutex_unlock(&reg->lock);
	return 0;
}

/* Authorization for the next request, from what the registry said last. */
static int auth_header(struct mlfs_registry *reg, const char *scope, bool force, char **hdr,
		       struct mlfs_err *err)
{
	struct mlfs_challenge ch = { 0 };
	pthread_mutex_lock(&reg->lock);
	snprintf(ch.scheme, sizeof ch.scheme, "%s", reg->challenge.scheme);
	ch.realm = reg->challenge.realm ? strdup(reg->challenge.realm) : NULL;
	ch.service = reg->challenge.service ? strdup(reg->challenge.service) : NULL;
	pthread_mutex_unlock(&reg->lock);

	int r = 0;
	*hdr = NULL;
	if (!ch.scheme[0])
		goto out;
	struct mlfs_creds creds;
	r = registry_creds(reg, &creds, err);
	if (r < 0)
		goto out;
	if (!strcmp(ch.scheme, "bearer")) {
		r = mlfs_token_get(reg->tokens, reg->http, &ch, scope, &creds, force, hdr, err);
	} else if (!strcmp(ch.scheme, "basic")) {
		if (!creds.username || !creds.secret)
			r = mlfs_err_set(err, EACCES,
					 "unauthorized: %s needs credentials: log in with `docker login %s`, or set "
					 "REGISTRY_AUTH_FILE", reg->domain, reg->domain);
		else if (!(*hdr = mlfs_basic_auth_header(creds.username, creds.secret)))
			r = mlfs_err_set(err, ENOMEM, "out of memory");
	} else {
		r = mlfs_err_set(err, EPROTONOSUPPORT, "%s asks for unsupported authentication \"%s\"",
				 reg->domain, ch.scheme);
	}
out:
	mlfs_challenge_clear(&ch);
	return r;
}

static void remember_challenge(struct mlfs_registry *reg, struct mlfs_challenge *ch)
{
	pthread_mutex_lock(&reg->lock);
	mlfs_challenge_clear(&reg->challenge);
	reg->challenge = *ch;
	memset(ch, 0, sizeof *ch);
	pthread_mutex_unlock(&reg->lock);
}

static int status_error(struct mlfs_registry *reg, const struct mlfs_http_response *resp,
			const char *what, bool sent_auth, struct mlfs_err *err)
{
	char text[512];
	mlfs_registry_error_text(resp->body, resp->body_len, text, sizeof text);
	const char *sep = text[0] ? ": " : "";
	switch (resp->status) {
	case 401:
		return mlfs_err_set(err, EACCES, "unauthorized: %s refused %s for %s%s%s: check your credentials "
				    "(docker login %s, or REGISTRY_AUTH_FILE)", reg->domain,
				    sent_auth ? "the credentials" : "anonymous access", what, sep, text, reg->domain);
	case 403:
		return mlfs_err_set(err, EACCES, "denied: %s does not allow pulling %s%s%s", reg->domain, what,
				    sep, text);
	case 404:
		return mlfs_err_set(err, ENOENT, "not found: %s%s%s: check the repository name and tag", what,
				    sep, text);
	case 429:
		return mlfs_err_set(err, EAGAIN, "%s: too many requests to %s: try again later%s%s", what,
				    reg->domain, sep, text);
	default:
		return mlfs_err_set(err, EIO, "%s: HTTP %ld from %s%s%s", what, resp->status, reg->domain, sep,
				    text);
	}
}

/* One authenticated request to this registry: bare or with the known
 * header first, then at most two answers to 401 (learn the scheme; renew
 * a refused token).  Status errors are mapped here. */
static int registry_send(struct mlfs_registry *reg, const char *repo, const char *what,
			 const char *url_path, struct mlfs_http_request *req,
			 struct mlfs_http_response *resp, struct mlfs_err *err)
{
	char scope[1024];
	snprintf(scope, sizeof scope, "repository:%s:pull", repo);
	_cleanup_free_ char *hdr = NULL;
	int r = auth_header(reg, scope, false, &hdr, err);
	if (r < 0)
		return r;
	/* A sink already fed by an earlier round (a token that expired in the
	 * middle of a download) continues where it stopped. */
	off_t base = req->range_start, got = 0;
	for (int round = 0;; round++) {
		char url[4096];
		pthread_mutex_lock(&reg->lock);
		snprintf(url, sizeof url, "%s://%s%s", reg->scheme, reg->api_host, url_path);
		pthread_mutex_unlock(&reg->lock);
		req->url = url;
		req->authorization = hdr;
		req->range_start = base + got;
		r = mlfs_http_send(reg->http, req, resp, err);
		got += resp->delivered;
		if (r == -ECONNABORTED && reg->insecure && round == 0) {
			/* Docker's rule for insecure registries: HTTPS first, then plain HTTP. */
			pthread_mutex_lock(&reg->lock);
			bool switched = !strcmp(reg->scheme, "https");
			if (switched) {
				free(reg->scheme);
				reg->scheme = strdup("http");
			}
			pthread_mutex_unlock(&reg->lock);
			if (switched) {
				log_info(MLFS_AREA_FETCH, "%s: no TLS, falling back to plain HTTP (insecure)", reg->domain);
				continue;
			}
		}
		if (r < 0)
			return r;
		if (resp->status != 401 || round >= 2)
			break;
		struct mlfs_challenge ch = { 0 };
		if (!resp->www_authenticate || mlfs_challenge_parse(resp->www_authenticate, &ch) < 0) {
			mlfs_challenge_clear(&ch);
			break;
		}
		bool had = hdr != NULL;
		bool basic_refused = had && !strcmp(ch.scheme, "basic");
		remember_challenge(reg, &ch);
		if (basic_refused)
			break;
		free(hdr);
		hdr = NULL;
		r = auth_header(reg, scope, had, &hdr, err);
		if (r < 0)
			return r;
		if (!hdr)
			break;
	}
	if (hdr)
		OPENSSL_cleanse(hdr, strlen(hdr));
	if (resp->status == 200 || resp->status == 206)
		return 0;
	return status_error(reg, resp, what, hdr != NULL, err);
}

/* Bodies fetched whole (manifests, configs) are checked here: the size
 * cap, then the digest, which is the only thing that makes them trusted. */
static int verify_body(const struct mlfs_http_response *resp, const char *expect_digest,
		       const char *what, struct mlfs_fetched *out, struct mlfs_err *err)
{
	char got[MLFS_DIGEST_MAX];
	int r = mlfs_digest_buf(resp->body ? resp->body : "", resp->body_len, got);
	if (r < 0)
		return mlfs_err_set(err, -r, "cannot hash %s", what);
	if (expect_digest && strcmp(expect_digest, got))
		return mlfs_err_set(err, EBADMSG, "digest mismatch for %s: expected %s, got %s: the registry "
				    "served corrupt or substituted data", what, expect_digest, got);
	if (resp->docker_digest && mlfs_digest_validate(resp->docker_digest) == 0 &&
	    strcmp(resp->docker_digest, got))
		return mlfs_err_set(err, EBADMSG, "digest mismatch for %s: the registry says %s, the body is %s",
				    what, resp->docker_digest, got);
	memcpy(out->digest, got, sizeof got);
	out->len = resp->body_len;
	out->body = resp->body;
	return 0;
}

int mlfs_registry_get_manifest(struct mlfs_registry *reg, const char *path, const char *reference,
			       struct mlfs_fetched *out, struct mlfs_err *err)
{
	bool by_digest = strchr(reference, ':') != NULL;
	if (by_digest && mlfs_digest_validate(reference) < 0)
		return mlfs_err_set(err, EINVAL, "invalid digest %s", reference);
	char what[1024], url_path[2048];
	snprintf(what, sizeof what, "%s/%s%s%s", reg->domain, path, by_digest ? "@" : ":", reference);
	snprintf(url_path, sizeof url_path, "/v2/%s/manifests/%s", path, reference);

	struct mlfs_http_request req = { .accept = mlfs_media_accept(), .max_body = MLFS_MANIFEST_MAX };
	struct mlfs_http_response resp = { 0 };
	int r = registry_send(reg, path, what, url_path, &req, &resp, err);
	if (r == -EFBIG)
		r = mlfs_err_set(err, EFBIG, "manifest %s is too large (over %u bytes)", what, MLFS_MANIFEST_MAX);
	if (r < 0)
		goto out;
	memset(out, 0, sizeof *out);
	out->media = mlfs_media_from_string(resp.content_type ? resp.content_type : "");
	if (out->media == MLFS_MEDIA_DOCKER_SCHEMA1) {
		r = mlfs_err_set(err, EPROTONOSUPPORT, "%s is a schema1 manifest, which is not supported "
				 "(deprecated by Docker): push the image again with a current tool", what);
		goto out;
	}
	if (!mlfs_media_is_index(out->media) && !mlfs_media_is_manifest(out->media)) {
		r = mlfs_err_set(err, EPROTO, "%s: unexpected content type \"%s\" for a manifest", what,
				 resp.content_type ? resp.content_type : "");
		goto out;
	}
	r = verify_body(&resp, by_digest ? reference : NULL, what, out, err);
	if (r == 0)
		resp.body = NULL; /* now out's */
out:
	mlfs_http_response_clear(&resp);
	return r;
}

int mlfs_registry_get_small_blob(struct mlfs_registry *reg, const char *path,
				 const struct mlfs_descriptor *desc, struct mlfs_fetched *out,
				 struct mlfs_err *err)
{
	char what[1024], url_path[2048];
	snprintf(what, sizeof what, "blob %s of %s/%s", desc->digest, reg->domain, path);
	if (desc->size < 0 || desc->size > (int64_t)MLFS_MANIFEST_MAX)
		return mlfs_err_set(err, EFBIG, "%s is too large (%lld bytes, the limit is %u)", what,
				    (long long)desc->size, MLFS_MANIFEST_MAX);
	snprintf(url_path, sizeof url_path, "/v2/%s/blobs/%s", path, desc->digest);
	struct mlfs_http_request req = { .max_body = MLFS_MANIFEST_MAX };
	struct mlfs_http_response resp = { 0 };
	int r = registry_send(reg, path, what, url_path, &req, &resp, err);
	if (r == -EFBIG)
		r = mlfs_err_set(err, EFBIG, "%s is too large (over %u bytes)", what, MLFS_MANIFEST_MAX);
	if (r < 0)
		goto out;
	memset(out, 0, sizeof *out);
	r = verify_body(&resp, desc->digest, what, out, err);
	if (r == 0) {
		resp.body = NULL;
		out->media = desc->media;
		if ((int64_t)out->len != desc->size) {
			/* The digest matched, so the descriptor's size is the lie. */
			mlfs_fetched_clear(out);
			r = mlfs_err_set(err, EBADMSG, "%s: size %zu does not match the manifest's %lld", what,
					 resp.body_len, (long long)desc->size);
		}
	}
out:
	mlfs_http_response_clear(&resp);
	return r;
}

int mlfs_registry_get_blob(struct mlfs_registry *reg, const char *path, const char *digest, off_t offset,
			   mlfs_sink_fn sink, void *priv, struct mlfs_err *err)
{
	char what[1024], url_path[2048];
	snprintf(what, sizeof what, "blob %s of %s/%s", digest, reg->domain, path);
	snprintf(url_path, sizeof url_path, "/v2/%s/blobs/%s", path, digest);
	struct mlfs_http_request req = { .sink = sink, .priv = priv, .range_start = offset };
	struct mlfs_http_response resp = { 0 };
	int r = registry_send(reg, path, what, url_path, &req, &resp, err);
	mlfs_http_response_clear(&resp);
	return r;
}

struct range_buf {
	unsigned char *buf;
	size_t len, have;
};

static int range_write(void *priv, const void *buf, size_t len)
{
	struct range_buf *b = priv;
	if (len > b->len - b->have)
		return -EPROTO; /* more than the range asked for */
	memcpy(b->buf + b->have, buf, len);
	b->have += len;
	return 0;
}

int mlfs_registry_get_range(struct mlfs_registry *reg, const char *path, const char *digest, uint64_t offset,
			    size_t len, void *buf, struct mlfs_err *err)
{
	char what[1024], url_path[2048];
	snprintf(what, sizeof what, "blob %s of %s/%s", digest, reg->domain, path);
	snprintf(url_path, sizeof url_path, "/v2/%s/blobs/%s", path, digest);
	if (len == 0 || offset > (uint64_t)INT64_MAX - len)
		return mlfs_err_set(err, EINVAL, "%s: bad range %llu+%zu", what, (unsigned long long)offset, len);
	struct range_buf b = { buf, len, 0 };
	/* A range serves a read someone waits on (and the kernel retries a
	 * failed read at once): two retries, not the download's four. */
	struct mlfs_http_request req = { .sink = range_write, .priv = &b, .range_start = (off_t)offset,
					 .range_len = (off_t)len, .max_retries = 2 };
	struct mlfs_http_response resp = { 0 };
	int r = registry_send(reg, path, what, url_path, &req, &resp, err);
	mlfs_http_response_clear(&resp);
	if (r == -EPROTO && !(err && err->msg[0]))
		r = mlfs_err_set(err, EPROTO, "%s: more bytes than the %zu asked for at %llu", what, len,
				 (unsigned long long)offset);
	if (r == 0 && b.have != len)
		r = mlfs_err_set(err, EIO, "%s: range at %llu ended after %zu of %zu bytes", what,
				 (unsigned long long)offset, b.have, len);
	return r;
}

int mlfs_registry_get_url(struct mlfs_registry *reg, const char *url, off_t offset, mlfs_sink_fn sink,
			  void *priv, struct mlfs_err *err)
{
	/* A foreign layer's URL is another server: no registry credentials go
	 * there.  It comes from the image, not the registry: https only, and
	 * only to public addresses (netpolicy.c), unless insecure. */
	char scheme[16], host[256], shown[512];
	mlfs_printable(url, shown, sizeof shown);
	if (mlfs_url_scheme_host(url, scheme, sizeof scheme, host, sizeof host) < 0)
		return mlfs_err_set(err, EINVAL, "layer URL \"%s\" is not a URL", shown);
	if (strcmp(scheme, "https") && !(reg->insecure && !strcmp(scheme, "http")))
		return mlfs_err_set(err, EPERM, "refusing to fetch a layer from %s: only https:// URLs "
				    "(http:// with --insecure)", shown);
	struct mlfs_http_request req = { .url = url, .sink = sink, .priv = priv, .range_start = offset,
					 .foreign = true };
	struct mlfs_http_response resp = { 0 };
	int r = mlfs_http_send(reg->http, &req, &resp, err);
	if (r == 0 && resp.status != 200 && resp.status != 206)
		r = mlfs_err_set(err, resp.status == 404 ? ENOENT : EIO, "layer URL %.*s: HTTP %ld",
				 (int)strcspn(shown, "?"), shown, resp.status);
	mlfs_http_response_clear(&resp);
	return r;
}
