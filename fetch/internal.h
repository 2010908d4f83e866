/* fetch/ internals shared between its files; not part of the module's API. */
#pragma once
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include <jansson.h>

#include "common/json.h"
#include "fetch/fetch.h"

/* ---- http.c: the one libcurl layer ------------------------------------- */

struct mlfs_http_opts {
	long connect_timeout_s;
	long low_speed_time_s;
	int max_retries;
	bool verify_tls;          /* false only for registries marked insecure */
	const char *ca_pem;       /* extra CAs (PEM text) trusted on top of the system's, or NULL */
	const char *client_cert;  /* PEM file paths from certs.d, or NULL */
	const char *client_key;
	const char *home_host;    /* the registry's "host[:port]": reached whatever its address */
	bool any_destination;     /* insecure: no address rule for other hosts (netpolicy.c) */
	const char *headers;      /* "Name: value" lines (hosts.toml [host.header]) sent to home_host
				     only, or NULL */
};

struct mlfs_http;

int mlfs_http_new(const struct mlfs_http_opts *opts, struct mlfs_http **out);
void mlfs_http_free(struct mlfs_http *http);
/* Every transfer of this client, now and later, ends with -ECANCELED. */
void mlfs_http_cancel(struct mlfs_http *http);
bool mlfs_http_cancelled(const struct mlfs_http *http);

struct mlfs_http_request {
	const char *url;
	const char *accept;          /* Accept header, or NULL */
	const char *authorization;   /* full header value; never sent to another origin */
	const char *post_form;       /* x-www-form-urlencoded body: makes it a POST */
	off_t range_start;           /* > 0: ask for bytes=N- (body delivered from N either way) */
	int max_retries;             /* > 0: instead of the client's (a read waiting on it wants an answer soon) */
	off_t range_len;             /* > 0: ask for bytes=N-(N+len-1) only; a server that ignores
				      * the range (200) is refused with -ERANGE, not skipped through */
	/* Body destination: a sink (streamed, resumed with Range across retries)
	 * or, when NULL, a buffer capped at max_body (-EFBIG beyond). */
	mlfs_sink_fn sink;
	void *priv;
	size_t max_body;
	bool foreign;                /* a URL from an image (a layer's urls): public addresses
				      * only, even on the registry's own host (netpolicy.c) */
};

struct mlfs_http_response {
	long status;
	char *content_type;
	char *www_authenticate;
	char *docker_digest;      /* Docker-Content-Digest */
	char *body;               /* buffered body; for status >= 400 the error body (capped) */
	size_t body_len;
	off_t delivered;          /* bytes handed to the sink, across retries */
};

/* 0 with any HTTP status in resp (the caller maps statuses); -errno + err on
 * transport failures after the retries (resolve, connect, TLS, timeout). */
int mlfs_http_send(struct mlfs_http *http, const struct mlfs_http_request *req,
		   struct mlfs_http_response *resp, struct mlfs_err *err);
void mlfs_http_response_clear(struct mlfs_http_response *resp);
/* Whether a URL's host is the registry's own (home_host, any port). */
bool mlfs_http_is_home(struct mlfs_http *http, const char *url);
bool mlfs_http_insecure(const struct mlfs_http *http);

/* Scheme and host (no port, IPv6 with brackets) of a URL, as curl parses it. */
int mlfs_url_scheme_host(const char *url, char *scheme, size_t slen, char *host, size_t hlen);

/* ---- endpoint.c: one host's client (mirror or upstream) ---------------- */

/* One host that can serve the repository: a mirror, or the upstream.
 * Each has its own HTTP client (whose home host is this endpoint, so a
 * redirect or a token never carries its credentials elsewhere), its own
 * credentials (looked up under its own name) and its own learnt auth. */
struct mlfs_epclient {
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

/* Sets up ep for spec (its certs.d CAs and client certificate, the
 * spec's CA file); on failure ep still needs mlfs_epclient_clear(). */
int mlfs_epclient_init(struct mlfs_epclient *ep, const struct mlfs_endpoint *spec,
		       const struct mlfs_registry_opts *opts, struct mlfs_err *err);
void mlfs_epclient_clear(struct mlfs_epclient *ep);
/* One authenticated request to this host (url_path: "/v2/..."): bare or
 * with the known header first, then at most two answers to 401.  Status
 * errors are mapped here; resp->delivered counts what the sink got in all
 * rounds, so the next endpoint may continue from there. */
int mlfs_epclient_send(struct mlfs_epclient *ep, const char *what, const char *url_path,
		       struct mlfs_http_request *req, struct mlfs_http_response *resp, struct mlfs_err *err);
/* A mirror that could not be reached is skipped for a while. */
bool mlfs_epclient_down(struct mlfs_epclient *ep);
void mlfs_epclient_mark_down(struct mlfs_epclient *ep);

/* ---- netpolicy.c: which destinations a request may reach ---------------- */

enum mlfs_addr_class {
	MLFS_ADDR_PUBLIC,     /* global unicast */
	MLFS_ADDR_PRIVATE,    /* RFC 1918, CGNAT, ULA fc00::/7, ... */
	MLFS_ADDR_LOOPBACK,   /* 127/8, ::1, and 0.0.0.0 / :: (they reach this host too) */
	MLFS_ADDR_LINKLOCAL,  /* 169.254/16, fe80::/10, cloud metadata addresses */
	MLFS_ADDR_SPECIAL,    /* multicast, reserved, broadcast, not IP */
};

struct sockaddr;
enum mlfs_addr_class mlfs_addr_classify(const struct sockaddr *sa);
/* An IP literal ("10.0.0.1", "::1", "[::1]", "fe80::1%eth0"), parsed with
 * inet_pton only: 0 and its class, -EINVAL for anything else (a name). */
int mlfs_ip_literal_class(const char *host, enum mlfs_addr_class *out);
/* The classes (bits 1 << class) of a literal, or of every address a name
 * resolves to; -EHOSTUNREACH when it does not resolve. */
int mlfs_host_classes(const char *host, unsigned *mask);
/* Whether a host ("127.0.0.1:5000", "[::1]:5000", "localhost") is loopback
 * by itself, without DNS: "localhost" or a loopback IP literal. */
bool mlfs_host_is_loopback(const char *hostport);
/* The rule: a destination other than the registry is reached when public,
 * or, for what the registry chose (not `foreign` URLs from an image), when
 * in the same private or loopback class as the registry itself. */
bool mlfs_dest_allowed(enum mlfs_addr_class dest, enum mlfs_addr_class home, bool foreign);
const char *mlfs_addr_class_name(enum mlfs_addr_class c);

/* ---- token.c: bearer tokens -------------------------------------------- */

struct mlfs_token_cache;

int mlfs_token_cache_new(struct mlfs_token_cache **out);
void mlfs_token_cache_free(struct mlfs_token_cache *tc);
/* Returns a valid "Bearer ..." header value for the challenge's scope
 * (malloc'd), from the cache or a new request to its realm.  `force` skips
 * the cache (a token the registry just refused). */
int mlfs_token_get(struct mlfs_token_cache *tc, struct mlfs_http *http,
		   const struct mlfs_challenge *ch, const char *scope,
		   const struct mlfs_creds *creds, bool force, char **header, struct mlfs_err *err);

/* GET a foreign layer from one of its descriptor's URLs (no credentials). */
int mlfs_registry_get_url(struct mlfs_registry *reg, const char *url, off_t offset, mlfs_sink_fn sink,
			  void *priv, struct mlfs_err *err);

/* "Basic base64(user:secret)", malloc'd; the caller wipes it after use. */
char *mlfs_basic_auth_header(const char *user, const char *secret);

/* ---- errors.c: the registry's error bodies ------------------------------ */

/* Frees a NULL-terminated list of strings (manifest urls, config lists). */
void mlfs_strv_free(char **v);


/* "manifest unknown (MANIFEST_UNKNOWN)" from {"errors":[...]}, or "" . */
void mlfs_registry_error_text(const char *body, size_t len, char *buf, size_t buflen);

/* ---- metacache.c: manifests, indexes, configs and tags in the cache ---- */

int mlfs_metacache_put(const char *cache_dir, const struct mlfs_fetched *f);
/* <cache>/meta/sha256/<hex>, malloc'd; NULL for a bad digest. */
char *mlfs_metacache_path(const char *cache_dir, const char *digest);
/* Reads and re-verifies a cached small blob: -ENOENT, -EBADMSG (removed). */
int mlfs_metacache_get(const char *cache_dir, const char *digest, enum mlfs_media media,
		       struct mlfs_fetched *out);
int mlfs_metacache_put_ref(const char *cache_dir, const struct mlfs_ref *ref, const char *digest,
			   enum mlfs_media media);
int mlfs_metacache_get_ref(const char *cache_dir, const struct mlfs_ref *ref,
			   char digest[MLFS_DIGEST_MAX], enum mlfs_media *media);
/* path written whole: a temp name beside it, fsync, rename (parents made). */
int mlfs_cache_write_atomic(const char *path, const void *buf, size_t len);
/* A file of at most max bytes into *buf (malloc'd, NUL-terminated): -errno, -EFBIG. */
int mlfs_cache_read_small(const char *path, size_t max, char **buf, size_t *len);

/* ---- policy.c, policymatch.c: containers-policy.json(5) ----------------- */

enum mlfs_pr_type {              /* a policy requirement's "type" */
	MLFS_PR_ACCEPT,              /* insecureAcceptAnything */
	MLFS_PR_REJECT,              /* reject */
	MLFS_PR_SIGNED_BY,           /* signedBy: simple signing (GPG) */
	MLFS_PR_SIGSTORE,            /* sigstoreSigned */
	MLFS_PR_BASE_LAYER,          /* signedBaseLayer: containers/image does not implement it */
};

enum mlfs_prm_type {             /* a signedIdentity's "type" */
	MLFS_PRM_MATCH_REPO_DIGEST_OR_EXACT, /* the default when signedIdentity is absent */
	MLFS_PRM_MATCH_EXACT,
	MLFS_PRM_MATCH_REPOSITORY,
	MLFS_PRM_EXACT_REFERENCE,    /* reference: dockerReference */
	MLFS_PRM_EXACT_REPOSITORY,   /* reference: dockerRepository */
	MLFS_PRM_REMAP_IDENTITY,     /* prefix, signed_prefix */
};

struct mlfs_policy_identity {
	enum mlfs_prm_type type;
	char *reference;             /* as written in the file */
	char *prefix;
	char *signed_prefix;
};

/* Where keys (or CA certificates) come from: one file, several files,
 * inline base64 (decoded here), or several of those. */
enum mlfs_key_kind { MLFS_KEYS_NONE, MLFS_KEYS_PATH, MLFS_KEYS_PATHS, MLFS_KEYS_DATA, MLFS_KEYS_DATAS };

struct mlfs_policy_blob {
	unsigned char *data;
	size_t len;
};

struct mlfs_policy_keys {
	enum mlfs_key_kind kind;
	size_t n;                        /* 1 for PATH and DATA */
	char **paths;                    /* PATH, PATHS */
	struct mlfs_policy_blob *datas;  /* DATA, DATAS */
};

struct mlfs_policy_req {
	enum mlfs_pr_type type;
	char *key_type;                  /* signedBy: GPGKeys, signedByGPGKeys, X509Certificates, signedByX509CAs */
	struct mlfs_policy_keys keys;    /* signedBy, sigstoreSigned (NONE with fulcio or pki) */
	struct mlfs_policy_identity identity; /* signedIdentity, or signedBaseLayer's baseLayerIdentity */
	/* sigstoreSigned only */
	bool has_fulcio;
	struct mlfs_policy_keys fulcio_ca;     /* caPath / caData */
	char *fulcio_oidc_issuer;
	char *fulcio_subject_email;
	struct mlfs_policy_keys rekor_keys;    /* rekorPublicKey{Path,Paths,Data,Datas}; NONE when absent */
	bool has_pki;
	struct mlfs_policy_keys pki_roots;     /* caRootsPath / caRootsData */
	struct mlfs_policy_keys pki_intermediates; /* NONE when absent */
	char *pki_subject_email;
	char *pki_subject_hostname;
};

struct mlfs_policy_reqs {
	size_t n;                        /* never 0 in a parsed policy */
	struct mlfs_policy_req *v;
};

struct mlfs_policy_scope {
	char *name;                      /* "" is the transport's default */
	struct mlfs_policy_reqs reqs;
};

struct mlfs_policy_transport {
	char *name;                      /* "docker", "docker-daemon", ... */
	size_t n_scopes;
	struct mlfs_policy_scope *scopes;
};

struct mlfs_policy {
	char *path;                      /* the file, for messages */
	struct mlfs_policy_reqs def;     /* "default" */
	size_t n_transports;
	struct mlfs_policy_transport *transports;
};

/* Parsing context, shared by policy.c (the file) and policyreq.c (one
 * requirement): errors read "invalid policy FILE: WHERE: WHAT". */
struct mlfs_policy_ctx {
	const char *name;
	struct mlfs_err *err;
};
int mlfs_policy_bad(const struct mlfs_policy_ctx *c, const char *where, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
int mlfs_policy_oom(const struct mlfs_policy_ctx *c);
int mlfs_policy_want_object(const struct mlfs_policy_ctx *c, const char *where, json_t *v);
/* Every key of obj must be one of `allowed` (NULL-terminated). */
int mlfs_policy_only_keys(const struct mlfs_policy_ctx *c, const char *where, json_t *obj,
			  const char *const *allowed);
/* A non-empty string, or NULL when absent (an error when `required`). */
int mlfs_policy_get_string(const struct mlfs_policy_ctx *c, const char *where, json_t *obj, const char *key,
			   bool required, char **out);
/* Base64 as Go's StdEncoding reads it (padded; CR and LF skipped): into
 * out->data (malloc'd).  -EINVAL when malformed, -ENOMEM. */
int mlfs_base64_decode_blob(const char *s, size_t n, struct mlfs_policy_blob *out);
/* policyident.c: a signedIdentity / baseLayerIdentity object. */
int mlfs_policy_identity_parse(const struct mlfs_policy_ctx *c, const char *where, json_t *j,
			       struct mlfs_policy_identity *id);
int mlfs_policy_req_parse(const struct mlfs_policy_ctx *c, const char *where, json_t *j, struct mlfs_policy_req *r);
void mlfs_policy_req_clear(struct mlfs_policy_req *r);

/* mlfs_policy_locate() with its inputs given: tests. */
int mlfs_policy_locate_in(const char *option, const char *env, const char *home, const char *system_path,
			  char **path);

enum mlfs_policy_verdict {
	MLFS_POLICY_ACCEPT,
	MLFS_POLICY_REJECT,              /* a "reject" requirement */
	MLFS_POLICY_NEEDS_SIGNATURES,    /* signedBy GPGKeys, sigstoreSigned with keys: verified (policyverify.c) */
	MLFS_POLICY_UNSUPPORTED,         /* signedBaseLayer, Fulcio, Rekor, pki, non-GPG keyTypes, no gpgme */
};

struct mlfs_policy_decision {
	enum mlfs_policy_verdict verdict;
	const char *scope;               /* the transports.docker scope used; NULL: the top-level default */
	const struct mlfs_policy_reqs *reqs;
	size_t req;                      /* reqs->v[req] decided, when not ACCEPT */
};

/* The requirements for one docker reference ("host/repo:tag" or
 * "host/repo@sha256:..", with its domain: canonical form) and what they
 * decide without signatures.  Pure: no I/O. */
void mlfs_policy_decide(const struct mlfs_policy *p, const char *identity, struct mlfs_policy_decision *out);
/* 'scope "host/repo"', 'scope "" of transport docker' or "default": for messages. */
void mlfs_policy_scope_describe(const struct mlfs_policy_decision *d, char *buf, size_t len);
/* "signedBy GPGKeys keyPath /etc/pki/key.gpg" into buf: for messages. */
void mlfs_policy_req_describe(const struct mlfs_policy_req *r, char *buf, size_t len);

/* ---- toml.c: the TOML that registries.conf and hosts.toml use ----------- */

enum mlfs_toml_kind { MLFS_TOML_TABLE, MLFS_TOML_ARRAY, MLFS_TOML_STRING, MLFS_TOML_BOOL, MLFS_TOML_INT };

struct mlfs_toml {
	enum mlfs_toml_kind kind;
	char *key;             /* its name in its table; NULL for array items and the root */
	int line;              /* where it was defined, for messages */
	size_t n;              /* TABLE: members; ARRAY: items */
	struct mlfs_toml **v;
	char *str;             /* STRING */
	bool b;                /* BOOL */
	int64_t i;             /* INT */
	bool defined;          /* a table named by a header: a second header is an error */
	bool closed;           /* an inline table or a static array: nothing can be added */
	bool of_tables;        /* an array made by [[headers]] */
};

/* Parses TOML text (the subset toml.c describes); errors are -EINVAL with
 * "NAME:LINE: what".  The tree is the caller's (mlfs_toml_free). */
int mlfs_toml_parse(const void *buf, size_t len, const char *name, struct mlfs_toml **out, struct mlfs_err *err);
void mlfs_toml_free(struct mlfs_toml *t);
/* A member of a table, or NULL (also when `table` is not a table). */
const struct mlfs_toml *mlfs_toml_get(const struct mlfs_toml *table, const char *key);

/* ---- regconf.c, hostsconf.c, dockerconf.c: the mirror configuration ----- */

struct mlfs_regconf_mirror {
	char *location;        /* "host[:port][/path]" */
	bool insecure;
	enum mlfs_pull_from pull;
	char *ca_file;         /* hosts.toml only */
};

struct mlfs_regconf_registry {
	char *prefix;          /* what references it applies to ("docker.io", "*.example.com", "a.io/ns/repo") */
	char *location;        /* rewrite of the prefix; NULL: the prefix itself */
	bool insecure;
	bool blocked;
	bool digest_only;      /* mirror-by-digest-only (the older spelling of pull-from-mirror) */
	size_t n_mirrors;
	struct mlfs_regconf_mirror *mirrors;
	char *source;          /* the file it came from */
	bool v1;               /* from version 1's [registries.insecure] / [registries.block] */
};

/* ---- shortconf.c: registries.conf's short-name settings ---------------- */

enum mlfs_short_mode {
	MLFS_SHORT_UNSET = 0,      /* not in any file: permissive, as containers/image defaults */
	MLFS_SHORT_ENFORCING,
	MLFS_SHORT_PERMISSIVE,
	MLFS_SHORT_DISABLED,
};

struct mlfs_short_alias {
	char *name;            /* the short name as written: "busybox", "library/busybox" */
	char *value;           /* "host/repository", normalised; NULL: erased by "" in a later file */
	char *source;          /* "FILE:LINE" */
};

/* What every registries.conf and drop-in said, merged in loading order:
 * a later file's unqualified-search-registries (even []) and
 * short-name-mode replace the earlier ones; aliases merge name by name. */
struct mlfs_shortconf {
	size_t n_search;
	char **search;         /* host[:port] entries, in order */
	bool search_set;
	char *search_source;   /* the file that set them (else the first file read): for messages */
	enum mlfs_short_mode mode;
	char *mode_source;
	size_t n_aliases;
	struct mlfs_short_alias *aliases;
};

void mlfs_shortconf_clear(struct mlfs_shortconf *c);
/* The settings of one parsed file (its TOML root) into `mine`; errors
 * name FILE:LINE. */
/* An unqualified-search-registries list (a TOML array of host[:port]). */
int mlfs_shortconf_search(const struct mlfs_toml *v, const char *name, struct mlfs_shortconf *c, struct mlfs_err *err);
int mlfs_shortconf_parse(const struct mlfs_toml *root, const char *name, struct mlfs_shortconf *mine,
			 struct mlfs_err *err);
/* `from` (one file's) merged into `into` (everything before it); from is emptied. */
int mlfs_shortconf_merge(struct mlfs_shortconf *into, struct mlfs_shortconf *from);
/* The alias for a short name without tag or digest, or NULL. */
const struct mlfs_short_alias *mlfs_shortconf_alias(const struct mlfs_shortconf *c, const char *name);

/* ---- shortname.c: what a reference without a registry means ----------- */

/* No registry in it ("busybox", "library/busybox:1", "myorg/app@sha256:.."):
 * the first '/'-part of the name has no '.' or ':' and is not localhost. */
bool mlfs_ref_is_short(const char *s);

enum mlfs_short_how {
	MLFS_SHORT_QUALIFIED,      /* not a short name: as written */
	MLFS_SHORT_BY_ALIAS,       /* [aliases] */
	MLFS_SHORT_BY_SEARCH,      /* unqualified-search-registries, tried in order */
	MLFS_SHORT_BY_DOCKER,      /* no registries.conf at all: Docker's rule (docker.io) */
};

struct mlfs_short_result {
	enum mlfs_short_how how;
	size_t n;                  /* >= 1 */
	char **candidates;         /* fully-qualified references, to try in this order */
	char *origin;              /* the file (FILE:LINE for an alias) that decided; NULL for docker */
};
void mlfs_short_result_clear(struct mlfs_short_result *r);
/* Pure: the candidates for `input` under the merged settings; have_conf:
 * some registries.conf or drop-in was read.  An ambiguous name under
 * "enforcing", or no alias and no search registries while a file exists:
 * -EINVAL with a one-line message saying what to write instead. */
int mlfs_shortname_decide(const char *input, const struct mlfs_shortconf *c, bool have_conf,
			  struct mlfs_short_result *out, struct mlfs_err *err);

/* The same, with the settings read from where containers/image reads
 * them (mlfs_regconf_load); the decision is logged (--debug=fetch). */
int mlfs_shortname_resolve(const char *input, const struct mlfs_mirror_opts *opts, struct mlfs_short_result *out,
			   struct mlfs_err *err);

struct mlfs_regconf {
	size_t n;
	struct mlfs_regconf_registry *v;
	struct mlfs_shortconf shorts;
};

/* mirrors.c: every registries.conf and drop-in containers/image would
 * read, merged; *found when at least one exists. */
int mlfs_regconf_load(const struct mlfs_mirror_opts *opts, struct mlfs_regconf *conf, bool *found,
		      struct mlfs_err *err);

void mlfs_regconf_clear(struct mlfs_regconf *c);
/* One registries.conf text merged into c: a [[registry]] with the
 * prefix of one already there replaces it (later files override).
 * Version 1's [registries.*] tables are converted, except in a drop-in. */
int mlfs_regconf_parse(const void *buf, size_t len, const char *name, bool drop_in, struct mlfs_regconf *c,
		       struct mlfs_err *err);
/* The registry entry for a canonical name ("docker.io/library/busybox"):
 * the longest matching prefix, wildcards "*.example.com" matching
 * subdomains' hosts; NULL when none. */
const struct mlfs_regconf_registry *mlfs_regconf_match(const struct mlfs_regconf *c, const char *name);
/* The endpoints an entry gives for `name` (mirrors, then the location):
 * locations rewrite the matched prefix. */
int mlfs_regconf_endpoints(const struct mlfs_regconf_registry *reg, const char *name,
			   struct mlfs_endpoints *out, struct mlfs_err *err);

/* containerd hosts.toml text for registry `domain`: its hosts with
 * "pull" as mirrors (those with "resolve" may also answer tags), then
 * `server` (default: the domain's own). 0 with out->n == 0: nothing usable. */
int mlfs_hostsconf_parse(const void *buf, size_t len, const char *name, const struct mlfs_ref *ref,
			 struct mlfs_endpoints *out, struct mlfs_err *err);
/* Docker's daemon.json: registry-mirrors for docker.io references. */
int mlfs_dockerconf_parse(const void *buf, size_t len, const char *name, const struct mlfs_ref *ref,
			  struct mlfs_endpoints *out, struct mlfs_err *err);
/* Adds one endpoint (copies the strings); -EINVAL when domain is not a
 * host[:port] or repo not a repository path. */
int mlfs_endpoints_add(struct mlfs_endpoints *e, const char *domain, const char *repo, bool insecure,
		       bool mirror, enum mlfs_pull_from pull, const char *ca_file);
/* ---- registriesd.c: registries.d(5), where signatures are stored -------- */

struct mlfs_regd_ns {
	char *scope;                     /* a docker scope; NULL for default-docker */
	char *lookaside;                 /* "lookaside:", or the older "sigstore:"; NULL when neither */
	int use_attachments;             /* use-sigstore-attachments (or use-cosign-attachments): -1 unset */
	char *file;                      /* where it was defined, for messages */
};

struct mlfs_registries_d {
	char *dir;                       /* for messages */
	struct mlfs_regd_ns *default_docker; /* NULL when no file has one */
	size_t n_docker;
	struct mlfs_regd_ns *docker;
};

/* Which directory: `option` (--registries.d, -o registries.d=), else
 * ~/.config/containers/registries.d when it exists, else
 * /etc/containers/registries.d.  Malloc'd. */
char *mlfs_registries_d_locate(const char *option);
/* Every *.yaml of dir merged (a missing dir: empty).  Two files defining
 * default-docker or the same scope is an error, as in containers/image. */
int mlfs_registries_d_load(const char *dir, struct mlfs_registries_d **out, struct mlfs_err *err);
/* One file's YAML merged into c (`name` for messages); -EINVAL + err. */
int mlfs_registries_d_parse(struct mlfs_registries_d *c, const void *buf, size_t len, const char *name,
			    struct mlfs_err *err);
struct mlfs_registries_d *mlfs_registries_d_new(const char *dir);
void mlfs_registries_d_free(struct mlfs_registries_d *c);
/* The lookaside store of an image (canonical identity "host/repo:tag" or
 * "host/repo@sha256:..", and its repository path): the most specific
 * scope that sets one, then default-docker, then containers/image's
 * built-in file:///var/lib/containers/sigstore (root) or
 * file://$HOME/.local/share/containers/sigstore; with "/<repo path>"
 * appended.  Malloc'd; *from says which scope chose it (static or c's). */
char *mlfs_registries_d_lookaside(const struct mlfs_registries_d *c, const char *identity, const char *repo_path,
				  const char **from);
/* use-sigstore-attachments for the image: the most specific scope that sets it. */
bool mlfs_registries_d_attachments(const struct mlfs_registries_d *c, const char *identity);

/* policymatch.c: the scopes of a docker identity, most specific first
 * (the reference, the repository, each namespace, host[:port], host
 * wildcards); fn returning non-zero stops the walk with that value. */
int mlfs_policy_scopes_walk(const char *identity, int (*fn)(void *priv, const char *scope, size_t len), void *priv);
/* The names a policy sees for ref: "domain/path:tag" and
 * "domain/path@digest", each NULL when ref has no such part.  -ENOMEM,
 * with nothing left allocated. */
int mlfs_policy_names(const struct mlfs_ref *ref, char *names[2]);

/* ---- sigpayload.c: the signed JSON of a signature ------------------------ */

/* snprintf into why; returns -EINVAL, so a check fails in one line. */
int mlfs_why_set(char *why, size_t why_len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

enum mlfs_sig_kind {
	MLFS_SIG_SIMPLE,                 /* GPG simple signing: "atomic container signature" */
	MLFS_SIG_COSIGN,                 /* sigstore: "cosign container image signature" */
};

struct mlfs_sig_payload {
	char *digest;                    /* critical.image.docker-manifest-digest */
	char *reference;                 /* critical.identity.docker-reference */
	char *creator;                   /* optional.creator, or NULL */
	bool has_timestamp;
	int64_t timestamp;               /* optional.timestamp */
};

/* Parses as containers/image does (signature/simple.go, sigstore payload):
 * exactly the critical fields, the right type, duplicate keys refused.
 * -EINVAL with why (for a message) filled. */
int mlfs_sig_payload_parse(const void *buf, size_t len, enum mlfs_sig_kind kind, struct mlfs_sig_payload *out,
			   char *why, size_t why_len);
void mlfs_sig_payload_clear(struct mlfs_sig_payload *p);

/* ---- sigmatch.c: a signature's identity against the image's ------------- */

/* Whether a signed docker-reference is acceptable for the image named
 * `image` (canonical, with a tag or a digest) under signedIdentity id, as
 * containers/image's policy_reference_match.go decides. */
bool mlfs_sig_identity_matches(const struct mlfs_policy_identity *id, const char *image, const char *signed_ref);

/* ---- lookaside.c: signature-N files ------------------------------------- */

#define MLFS_SIGNATURE_MAX (4u << 20)  /* containers/image's iolimits.MaxSignatureBodySize */
#define MLFS_LOOKASIDE_MAX 128         /* signatures read per digest, as containers/image */

struct mlfs_lookaside;
/* base: what mlfs_registries_d_lookaside() returned.  offline: http(s)
 * stores refuse (file:// is read as ever). */
int mlfs_lookaside_new(const char *base, bool offline, struct mlfs_lookaside **out, struct mlfs_err *err);
void mlfs_lookaside_free(struct mlfs_lookaside *l);
/* <base>@sha256=<hex>/signature-<n> (n from 1) into *buf (malloc'd):
 * 0, -ENOENT when there is none, -errno + err otherwise. */
int mlfs_lookaside_get(struct mlfs_lookaside *l, const char *digest, unsigned n, void **buf, size_t *len,
		       struct mlfs_err *err);
/* Whether the store is reached over the network (http, https). */
bool mlfs_lookaside_remote(const struct mlfs_lookaside *l);
/* The URL of signature n, for messages (malloc'd). */
char *mlfs_lookaside_url(const struct mlfs_lookaside *l, const char *digest, unsigned n);

/* ---- gpg.c: OpenPGP over gpgme ------------------------------------------ */

/* Whether this build verifies OpenPGP signatures (gpgme). */
bool mlfs_gpg_available(void);

struct mlfs_gpg;
/* A throwaway GPG home (removed by mlfs_gpg_free) holding exactly the
 * policy's keys.  -ENOTSUP + err on a build without gpgme; -EINVAL when
 * the keys hold no OpenPGP public key. */
int mlfs_gpg_new(const struct mlfs_policy_keys *keys, struct mlfs_gpg **out, struct mlfs_err *err);
void mlfs_gpg_free(struct mlfs_gpg *g);
/* Verifies one opaque signed message: 0 with its content (malloc'd) and
 * the signing key's fingerprint; -EBADMSG with why otherwise. */
int mlfs_gpg_verify(struct mlfs_gpg *g, const void *sig, size_t len, void **content, size_t *content_len,
		    char *fpr, size_t fpr_len, char *why, size_t why_len);

/* ---- sigattach.c: sigstore signatures attached in the registry ----------- */

#define MLFS_SIG_LAYERS_MAX 128

/* One layer of a cosign ".sig" manifest. */
struct mlfs_sig_layer {
	struct mlfs_descriptor desc;     /* digest, size, media_type (the payload blob) */
	char *signature;                 /* the dev.cosignproject.cosign/signature annotation (base64), or NULL */
	bool has_cert;                   /* dev.sigstore.cosign/certificate: a Fulcio signature */
};

/* "sha256-<hex>.sig": the tag cosign stores a digest's signatures under. */
int mlfs_sig_tag(const char *digest, char *out, size_t len);
/* The .sig manifest (an OCI or Docker image manifest) into its layers;
 * -EINVAL with why. */
int mlfs_sig_manifest_parse(const void *buf, size_t len, struct mlfs_sig_layer **out, size_t *n, char *why,
			    size_t why_len);
void mlfs_sig_layers_free(struct mlfs_sig_layer *v, size_t n);

/* ---- sigstore.c: sigstore signatures over libcrypto --------------------- */

/* A key file (keyPath/keyPaths) read whole, at most max bytes; for both
 * verifiers.  Errors name the file. */
int mlfs_key_file_read(const char *path, size_t max, char **buf, size_t *len, struct mlfs_err *err);

struct mlfs_sigstore_keys;
/* The policy's public keys (PEM; keyPath, keyPaths, keyData, keyDatas):
 * -EINVAL + err when a source holds none. */
int mlfs_sigstore_keys_new(const struct mlfs_policy_keys *keys, struct mlfs_sigstore_keys **out,
			   struct mlfs_err *err);
void mlfs_sigstore_keys_free(struct mlfs_sigstore_keys *k);
/* Verifies a base64 signature of payload with any of the keys, as cosign
 * signs (ECDSA or RSA PKCS#1 v1.5 over SHA-256, Ed25519): 0 and which key
 * (for messages) in who; -EBADMSG with why. */
int mlfs_sigstore_verify(const struct mlfs_sigstore_keys *k, const void *payload, size_t len, const char *b64sig,
			 char *who, size_t who_len, char *why, size_t why_len);

/* ---- sigcache.c: signatures kept for offline use ----------------------- */

struct mlfs_cached_sig {
	void *data;                      /* the signature file (GPG), or the payload (sigstore) */
	size_t len;
	char *signature;                 /* sigstore: the annotation's base64; NULL for GPG */
};

/* The signatures kept for one signed digest from one source (a lookaside
 * store's URL for the repository; the repository for attachments). */
struct mlfs_sigcache_entry {
	enum mlfs_sig_kind kind;         /* MLFS_SIG_SIMPLE: lookaside; MLFS_SIG_COSIGN: attachments */
	char digest[MLFS_DIGEST_MAX];
	char *source;
	struct mlfs_cached_sig *v;
	size_t n, cap;
	bool complete;                   /* read to the end, fresh (not in the file) */
};

/* <cache>/sigs/sha256/<hex>.<kind>-<source hash> (malloc'd); NULL for a bad digest. */
char *mlfs_sigcache_path(const char *cache_dir, enum mlfs_sig_kind kind, const char *digest, const char *source);
/* Adds a copy (once: an equal one is not added again). */
int mlfs_sigcache_entry_add(struct mlfs_sigcache_entry *e, const void *data, size_t len, const char *signature);
void mlfs_sigcache_entry_clear(struct mlfs_sigcache_entry *e);
/* The file's JSON (malloc'd), and back: -EBADMSG when malformed or kept
 * for another kind, digest or source. */
int mlfs_sigcache_encode(const struct mlfs_sigcache_entry *e, char **out, size_t *len);
int mlfs_sigcache_decode(const void *buf, size_t len, enum mlfs_sig_kind kind, const char *digest,
			 const char *source, struct mlfs_sigcache_entry *out);
/* What was kept: -ENOENT when nothing, -EBADMSG (and removed) when damaged. */
int mlfs_sigcache_get(const char *cache_dir, enum mlfs_sig_kind kind, const char *digest, const char *source,
		      struct mlfs_sigcache_entry *out);
/* Replaces what was kept with e (removes it when e holds none). */
int mlfs_sigcache_put(const char *cache_dir, const struct mlfs_sigcache_entry *e);

/* What one verification saw, to keep once the image is accepted. */
struct mlfs_sig_keep {
	struct mlfs_sigcache_entry *v;
	size_t n, cap;
};
/* A digest's signatures from a source were read to the end, fresh: what
 * was kept for them is replaced (by none, unless some are accepted).
 * k may be NULL (offline: nothing kept). */
int mlfs_sig_keep_examined(struct mlfs_sig_keep *k, enum mlfs_sig_kind kind, const char *digest, const char *source);
/* One signature fetched fresh: every one is kept, verified or not, so
 * that offline, a policy of the day naming another key judges the same
 * set as an online run would; only bytes are kept, never a verdict. */
int mlfs_sig_keep_fetched(struct mlfs_sig_keep *k, enum mlfs_sig_kind kind, const char *digest, const char *source,
			   const void *data, size_t len, const char *signature);
/* Into the cache: accepted, every entry replaces what was kept; refused,
 * nothing is written, and what was kept for the digests read to the end
 * is removed (the fresh set did not verify: offline must not accept the
 * old one); an entry cut short by an error leaves what was kept. */
int mlfs_sig_keep_commit(const char *cache_dir, const struct mlfs_sig_keep *k, bool accepted);
void mlfs_sig_keep_clear(struct mlfs_sig_keep *k);
