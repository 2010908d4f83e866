/* A kept-signatures file (fetch/sigcache.c, <cache>/sigs/sha256/...) as
 * the offline check reads it: decoded for a fixed digest and source, as
 * lookaside (GPG) and as sigstore entries.  A file is cache content that
 * anything with write access to the cache may have changed, so the
 * decoder must refuse what it did not write.  The contract: a refusal
 * leaves the entry empty; a success round-trips (encode, decode again:
 * the same signatures, in order). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "fetch/internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);

#define DIGEST "sha256:a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4"
#define SOURCE "registry.example:5000/team/app"

static void same(const struct mlfs_sigcache_entry *a, const struct mlfs_sigcache_entry *b)
{
	if (a->n != b->n || a->kind != b->kind || strcmp(a->digest, b->digest) || strcmp(a->source, b->source))
		abort();
	for (size_t i = 0; i < a->n; i++) {
		const struct mlfs_cached_sig *x = &a->v[i], *y = &b->v[i];
		if (x->len != y->len || memcmp(x->data, y->data, x->len) || !x->signature != !y->signature ||
		    (x->signature && strcmp(x->signature, y->signature)))
			abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
	static const enum mlfs_sig_kind kinds[] = { MLFS_SIG_SIMPLE, MLFS_SIG_COSIGN };
	for (size_t k = 0; k < 2; k++) {
		struct mlfs_sigcache_entry e, again;
		int r = mlfs_sigcache_decode(d, n, kinds[k], DIGEST, SOURCE, &e);
		if (r < 0) {
			if ((r != -EBADMSG && r != -ENOMEM) || e.n || e.v || e.source)
				abort();
			continue;
		}
		if (e.kind != kinds[k] || strcmp(e.digest, DIGEST) || strcmp(e.source, SOURCE) ||
		    e.n > MLFS_LOOKASIDE_MAX)
			abort();
		char *buf = NULL;
		size_t len = 0;
		if (mlfs_sigcache_encode(&e, &buf, &len) < 0)
			abort(); /* what was read must be writable again */
		if (mlfs_sigcache_decode(buf, len, kinds[k], DIGEST, SOURCE, &again) < 0)
			abort();
		same(&e, &again);
		free(buf);
		mlfs_sigcache_entry_clear(&again);
		mlfs_sigcache_entry_clear(&e);
	}
	return 0;
}
