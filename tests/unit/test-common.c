/* common/: digests and one-line error messages. */
#include <errno.h>
#include <string.h>

#include "common/digest.h"
#include "common/err.h"
#include "tap.h"

int main(void)
{
	char d[MLFS_DIGEST_MAX];
	tap_is_int(mlfs_digest_buf("", 0, d), 0, "digest of empty buffer");
	tap_is_str(d, "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
		   "sha256 of empty string");
	tap_is_int(mlfs_digest_validate(d), 0, "valid digest");
	tap_is_int(mlfs_digest_validate("sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855"),
		   -EINVAL, "uppercase hex refused");
	tap_is_int(mlfs_digest_validate("sha256:abc"), -EINVAL, "short hex refused");
	tap_is_int(mlfs_digest_validate("sha512:abc"), -ENOTSUP, "other algorithm unsupported");
	tap_is_int(mlfs_digest_validate("nocolon"), -EINVAL, "no colon refused");
	tap_is_int(mlfs_digest_validate(":abc"), -EINVAL, "empty algorithm refused");
	tap_is_int(mlfs_digest_validate("SHA!:abc"), -EINVAL, "bad algorithm characters refused");
	/* Errors are one line, whatever text went into them. */
	struct mlfs_err err = { 0 };
	tap_is_int(mlfs_err_set(&err, EPROTO, "near '%s'", "a\nb\r\x1b[2J"), -EPROTO, "err_set returns -code");
	tap_ok(!strpbrk(err.msg, "\n\r\x1b"), "control characters removed: %s", err.msg);
	mlfs_err_wrap(&err, "ctx\n%d", 1);
	tap_ok(!strchr(err.msg, '\n') && !strncmp(err.msg, "ctx 1: near", 11), "wrap keeps one line: %s", err.msg);
	return tap_done();
}
