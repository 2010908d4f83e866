/* Whether a signature's identity is acceptable, as containers/image's
 * signature/policy_reference_match.go decides, for a signedIdentity of:
 *
 *   matchExact              the signed reference is the image's, tag or digest and all
 *   matchRepoDigestOrExact  the image named by digest: the same repository is
 *                           enough (the digest is checked anyway), but with a
 *                           tag or digest; by tag: exact
 *   matchRepository         the same repository, whatever the tag
 *   exactReference R        the signed reference is R (both with a tag or digest)
 *   exactRepository R       the signed reference is in repository R
 *   remapIdentity P S       the image's name with prefix P read as S, then
 *                           matchRepoDigestOrExact (a mirror signed under the
 *                           upstream's name)
 *
 * References are compared in their normalised form ("busybox" is
 * "docker.io/library/busybox"), so a signature names an image however it
 * was spelt.  A name without a tag or digest never matches exactly: it
 * is not an image. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fetch/internal.h"

struct named {
	char *name;                      /* domain/path */
	char *full;                      /* name[:tag][@digest], as written (no default tag) */
	bool name_only;
	bool has_digest;
};

static void named_clear(struct named *n)
{
	free(n->name);
	free(n->full);
}

static int named_parse(const char *s, struct named *out)
{
	struct mlfs_ref ref;
	memset(out, 0, sizeof *out);
	if (!s || mlfs_ref_parse(s, &ref, NULL) < 0)
		return -EINVAL;
	const char *slash = strrchr(s, '/');
	out->has_digest = ref.digest != NULL;
	out->name_only = !strchr(s, '@') && !strchr(slash ? slash : s, ':');
	bool tagged = ref.tag && !out->name_only;
	int r = asprintf(&out->name, "%s/%s", ref.domain, ref.path);
	if (r < 0)
		out->name = NULL;
	else
		r = asprintf(&out->full, "%s%s%s%s%s", out->name, tagged ? ":" : "", tagged ? ref.tag : "",
			     ref.digest ? "@" : "", ref.digest ? ref.digest : "");
	mlfs_ref_clear(&ref);
	if (r < 0) {
		out->full = NULL;
		named_clear(out);
		return -ENOMEM;
	}
	return 0;
}

static bool repo_digest_or_exact(const struct named *image, const struct named *sig)
{
	/* Whatever the image: containers/image tests this first (cosign's
	 * tag-less identities need matchRepository, even by digest). */
	if (sig->name_only)
		return false;
	if (image->has_digest)
		return !strcmp(image->name, sig->name);
	if (!image->name_only)
		return !strcmp(image->full, sig->full);
	return false;
}

/* containers/image's refMatchesPrefix: the prefix, then the end or a
 * separator, so "host/ns" does not take "host/nsfoo". */
static bool matches_prefix(const char *ref, const char *prefix)
{
	size_t n = strlen(prefix);
	if (strncmp(ref, prefix, n))
		return false;
	return !ref[n] || ref[n] == ':' || ref[n] == '/' || ref[n] == '@';
}

static bool remap(const struct mlfs_policy_identity *id, const struct named *image, const struct named *sig)
{
	if (!matches_prefix(image->full, id->prefix))
		return repo_digest_or_exact(image, sig);
	char *remapped = NULL;
	if (asprintf(&remapped, "%s%s", id->signed_prefix, image->full + strlen(id->prefix)) < 0)
		return false;
	struct named r;
	bool ok = named_parse(remapped, &r) == 0;
	free(remapped);
	if (!ok)
		return false;
	ok = repo_digest_or_exact(&r, sig);
	named_clear(&r);
	return ok;
}

bool mlfs_sig_identity_matches(const struct mlfs_policy_identity *id, const char *image, const char *signed_ref)
{
	struct named img, sig, want = { 0 };
	if (named_parse(image, &img) < 0)
		return false;
	if (named_parse(signed_ref, &sig) < 0) {
		named_clear(&img);
		return false;
	}
	bool ok = false;
	switch (id->type) {
	case MLFS_PRM_MATCH_EXACT:
		ok = !img.name_only && !sig.name_only && !strcmp(img.full, sig.full);
		break;
	case MLFS_PRM_MATCH_REPO_DIGEST_OR_EXACT:
		ok = repo_digest_or_exact(&img, &sig);
		break;
	case MLFS_PRM_MATCH_REPOSITORY:
		ok = !strcmp(img.name, sig.name);
		break;
	case MLFS_PRM_EXACT_REFERENCE:
		ok = named_parse(id->reference, &want) == 0 && !want.name_only && !sig.name_only &&
		     !strcmp(want.full, sig.full);
		break;
	case MLFS_PRM_EXACT_REPOSITORY:
		ok = named_parse(id->reference, &want) == 0 && !strcmp(want.name, sig.name);
		break;
	case MLFS_PRM_REMAP_IDENTITY:
		ok = remap(id, &img, &sig);
		break;
	}
	named_clear(&img);
	named_clear(&sig);
	named_clear(&want);
	return ok;
}
