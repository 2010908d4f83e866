/* Where a seekable layer keeps its TOC: the footers at the end of the blob,
 * and the zstd:chunked position annotation.
 *
 * eStargz (gzip).  The blob ends in an empty gzip member whose extra field
 * holds the TOC's offset; the TOC is the gzip member from there up to the
 * footer, itself a tar holding one file, "stargz.index.json".  51 bytes:
 *
 *    0  1f 8b 08 04       ID1 ID2, CM deflate, FLG = FEXTRA only
 *    4  MTIME XFL OS      6 bytes, not checked (0 and 0xff as written)
 *   10  1a 00             XLEN 26
 *   12  'S' 'G' 16 00     subfield SG, 22 bytes
 *   16  %016x             the TOC's offset in hex (we take both cases, < 2^63)
 *   32  "STARGZ"
 *   38  01 00 00 ff ff    a final stored deflate block of 0 bytes
 *   43  00 x 8           CRC32 and ISIZE of nothing
 *
 * Legacy stargz (google/crfs) is the same without the subfield header: XLEN
 * 22 and the 22 bytes "%016xSTARGZ" directly, 47 bytes.
 *
 * zstd:chunked.  The blob ends in a zstd skippable frame (magic 0x184D2A50,
 * LE u32 data size, data), so that a plain zstd decoder skips it; its data
 * are LE u64s and a magic:
 *
 *   40 bytes  toc offset, toc length, toc uncompressed length, toc type (1),
 *             "GnUlInUx"
 *             containers/storage < 1.47 (skopeo 1.9.3, podman 4.4) and
 *             stargz-snapshotter's zstdchunked (ctr-remote --zstdchunked)
 *   56 bytes  the 40 above, then 16 zero bytes
 *             containers/storage 1.47 - 1.50.1 (a writer bug, fixed in 1.50.2)
 *   64 bytes  toc offset, length, uncompressed length, type, tar-split
 *             offset, length, uncompressed length, "GNUlInUx" (capital N)
 *             containers/storage >= 1.50.2
 *
 * The TOC (and the tar-split) are each one zstd frame wrapped in a skippable
 * frame: the offsets point past that frame's 8-byte header.  The annotation
 * io.[github.]containers.zstd-chunked.manifest-position repeats the first four
 * numbers as "offset:length:uncompressedLength:type", and ...tarsplit-position
 * the tar-split's three.
 *
 * Nothing here is authenticated: a footer only says where to look.  The TOC
 * found there is believed only once it matches the digest in the manifest's
 * annotations (eStargz toc.digest: sha256 of the uncompressed JSON;
 * zstd:chunked manifest-checksum: sha256 of the compressed frame's bytes
 * [offset, offset + length)).  The annotation is preferred over the footer
 * when both exist: it costs no request. */
#include "layers/toc.h"

#include <errno.h>
#include <string.h>

static uint64_t le64(const unsigned char *p)
{
	uint64_t v = 0;
	for (int k = 7; k >= 0; k--)
		v = v << 8 | p[k];
	return v;
}

static uint32_t le32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static bool all_zero(const unsigned char *p, size_t n)
{
	for (size_t k = 0; k < n; k++)
		if (p[k])
			return false;
	return true;
}

/* ---- eStargz ---- */

/* "%016x" + "STARGZ" (22 bytes), the offset < 2^63 as Go's ParseInt wants. */
static bool stargz_offset(const unsigned char *p, uint64_t *off)
{
	uint64_t v = 0;
	for (int k = 0; k < 16; k++) {
		unsigned char ch = p[k];
		unsigned d;
		if (ch >= '0' && ch <= '9')
			d = ch - '0';
		else if (ch >= 'a' && ch <= 'f')
			d = ch - 'a' + 10;
		else if (ch >= 'A' && ch <= 'F')
			d = ch - 'A' + 10;
		else
			return false;
		v = v << 4 | d;
	}
	if (memcmp(p + 16, "STARGZ", 6) != 0 || v > INT64_MAX)
		return false;
	*off = v;
	return true;
}

/* The gzip header's fixed part up to XLEN, and the empty deflate body and
 * trailer after the extra field. */
static bool gzip_empty_member(const unsigned char *f, size_t size, unsigned xlen)
{
	static const unsigned char body[13] = { 0x01, 0x00, 0x00, 0xff, 0xff };
	return f[0] == 0x1f && f[1] == 0x8b && f[2] == 8 && f[3] == 0x04 && f[10] == xlen && f[11] == 0 &&
	       memcmp(f + size - sizeof body, body, sizeof body) == 0;
}

int estargz_footer_parse(const unsigned char *tail, size_t len, uint64_t *toc_off, size_t *footer_size,
			 bool *legacy)
{
	if (len >= ESTARGZ_FOOTER_SIZE) {
		const unsigned char *f = tail + len - ESTARGZ_FOOTER_SIZE;
		if (gzip_empty_member(f, ESTARGZ_FOOTER_SIZE, 26) && f[12] == 'S' && f[13] == 'G' &&
		    f[14] == 22 && f[15] == 0 && stargz_offset(f + 16, toc_off)) {
			*footer_size = ESTARGZ_FOOTER_SIZE;
			*legacy = false;
			return 0;
		}
	}
	if (len >= ESTARGZ_LEGACY_FOOTER_SIZE) {
		const unsigned char *f = tail + len - ESTARGZ_LEGACY_FOOTER_SIZE;
		if (gzip_empty_member(f, ESTARGZ_LEGACY_FOOTER_SIZE, 22) && stargz_offset(f + 12, toc_off)) {
			*footer_size = ESTARGZ_LEGACY_FOOTER_SIZE;
			*legacy = true;
			return 0;
		}
	}
	return -EBADMSG;
}

/* ---- zstd:chunked ---- */

static const struct {
	size_t data;         /* the skippable frame's data size */
	size_t magic_at;     /* where the magic is in the data */
	char magic[9];
	bool tarsplit;       /* the tar-split position follows the TOC's */
} zstd_footers[] = {
	{ 64, 56, "GNUlInUx", true },
	{ 56, 32, "GnUlInUx", false }, /* then 16 zero bytes */
	{ 40, 32, "GnUlInUx", false },
};

static bool range_ok(uint64_t off, uint64_t len)
{
	return off >= 8 && off + len >= off;
}

int zstd_footer_parse(const unsigned char *tail, size_t len, struct zstd_footer *out)
{
	for (size_t k = 0; k < sizeof zstd_footers / sizeof zstd_footers[0]; k++) {
		size_t data = zstd_footers[k].data, size = data + 8;
		if (len < size)
			continue;
		const unsigned char *f = tail + len - size, *d = f + 8;
		if (f[0] != 0x50 || f[1] != 0x2a || f[2] != 0x4d || f[3] != 0x18 || le32(f + 4) != data ||
		    memcmp(d + zstd_footers[k].magic_at, zstd_footers[k].magic, 8) != 0 ||
		    !all_zero(d + zstd_footers[k].magic_at + 8, data - zstd_footers[k].magic_at - 8))
			continue;
		struct zstd_footer z = {
			.toc_off = le64(d),
			.toc_len = le64(d + 8),
			.toc_ulen = le64(d + 16),
			.toc_type = le64(d + 24),
			.footer_size = size,
		};
		if (zstd_footers[k].tarsplit) {
			z.tarsplit_off = le64(d + 32);
			z.tarsplit_len = le64(d + 40);
			z.tarsplit_ulen = le64(d + 48);
			if (!range_ok(z.tarsplit_off, z.tarsplit_len))
				return -EBADMSG;
		}
		if (z.toc_type != 1 || !z.toc_len || !z.toc_ulen || !range_ok(z.toc_off, z.toc_len))
			return -EBADMSG;
		*out = z;
		return 0;
	}
	return -EBADMSG;
}

/* ---- the position annotation ---- */

/* Decimal digits into *out: the end, or NULL when none or over 64 bits. */
static const char *decimal(const char *p, uint64_t *out)
{
	const char *start = p;
	uint64_t v = 0;
	for (; *p >= '0' && *p <= '9'; p++) {
		unsigned d = (unsigned)(*p - '0');
		if (v > (UINT64_MAX - d) / 10)
			return NULL;
		v = v * 10 + d;
	}
	if (p == start)
		return NULL;
	*out = v;
	return p;
}

int zstd_position_parse(const char *s, uint64_t *off, uint64_t *len, uint64_t *ulen, uint64_t *type)
{
	uint64_t v[4] = { 0 };
	size_t n = type ? 4 : 3;
	if (!s)
		return -EPROTO;
	for (size_t k = 0; k < n; k++) {
		if (!(s = decimal(s, &v[k])))
			return -EPROTO;
		if (*s != (k + 1 < n ? ':' : '\0'))
			return -EPROTO;
		s++;
	}
	*off = v[0];
	*len = v[1];
	*ulen = v[2];
	if (type)
		*type = v[3];
	return 0;
}
