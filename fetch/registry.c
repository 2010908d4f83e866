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
#include <time.h>
#include <unistd.h>
#include <openssl/crypto.h>

#include "common/cleanup.h"
#include "common/log.h"
#include "fetch/internal.h"

#define DEFAULT_CERTS_DIRS "/etc/docker/certs.d:/etc/containers/certs.d"

/* One host that can serve the repository: a mirror, or the upstream.
 * Each has its own HTTP client (whose home host is this endpoint, so a
 * redirect or a token never carries its credentials elsewhere), its own
 * credentials (looked up under its own name) and its own learnt auth. */
struct endpoint {
	char *domain;           /* credentials and certs.d are keyed by it */
	char *api_host;         /* registry-1.docker.io for docker.io */
	char *repo;             /* the repository's path on this host */
	bool insecure;
	bool mirror;
	enum mlfs_pull_from pull;
	struct mlfs_http *http;
	struct mlfs_token_cache *tokens;

	pthread_mutex_t lock;   /* protects everything below */
	char *scheme;           /* "https" or "http"; may fall back once for insecure hosts */
	bool creds_loaded;
	struct mlfs_creds creds;
	struct mlfs_challenge challenge; /* the last one seen, scheme "" until a 401 */
	struct timespec down_until; /* a mirror that could not be reached is skipped until then */
};

/* A mirror that served bytes not matching their digest is not asked for
 * that digest again; past this many, mirrors are not asked at all. */
#define MAX_DISTRUSTED 64
/* A mirror that cannot be reached is left alone this long, so a dead one
 * costs one timeout, not one per request. */
#define MIRROR_DOWN_S 30

struct mlfs_registry {
	char *domain;           /* the reference's, for messages */
	bool insecure;
	size_t n;               /* mirrors first, the upstream last; n >= 1 */
	struct endpoint *ep;

	pthread_mutex_t lock;   /* protects everything below */
	size_t n_distrusted;
	char distrusted[MAX_DISTRUSTED][MLFS_DIGEST_MAX];
	bool mirrors_off;       /* too many mismatches: upstream only */
};

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

static void endpoint_clear(struct endpoint *ep)
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

static int endpoint_init(struct endpoint *ep, const struct mlfs_endpoint *spec,
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
	};
	int r = mlfs_http_new(&hopts, &ep->http);
	if (r == 0)
		r = mlfs_token_cache_new(&ep->tokens);
	if (r < 0)
		return mlfs_err_set(err, -r, "cannot set up HTTP for %s", spec->domain);
	return 0;
}

int mlfs_registry_new(const struct mlfs_ref *ref, const struct mlfs_registry_opts *opts,
		      struct mlfs_registry **out, struct mlfs_err *err)
{
	static const struct mlfs_registry_opts defaults = { 0 };
	if (!opts)
		opts = &defaults;
	/* Without a configured list: the reference's own registry alone. */
	struct mlfs_endpoint self = {
		.domain = ref->domain, .host = (char *)mlfs_ref_api_host(ref), .repo = ref->path,
	};
	const struct mlfs_endpoint *specs = &self;
	size_t n = 1;
	if (opts->endpoints && opts->endpoints->n) {
		specs = opts->endpoints->v;
		n = opts->endpoints->n;
	}
	struct mlfs_registry *reg = calloc(1, sizeof *reg);
	if (!reg)
		return mlfs_err_set(err, ENOMEM, "out of memory");
	pthread_mutex_init(&reg->lock, NULL);
	reg->domain = strdup(ref->domain);
	reg->insecure = opts->insecure;
	reg->ep = calloc(n, sizeof *reg->ep);
	if (!reg->domain || !reg->ep) {
		mlfs_registry_free(reg);
		return mlfs_err_set(err, ENOMEM, "out of memory");
	}
	for (size_t i = 0; i < n; i++) {
		reg->n = i + 1;
		int r = endpoint_init(&reg->ep[i], &specs[i], opts, err);
		if (r < 0) {
			mlfs_registry_free(reg);
			return r;
		}
	}
	*out = reg;
	return 0;
}

void mlfs_registry_cancel(struct mlfs_registry *reg)
{
	for (size_t i = 0; i < reg->n; i++)
		mlfs_http_cancel(reg->ep[i].http);
}

bool mlfs_registry_cancelled(const struct mlfs_registry *reg)
{
	return mlfs_http_cancelled(reg->ep[reg->n - 1].http);
}

void mlfs_registry_free(struct mlfs_registry *reg)
{
	if (!reg)
		return;
	for (size_t i = 0; i < reg->n; i++)
		endpoint_clear(&reg->ep[i]);
	free(reg->ep);
	pthread_mutex_destroy(&reg->lock);
	free(reg->domain);
	free(reg);
}

bool mlfs_registry_distrust(struct mlfs_registry *reg, const char *digest)
{
	if (reg->n < 2)
		return false;
	bool changed = false;
	pthread_mutex_lock(&reg->lock);
	if (!reg->mirrors_off) {
		changed = true;
		for (size_t i = 0; i < reg->n_distrusted; i++)
			if (!strcmp(reg->distrusted[i], digest))
				changed = false;
		if (changed && reg->n_distrusted == MAX_DISTRUSTED)
			reg->mirrors_off = true;
		else if (changed)
			snprintf(reg->distrusted[reg->n_distrusted++], MLFS_DIGEST_MAX, "%s", digest);
	}
	pthread_mutex_unlock(&reg->lock);
	if (changed)
		log_warn(MLFS_AREA_FETCH, "%s: a mirror served bytes that do not match %s: asking only %s for it",
			 reg->domain, digest, reg->ep[reg->n - 1].api_host);
	return changed;
}

static bool distrusted(struct mlfs_registry *reg, const char *digest)
{
	bool bad;
	pthread_mutex_lock(&reg->lock);
	bad = reg->mirrors_off;
	for (size_t i = 0; !bad && digest && i < reg->n_distrusted; i++)
		bad = !strcmp(reg->distrusted[i], digest);
	pthread_mutex_unlock(&reg->lock);
	return bad;
}

void mlfs_fetched_clear(struct mlfs_fetched *f)
{
	free(f->body);
	memset(f, 0, sizeof *f);
}

/* The credentials for this registry, looked up once. */
static int registry_creds(struct endpoint *ep, struct mlfs_creds *out, struct mlfs_err *err)
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
static int auth_header(struct endpoint *ep, const char *scope, bool force, char **hdr,
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

static void remember_challenge(struct endpoint *ep, struct mlfs_challenge *ch)
{
	pthread_mutex_lock(&ep->lock);
	mlfs_challenge_clear(&ep->challenge);
	ep->challenge = *ch;
	memset(ch, 0, sizeof *ch);
	pthread_mutex_unlock(&ep->lock);
}

static int status_error(struct endpoint *ep, const struct mlfs_http_response *resp,
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

/* One authenticated request to this registry: bare or with the known
 * header first, then at most two answers to 401 (learn the scheme; renew
 * a refused token).  Status errors are mapped here. */
static int registry_send(struct endpoint *ep, const char *what, const char *url_path,
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

/* ---- the walk over endpoints ----------------------------------------
 *
 * Every request goes to the mirrors in order, then the upstream.  A mirror
 * is skipped when its pull-from-mirror excludes the request (a tag from a
 * digest-only mirror), when it served bytes that did not match this
 * digest, or when it could not be reached a moment ago.  Whatever a mirror
 * answers wrongly (unreachable, 5xx, 404, 401, a digest mismatch checked
 * before this decides) sends the request on to the next endpoint; only a
 * cancel, a lack of memory or the caller's own sink refusing bytes stop
 * the walk there.  The upstream's answer is final, so its error is the one
 * the user reads.  Bounded: each endpoint once, each with its own retries
 * (one for a mirror). */

typedef int (*try_fn)(struct endpoint *ep, void *ctx, struct mlfs_err *err);

static bool endpoint_down(struct endpoint *ep)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	pthread_mutex_lock(&ep->lock);
	bool down = now.tv_sec < ep->down_until.tv_sec;
	pthread_mutex_unlock(&ep->lock);
	return down;
}

static void endpoint_mark_down(struct endpoint *ep)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	pthread_mutex_lock(&ep->lock);
	ep->down_until.tv_sec = now.tv_sec + MIRROR_DOWN_S;
	pthread_mutex_unlock(&ep->lock);
}

static int walk(struct mlfs_registry *reg, const char *what, bool by_tag, const char *digest, try_fn fn,
		void *ctx, const bool *sink_failed, struct mlfs_err *err)
{
	int r = -ENOENT;
	for (size_t i = 0; i < reg->n; i++) {
		struct endpoint *ep = &reg->ep[i];
		bool last = i + 1 == reg->n;
		const char *why = NULL;
		if (last)
			;
		else if (by_tag && ep->pull == MLFS_PULL_DIGEST_ONLY)
			why = "pull-from-mirror = \"digest-only\" and this is a tag";
		else if (!by_tag && ep->pull == MLFS_PULL_TAG_ONLY)
			why = "pull-from-mirror = \"tag-only\" and this is a digest";
		else if (distrusted(reg, digest))
			why = "a mirror served bytes that did not match this digest";
		else if (endpoint_down(ep))
			why = "it could not be reached a moment ago";
		if (why) {
			log_debug(MLFS_AREA_FETCH, "%s: skipping mirror %s: %s", what, ep->api_host, why);
			continue;
		}
		log_debug(MLFS_AREA_FETCH, "%s: trying %s %s/%s", what, last ? "upstream" : "mirror", ep->api_host,
			  ep->repo);
		struct mlfs_err e = { 0 };
		r = fn(ep, ctx, last ? err : &e);
		if (r == 0 || last)
			return r;
		if (r == -ECANCELED || r == -ENOMEM || (sink_failed && *sink_failed)) {
			if (err)
				*err = e;
			return r;
		}
		if (r == -ECONNREFUSED || r == -ETIMEDOUT || r == -ECONNABORTED || r == -EHOSTUNREACH ||
		    r == -ECONNRESET)
			endpoint_mark_down(ep);
		log_info(MLFS_AREA_FETCH, "%s: mirror %s failed, trying the next endpoint: %s", what, ep->api_host,
			 e.msg[0] ? e.msg : strerror(-r));
	}
	return r;
}

struct manifest_ctx {
	const char *reference;
	bool by_digest;
	struct mlfs_fetched *out;
};

static int try_manifest(struct endpoint *ep, void *priv, struct mlfs_err *err)
{
	struct manifest_ctx *c = priv;
	char what[1024], url_path[2048];
	snprintf(what, sizeof what, "%s/%s%s%s", ep->domain, ep->repo, c->by_digest ? "@" : ":", c->reference);
	snprintf(url_path, sizeof url_path, "/v2/%s/manifests/%s", ep->repo, c->reference);

	struct mlfs_http_request req = { .accept = mlfs_media_accept(), .max_body = MLFS_MANIFEST_MAX };
	struct mlfs_http_response resp = { 0 };
	struct mlfs_fetched *out = c->out;
	int r = registry_send(ep, what, url_path, &req, &resp, err);
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
	r = verify_body(&resp, c->by_digest ? c->reference : NULL, what, out, err);
	if (r == 0)
		resp.body = NULL; /* now out's */
out:
	mlfs_http_response_clear(&resp);
	return r;
}

int mlfs_registry_get_manifest(struct mlfs_registry *reg, const char *reference, struct mlfs_fetched *out,
			       struct mlfs_err *err)
{
	bool by_digest = strchr(reference, ':') != NULL;
	if (by_digest && mlfs_digest_validate(reference) < 0)
		return mlfs_err_set(err, EINVAL, "invalid digest %s", reference);
	struct manifest_ctx c = { reference, by_digest, out };
	char what[1024];
	snprintf(what, sizeof what, "%s/%s%s%s", reg->domain, reg->ep[reg->n - 1].repo, by_digest ? "@" : ":",
		 reference);
	return walk(reg, what, !by_digest, by_digest ? reference : NULL, try_manifest, &c, NULL, err);
}

struct small_ctx {
	const struct mlfs_descriptor *desc;
	struct mlfs_fetched *out;
};

static int try_small_blob(struct endpoint *ep, void *priv, struct mlfs_err *err)
{
	struct small_ctx *c = priv;
	const struct mlfs_descriptor *desc = c->desc;
	struct mlfs_fetched *out = c->out;
	char what[1024], url_path[2048];
	snprintf(what, sizeof what, "blob %s of %s/%s", desc->digest, ep->domain, ep->repo);
	snprintf(url_path, sizeof url_path, "/v2/%s/blobs/%s", ep->repo, desc->digest);
	struct mlfs_http_request req = { .max_body = MLFS_MANIFEST_MAX };
	struct mlfs_http_response resp = { 0 };
	int r = registry_send(ep, what, url_path, &req, &resp, err);
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

int mlfs_registry_get_small_blob(struct mlfs_registry *reg, const struct mlfs_descriptor *desc,
				 struct mlfs_fetched *out, struct mlfs_err *err)
{
	char what[1024];
	snprintf(what, sizeof what, "blob %s of %s/%s", desc->digest, reg->domain, reg->ep[reg->n - 1].repo);
	if (desc->size < 0 || desc->size > (int64_t)MLFS_MANIFEST_MAX)
		return mlfs_err_set(err, EFBIG, "%s is too large (%lld bytes, the limit is %u)", what,
				    (long long)desc->size, MLFS_MANIFEST_MAX);
	struct small_ctx c = { desc, out };
	return walk(reg, what, false, desc->digest, try_small_blob, &c, NULL, err);
}

/* A streamed blob: each endpoint continues where the one before stopped
 * (Range), and the caller hashes the whole at the end (blob.c): bytes a
 * mirror sent wrong fail that check, and the caller asks again with the
 * mirrors distrusted for the digest (mlfs_registry_distrust). */
struct stream_ctx {
	const char *digest;
	off_t offset, delivered;
	mlfs_sink_fn sink;
	void *priv;
	bool sink_failed;
};

static int stream_sink(void *priv, const void *buf, size_t len)
{
	struct stream_ctx *c = priv;
	int r = c->sink(c->priv, buf, len);
	if (r)
		c->sink_failed = true;
	return r;
}

static int try_stream(struct endpoint *ep, void *priv, struct mlfs_err *err)
{
	struct stream_ctx *c = priv;
	char what[1024], url_path[2048];
	snprintf(what, sizeof what, "blob %s of %s/%s", c->digest, ep->domain, ep->repo);
	snprintf(url_path, sizeof url_path, "/v2/%s/blobs/%s", ep->repo, c->digest);
	if (c->delivered)
		log_info(MLFS_AREA_FETCH, "%s: resuming at byte %lld", what, (long long)(c->offset + c->delivered));
	struct mlfs_http_request req = { .sink = stream_sink, .priv = c, .range_start = c->offset + c->delivered };
	struct mlfs_http_response resp = { 0 };
	int r = registry_send(ep, what, url_path, &req, &resp, err);
	c->delivered += resp.delivered;
	mlfs_http_response_clear(&resp);
	return r;
}

int mlfs_registry_get_blob(struct mlfs_registry *reg, const char *digest, off_t offset, mlfs_sink_fn sink,
			   void *priv, struct mlfs_err *err)
{
	char what[1024];
	snprintf(what, sizeof what, "blob %s of %s/%s", digest, reg->domain, reg->ep[reg->n - 1].repo);
	struct stream_ctx c = { .digest = digest, .offset = offset, .sink = sink, .priv = priv };
	return walk(reg, what, false, digest, try_stream, &c, &c.sink_failed, err);
}

struct range_ctx {
	const char *digest;
	uint64_t offset;
	unsigned char *buf;
	size_t len, have;
};

static int range_write(void *priv, const void *buf, size_t len)
{
	struct range_ctx *b = priv;
	if (len > b->len - b->have)
		return -EPROTO; /* more than the range asked for */
	memcpy(b->buf + b->have, buf, len);
	b->have += len;
	return 0;
}

static int try_range(struct endpoint *ep, void *priv, struct mlfs_err *err)
{
	struct range_ctx *b = priv;
	char what[1024], url_path[2048];
	snprintf(what, sizeof what, "blob %s of %s/%s", b->digest, ep->domain, ep->repo);
	snprintf(url_path, sizeof url_path, "/v2/%s/blobs/%s", ep->repo, b->digest);
	/* A range serves a read someone waits on (and the kernel retries a
	 * failed read at once): two retries, not the download's four.  What
	 * an endpoint before this one delivered is not asked again. */
	struct mlfs_http_request req = { .sink = range_write, .priv = b, .range_start = (off_t)(b->offset + b->have),
					 .range_len = (off_t)(b->len - b->have), .max_retries = 2 };
	struct mlfs_http_response resp = { 0 };
	int r = registry_send(ep, what, url_path, &req, &resp, err);
	mlfs_http_response_clear(&resp);
	if (r == -EPROTO && !(err && err->msg[0]))
		r = mlfs_err_set(err, EPROTO, "%s: more bytes than the %zu asked for at %llu", what, b->len,
				 (unsigned long long)b->offset);
	if (r == 0 && b->have != b->len)
		r = mlfs_err_set(err, EIO, "%s: range at %llu ended after %zu of %zu bytes", what,
				 (unsigned long long)b->offset, b->have, b->len);
	return r;
}

int mlfs_registry_get_range(struct mlfs_registry *reg, const char *digest, uint64_t offset, size_t len, void *buf,
			    struct mlfs_err *err)
{
	char what[1024];
	snprintf(what, sizeof what, "blob %s of %s/%s", digest, reg->domain, reg->ep[reg->n - 1].repo);
	if (len == 0 || offset > (uint64_t)INT64_MAX - len)
		return mlfs_err_set(err, EINVAL, "%s: bad range %llu+%zu", what, (unsigned long long)offset, len);
	struct range_ctx b = { digest, offset, buf, len, 0 };
	return walk(reg, what, false, digest, try_range, &b, NULL, err);
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
	int r = mlfs_http_send(reg->ep[reg->n - 1].http, &req, &resp, err);
	if (r == 0 && resp.status != 200 && resp.status != 206)
		r = mlfs_err_set(err, resp.status == 404 ? ENOENT : EIO, "layer URL %.*s: HTTP %ld",
				 (int)strcspn(shown, "?"), shown, resp.status);
	mlfs_http_response_clear(&resp);
	return r;
}
