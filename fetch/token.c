/* Bearer tokens (the distribution token spec): one GET to the challenge's
 * realm with service and scope, Basic auth when we have a password, or the
 * OAuth2 refresh-token POST when all we have is an identity token.  Tokens
 * are cached per (realm, service, scope) until a little before they expire:
 * a mount asks for many blobs of one repository and must not pay a token
 * round trip for each. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <curl/curl.h>
#include <jansson.h>
#include <openssl/evp.h>

#include "common/cleanup.h"
#include "common/log.h"
#include "fetch/internal.h"

#define TOKEN_MAX_BODY (1u << 20)
#define DEFAULT_EXPIRES_S 60 /* the spec's default when expires_in is absent */
#define EXPIRY_MARGIN_S 10

struct token_entry {
	char *key;
	char *header;
	time_t expires;
};

struct mlfs_token_cache {
	pthread_mutex_t lock; /* protects entries, n */
	struct token_entry *entries;
	size_t n;
};

int mlfs_token_cache_new(struct mlfs_token_cache **out)
{
	struct mlfs_token_cache *tc = calloc(1, sizeof *tc);
	if (!tc)
		return -ENOMEM;
	pthread_mutex_init(&tc->lock, NULL);
	*out = tc;
	return 0;
}

void mlfs_token_cache_free(struct mlfs_token_cache *tc)
{
	if (!tc)
		return;
	for (size_t i = 0; i < tc->n; i++) {
		free(tc->entries[i].key);
		free(tc->entries[i].header);
	}
	free(tc->entries);
	pthread_mutex_destroy(&tc->lock);
	free(tc);
}

static char *cache_lookup(struct mlfs_token_cache *tc, const char *key)
{
	char *hdr = NULL;
	time_t now = time(NULL);
	pthread_mutex_lock(&tc->lock);
	for (size_t i = 0; i < tc->n; i++)
		if (!strcmp(tc->entries[i].key, key) && tc->entries[i].expires > now)
			hdr = strdup(tc->entries[i].header);
	pthread_mutex_unlock(&tc->lock);
	return hdr;
}

static void cache_store(struct mlfs_token_cache *tc, const char *key, const char *header, time_t expires)
{
	pthread_mutex_lock(&tc->lock);
	struct token_entry *e = NULL;
	for (size_t i = 0; i < tc->n; i++)
		if (!strcmp(tc->entries[i].key, key))
			e = &tc->entries[i];
	if (!e) {
		struct token_entry *ne = realloc(tc->entries, (tc->n + 1) * sizeof *ne);
		char *k = strdup(key);
		if (ne)
			tc->entries = ne;
		if (ne && k) {
			e = &ne[tc->n++];
			e->key = k;
			e->header = NULL;
		} else {
			free(k);
		}
	}
	if (e) {
		free(e->header);
		e->header = strdup(header);
		e->expires = expires;
	}
	pthread_mutex_unlock(&tc->lock);
}

/* {"token"|"access_token": "...", "expires_in": N}; the two names are both in use. */
static int token_parse(const char *body, size_t len, char **token, long *expires_in)
{
	json_t *root = json_loadb(body, len, 0, NULL);
	if (!root)
		return -EPROTO;
	const char *t = NULL, *at = NULL;
	json_int_t exp = 0;
	int r = -EPROTO;
	if (json_unpack(root, "{s?s, s?s, s?I}", "token", &t, "access_token", &at, "expires_in", &exp) == 0 &&
	    ((t && *t) || (at && *at))) {
		*token = strdup(t && *t ? t : at);
		*expires_in = exp > 0 ? (long)exp : DEFAULT_EXPIRES_S;
		r = *token ? 0 : -ENOMEM;
	}
	json_decref(root);
	return r;
}

char *mlfs_basic_auth_header(const char *user, const char *secret)
{
	size_t n = strlen(user) + 1 + strlen(secret);
	_cleanup_free_ char *plain = malloc(n + 1);
	char *out = malloc(6 + 4 * ((n + 2) / 3) + 1);
	if (!plain || !out) {
		free(out);
		return NULL;
	}
	sprintf(plain, "%s:%s", user, secret);
	memcpy(out, "Basic ", 6);
	EVP_EncodeBlock((unsigned char *)out + 6, (unsigned char *)plain, (int)n);
	OPENSSL_cleanse(plain, n);
	return out;
}

static char *token_url(const struct mlfs_challenge *ch, const char *scope, bool with_query)
{
	CURLU *u = curl_url();
	char *out = NULL, *s = NULL, q[4096];
	if (!u || curl_url_set(u, CURLUPART_URL, ch->realm, 0) != CURLUE_OK)
		goto done;
	if (with_query) {
		if (ch->service) {
			snprintf(q, sizeof q, "service=%s", ch->service);
			curl_url_set(u, CURLUPART_QUERY, q, CURLU_APPENDQUERY | CURLU_URLENCODE);
		}
		snprintf(q, sizeof q, "scope=%s", scope);
		curl_url_set(u, CURLUPART_QUERY, q, CURLU_APPENDQUERY | CURLU_URLENCODE);
	}
	if (curl_url_get(u, CURLUPART_URL, &s, 0) == CURLUE_OK)
		out = strdup(s);
done:
	curl_free(s);
	curl_url_cleanup(u);
	return out;
}

static char *form_escape(const char *s)
{
	char *e = curl_easy_escape(NULL, s, 0);
	char *out = e ? strdup(e) : NULL;
	curl_free(e);
	return out;
}

int mlfs_token_get(struct mlfs_token_cache *tc, struct mlfs_http *http, const struct mlfs_challenge *ch,
		   const char *scope, const struct mlfs_creds *creds, bool force, char **header,
		   struct mlfs_err *err)
{
	if (!ch->realm || !*ch->realm)
		return mlfs_err_set(err, EPROTO, "the registry asked for a bearer token but named no realm");
	char key[4096];
	snprintf(key, sizeof key, "%s|%s|%s", ch->realm, ch->service ? ch->service : "", scope);
	if (!force && (*header = cache_lookup(tc, key)))
		return 0;

	bool refresh = creds && creds->secret && creds->identity_token;
	_cleanup_free_ char *url = token_url(ch, scope, !refresh);
	_cleanup_free_ char *basic = NULL, *form = NULL;
	if (!url)
		return mlfs_err_set(err, EPROTO, "the registry's token realm \"%s\" is not a URL", ch->realm);
	if (refresh) {
		_cleanup_free_ char *svc = form_escape(ch->service ? ch->service : "");
		_cleanup_free_ char *sc = form_escape(scope);
		_cleanup_free_ char *rt = form_escape(creds->secret);
		if (!svc || !sc || !rt)
			return mlfs_err_set(err, ENOMEM, "out of memory");
		if (asprintf(&form, "grant_type=refresh_token&client_id=mlfs&service=%s&scope=%s&refresh_token=%s",
			     svc, sc, rt) < 0)
			return mlfs_err_set(err, ENOMEM, "out of memory");
	} else if (creds && creds->username && creds->secret) {
		basic = mlfs_basic_auth_header(creds->username, creds->secret);
		if (!basic)
			return mlfs_err_set(err, ENOMEM, "out of memory");
	}

	/* Credentials never cross a network in clear: a plain-HTTP realm gets
	 * them only on loopback, or on the registry's own host when the user
	 * marked it insecure (its requests carry them in clear already). */
	if ((basic || form) && !strncasecmp(url, "http:", 5)) {
		char scheme[16], host[512];
		bool ok = mlfs_url_scheme_host(url, scheme, sizeof scheme, host, sizeof host) == 0 &&
			  (mlfs_host_is_loopback(host) || (mlfs_http_insecure(http) && mlfs_http_is_home(http, url)));
		if (!ok) {
			if (basic)
				OPENSSL_cleanse(basic, strlen(basic));
			if (form)
				OPENSSL_cleanse(form, strlen(form));
			return mlfs_err_set(err, EPERM, "refusing to send credentials to the plain-HTTP token realm %s: "
					    "the registry must name an https:// realm", ch->realm);
		}
	}
	struct mlfs_http_request req = { .url = url, .authorization = basic, .post_form = form,
					 .accept = "application/json", .max_body = TOKEN_MAX_BODY };
	struct mlfs_http_response resp = { 0 };
	_cleanup_free_ char *token = NULL;
	long expires_in = 0;
	int r = mlfs_http_send(http, &req, &resp, err);
	if (basic)
		OPENSSL_cleanse(basic, strlen(basic));
	if (form)
		OPENSSL_cleanse(form, strlen(form));
	if (r < 0) {
		mlfs_err_wrap(err, "token request");
		goto out;
	}
	if (resp.status == 401 || resp.status == 403) {
		r = mlfs_err_set(err, EACCES,
				 "unauthorized: the token server %s refused %s (HTTP %ld): check your credentials "
				 "(docker login, or the auth file)", ch->service ? ch->service : ch->realm,
				 creds && creds->secret ? "the credentials" : "anonymous access", resp.status);
		goto out;
	}
	if (resp.status != 200) {
		r = mlfs_err_set(err, EIO, "token request to %s failed with HTTP %ld", ch->realm, resp.status);
		goto out;
	}
	if (token_parse(resp.body, resp.body_len, &token, &expires_in) < 0) {
		r = mlfs_err_set(err, EPROTO, "malformed token response from %s", ch->realm);
		goto out;
	}
	if (asprintf(header, "Bearer %s", token) < 0) {
		r = mlfs_err_set(err, ENOMEM, "out of memory");
		goto out;
	}
	long keep = expires_in > EXPIRY_MARGIN_S ? expires_in - EXPIRY_MARGIN_S : 0;
	cache_store(tc, key, *header, time(NULL) + keep);
	log_debug(MLFS_AREA_AUTH, "got a token for %s from %s, valid %lds", scope, ch->realm, expires_in);
out:
	mlfs_http_response_clear(&resp);
	return r;
}
