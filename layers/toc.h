/* Seekable layers (eStargz, zstd:chunked): the table of contents and the
 * footers that locate it.  Pure parsers of untrusted bytes, no I/O; internal
 * to layers/.  The formats are described at the top of toc.c (the TOC JSON)
 * and footer.c (the footers and the manifest-position annotation). */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum toc_type { TOC_DIR = 1, TOC_REG, TOC_SYMLINK, TOC_HARDLINK, TOC_CHAR, TOC_BLOCK, TOC_FIFO, TOC_CHUNK };

struct toc_xattr {
	const char *name;            /* NUL-terminated, 1..255 bytes */
	const unsigned char *value;  /* decoded from base64; not NUL-terminated */
	size_t len;                  /* < TOC_XATTR_VALUE_MAX */
};

/* One "entries" item.  Absent keys (and JSON null) read as 0 / NULL / false.
 * A TOC_CHUNK entry always directly follows the TOC_REG or TOC_CHUNK entry of
 * the same name (checked), so a file's chunks are entries i+1.. while their
 * type is TOC_CHUNK. */
struct toc_entry {
	const char *name;          /* "name" as in the TOC, NUL-terminated, never NULL ("" allowed) */
	enum toc_type type;        /* "type" */
	const char *link;          /* "linkName", NULL when absent/empty */
	uint32_t mode;             /* "mode" & 07777 (type bits dropped) */
	int64_t uid, gid;          /* "uid", "gid": 0..UINT32_MAX, 0 when absent */
	int64_t mtime;             /* "modtime" RFC 3339 (any offset) -> seconds since the epoch */
	uint32_t mtime_nsec;       /* its fraction (containers/storage writes nanoseconds) */
	bool has_mtime;            /* false when absent or "" */
	uint64_t size;             /* "size" (< 2^63) */
	uint32_t dev_major, dev_minor;                 /* "devMajor", "devMinor" */
	const struct toc_xattr *xattrs; uint32_t n_xattrs;  /* "xattrs": {name: base64}, in TOC order */
	bool has_digest;  uint8_t digest[32];          /* "digest": "sha256:<hex>" of the whole file */
	uint64_t offset;           /* "offset": blob offset of the compressed frame/member */
	uint64_t end_offset;       /* "endOffset" (containers/storage), 0 when absent */
	uint64_t chunk_offset;     /* "chunkOffset": where the chunk starts in the file */
	uint64_t chunk_size;       /* "chunkSize" (0 = to the end of the file) */
	bool has_chunk_digest; uint8_t chunk_digest[32];  /* "chunkDigest" */
	bool zeros;                /* "chunkType": "zeros" (containers/storage): the chunk is all zeros */
	uint64_t inner_offset;     /* "innerOffset" (eStargz >= 0.13) */
};

struct toc {
	size_t n;
	struct toc_entry *entries;
	/* "tarSplitDigest" (containers/storage >= 1.54: the digest of the
	 * compressed tar-split frame, which then has no annotation of its own). */
	bool has_tarsplit_digest; uint8_t tarsplit_digest[32];
	/* (allocated inside a larger private struct that holds the string arena
	 * and the xattr array: only toc_parse makes one, only toc_free frees it) */
};

#define TOC_MAX_ENTRIES (8u << 20)
#define TOC_NAME_MAX 4096          /* names and link targets: fewer bytes than this */
#define TOC_XATTR_NAME_MAX 256     /* xattr names: fewer bytes than this */
#define TOC_XATTR_VALUE_MAX 65536  /* xattr values: fewer bytes than this */

/* Untrusted input.  0 with *out set, or -errno with a one-line reason in msg
 * (when msg is not NULL) and *out NULL:
 *   -EBADMSG  not JSON (syntax, truncation, invalid UTF-8, \u0000, duplicate keys)
 *   -EPROTO   JSON but not a TOC: not an object, "version" not 1, a known key of
 *             the wrong JSON type, a negative or too large number, a bad digest
 *             or base64, an unknown "type" or "chunkType", a misplaced "chunk"
 *             (messages name the entry index and the key)
 *   -EFBIG    over a cap: entries, name or link length, xattr name or value size
 *   -ENOMEM
 * Accepts the eStargz TOC (stargz-snapshotter, also its zstd:chunked) and the
 * containers/storage zstd:chunked TOC; unknown keys are ignored. */
int toc_parse(const void *json, size_t len, struct toc **out, char *msg, size_t msglen);
void toc_free(struct toc *t);

/* ---- footer.c: footers, from the tail of the blob ---- */
#define ESTARGZ_FOOTER_SIZE 51
#define ESTARGZ_LEGACY_FOOTER_SIZE 47
/* tail = the last `len` bytes of the blob (len >= 51 preferred).  Finds a
 * 51-byte eStargz footer (an empty gzip member whose FEXTRA holds subfield
 * 'S''G' with "%016x" TOC offset + "STARGZ") or, failing that, the 47-byte
 * legacy stargz one (the extra field is those 22 bytes, no subfield header).
 * 0 with *toc_off (< 2^63), *footer_size, *legacy; -EBADMSG if neither.
 * The caller checks toc_off < blob size - footer size. */
int estargz_footer_parse(const unsigned char *tail, size_t len, uint64_t *toc_off, size_t *footer_size,
			 bool *legacy);

/* The largest zstd:chunked footer: pass at least this many tail bytes. */
#define ZSTD_FOOTER_MAX_SIZE 72

struct zstd_footer {
	uint64_t toc_off, toc_len, toc_ulen, toc_type;
	uint64_t tarsplit_off, tarsplit_len, tarsplit_ulen;  /* 0 unless the 64-byte footer */
	size_t footer_size;                                  /* 48, 64 or 72 */
};
/* tail = the last len bytes of the blob.  Recognises the zstd skippable
 * frame footers: 40 data bytes (containers/storage < 1.47, and
 * stargz-snapshotter's zstdchunked), 56 (containers/storage 1.47-1.50.1) and
 * 64 (containers/storage >= 1.50.2, with the tar-split position).
 * footer_size = total bytes incl. the 8-byte frame header.  0, or -EBADMSG
 * when no footer is recognised, toc_type is not 1, a length is 0, an offset
 * is below 8 (each frame has an 8-byte header) or offset + length overflows.
 * The caller checks the ranges against the blob size. */
int zstd_footer_parse(const unsigned char *tail, size_t len, struct zstd_footer *out);

/* The manifest-position annotation "offset:length:uncompressedLength:type";
 * with type NULL the tar-split one "offset:length:uncompressedLength".
 * Strict: decimal digits only, no sign or space, no overflow of 64 bits,
 * exactly that many fields.  0 or -EPROTO.  Syntax only: the caller checks
 * type == 1 and the ranges. */
int zstd_position_parse(const char *s, uint64_t *off, uint64_t *len, uint64_t *ulen, uint64_t *type);
