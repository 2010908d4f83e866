/* The seekable-layer parsers on arbitrary bytes: the TOC JSON, both footer
 * parsers (the bytes as a blob's tail) and the position annotation (the
 * bytes as a string).  Beyond memory errors (ASan, UBSan) it checks the
 * contract: a failure returns nothing and one line of reason; a success
 * returns values within the ranges layers/toc.h promises, so that the
 * chunk store can do arithmetic on them unchecked. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "layers/internal.h"
#include "layers/toc.h"

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);

static volatile unsigned sink;

static void touch(const void *p, size_t len)
{
	const unsigned char *b = p;
	for (size_t k = 0; k < len; k++)
		sink += b[k];
}

static void check_toc(const uint8_t *d, size_t n)
{
	struct toc *t = (struct toc *)&t;
	char msg[256];
	memset(msg, 'x', sizeof msg);
	int r = toc_parse(d, n, &t, msg, sizeof msg);
	if (r < 0) {
		if (t || !memchr(msg, '\0', sizeof msg) || !msg[0] || strchr(msg, '\n') ||
		    (r != -EBADMSG && r != -EPROTO && r != -EFBIG && r != -ENOMEM))
			abort();
		return;
	}
	if (r != 0 || !t || t->n > TOC_MAX_ENTRIES || (t->n && !t->entries))
		abort();
	for (size_t i = 0; i < t->n; i++) {
		const struct toc_entry *e = &t->entries[i];
		if (!e->name || strlen(e->name) >= TOC_NAME_MAX || e->type < TOC_DIR || e->type > TOC_CHUNK)
			abort();
		if (e->link && (!e->link[0] || strlen(e->link) >= TOC_NAME_MAX))
			abort();
		if (e->mode > 07777 || e->uid < 0 || e->uid > UINT32_MAX || e->gid < 0 || e->gid > UINT32_MAX)
			abort();
		if (e->size > INT64_MAX || e->offset > INT64_MAX || e->end_offset > INT64_MAX ||
		    e->chunk_offset > INT64_MAX || e->chunk_size > INT64_MAX || e->inner_offset > INT64_MAX)
			abort();
		if (e->mtime_nsec > 999999999 || (!e->has_mtime && (e->mtime || e->mtime_nsec)))
			abort();
		if (e->type == TOC_CHUNK &&
		    (i == 0 || (e[-1].type != TOC_REG && e[-1].type != TOC_CHUNK) || strcmp(e[-1].name, e->name)))
			abort();
		if ((e->n_xattrs == 0) != (e->xattrs == NULL))
			abort();
		for (uint32_t j = 0; j < e->n_xattrs; j++) {
			const struct toc_xattr *x = &e->xattrs[j];
			size_t nl = strlen(x->name);
			if (nl == 0 || nl >= TOC_XATTR_NAME_MAX || !x->value || x->len >= TOC_XATTR_VALUE_MAX)
				abort();
			touch(x->value, x->len);
		}
		touch(e->digest, sizeof e->digest);
		touch(e->chunk_digest, sizeof e->chunk_digest);
	}
	toc_free(t);
}

static void check_footers(const uint8_t *d, size_t n)
{
	uint64_t off = 0;
	size_t size = 0;
	bool legacy = false;
	if (estargz_footer_parse(d, n, &off, &size, &legacy) == 0) {
		if (off > INT64_MAX || size > n || size != (legacy ? ESTARGZ_LEGACY_FOOTER_SIZE : ESTARGZ_FOOTER_SIZE))
			abort();
	}

	struct zstd_footer z;
	if (zstd_footer_parse(d, n, &z) == 0) {
		if (z.footer_size > n || z.footer_size > ZSTD_FOOTER_MAX_SIZE ||
		    (z.footer_size != 48 && z.footer_size != 64 && z.footer_size != 72))
			abort();
		if (z.toc_type != 1 || !z.toc_len || z.toc_off < 8 || z.toc_off + z.toc_len < z.toc_off)
			abort();
		if (z.footer_size != 72 && (z.tarsplit_off || z.tarsplit_len || z.tarsplit_ulen))
			abort();
	}
}

static void check_position(const uint8_t *d, size_t n)
{
	char *s = malloc(n + 1);
	if (!s)
		return;
	memcpy(s, d, n);
	s[n] = '\0';
	uint64_t off, len, ulen, type;
	size_t sl = strlen(s); /* the string ends at the first NUL */
	int colons = 0;
	for (size_t k = 0; k < sl; k++)
		colons += s[k] == ':';
	/* a success means digits and exactly the right number of colons, nothing else */
	bool digits = strspn(s, "0123456789:") == sl;
	if (zstd_position_parse(s, &off, &len, &ulen, &type) == 0 && (colons != 3 || !digits))
		abort();
	if (zstd_position_parse(s, &off, &len, &ulen, NULL) == 0 && (colons != 2 || !digits))
		abort();
	free(s);
}

/* A TOC that parses, through the index builder: whatever it says, the
 * chunk table that comes out tiles files inside the data file and points
 * only before the TOC. */
static void check_index(const uint8_t *d, size_t n)
{
	const uint64_t data_end = 1u << 30;
	struct mlfs_layer *l = mlfs_layer_new();
	if (!l)
		return;
	struct mlfs_err err = { 0 };
	if (mlfs_toc_index(l, (const char *)d, n, n & 1, data_end, &err) == 0) {
		uint64_t end = 0;
		for (size_t c = 0; c < l->n_chunks; c++) {
			const struct mlfs_ichunk *k = &l->chunks[c];
			if (k->data_off < end || !k->len || k->data_off + k->len > l->data_size ||
			    (k->blob_len && (k->blob_off > data_end || k->blob_len > data_end - k->blob_off)))
				abort();
			end = k->data_off + k->len;
		}
	} else if (!err.msg[0]) {
		abort();
	}
	mlfs_layer_free(l);
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
	check_toc(d, n);
	check_index(d, n);
	check_footers(d, n);
	check_position(d, n);
	return 0;
}
