/* OpenPGP signatures (simple signing) verified with gpgme, never by hand.
 *
 * Each verification gets a GPG home of its own, made in $TMPDIR, holding
 * exactly the keys the policy names, and removed afterwards: the user's
 * keyring and trust database never take part (a key trusted there is not
 * trusted by the policy), and nothing is left behind.  A signature counts
 * when gpg verifies it, as containers/image's mechanism_gpgme.go does it
 * (good status, validity not "never", no validity reason, right key
 * usage), and the key that made it, or the primary key of the subkey
 * that made it, is one of those imported.  Key trust in gpg's sense
 * (ownertrust) does not matter: the policy is the trust.
 *
 * Without gpgme (-Dgpgme=disabled, the cross builds), every signedBy
 * requirement refuses with a message that says so (policymatch.c asks
 * mlfs_gpg_available() before anything is fetched). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fetch/internal.h"

#ifdef MLFS_HAVE_GPGME
#include <ftw.h>
#include <pthread.h>
#include <unistd.h>
#include <gpgme.h>

#include "common/cleanup.h"
#include "common/log.h"

#define KEY_FILE_MAX (4u << 20)

struct mlfs_gpg {
	gpgme_ctx_t ctx;
	char *home;
	size_t n_fprs;
	char **fprs;                     /* the primary keys imported */
};

static pthread_once_t gpgme_once = PTHREAD_ONCE_INIT;
static void gpgme_init_once(void) { gpgme_check_version(NULL); }

bool mlfs_gpg_available(void) { return true; }

const char *mlfs_gpg_version(void)
{
	pthread_once(&gpgme_once, gpgme_init_once);
	return gpgme_check_version(NULL);
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(path) < 0 && errno != ENOENT ? -1 : 0;
}

void mlfs_gpg_free(struct mlfs_gpg *g)
{
	if (!g)
		return;
	if (g->ctx)
		gpgme_release(g->ctx);
	if (g->home && nftw(g->home, rm_one, 16, FTW_DEPTH | FTW_PHYS) < 0)
		log_warn(MLFS_AREA_FETCH, "cannot remove the temporary GPG home %s: %s", g->home, strerror(errno));
	for (size_t i = 0; i < g->n_fprs; i++)
		free(g->fprs[i]);
	free(g->fprs);
	free(g->home);
	free(g);
}

static int import(struct mlfs_gpg *g, const void *buf, size_t len, const char *what, struct mlfs_err *err)
{
	gpgme_data_t d;
	if (gpgme_data_new_from_mem(&d, buf, len, 0))
		return mlfs_err_set(err, ENOMEM, "out of memory");
	gpgme_error_t e = gpgme_op_import(g->ctx, d);
	gpgme_data_release(d);
	if (e)
		return mlfs_err_set(err, EINVAL, "cannot import the key %s: %s", what, gpgme_strerror(e));
	gpgme_import_result_t res = gpgme_op_import_result(g->ctx);
	for (gpgme_import_status_t s = res ? res->imports : NULL; s; s = s->next) {
		if (s->result || !s->fpr)
			continue;
		char **v = realloc(g->fprs, (g->n_fprs + 1) * sizeof *v);
		if (!v || !(v[g->n_fprs] = strdup(s->fpr))) {
			if (v)
				g->fprs = v;
			return mlfs_err_set(err, ENOMEM, "out of memory");
		}
		g->fprs = v;
		g->n_fprs++;
	}
	return 0;
}

int mlfs_gpg_new(const struct mlfs_policy_keys *keys, struct mlfs_gpg **out, struct mlfs_err *err)
{
	pthread_once(&gpgme_once, gpgme_init_once);
	*out = NULL;
	struct mlfs_gpg *g = calloc(1, sizeof *g);
	const char *tmp = getenv("TMPDIR");
	if (!g || asprintf(&g->home, "%s/mlfs-gpg-XXXXXX", tmp && *tmp ? tmp : "/tmp") < 0) {
		free(g);
		return mlfs_err_set(err, ENOMEM, "out of memory");
	}
	int r = 0;
	if (!mkdtemp(g->home)) {
		r = mlfs_err_set(err, errno, "cannot make a temporary GPG home in %s: %s", tmp && *tmp ? tmp : "/tmp",
				 strerror(errno));
		free(g->home);
		g->home = NULL;
	} else if (gpgme_new(&g->ctx) || gpgme_set_protocol(g->ctx, GPGME_PROTOCOL_OpenPGP) ||
		   gpgme_ctx_set_engine_info(g->ctx, GPGME_PROTOCOL_OpenPGP, NULL, g->home)) {
		r = mlfs_err_set(err, ENOTSUP, "cannot start gpg through gpgme (is gpg installed?)");
	} else {
		gpgme_set_offline(g->ctx, 1); /* never a keyserver or a CRL fetch */
	}
	for (size_t i = 0; r == 0 && i < keys->n; i++) {
		if (keys->paths) {
			_cleanup_free_ char *buf = NULL;
			size_t len = 0;
			r = mlfs_key_file_read(keys->paths[i], KEY_FILE_MAX, &buf, &len, err);
			if (r == 0)
				r = import(g, buf, len, keys->paths[i], err);
		} else {
			r = import(g, keys->datas[i].data, keys->datas[i].len, "keyData", err);
		}
	}
	if (r == 0 && !g->n_fprs)
		r = mlfs_err_set(err, EINVAL, "the policy's keys hold no OpenPGP public key");
	if (r < 0) {
		mlfs_gpg_free(g);
		return r;
	}
	*out = g;
	return 0;
}

static bool trusted(struct mlfs_gpg *g, const char *fpr)
{
	gpgme_key_t key = NULL;
	if (!fpr || gpgme_get_key(g->ctx, fpr, &key, 0) || !key)
		return false;
	bool ok = false;
	for (size_t i = 0; i < g->n_fprs && !ok; i++)
		ok = key->subkeys && key->subkeys->fpr && !strcasecmp(key->subkeys->fpr, g->fprs[i]);
	gpgme_key_unref(key);
	return ok;
}

int mlfs_gpg_verify(struct mlfs_gpg *g, const void *sig, size_t len, void **content, size_t *content_len,
		    char *fpr, size_t fpr_len, char *why, size_t why_len)
{
	gpgme_data_t in = NULL, plain = NULL;
	*content = NULL;
	*content_len = 0;
	if (gpgme_data_new_from_mem(&in, sig, len, 0) || gpgme_data_new(&plain)) {
		gpgme_data_release(in);
		snprintf(why, why_len, "out of memory");
		return -ENOMEM;
	}
	int r = -EBADMSG;
	gpgme_error_t e = gpgme_op_verify(g->ctx, in, NULL, plain);
	gpgme_verify_result_t res = e ? NULL : gpgme_op_verify_result(g->ctx);
	gpgme_signature_t s = res ? res->signatures : NULL;
	size_t n = 0;
	for (gpgme_signature_t t = s; t; t = t->next)
		n++;
	snprintf(fpr, fpr_len, "%s", s && s->fpr ? s->fpr : "");
	if (e)
		snprintf(why, why_len, "not an OpenPGP signed message (%s)", gpgme_strerror(e));
	else if (!n)
		snprintf(why, why_len, "the file holds no OpenPGP signature (damaged?)");
	else if (n != 1)
		snprintf(why, why_len, "%zu OpenPGP signatures in one message (want 1)", n);
	else if (gpgme_err_code(s->status) == GPG_ERR_NO_PUBKEY)
		snprintf(why, why_len, "signed by key %s, which is not one of the policy's", fpr);
	else if (gpgme_err_code(s->status) == GPG_ERR_BAD_SIGNATURE)
		snprintf(why, why_len, "the OpenPGP signature is bad (the file was altered)");
	else if (s->status || s->validity == GPGME_VALIDITY_NEVER || s->validity_reason || s->wrong_key_usage)
		snprintf(why, why_len, "the OpenPGP signature by %s is not valid (%s)", fpr,
			 gpgme_strerror(s->status ? s->status : s->validity_reason));
	else if (!trusted(g, s->fpr))
		snprintf(why, why_len, "signed by key %s, which is not one of the policy's", fpr);
	else
		r = 0;
	size_t plen = 0;
	char *p = gpgme_data_release_and_get_mem(plain, &plen);
	gpgme_data_release(in);
	if (r == 0) {
		*content = malloc(plen + 1);
		if (*content) {
			memcpy(*content, p ? p : "", plen);
			*content_len = plen;
		} else {
			snprintf(why, why_len, "out of memory");
			r = -ENOMEM;
		}
	}
	gpgme_free(p);
	return r;
}

#else /* !MLFS_HAVE_GPGME */

bool mlfs_gpg_available(void) { return false; }

const char *mlfs_gpg_version(void) { return NULL; }

int mlfs_gpg_new(const struct mlfs_policy_keys *keys, struct mlfs_gpg **out, struct mlfs_err *err)
{
	*out = NULL;
	return mlfs_err_set(err, ENOTSUP, "this mlfs was built without OpenPGP support (gpgme): rebuild it with "
			    "-Dgpgme=enabled, or use a policy that accepts this image");
}

void mlfs_gpg_free(struct mlfs_gpg *g) { (void)g; }

int mlfs_gpg_verify(struct mlfs_gpg *g, const void *sig, size_t len, void **content, size_t *content_len,
		    char *fpr, size_t fpr_len, char *why, size_t why_len)
{
	snprintf(why, why_len, "no OpenPGP support in this build");
	return -ENOTSUP;
}

#endif
