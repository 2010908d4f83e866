/* Base64 as Go's encoding/base64 StdEncoding decodes it, which is how Go
 * programs (containers/image, stargz-snapshotter, encoding/json's []byte)
 * read what mlfs reads after them: TOC xattr values, policy keyData,
 * cosign signature annotations. */
#pragma once
#include <stddef.h>
#include <sys/types.h>

/* RFC 4648's standard alphabet, padded to whole groups; CR and LF skipped
 * anywhere; stray bits after the last byte tolerated (Go is not Strict by
 * default).  out needs room for len / 4 * 3 bytes.  The length decoded,
 * or -1 when malformed. */
ssize_t mlfs_base64_decode(const char *in, size_t len, unsigned char *out);
