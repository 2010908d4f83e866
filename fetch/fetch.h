/* fetch/: everything that talks to a registry.
 *
 * The data flow a caller follows:
 *   mlfs_ref_parse()            "golang" -> docker.io/library/golang:latest
 *   mlfs_registry_new()         one client per registry host (HTTP + auth)
 *   mlfs_registry_get_manifest() index / list / manifest bytes, digest-checked
 *   mlfs_index_parse() + mlfs_platform_select()   pick one platform
 *   mlfs_manifest_parse(), mlfs_config_parse()    layers, diff_ids, config
 *   mlfs_blob_fetch()           blob into the content-addressed cache
 *
 * Everything returns 0 or -errno; user-facing failures also fill a
 * struct mlfs_err with a one-line message. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/digest.h"
#include "common/err.h"

/* ---- references (ref.c) ------------------------------------------------ */

/* A parsed, normalised image reference.  All strings owned by the struct. */
struct mlfs_ref {
	char *domain;     /* "docker.io", "127.0.0.1:5000", "ghcr.io" */
	char *path;       /* "library/golang", "ns/repo" */
	char *tag;        /* "latest" when neither tag nor digest was given; NULL if digest only */
	char *digest;     /* "sha256:..." or NULL; wins over tag when both present */
};

int mlfs_ref_parse(const char *s, struct mlfs_ref *out, struct mlfs_err *err);
void mlfs_ref_clear(struct mlfs_ref *ref);
/* "docker.io/library/golang:latest", "host/x@sha256:..", "host/x:tag@sha256:..". Malloc'd. */
char *mlfs_ref_canonical(const struct mlfs_ref *ref);
/* The host to talk HTTP to: "registry-1.docker.io" for docker.io, else domain. */
const char *mlfs_ref_api_host(const struct mlfs_ref *ref);
/* What to put in /v2/<path>/manifests/<reference>: digest if any, else tag. */
const char *mlfs_ref_reference(const struct mlfs_ref *ref);
/* What a reference may name in the cache, without asking a registry
 * (containers/image's ResolveLocally): itself when it has a registry, else
 * its alias or its name on each unqualified-search registry, whatever the
 * short-name-mode (fetch/shortname.c), or Docker's rule without a
 * registries.conf.  NULL-terminated; free with mlfs_ref_candidates_free(). */
int mlfs_ref_candidates(const char *input, char ***out, struct mlfs_err *err);
void mlfs_ref_candidates_free(char **v);

/* ---- platforms (platform.c) -------------------------------------------- */

struct mlfs_platform {
	char os[32];
	char arch[32];
	char variant[16];   /* "" when none (after normalisation: amd64 v1, arm64 v8) */
	char os_version[64];  /* Windows only; kept for display */
};

/* "linux/arm64", "linux/arm/v7", "arm64" (os defaults to linux); normalised. */
int mlfs_platform_parse(const char *s, struct mlfs_platform *out, struct mlfs_err *err);
/* In place: x86_64 -> amd64, aarch64 -> arm64, arm64/v8 -> arm64, arm -> arm/v7, ... */
void mlfs_platform_normalize(struct mlfs_platform *p);
/* Pure: host platform from uname's machine and /proc/cpuinfo's text (may be NULL). */
int mlfs_platform_from_machine(const char *machine, const char *cpuinfo, struct mlfs_platform *out);
/* The running host (uname + /proc/cpuinfo). */
int mlfs_platform_host(struct mlfs_platform *out);
/* Rank of `have` for a host wanting `want`: 0 = exact, 1.. = fallbacks (lower
 * is better), -1 = does not run there.  Both must be normalised. */
int mlfs_platform_rank(const struct mlfs_platform *want, const struct mlfs_platform *have);
/* "linux/arm/v7" into buf (always NUL-terminated). */
void mlfs_platform_format(const struct mlfs_platform *p, char *buf, size_t len);

/* ---- manifests, indexes, configs (manifest.c, config.c) ---------------- */

enum mlfs_media {
	MLFS_MEDIA_UNKNOWN = 0,
	MLFS_MEDIA_OCI_INDEX,          /* application/vnd.oci.image.index.v1+json */
	MLFS_MEDIA_DOCKER_LIST,        /* application/vnd.docker.distribution.manifest.list.v2+json */
	MLFS_MEDIA_OCI_MANIFEST,       /* application/vnd.oci.image.manifest.v1+json */
	MLFS_MEDIA_DOCKER_MANIFEST,    /* application/vnd.docker.distribution.manifest.v2+json */
	MLFS_MEDIA_DOCKER_SCHEMA1,     /* ...manifest.v1+json / v1+prettyjws: refused */
	MLFS_MEDIA_OCI_CONFIG,         /* application/vnd.oci.image.config.v1+json */
	MLFS_MEDIA_DOCKER_CONFIG,      /* application/vnd.docker.container.image.v1+json */
	MLFS_MEDIA_LAYER_TAR,          /* OCI tar, and Docker/OCI foreign/nondistributable tar */
	MLFS_MEDIA_LAYER_GZIP,         /* OCI tar+gzip, Docker rootfs.diff.tar.gzip (+foreign) */
	MLFS_MEDIA_LAYER_ZSTD,         /* OCI tar+zstd (+nondistributable) */
};

/* The canonical string of a media type ("" for MLFS_MEDIA_UNKNOWN). */
const char *mlfs_media_string(enum mlfs_media m);
/* Content-Type (parameters such as "; charset=utf-8" ignored) -> media. */
enum mlfs_media mlfs_media_from_string(const char *media_type);
bool mlfs_media_is_index(enum mlfs_media m);
bool mlfs_media_is_manifest(enum mlfs_media m);
bool mlfs_media_is_layer(enum mlfs_media m);
/* The Accept header value listing the four manifest types we speak. */
const char *mlfs_media_accept(void);

#define MLFS_MANIFEST_MAX (4u << 20) /* refuse manifests and configs larger than 4 MiB */
#define MLFS_MAX_LAYERS 4096        /* Docker stops at 127; the merged tree's limit is 65534 */

struct mlfs_descriptor {
	char *media_type;
	enum mlfs_media media;
	char digest[MLFS_DIGEST_MAX];
	int64_t size;
	bool has_platform;
	struct mlfs_platform platform;
	char **urls;        /* foreign layers; NULL-terminated, may be NULL */
	/* Annotations of seekable layers (layers/seekable.c); NULL when absent. */
	char *toc_digest;        /* containerd.io/snapshot/stargz/toc.digest (eStargz) */
	char *zstd_toc_checksum; /* io.github.containers.zstd-chunked.manifest-checksum, or the older io.containers.* */
	char *zstd_toc_position; /* ...zstd-chunked.manifest-position: "offset:length:uncompressedLength:type" */
};

struct mlfs_index {
	enum mlfs_media media;
	size_t n_manifests;
	struct mlfs_descriptor *manifests;
};

struct mlfs_manifest {
	enum mlfs_media media;
	struct mlfs_descriptor config;
	size_t n_layers;
	struct mlfs_descriptor *layers;
};

struct mlfs_config {
	struct mlfs_platform platform;
	char **entrypoint;  /* NULL-terminated lists; NULL when absent */
	char **cmd;
	char **env;
	char *working_dir;
	char *user;
	size_t n_diff_ids;
	char (*diff_ids)[MLFS_DIGEST_MAX];
	bool has_created;
	int64_t created;    /* "created", seconds since the epoch (RFC 3339 in the JSON) */
};

/* `media` is what the Content-Type said; the body's own mediaType, when
 * present, must agree.  Untrusted input: every field is type-checked. */
int mlfs_index_parse(const void *buf, size_t len, enum mlfs_media media,
		     struct mlfs_index **out, struct mlfs_err *err);
void mlfs_index_free(struct mlfs_index *idx);
int mlfs_manifest_parse(const void *buf, size_t len, enum mlfs_media media,
			struct mlfs_manifest **out, struct mlfs_err *err);
void mlfs_manifest_free(struct mlfs_manifest *m);
int mlfs_config_parse(const void *buf, size_t len, struct mlfs_config **out, struct mlfs_err *err);
void mlfs_config_free(struct mlfs_config *c);

/* Picks the best manifest of idx for `want` (containerd's ranking; ties keep
 * index order).  No match: -ENOENT and err lists the platforms available. */
int mlfs_platform_select(const struct mlfs_index *idx, const struct mlfs_platform *want,
			 size_t *chosen, struct mlfs_err *err);

/* ---- auth (auth.c, creds.c) -------------------------------------------- */

/* One parsed WWW-Authenticate challenge. */
struct mlfs_challenge {
	char scheme[16];  /* "bearer" / "basic", lower-cased */
	char *realm;
	char *service;
	char *scope;
	char *error;      /* e.g. "insufficient_scope", or NULL */
};

/* Parses the first challenge of a WWW-Authenticate value (RFC 7235 auth-params,
 * quoted strings with backslash escapes).  -EINVAL when malformed. */
int mlfs_challenge_parse(const char *header, struct mlfs_challenge *out);
void mlfs_challenge_clear(struct mlfs_challenge *c);

struct mlfs_creds {
	char *username;       /* NULL with an identity token */
	char *secret;         /* password, or the identity token */
	bool identity_token;  /* Username "<token>" from a helper, or "identitytoken" */
};

/* Looks up credentials for a registry domain ("docker.io", "host:5000") in,
 * first match wins: $REGISTRY_AUTH_FILE, ${XDG_RUNTIME_DIR}/containers/auth.json,
 * $DOCKER_CONFIG/config.json or ~/.docker/config.json (credHelpers, credsStore,
 * auths).  None found: 0 with *out zeroed.  Malformed files: -EINVAL + err. */
int mlfs_creds_lookup(const char *domain, struct mlfs_creds *out, struct mlfs_err *err);
void mlfs_creds_clear(struct mlfs_creds *c);

/* ---- mirrors: where a reference's bytes may come from (mirrors.c) ------- */

enum mlfs_pull_from {
	MLFS_PULL_ALL = 0,          /* tags and digests */
	MLFS_PULL_DIGEST_ONLY,      /* only by digest: a tag is resolved elsewhere */
	MLFS_PULL_TAG_ONLY,
};

/* One host that serves a repository: a mirror, or the upstream. */
struct mlfs_endpoint {
	char *domain;     /* "mirror.example:5000", "docker.io": credentials and certs.d key */
	char *host;       /* the API host: registry-1.docker.io for docker.io, else domain */
	char *repo;       /* the repository's path there ("library/busybox", "cache/library/busybox") */
	bool insecure;    /* plain HTTP / unverified TLS allowed */
	bool mirror;      /* false for the upstream, always the last */
	enum mlfs_pull_from pull;
	char *ca_file;    /* an extra CA (hosts.toml "ca"), or NULL */
	char *headers;    /* "Name: value" lines to send it (hosts.toml [host."URL".header]), or NULL */
};

/* Mirrors in order, the upstream last (n >= 1 once built). */
struct mlfs_endpoints {
	size_t n;
	struct mlfs_endpoint *v;
	char *source;     /* the file that configured them (for messages), or NULL */
};
void mlfs_endpoints_clear(struct mlfs_endpoints *e);

/* Where registry configuration is read from; = {0} for the usual places. */
struct mlfs_mirror_opts {
	const char *registries_conf; /* --registries-conf / -o registries-conf=: this file alone */
	const char *root;            /* prefix of /etc paths (tests); NULL: $MLFS_CONFIG_ROOT, else "" */
	const char *home;            /* NULL: $HOME */
};

/* The endpoints for a reference, from the first source that configures
 * its registry: registries.conf (+ .d drop-ins), else containerd's
 * certs.d/HOST/hosts.toml, else Docker's daemon.json registry-mirrors
 * (docker.io only); else the reference's registry alone.  A blocked
 * registry: -EACCES; a malformed file: -EINVAL naming file and line. */
int mlfs_endpoints_for(const struct mlfs_ref *ref, const struct mlfs_mirror_opts *opts,
		       struct mlfs_endpoints *out, struct mlfs_err *err);

/* ---- the registry client (http.c, registry.c) --------------------------- */

struct mlfs_registry_opts {
	bool insecure;             /* allow plain HTTP / unverified TLS for this registry */
	long connect_timeout_s;    /* 0: default 15 */
	long low_speed_time_s;     /* 0: default 30 (below 1 KiB/s that long = failure) */
	int max_retries;           /* 0: default 4 */
	const char *certs_dirs;    /* ':'-separated; NULL: /etc/docker/certs.d:/etc/containers/certs.d */
	const struct mlfs_endpoints *endpoints; /* mirrors + upstream; NULL: the reference's registry */
};

struct mlfs_registry;

int mlfs_registry_new(const struct mlfs_ref *ref, const struct mlfs_registry_opts *opts,
		      struct mlfs_registry **out, struct mlfs_err *err);
void mlfs_registry_free(struct mlfs_registry *reg);
/* Ends its transfers with -ECANCELED, now and later (mlfs_image_cancel). */
void mlfs_registry_cancel(struct mlfs_registry *reg);
bool mlfs_registry_cancelled(const struct mlfs_registry *reg);

struct mlfs_fetched {
	void *body;
	size_t len;
	enum mlfs_media media;                 /* from Content-Type */
	char digest[MLFS_DIGEST_MAX];          /* sha256 of body, verified against what was asked */
};
void mlfs_fetched_clear(struct mlfs_fetched *f);

/* GET /v2/<path>/manifests/<reference>; reference is a tag or a digest.
 * When it is a digest, the body must hash to it (-EBADMSG otherwise).
 * 404 -> -ENOENT, 401/403 -> -EACCES, > MLFS_MANIFEST_MAX -> -EFBIG,
 * schema1 -> -EPROTONOSUPPORT. */
int mlfs_registry_get_manifest(struct mlfs_registry *reg, const char *reference, struct mlfs_fetched *out,
			       struct mlfs_err *err);

/* GET a small blob (config) into memory, verified, capped at MLFS_MANIFEST_MAX. */
int mlfs_registry_get_small_blob(struct mlfs_registry *reg, const struct mlfs_descriptor *desc,
				 struct mlfs_fetched *out, struct mlfs_err *err);

/* Streams a blob from `offset`, calling sink for each chunk.  A sink returning
 * non-zero aborts with that value.  No digest check here (see mlfs_blob_fetch). */
typedef int (*mlfs_sink_fn)(void *priv, const void *buf, size_t len);
int mlfs_registry_get_blob(struct mlfs_registry *reg, const char *digest, off_t offset, mlfs_sink_fn sink,
			   void *priv, struct mlfs_err *err);
/* Bytes that did not match `digest` came through a mirror, perhaps: the
 * mirrors are not asked for it again.  True when that changes anything
 * (there are mirrors, and they were still trusted with it): worth asking again. */
bool mlfs_registry_distrust(struct mlfs_registry *reg, const char *digest);

/* Bytes [offset, offset+len) of a blob into buf, exactly: one Range GET
 * (retried, resumed).  -ERANGE when the registry ignores Range (answers
 * 200 with the whole blob): the caller falls back to streaming.  No digest
 * check here: the caller verifies what it decodes. */
int mlfs_registry_get_range(struct mlfs_registry *reg, const char *digest, uint64_t offset, size_t len, void *buf,
			    struct mlfs_err *err);

/* For --version: the versions of gpgme (NULL when built without it) and
 * libyaml this process runs with. */
const char *mlfs_gpg_version(void);
const char *mlfs_yaml_version(void);

/* ---- progress (blob.c, image.c) ----------------------------------------- */

/* How a layer's bytes move, for progress bars and a mount's statistics.
 * Counted where the bytes are handed on (the blob's sink, a finished
 * range, a streamed chunk), not from libcurl's progress callback: its
 * counts start over with every retry and resume, while a sink sees each
 * byte once. */
enum mlfs_progress_event {
	MLFS_PROGRESS_FETCHED, /* n more bytes of the layer's blob came from the registry */
	MLFS_PROGRESS_REUSED,  /* n bytes of its blob were in the cache already (kept, or a partial download) */
	MLFS_PROGRESS_INDEXED, /* the layer was found indexed in the cache: nothing moves; n = its blob size */
};
/* Called from the thread that moves the bytes, several at once (parallel
 * layers and ranges): it must be thread-safe and cheap (count, never draw). */
typedef void (*mlfs_progress_fn)(void *priv, size_t layer, enum mlfs_progress_event ev, uint64_t n);
struct mlfs_progress {
	mlfs_progress_fn fn;
	void *priv;
	size_t layer;         /* passed on to fn: which layer a blob is */
};

/* ---- the blob cache (blob.c, cachedir.c) -------------------------------- */

/* -o cache= / $MLFS_CACHE / $XDG_CACHE_HOME/mlfs / /var/cache/mlfs (root) / ~/.cache/mlfs. Malloc'd. */
char *mlfs_cache_dir_default(const char *option);

/* Ensures <cache>/blobs/sha256/<hex> holds the verified blob and returns its
 * path (malloc'd), with every byte of the blob, in order from the first,
 * also handed to observe() (when given) as it arrives (bytes already cached
 * or left by an earlier partial download included), so a consumer can
 * decompress while the download runs.  observe() returning non-zero aborts.
 * A blob already there is hashed again as it is used; a partial download
 * resumes with Range; a mismatch leaves nothing behind (-EBADMSG).  Waits
 * at most wait_s (0: 300) for another process downloading the same blob.
 * -EAGAIN: bytes from the cache proved wrong after observe() saw them and
 * are dropped (a digest mismatch, or observe() refusing them with -EPIPE);
 * the caller starts its consumer over and calls again.  progress (may be
 * NULL) counts the bytes as fetched or reused. */
int mlfs_blob_fetch_observed(struct mlfs_registry *reg, const struct mlfs_descriptor *desc,
			     const char *cache_dir, unsigned wait_s, mlfs_sink_fn observe, void *priv,
			     const struct mlfs_progress *progress, char **blob_path, struct mlfs_err *err);

/* ---- what the cache holds (cached.c) ------------------------------------ */

/* Whether a layer's descriptor says eStargz or zstd:chunked (its bytes can
 * be fetched by range; its cache key is then its blob digest). */
bool mlfs_descriptor_seekable(const struct mlfs_descriptor *d);

struct mlfs_cached_layer {
	char digest[MLFS_DIGEST_MAX];
	char diff_id[MLFS_DIGEST_MAX];  /* "" when the config is not cached */
	int64_t size;
	bool seekable;
};

/* One reference and platform whose manifest the cache holds. */
struct mlfs_cached_image {
	char *reference;                      /* "docker.io/library/alpine:3.19" or "...@sha256:..." */
	char *ref_file;                       /* the refs/ file that records it */
	int64_t resolved;                     /* when last resolved online (seconds) */
	char top_digest[MLFS_DIGEST_MAX];     /* what the reference names: index or manifest */
	char manifest_digest[MLFS_DIGEST_MAX];/* "" when not even that is cached */
	char config_digest[MLFS_DIGEST_MAX];
	char platform[64];                    /* "linux/arm64"; "" when unknown */
	size_t n_layers;
	struct mlfs_cached_layer *layers;
};

/* Every image the cache has resolved, from refs/ and meta/ only. */
int mlfs_cached_images(const char *cache_dir, struct mlfs_cached_image **out, size_t *n);
void mlfs_cached_images_free(struct mlfs_cached_image *v, size_t n);
/* Removes a kept manifest, index or config; -ENOENT when it is not there. */
int mlfs_metacache_drop(const char *cache_dir, const char *digest);
/* Removes the signatures kept for a manifest or index (sigcache.c): how
 * many files, or -errno. */
int mlfs_sigcache_drop(const char *cache_dir, const char *digest);
/* Removes the kept signatures whose manifest the cache no longer has. */
int mlfs_sigcache_sweep(const char *cache_dir);
/* How many signatures are kept for a manifest or index (every source). */
int mlfs_sigcache_count(const char *cache_dir, const char *digest);
/* Checks every file of kept signatures; a damaged one is removed and
 * reported (offline verification would refuse it anyway, and a fresh
 * online run writes it again). */
int mlfs_sigcache_verify(const char *cache_dir, void (*report)(void *priv, const char *path, const char *why),
			 void *priv, size_t *good, size_t *bad);

/* ---- the trust policy (policy.c, policymatch.c) ------------------------ */

/* containers-policy.json(5), as podman, skopeo and CRI-O read it. */
struct mlfs_policy;

/* Which policy file applies, first found: `option` (--policy, -o policy=),
 * $MLFS_POLICY, $HOME/.config/containers/policy.json,
 * /etc/containers/policy.json (the last two only when they exist).  *path
 * (malloc'd) is NULL when there is none: every image is accepted. */
int mlfs_policy_locate(const char *option, char **path);
/* Reads and parses a policy file (-ENOENT, -EACCES, -EINVAL + err). */
int mlfs_policy_load(const char *path, struct mlfs_policy **out, struct mlfs_err *err);
/* Parses policy JSON as strictly as containers/image: unknown keys,
 * duplicate keys, wrong types and invalid combinations are errors
 * (-EINVAL, err names `name` and where in the file). */
int mlfs_policy_parse(const void *buf, size_t len, const char *name, struct mlfs_policy **out,
		      struct mlfs_err *err);
void mlfs_policy_free(struct mlfs_policy *p);
/* Whether the policy lets `ref` be used, by the docker transport's scopes,
 * as far as the reference alone decides.  0: accepted.  1: accepted if
 * its signatures verify (mlfs_policy_verify(), once the manifest is
 * known).  -EACCES + err (one line naming the file, the scope and the
 * requirement): rejected, or it requires what mlfs cannot verify (fail
 * closed).  A reference with a tag and a digest must be accepted under
 * both names. */
int mlfs_policy_check(const struct mlfs_policy *p, const struct mlfs_ref *ref, struct mlfs_err *err);

struct mlfs_sig_keep;

/* What a policy's signature requirements are checked against. */
struct mlfs_policy_subject {
	const struct mlfs_ref *ref;       /* as the user named it */
	const char *manifest_digest;      /* the platform's manifest: what is mounted */
	const char *index_digest;         /* the index it was chosen from, or NULL: a signature over it counts too */
	const char *registries_d;         /* --registries.d; NULL: mlfs_registries_d_locate()'s choice */
	bool offline;                     /* no network: http(s) lookaside stores and attachments are read
					     from what cache_dir kept */
	struct mlfs_registry *reg;        /* where sigstore attachments are fetched from */
	const char *cache_dir;            /* where signatures are kept for offline use */
	struct mlfs_sig_keep *keep;       /* online: filled with what was fetched and accepted (or NULL) */
};

/* Every signedBy and sigstoreSigned requirement of the scopes that apply
 * to s->ref, checked against the signatures in the lookaside store
 * registries.d names (GPG), or attached in the registry (sigstore).
 * 0, with *signed_by (malloc'd, may be NULL: nothing required) saying who
 * signed; -EACCES + err: one line naming the policy, the scope and what
 * was missing or wrong.  -ENOMEM and the like for the rest. */
int mlfs_policy_verify(const struct mlfs_policy *p, const struct mlfs_policy_subject *s, char **signed_by,
		       struct mlfs_err *err);

/* ---- one resolved image (image.c) -------------------------------------- */

/* Everything from a reference string down to one platform's manifest and
 * config, fetched and verified: what `inspect`, `pull`, `export` and the
 * mount all start from.  No layer byte is fetched by mlfs_image_open(). */
struct mlfs_image_opts {
	const char *platform;   /* "linux/arm64"; NULL: the host's */
	const char *cache_dir;  /* NULL: mlfs_cache_dir_default(NULL) */
	bool insecure;          /* plain HTTP / unverified TLS allowed for this registry */
	bool offline;           /* resolve from the cache only: no network at all */
	unsigned wait_s;        /* longest wait for another process's download; 0: 300 */
	/* Cache policy, carried for the layer loader in fs/ (fetch ignores it). */
	uint64_t cache_max;     /* evict to stay under this many bytes; 0: no cap */
	bool keep_blobs;        /* keep compressed layer blobs once their layers are indexed */
	/* Trust (policy.c): checked before anything is fetched. */
	const char *policy;     /* policy.json to use; NULL: mlfs_policy_locate()'s choice */
	bool insecure_policy;   /* no policy check at all (skopeo's --insecure-policy) */
	/* Told of every layer byte that moves (progress bars, mount statistics). */
	mlfs_progress_fn progress;
	void *progress_priv;
	/* Mirrors (mirrors.c): where the registry configuration is read from. */
	const char *registries_conf; /* --registries-conf: this file alone; NULL: the usual places */
	const char *registries_d; /* registries.d directory; NULL: mlfs_registries_d_locate()'s choice */
};

struct mlfs_image {
	struct mlfs_ref ref;
	char *canonical;                       /* mlfs_ref_canonical(&ref) */
	struct mlfs_registry *reg;
	char *cache_dir;
	struct mlfs_index *index;              /* NULL when the reference named a manifest */
	char index_digest[MLFS_DIGEST_MAX];    /* "" without an index */
	size_t chosen;                         /* index->manifests[chosen] when index */
	struct mlfs_platform want;             /* the platform asked for (or the host's) */
	struct mlfs_manifest *manifest;
	char manifest_digest[MLFS_DIGEST_MAX];
	struct mlfs_config *config;
	bool offline;
	unsigned wait_s;
	uint64_t cache_max;
	bool keep_blobs;
	bool ranges_refused;                   /* the registry ignored a Range once: never ask again (atomic) */
	bool cancelled;                        /* mlfs_image_cancel() was called (atomic) */
	mlfs_progress_fn progress;             /* from the opts; NULL: nobody listens */
	void *progress_priv;
	char *signed_by;                       /* who signed, when the policy required signatures; else NULL */
	bool hold;                             /* while opening: signatures unchecked, keep nothing in the cache */
};

int mlfs_image_open(const char *reference, const struct mlfs_image_opts *opts,
		    struct mlfs_image **out, struct mlfs_err *err);
void mlfs_image_free(struct mlfs_image *img);
/* Ends every transfer of this image, under way or to come, with
 * -ECANCELED (within about a second: libcurl's progress callback), and the
 * waits for other processes' downloads too.  Thread-safe; for unmount. */
void mlfs_image_cancel(struct mlfs_image *img);
/* Tells the image's progress listener, if any, about layer i. */
void mlfs_image_progress(const struct mlfs_image *img, size_t i, enum mlfs_progress_event ev, uint64_t n);
/* Fetches (or finds cached) layer i's compressed blob; path malloc'd. */
int mlfs_image_layer_blob(struct mlfs_image *img, size_t i, char **blob_path, struct mlfs_err *err);
/* Bytes of layer i's blob by Range (mlfs_registry_get_range), for seekable
 * layers; -ENOENT with a message when the image was opened offline. */
int mlfs_image_layer_range(struct mlfs_image *img, size_t i, uint64_t offset, size_t len, void *buf,
			   struct mlfs_err *err);
/* Bytes of layer i's blob from mlfs_image_layer_range() failed their check:
 * the mirrors are not asked for this blob again.  True when that changes
 * where the next range comes from (worth reading again). */
bool mlfs_image_layer_distrust(struct mlfs_image *img, size_t i);
/* Layer i's whole blob streamed to sink, not cached (a seekable layer's
 * fill: its chunks are what is kept); -ENOENT when offline. */
int mlfs_image_layer_stream(struct mlfs_image *img, size_t i, mlfs_sink_fn sink, void *priv, struct mlfs_err *err);
/* The same, with every byte also handed to observe() (see mlfs_blob_fetch_observed). */
int mlfs_image_layer_blob_observed(struct mlfs_image *img, size_t i, mlfs_sink_fn observe, void *priv,
				   char **blob_path, struct mlfs_err *err);
