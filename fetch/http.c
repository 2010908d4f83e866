/* The one libcurl layer of the program.
 *
 * Why redirects are followed by hand: registries send blob GETs to object
 * storage on another host, and an Authorization header sent there both
 * leaks the registry token and breaks the request (S3 refuses two auth
 * mechanisms).  Following each hop here makes the rule explicit: the
 * header goes only to the origin (scheme, host, port) of the first URL.
 *
 * Why retries resume: a blob streamed into a sink has already handed its
 * first bytes on when the connection drops, so a retry asks for the rest
 * with Range and, if the server ignores Range and answers 200, skips what
 * the sink already has.  The sink sees one continuous stream.
 *
 * Why every hop is checked (netpolicy.c has the rule): a redirect, a token
 * realm or a layer URL may name any host.  Each hop must be http(s), never
 * steps down from https to http, and, when it is not the registry itself,
 * may reach only the addresses the rule allows.  The rule is applied to the
 * address a connection really uses (CURLOPT_OPENSOCKETFUNCTION before
 * connecting, CURLOPT_PREREQFUNCTION for a reused connection), so a name
 * that resolves one way when checked and another when connecting (DNS
 * rebinding) gains nothing.  Behind a proxy the proxy would resolve the
 * name: there it is resolved and checked here, and the proxy is asked to
 * tunnel to the checked address (CURLOPT_CONNECT_TO), so it cannot resolve
 * it anew.
 *
 * Why extra CAs go into OpenSSL's store: CURLOPT_CAINFO_BLOB replaces
 * libcurl's default CA bundle, and a copy of "the system bundle" read from
 * one distribution's path is no bundle at all on the others.  Adding the
 * certs.d CAs to the X509_STORE libcurl has already filled from its
 * defaults (CURLOPT_SSL_CTX_FUNCTION) keeps the system's trust as it is. */
#include "fetch/internal.h"

#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <sys/socket.h>
#include <curl/curl.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "common/cleanup.h"
#include "common/log.h"

#define ERROR_BODY_MAX (64u << 10)
#define MAX_REDIRECTS 10
#define RETRY_AFTER_CAP_S 60

struct mlfs_http {
	struct mlfs_http_opts opts;
	STACK_OF(X509) *extra_cas; /* certs.d CAs, added to the system's; NULL when none */
	char *home;           /* the registry's host as curl spells it ("[::1]"), or NULL */
	int home_class;       /* enum mlfs_addr_class of home, -1 until needed (atomic) */
	bool cancelled;       /* mlfs_http_cancel(): every transfer ends (atomic) */
	pthread_mutex_t lock; /* protects pool */
	CURL *pool[8];
	size_t n_pool;
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_init_once(void) { curl_global_init(CURL_GLOBAL_DEFAULT); }

/* The CAs of a PEM text; other PEM blocks are skipped. */
static STACK_OF(X509) *parse_cas(const char *pem)
{
	STACK_OF(X509) *sk = sk_X509_new_null();
	BIO *bio = BIO_new_mem_buf(pem, -1);
	X509 *x;
	while (sk && bio && (x = PEM_read_bio_X509(bio, NULL, NULL, NULL)))
		if (!sk_X509_push(sk, x))
			X509_free(x);
	ERR_clear_error(); /* the end of the text reads as an error */
	BIO_free(bio);
	if (sk && sk_X509_num(sk) == 0) {
		sk_X509_free(sk);
		sk = NULL;
	}
	return sk;
}

int mlfs_http_new(const struct mlfs_http_opts *opts, struct mlfs_http **out)
{
	pthread_once(&curl_once, curl_init_once);
	struct mlfs_http *h = calloc(1, sizeof *h);
	if (!h)
		return -ENOMEM;
	pthread_mutex_init(&h->lock, NULL);
	h->opts = *opts;
	h->opts.ca_pem = NULL;
	if (!h->opts.connect_timeout_s)
		h->opts.connect_timeout_s = 15;
	if (!h->opts.low_speed_time_s)
		h->opts.low_speed_time_s = 30;
	if (!h->opts.max_retries)
		h->opts.max_retries = 4;
	if (opts->client_cert)
		h->opts.client_cert = strdup(opts->client_cert);
	if (opts->client_key)
		h->opts.client_key = strdup(opts->client_key);
	if (opts->headers)
		h->opts.headers = strdup(opts->headers);
	h->opts.home_host = NULL;
	h->home_class = -1;
	if (opts->home_host) {
		/* Spelt as curl spells a URL's host, so that hops compare equal. */
		char url[600], scheme[16], host[512];
		snprintf(url, sizeof url, "http://%s/", opts->home_host);
		if (mlfs_url_scheme_host(url, scheme, sizeof scheme, host, sizeof host) == 0)
			h->home = strdup(host);
	}
	if (opts->ca_pem && !(h->extra_cas = parse_cas(opts->ca_pem)))
		log_warn(MLFS_AREA_FETCH, "the CA files in certs.d hold no certificate that could be read");
	*out = h;
	return 0;
}

void mlfs_http_free(struct mlfs_http *h)
{
	if (!h)
		return;
	for (size_t i = 0; i < h->n_pool; i++)
		curl_easy_cleanup(h->pool[i]);
	pthread_mutex_destroy(&h->lock);
	free((char *)h->opts.client_cert);
	free((char *)h->opts.client_key);
	free((char *)h->opts.headers);
	if (h->extra_cas)
		sk_X509_pop_free(h->extra_cas, X509_free);
	free(h->home);
	free(h);
}

/* A handle belongs to one thread at a time; it keeps its connections
 * between requests, which is where connection reuse comes from. */
static CURL *handle_take(struct mlfs_http *h)
{
	CURL *c = NULL;
	pthread_mutex_lock(&h->lock);
	if (h->n_pool)
		c = h->pool[--h->n_pool];
	pthread_mutex_unlock(&h->lock);
	return c ? c : curl_easy_init();
}

static void handle_give(struct mlfs_http *h, CURL *c)
{
	/* Drop pointers to this request's stack and headers; connections stay. */
	curl_easy_reset(c);
	pthread_mutex_lock(&h->lock);
	if (h->n_pool < sizeof h->pool / sizeof h->pool[0]) {
		h->pool[h->n_pool++] = c;
		c = NULL;
	}
	pthread_mutex_unlock(&h->lock);
	if (c)
		curl_easy_cleanup(c);
}

void mlfs_http_response_clear(struct mlfs_http_response *r)
{
	free(r->content_type);
	free(r->www_authenticate);
	free(r->docker_digest);
	free(r->body);
	memset(r, 0, sizeof *r);
}

/* State of one exchange (one hop of one attempt). */
struct xfer {
	const struct mlfs_http_request *req;
	struct mlfs_http_response *resp;
	CURL *curl;
	char *location;
	long retry_after_s;     /* -1: none */
	off_t want_from;        /* absolute offset the sink expects next */
	long long range_from;   /* first byte of a 206's Content-Range, -1 when none */
	off_t skip;             /* bytes to drop (server ignored Range) */
	bool status_known;
	long status;
	int sink_error;         /* what the sink returned, when it aborted */
	bool too_big;
	bool bad_range;
	bool range_ignored;     /* a bounded range answered with the whole body */
	/* The address rule for this hop (netpolicy.c), applied by the socket callbacks. */
	bool check_addr;
	bool foreign;
	enum mlfs_addr_class home_class;
	char refused[INET6_ADDRSTRLEN + 32]; /* "10.0.0.1 (private)": what a callback refused */
	/* Behind a proxy, CURLOPT_CONNECT_TO's one entry, "host:port:address:port"
	 * (hop_pin): libcurl keeps the pointer, so the list lives here. */
	struct {
		struct curl_slist item;
		char spec[640];
	} pin;
};

static char *header_value(const char *line, size_t len, const char *name)
{
	size_t n = strlen(name);
	if (len <= n || strncasecmp(line, name, n) != 0 || line[n] != ':')
		return NULL;
	const char *v = line + n + 1, *end = line + len;
	while (v < end && isspace((unsigned char)*v))
		v++;
	while (end > v && isspace((unsigned char)end[-1]))
		end--;
	return strndup(v, (size_t)(end - v));
}

static void replace(char **slot, char *v)
{
	if (v) {
		free(*slot);
		*slot = v;
	}
}

static size_t on_header(char *line, size_t size, size_t nitems, void *priv)
{
	struct xfer *x = priv;
	size_t len = size * nitems;
	if (len >= 5 && !strncmp(line, "HTTP/", 5)) {
		/* A new response (after 100 Continue or a proxy CONNECT): forget the old one's headers. */
		mlfs_http_response_clear(x->resp);
		free(x->location);
		x->location = NULL;
		x->retry_after_s = -1;
		x->range_from = -1;
		return len;
	}
	char *cr = header_value(line, len, "Content-Range");
	if (cr) {
		long long from;
		if (sscanf(cr, "bytes %lld-", &from) == 1 && from >= 0)
			x->range_from = from;
		free(cr);
	}
	replace(&x->resp->content_type, header_value(line, len, "Content-Type"));
	replace(&x->resp->docker_digest, header_value(line, len, "Docker-Content-Digest"));
	replace(&x->location, header_value(line, len, "Location"));
	char *ra = header_value(line, len, "Retry-After");
	if (ra) {
		char *end;
		long s = strtol(ra, &end, 10);
		if (end != ra && *end == '\0' && s >= 0) {
			x->retry_after_s = s;
		} else {
			time_t t = curl_getdate(ra, NULL);
			if (t > 0)
				x->retry_after_s = t > time(NULL) ? (long)(t - time(NULL)) : 0;
		}
		free(ra);
	}
	/* Keep the first challenge header only: registries send one. */
	char *wa = header_value(line, len, "WWW-Authenticate");
	if (wa && !x->resp->www_authenticate)
		x->resp->www_authenticate = wa;
	else
		free(wa);
	return len;
}

static int buffer_append(struct mlfs_http_response *r, const char *data, size_t n, size_t cap)
{
	if (r->body_len + n > cap)
		return -EFBIG;
	char *nb = realloc(r->body, r->body_len + n + 1);
	if (!nb)
		return -ENOMEM;
	memcpy(nb + r->body_len, data, n);
	r->body = nb;
	r->body_len += n;
	r->body[r->body_len] = '\0';
	return 0;
}

static size_t on_data(char *data, size_t size, size_t nmemb, void *priv)
{
	struct xfer *x = priv;
	size_t n = size * nmemb;
	if (!x->status_known) {
		curl_easy_getinfo(x->curl, CURLINFO_RESPONSE_CODE, &x->status);
		x->status_known = true;
		/* Asked for a range and got the whole body: skip what we have.
		 * Got another range than asked (a proxy's idea): skip up to
		 * ours, or give up on a range that starts past it. */
		if (x->status == 200 && x->req->range_len > 0) {
			x->range_ignored = true;
			return 0;
		}
		if (x->status == 200 && x->want_from > 0)
			x->skip = x->want_from;
		if (x->status == 206 && x->range_from >= 0 && x->range_from != x->want_from) {
			if (x->range_from > x->want_from) {
				x->bad_range = true;
				return 0;
			}
			x->skip = x->want_from - x->range_from;
		}
	}
	if (x->status >= 300 || !x->req->sink) {
		size_t cap = x->status >= 300 ? ERROR_BODY_MAX : x->req->max_body;
		if (x->status >= 300 && x->resp->body_len + n > cap)
			return n; /* the start of an error body is enough */
		if (buffer_append(x->resp, data, n, cap) < 0) {
			x->too_big = true;
			return 0;
		}
		return n;
	}
	size_t off = 0;
	if (x->skip > 0) {
		off = (size_t)x->skip < n ? (size_t)x->skip : n;
		x->skip -= (off_t)off;
	}
	if (off < n) {
		int r = x->req->sink(x->req->priv, data + off, n - off);
		if (r) {
			x->sink_error = r;
			return 0;
		}
		x->want_from += (off_t)(n - off);
	}
	return n;
}

/* "https", "host", "port" of a URL, for the same-origin rule. */
static int url_origin(const char *url, char *buf, size_t len)
{
	CURLU *u = curl_url();
	char *scheme = NULL, *host = NULL, *port = NULL;
	int r = -EINVAL;
	if (u && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
	    curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
	    curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK &&
	    curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) == CURLUE_OK) {
		snprintf(buf, len, "%s://%s:%s", scheme, host, port);
		r = 0;
	}
	curl_free(scheme);
	curl_free(host);
	curl_free(port);
	curl_url_cleanup(u);
	return r;
}

static char *url_resolve(const char *base, const char *location)
{
	CURLU *u = curl_url();
	char *out = NULL;
	if (u && curl_url_set(u, CURLUPART_URL, base, 0) == CURLUE_OK &&
	    curl_url_set(u, CURLUPART_URL, location, 0) == CURLUE_OK) {
		char *s = NULL;
		if (curl_url_get(u, CURLUPART_URL, &s, 0) == CURLUE_OK)
			out = strdup(s);
		curl_free(s);
	}
	curl_url_cleanup(u);
	return out;
}

static void url_host(const char *url, char *buf, size_t len)
{
	CURLU *u = curl_url();
	char *host = NULL, *port = NULL;
	snprintf(buf, len, "%s", url);
	if (u && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
	    curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK) {
		if (curl_url_get(u, CURLUPART_PORT, &port, 0) == CURLUE_OK)
			snprintf(buf, len, "%s:%s", host, port);
		else
			snprintf(buf, len, "%s", host);
	}
	curl_free(host);
	curl_free(port);
	curl_url_cleanup(u);
}

static bool retryable(CURLcode c)
{
	switch (c) {
	case CURLE_COULDNT_CONNECT:
	case CURLE_OPERATION_TIMEDOUT:
	case CURLE_RECV_ERROR:
	case CURLE_SEND_ERROR:
	case CURLE_PARTIAL_FILE:
	case CURLE_GOT_NOTHING:
	case CURLE_HTTP2:
	case CURLE_HTTP2_STREAM:
		return true;
	default:
		return false;
	}
}

static int transport_error(CURLcode c, long os_errno, const char *errbuf, const char *url, struct mlfs_err *err)
{
	char host[512];
	url_host(url, host, sizeof host);
	const char *detail = errbuf[0] ? errbuf : curl_easy_strerror(c);
	switch (c) {
	case CURLE_COULDNT_RESOLVE_HOST:
		return mlfs_err_set(err, EHOSTUNREACH,
				    "could not resolve host %s: check the registry name and your DNS", host);
	case CURLE_COULDNT_RESOLVE_PROXY:
		return mlfs_err_set(err, EHOSTUNREACH, "could not resolve the proxy for %s: check http_proxy/https_proxy", host);
	case CURLE_COULDNT_CONNECT:
		if (os_errno == ECONNREFUSED || strcasestr(detail, "refused"))
			return mlfs_err_set(err, ECONNREFUSED,
					    "could not connect to %s: connection refused: is the registry running on that port?", host);
		return mlfs_err_set(err, ECONNREFUSED, "could not connect to %s: %s", host, detail);
	case CURLE_OPERATION_TIMEDOUT:
		return mlfs_err_set(err, ETIMEDOUT, "timed out talking to %s: %s", host, detail);
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CACERT_BADFILE:
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_SSL_CERTPROBLEM:
	case CURLE_SSL_ISSUER_ERROR:
		return mlfs_err_set(err, ECONNABORTED,
				    "TLS connection to %s failed (%s): trust its CA in /etc/docker/certs.d/%s/ca.crt, "
				    "or use --insecure if you trust the network", host, detail, host);
	default:
		return mlfs_err_set(err, EIO, "request to %s failed: %s", host, detail);
	}
}

void mlfs_http_cancel(struct mlfs_http *h)
{
	__atomic_store_n(&h->cancelled, true, __ATOMIC_RELEASE);
}

bool mlfs_http_cancelled(const struct mlfs_http *h)
{
	return __atomic_load_n(&h->cancelled, __ATOMIC_ACQUIRE);
}

/* libcurl calls this many times a second during a transfer and about once
 * a second when nothing moves: how a cancel reaches a stalled download. */
static int on_progress(void *priv, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow)
{
	(void)dltotal, (void)dlnow, (void)ultotal, (void)ulnow;
	return mlfs_http_cancelled(priv) ? 1 : 0;
}

/* Sleeps in short naps, so a cancel does not wait out a Retry-After. */
static void backoff_sleep(struct mlfs_http *h, int attempt, long retry_after_s)
{
	long ms = retry_after_s >= 0 ? (retry_after_s > RETRY_AFTER_CAP_S ? RETRY_AFTER_CAP_S : retry_after_s) * 1000
				     : 250L << (attempt < 5 ? attempt : 5);
	for (; ms > 0 && !mlfs_http_cancelled(h); ms -= 100) {
		struct timespec ts = { 0, (ms < 100 ? ms : 100) * 1000000L };
		while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
			;
	}
}

/* certs.d CAs on top of what libcurl loaded from its defaults. */
static CURLcode add_extra_cas(CURL *c, void *ssl_ctx, void *priv)
{
	(void)c;
	struct mlfs_http *h = priv;
	X509_STORE *store = SSL_CTX_get_cert_store(ssl_ctx);
	for (int i = 0; store && i < sk_X509_num(h->extra_cas); i++)
		X509_STORE_add_cert(store, sk_X509_value(h->extra_cas, i)); /* a duplicate is fine */
	ERR_clear_error();
	return CURLE_OK;
}

static bool addr_refused(struct xfer *x, enum mlfs_addr_class c, const char *text)
{
	if (mlfs_dest_allowed(c, x->home_class, x->foreign))
		return false;
	snprintf(x->refused, sizeof x->refused, "%s (%s)", text, mlfs_addr_class_name(c));
	return true;
}

/* Before connecting: the address curl is about to use, after its own resolution. */
static curl_socket_t open_checked(void *priv, curlsocktype purpose, struct curl_sockaddr *a)
{
	struct xfer *x = priv;
	if (x->check_addr && purpose == CURLSOCKTYPE_IPCXN) {
		char text[INET6_ADDRSTRLEN] = "?";
		const void *ip = a->family == AF_INET6 ? (const void *)&((struct sockaddr_in6 *)&a->addr)->sin6_addr
						       : (const void *)&((struct sockaddr_in *)&a->addr)->sin_addr;
		if (a->family == AF_INET || a->family == AF_INET6)
			inet_ntop(a->family, ip, text, sizeof text);
		if (addr_refused(x, mlfs_addr_classify(&a->addr), text))
			return CURL_SOCKET_BAD; /* curl tries the name's next address, if any */
	}
	return socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
}

/* Before sending: the peer of the connection, new or reused. */
static int prereq_checked(void *priv, char *primary_ip, char *local_ip, int primary_port, int local_port)
{
	(void)local_ip, (void)primary_port, (void)local_port;
	struct xfer *x = priv;
	if (!x->check_addr)
		return CURL_PREREQFUNC_OK;
	enum mlfs_addr_class c;
	if (mlfs_ip_literal_class(primary_ip, &c) < 0)
		c = MLFS_ADDR_SPECIAL;
	return addr_refused(x, c, primary_ip) ? CURL_PREREQFUNC_ABORT : CURL_PREREQFUNC_OK;
}

static void setup_handle(struct mlfs_http *h, CURL *c, struct xfer *x, const char *url,
			 struct curl_slist *headers, char *errbuf, bool same_origin)
{
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
	curl_easy_setopt(c, CURLOPT_USERAGENT, "mlfs/" "0.1");
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(c, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, h->opts.connect_timeout_s);
	curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1024L);
	curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, h->opts.low_speed_time_s);
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(c, CURLOPT_ACCEPT_ENCODING, NULL);
	curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(c, CURLOPT_HEADERDATA, x);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, x);
	curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
	curl_easy_setopt(c, CURLOPT_XFERINFODATA, h);
	/* "insecure" and the client certificate are for the registry itself,
	 * as in Docker: not for token realms, redirect targets or layer URLs. */
	if (!h->opts.verify_tls && same_origin) {
		curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 0L);
		curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 0L);
	}
	if (h->extra_cas) {
		curl_easy_setopt(c, CURLOPT_SSL_CTX_FUNCTION, add_extra_cas);
		curl_easy_setopt(c, CURLOPT_SSL_CTX_DATA, h);
	}
	if (x->check_addr) {
		curl_easy_setopt(c, CURLOPT_OPENSOCKETFUNCTION, open_checked);
		curl_easy_setopt(c, CURLOPT_OPENSOCKETDATA, x);
		curl_easy_setopt(c, CURLOPT_PREREQFUNCTION, prereq_checked);
		curl_easy_setopt(c, CURLOPT_PREREQDATA, x);
	}
	if (h->opts.client_cert && same_origin)
		curl_easy_setopt(c, CURLOPT_SSLCERT, h->opts.client_cert);
	if (h->opts.client_key && same_origin)
		curl_easy_setopt(c, CURLOPT_SSLKEY, h->opts.client_key);
	if (x->req->post_form)
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, x->req->post_form);
}

/* One hop: perform the request once.  Returns the curl code. */
static struct curl_slist *add_header(struct curl_slist *list, const char *name, const char *value)
{
	char *line = NULL;
	if (asprintf(&line, "%s: %s", name, value) < 0)
		return list;
	struct curl_slist *n = curl_slist_append(list, line);
	OPENSSL_cleanse(line, strlen(line));
	free(line);
	return n ? n : list;
}

static void free_headers(struct curl_slist *list)
{
	for (struct curl_slist *l = list; l; l = l->next)
		OPENSSL_cleanse(l->data, strlen(l->data)); /* a token may be in there */
	curl_slist_free_all(list);
}

static CURLcode perform_hop(struct mlfs_http *h, CURL *c, struct xfer *x, const char *url,
			    bool same_origin, char *errbuf)
{
	struct curl_slist *headers = NULL;
	char range[64];
	if (x->req->accept)
		headers = add_header(headers, "Accept", x->req->accept);
	if (same_origin && x->req->authorization)
		headers = add_header(headers, "Authorization", x->req->authorization);
	/* The host's own headers: to it alone, never to a token server or
	 * where a blob is redirected. */
	for (const char *l = h->opts.headers; same_origin && l && *l;) {
		size_t n = strcspn(l, "\n");
		char *line = strndup(l, n);
		struct curl_slist *more = line ? curl_slist_append(headers, line) : NULL;
		free(line);
		if (more)
			headers = more;
		l += n + (l[n] == '\n');
	}
	if (x->req->range_len > 0) {
		snprintf(range, sizeof range, "bytes=%lld-%lld", (long long)x->want_from,
			 (long long)(x->req->range_start + x->req->range_len - 1));
		headers = add_header(headers, "Range", range);
	} else if (x->want_from > 0) {
		snprintf(range, sizeof range, "bytes=%lld-", (long long)x->want_from);
		headers = add_header(headers, "Range", range);
	}
	errbuf[0] = '\0';
	x->status_known = false;
	x->status = 0;
	x->skip = 0;
	setup_handle(h, c, x, url, headers, errbuf, same_origin);
	CURLcode cc = curl_easy_perform(c);
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &x->status);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, NULL);
	free_headers(headers);
	return cc;
}

bool mlfs_http_insecure(const struct mlfs_http *h)
{
	return h->opts.any_destination;
}

static bool host_is_home(const struct mlfs_http *h, const char *host)
{
	return h->home && !strcasecmp(host, h->home);
}

bool mlfs_http_is_home(struct mlfs_http *h, const char *url)
{
	char scheme[16], host[512];
	return mlfs_url_scheme_host(url, scheme, sizeof scheme, host, sizeof host) == 0 && host_is_home(h, host);
}

/* The class of the registry's own address: what its redirects and realm
 * may share (netpolicy.c).  A name whose addresses disagree counts as
 * public, the strictest reading. */
static enum mlfs_addr_class home_class(struct mlfs_http *h)
{
	int c = __atomic_load_n(&h->home_class, __ATOMIC_ACQUIRE);
	if (c >= 0)
		return (enum mlfs_addr_class)c;
	unsigned mask = 0;
	c = MLFS_ADDR_PUBLIC;
	if (h->home && mlfs_host_classes(h->home, &mask) == 0 && mask && !(mask & (mask - 1)))
		c = __builtin_ctz(mask);
	__atomic_store_n(&h->home_class, c, __ATOMIC_RELEASE);
	return (enum mlfs_addr_class)c;
}

/* Whether libcurl sends a URL of this scheme through a proxy from the
 * environment (its rules, no_proxy aside: a host it exempts is pinned all
 * the same, and so connected to straight at the address checked here). */
static bool proxy_in_env(const char *scheme)
{
	const char *v = NULL;
	if (!strcasecmp(scheme, "http")) {
		v = getenv("http_proxy"); /* never HTTP_PROXY: CGI sets it from a request header */
	} else {
		v = getenv("https_proxy");
		if (!v || !*v)
			v = getenv("HTTPS_PROXY");
	}
	if (!v || !*v)
		v = getenv("all_proxy");
	if (!v || !*v)
		v = getenv("ALL_PROXY");
	return v && *v;
}

static int refuse(const struct mlfs_http_request *req, const char *url, const char *where, struct mlfs_err *err)
{
	int n = (int)strcspn(url, "?"); /* a query may carry a signature */
	if (req->foreign)
		return mlfs_err_set(err, EPERM, "refusing to fetch a layer from %.*s: it leads to %s, not a public "
				    "address (a layer URL must be public; --insecure allows any)", n, url, where);
	return mlfs_err_set(err, EPERM, "refusing to connect to %.*s: it leads to %s, which is neither the "
			    "registry's host nor public (--insecure allows it if you trust this registry)", n, url,
			    where);
}

/* The proxy connects, not us, and would resolve the name again: a name
 * that answers one address to our check and another to the proxy (DNS
 * rebinding) would reach anything the proxy can.  So the name is resolved
 * here, once; every address it has is checked, and the hop is pinned to
 * the first: CURLOPT_CONNECT_TO makes libcurl ask the proxy to CONNECT to
 * that address (an HTTP proxy tunnels plain http too, CURLOPT_HTTPPROXYTUNNEL),
 * while the Host header and TLS (SNI, the certificate's name) still use the
 * name.  A name we cannot resolve is left to the proxy unpinned (where
 * local DNS knows no outside names, the proxy is the only way out).
 * Handles are reused: every hop starts unpinned (hop_unpin), and
 * handle_give()'s curl_easy_reset() drops the pin with the rest. */

static void hop_unpin(struct xfer *x)
{
	curl_easy_setopt(x->curl, CURLOPT_CONNECT_TO, NULL);
	curl_easy_setopt(x->curl, CURLOPT_HTTPPROXYTUNNEL, 0L);
}

static long url_port(const char *url)
{
	CURLU *u = curl_url();
	char *p = NULL;
	long port = -1;
	if (u && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
	    curl_url_get(u, CURLUPART_PORT, &p, CURLU_DEFAULT_PORT) == CURLUE_OK)
		port = strtol(p, NULL, 10);
	curl_free(p);
	curl_url_cleanup(u);
	return port > 0 && port < 65536 ? port : -1;
}

static int hop_pin(struct xfer *x, const struct mlfs_http_request *req, const char *url, const char *host,
		   struct mlfs_err *err)
{
	long port = url_port(url);
	if (port < 0)
		return mlfs_err_set(err, EINVAL, "invalid URL %.*s", (int)strcspn(url, "?"), url);
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *res = NULL;
	if (getaddrinfo(host, NULL, &hints, &res) != 0 || !res)
		return 0;
	char first[INET6_ADDRSTRLEN] = "";
	bool v6 = false;
	for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
		enum mlfs_addr_class c = mlfs_addr_classify(ai->ai_addr);
		if (!mlfs_dest_allowed(c, x->home_class, x->foreign)) {
			char where[512 + 32];
			snprintf(where, sizeof where, "%s (%s)", host, mlfs_addr_class_name(c));
			freeaddrinfo(res);
			return refuse(req, url, where, err);
		}
		if (first[0] || (ai->ai_family != AF_INET && ai->ai_family != AF_INET6))
			continue;
		v6 = ai->ai_family == AF_INET6;
		inet_ntop(ai->ai_family,
			  v6 ? (const void *)&((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr
			     : (const void *)&((struct sockaddr_in *)ai->ai_addr)->sin_addr,
			  first, sizeof first);
	}
	freeaddrinfo(res);
	if (!first[0])
		return 0;
	int n = snprintf(x->pin.spec, sizeof x->pin.spec, v6 ? "%s:%ld:[%s]:%ld" : "%s:%ld:%s:%ld", host, port,
			 first, port);
	if (n < 0 || (size_t)n >= sizeof x->pin.spec)
		return mlfs_err_set(err, EINVAL, "host name too long in %.*s", (int)strcspn(url, "?"), url);
	x->pin.item.data = x->pin.spec;
	x->pin.item.next = NULL;
	curl_easy_setopt(x->curl, CURLOPT_CONNECT_TO, &x->pin.item);
	curl_easy_setopt(x->curl, CURLOPT_HTTPPROXYTUNNEL, 1L);
	log_debug(MLFS_AREA_FETCH, "through the proxy to %s at %s", host, first);
	return 0;
}

/* What one hop may do, decided before it starts: 0 (and x->check_addr
 * when the socket callbacks must check the address), or -EPERM + err. */
static int hop_policy(struct mlfs_http *h, const struct mlfs_http_request *req, const char *url, bool was_https,
		      struct xfer *x, struct mlfs_err *err)
{
	char scheme[16], host[512];
	int n = (int)strcspn(url, "?");
	x->check_addr = false;
	x->refused[0] = '\0';
	hop_unpin(x);
	if (strncasecmp(url, "http://", 7) && strncasecmp(url, "https://", 8))
		return mlfs_err_set(err, EPERM, "refusing %.*s: only http:// and https:// URLs are fetched", n, url);
	if (mlfs_url_scheme_host(url, scheme, sizeof scheme, host, sizeof host) < 0)
		return mlfs_err_set(err, EINVAL, "invalid URL %.*s", n, url);
	bool https = !strcasecmp(scheme, "https");
	if (was_https && !https)
		return mlfs_err_set(err, EPERM, "refusing a redirect from https down to plain http (%.*s)", n, url);
	if (h->opts.any_destination || (!req->foreign && host_is_home(h, host)))
		return 0;
	x->foreign = req->foreign;
	x->home_class = home_class(h);
	char where[sizeof host + 32];
	enum mlfs_addr_class c;
	if (mlfs_ip_literal_class(host, &c) == 0 && !mlfs_dest_allowed(c, x->home_class, x->foreign)) {
		snprintf(where, sizeof where, "%s (%s)", host, mlfs_addr_class_name(c));
		return refuse(req, url, where, err);
	}
	if (!proxy_in_env(scheme)) {
		x->check_addr = true;
		return 0;
	}
	/* An address literal, checked above, is what the proxy gets too. */
	if (mlfs_ip_literal_class(host, &c) == 0)
		return 0;
	return hop_pin(x, req, url, host, err);
}

int mlfs_http_send(struct mlfs_http *h, const struct mlfs_http_request *req,
		   struct mlfs_http_response *resp, struct mlfs_err *err)
{
	char origin[1024], errbuf[CURL_ERROR_SIZE];
	if (url_origin(req->url, origin, sizeof origin) < 0)
		return mlfs_err_set(err, EINVAL, "invalid URL %s", req->url);

	CURL *c = handle_take(h);
	if (!c)
		return mlfs_err_set(err, ENOMEM, "out of memory starting an HTTP request");

	struct xfer x = { .req = req, .resp = resp, .curl = c, .retry_after_s = -1,
			  .want_from = req->range_start, .range_from = -1 };
	int r = 0;
	for (int attempt = 0;; attempt++) {
		if (mlfs_http_cancelled(h)) {
			r = mlfs_err_set(err, ECANCELED, "%s: cancelled (unmounting)", req->url);
			goto out;
		}
		_cleanup_free_ char *url = strdup(req->url);
		CURLcode cc = CURLE_OK;
		int hops = 0;
		mlfs_http_response_clear(resp);
		bool same = true, was_https = false;
		for (;;) {
			char here[1024];
			same = url_origin(url, here, sizeof here) == 0 && !strcmp(here, origin);
			if ((r = hop_policy(h, req, url, was_https, &x, err)) < 0)
				goto out;
			was_https = was_https || !strncasecmp(url, "https:", 6);
			/* Only the path: a redirect target's query may carry a signature. */
			log_debug(MLFS_AREA_FETCH, "%s %.*s%s", req->post_form ? "POST" : "GET", (int)strcspn(url, "?"),
				  url, same && req->authorization ? " (with credentials)" : "");
			cc = perform_hop(h, c, &x, url, same, errbuf);
			if (cc == CURLE_ABORTED_BY_CALLBACK && mlfs_http_cancelled(h)) {
				r = mlfs_err_set(err, ECANCELED, "%s: cancelled (unmounting)", req->url);
				goto out;
			}
			if (x.refused[0] && cc != CURLE_OK) { /* not when another address of the name worked */
				r = refuse(req, url, x.refused, err);
				goto out;
			}
			if (cc != CURLE_OK || x.status < 300 || x.status >= 400 || !x.location)
				break;
			if (++hops > MAX_REDIRECTS) {
				r = mlfs_err_set(err, ELOOP, "too many redirects from %s", req->url);
				goto out;
			}
			char *next = url_resolve(url, x.location);
			if (!next) {
				r = mlfs_err_set(err, EPROTO, "bad redirect target from %s", req->url);
				goto out;
			}
			free(url);
			url = next;
			/* A form carries secrets (a refresh token): it goes nowhere else. */
			if (req->post_form && (url_origin(url, here, sizeof here) < 0 || strcmp(here, origin))) {
				r = mlfs_err_set(err, EPERM, "%s redirected a token request to another host: refused",
						 req->url);
				goto out;
			}
			mlfs_http_response_clear(resp);
		}
		/* A challenge from a redirect target is not the registry's to give. */
		if (!same) {
			free(resp->www_authenticate);
			resp->www_authenticate = NULL;
		}
		if (x.sink_error) {
			r = x.sink_error;
			goto out;
		}
		if (x.range_ignored) {
			r = mlfs_err_set(err, ERANGE, "%s ignored a Range request (answered 200 with the whole body)",
					 req->url);
			goto out;
		}
		if (x.bad_range) {
			r = mlfs_err_set(err, EPROTO, "%s answered with bytes from %lld when asked from %lld", req->url,
					 x.range_from, (long long)x.want_from);
			goto out;
		}
		if (x.too_big) {
			r = mlfs_err_set(err, EFBIG, "response from %s is too large (over %zu bytes)",
					 req->url, req->max_body);
			goto out;
		}
		bool again = attempt < (req->max_retries > 0 ? req->max_retries : h->opts.max_retries);
		if (cc != CURLE_OK) {
			if (again && retryable(cc)) {
				log_info(MLFS_AREA_FETCH, "retrying %s after: %s", req->url,
					 errbuf[0] ? errbuf : curl_easy_strerror(cc));
				backoff_sleep(h, attempt, -1);
				continue;
			}
			long os_errno = 0;
			curl_easy_getinfo(c, CURLINFO_OS_ERRNO, &os_errno);
			r = transport_error(cc, os_errno, errbuf, url, err);
			goto out;
		}
		resp->status = x.status;
		if (again && (x.status >= 500 || x.status == 429)) {
			log_info(MLFS_AREA_FETCH, "retrying %s after HTTP %ld", req->url, x.status);
			backoff_sleep(h, attempt, x.retry_after_s);
			continue;
		}
		break;
	}
out:
	resp->delivered = x.want_from - req->range_start;
	free(x.location);
	handle_give(h, c);
	return r;
}

int mlfs_url_scheme_host(const char *url, char *scheme, size_t slen, char *host, size_t hlen)
{
	CURLU *u = curl_url();
	char *sc = NULL, *h = NULL;
	int r = -EINVAL;
	if (u && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
	    curl_url_get(u, CURLUPART_SCHEME, &sc, 0) == CURLUE_OK &&
	    curl_url_get(u, CURLUPART_HOST, &h, 0) == CURLUE_OK) {
		snprintf(scheme, slen, "%s", sc);
		snprintf(host, hlen, "%s", h);
		r = 0;
	}
	curl_free(sc);
	curl_free(h);
	curl_url_cleanup(u);
	return r;
}
