/* The registry's /v2/ API for one reference: manifests and blobs, each
 * request walked over the reference's endpoints (mirrors, then the
 * upstream; fetch/mirrors.c builds the list, fetch/endpoint.c talks to
 * each host). */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "fetch/internal.h"

/* A mirror that served bytes not matching their digest is not asked for
 * that digest again; past this many, mirrors are not asked at all. */
#define MAX_DISTRUSTED 64

struct mlfs_registry {
	char *domain;           /* the reference's, for messages */
	bool insecure;
	size_t n;               /* mirrors first, the upstream last; n >= 1 */
	struct mlfs_epclient *ep;

	pthread_mutex_t lock;   /* protects everything below */
	size_t n_distrusted;
	char distrusted[MAX_DISTRUSTED][MLFS_DIGEST_MAX];
	bool mirrors_off;       /* too many mismatches: upstream only */
};

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
		int r = mlfs_epclient_init(&reg->ep[i], &specs[i], opts, err);
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
		mlfs_epclient_clear(&reg->ep[i]);
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

typedef int (*try_fn)(struct mlfs_epclient *ep, void *ctx, struct mlfs_err *err);

static int walk(struct mlfs_registry *reg, const char *what, bool by_tag, const char *digest, try_fn fn,
		void *ctx, const bool *sink_failed, struct mlfs_err *err)
{
	int r = -ENOENT;
	for (size_t i = 0; i < reg->n; i++) {
		struct mlfs_epclient *ep = &reg->ep[i];
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
		else if (mlfs_epclient_down(ep))
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
			mlfs_epclient_mark_down(ep);
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

static int try_manifest(struct mlfs_epclient *ep, void *priv, struct mlfs_err *err)
{
	struct manifest_ctx *c = priv;
	char what[1024], url_path[2048];
	snprintf(what, sizeof what, "%s/%s%s%s", ep->domain, ep->repo, c->by_digest ? "@" : ":", c->reference);
	snprintf(url_path, sizeof url_path, "/v2/%s/manifests/%s", ep->repo, c->reference);

	struct mlfs_http_request req = { .accept = mlfs_media_accept(), .max_body = MLFS_MANIFEST_MAX };
	struct mlfs_http_response resp = { 0 };
	struct mlfs_fetched *out = c->out;
	int r = mlfs_epclient_send(ep, what, url_path, &req, &resp, err);
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

static int try_small_blob(struct mlfs_epclient *ep, void *priv, struct mlfs_err *err)
{
	struct small_ctx *c = priv;
	const struct mlfs_descriptor *desc = c->desc;
	struct mlfs_fetched *out = c->out;
	char what[1024], url_path[2048];
	snprintf(what, sizeof what, "blob %s of %s/%s", desc->digest, ep->domain, ep->repo);
	snprintf(url_path, sizeof url_path, "/v2/%s/blobs/%s", ep->repo, desc->digest);
	struct mlfs_http_request req = { .max_body = MLFS_MANIFEST_MAX };
	struct mlfs_http_response resp = { 0 };
	int r = mlfs_epclient_send(ep, what, url_path, &req, &resp, err);
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

static int try_stream(struct mlfs_epclient *ep, void *priv, struct mlfs_err *err)
{
	struct stream_ctx *c = priv;
	char what[1024], url_path[2048];
	snprintf(what, sizeof what, "blob %s of %s/%s", c->digest, ep->domain, ep->repo);
	snprintf(url_path, sizeof url_path, "/v2/%s/blobs/%s", ep->repo, c->digest);
	if (c->delivered)
		log_info(MLFS_AREA_FETCH, "%s: resuming at byte %lld", what, (long long)(c->offset + c->delivered));
	struct mlfs_http_request req = { .sink = stream_sink, .priv = c, .range_start = c->offset + c->delivered };
	struct mlfs_http_response resp = { 0 };
	int r = mlfs_epclient_send(ep, what, url_path, &req, &resp, err);
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

static int try_range(struct mlfs_epclient *ep, void *priv, struct mlfs_err *err)
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
	int r = mlfs_epclient_send(ep, what, url_path, &req, &resp, err);
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
