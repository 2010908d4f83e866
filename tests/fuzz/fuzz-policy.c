/* The policy parser (fetch/policy.c, policyreq.c) and scope matching
 * (policymatch.c) on arbitrary bytes.  Beyond memory errors (ASan,
 * UBSan), the contract: a failure returns nothing and a one-line message
 * with the same code; a success returns requirement lists that are never
 * empty, key sources whose count matches their kind, and a decision for
 * any reference (its own scope names included, as references) that names
 * a requirement of the list it chose. */
#include <stdlib.h>
#include <string.h>

#include "fetch/internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);

static void check_keys(const struct mlfs_policy_keys *k)
{
	if ((k->kind == MLFS_KEYS_NONE) != (k->n == 0))
		abort();
	if ((k->kind == MLFS_KEYS_PATH || k->kind == MLFS_KEYS_DATA) && k->n != 1)
		abort();
	for (size_t i = 0; i < k->n; i++) {
		if (k->kind == MLFS_KEYS_PATH || k->kind == MLFS_KEYS_PATHS) {
			if (!k->paths[i] || !*k->paths[i])
				abort();
		} else if (!k->datas[i].data) {
			abort();
		}
	}
}

static void check_reqs(const struct mlfs_policy_reqs *rs)
{
	if (!rs->n || !rs->v)
		abort();
	for (size_t i = 0; i < rs->n; i++) {
		const struct mlfs_policy_req *r = &rs->v[i];
		char buf[256];
		check_keys(&r->keys);
		check_keys(&r->rekor_keys);
		check_keys(&r->fulcio_ca);
		check_keys(&r->pki_roots);
		check_keys(&r->pki_intermediates);
		if (r->type == MLFS_PR_SIGNED_BY && (!r->key_type || r->keys.kind == MLFS_KEYS_NONE))
			abort();
		if (r->type == MLFS_PR_SIGSTORE && (r->keys.kind != MLFS_KEYS_NONE) + r->has_fulcio + r->has_pki != 1)
			abort();
		mlfs_policy_req_describe(r, buf, sizeof buf);
		if (strnlen(buf, sizeof buf) == sizeof buf)
			abort();
	}
}

static void decide(const struct mlfs_policy *p, const char *identity)
{
	struct mlfs_policy_decision dec;
	mlfs_policy_decide(p, identity, &dec);
	if (!dec.reqs || (dec.verdict != MLFS_POLICY_ACCEPT && dec.req >= dec.reqs->n))
		abort();
	if (!dec.scope && dec.reqs != &p->def)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
	static const char *const refs[] = {
		"docker.io/library/busybox:latest", "127.0.0.1:5000/demo@sha256:"
		"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", "a.b.example.com:8443/x/y/z:1",
		"[::1]:5000/x:1", "localhost/x:y",
	};
	struct mlfs_policy *p = NULL;
	struct mlfs_err err = { 0 };
	int r = mlfs_policy_parse(d, n, "fuzz.json", &p, &err);
	if (r < 0) {
		if (p || err.code != -r || !err.msg[0] || strchr(err.msg, '\n'))
			abort();
		return 0;
	}
	if (!p)
		abort();
	check_reqs(&p->def);
	for (size_t t = 0; t < p->n_transports; t++)
		for (size_t s = 0; s < p->transports[t].n_scopes; s++) {
			check_reqs(&p->transports[t].scopes[s].reqs);
			decide(p, p->transports[t].scopes[s].name);
		}
	for (size_t i = 0; i < sizeof refs / sizeof refs[0]; i++)
		decide(p, refs[i]);
	mlfs_policy_free(p);
	return 0;
}
