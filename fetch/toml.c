/* A strict reader for the part of TOML that registry configuration uses.
 *
 * Why our own: Debian 12 has no C TOML library (only C++ ones), and the
 * files to read — containers-registries.conf(5), its .d drop-ins and
 * containerd's hosts.toml — need little of the language.  What is read:
 * comments, `[table]` and `[[array.of.tables]]` headers, dotted and quoted
 * keys, basic strings (with escapes) and literal strings, booleans,
 * decimal integers, arrays (over several lines, comments inside, trailing
 * comma) and inline tables.  What is refused with "not supported":
 * multi-line strings, floats, dates, hexadecimal/octal/binary integers.
 *
 * Strict where TOML is: a key defined twice, a table header given twice,
 * a key added to an inline table or a static array, a value that does not
 * end its line, a control character in a string — each is an error that
 * names the file and the line, as containers/image's reader does (it is
 * BurntSushi/toml, which follows the specification). */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fetch/internal.h"

#define MAX_DEPTH 32     /* nested arrays and inline tables */
#define MAX_ITEMS 100000 /* members of one table or array */

struct parser {
	const char *p, *end;
	const char *name;
	int line;
	struct mlfs_err *err;
};

static int bad(struct parser *ps, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int bad(struct parser *ps, const char *fmt, ...)
{
	char what[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(what, sizeof what, fmt, ap);
	va_end(ap);
	return mlfs_err_set(ps->err, EINVAL, "%s:%d: %s", ps->name, ps->line, what);
}

/* A key from the file, fit for a one-line message. */
#define SHOW(k) mlfs_printable((k), (char[256]){ 0 }, 256)

static int oom(struct parser *ps)
{
	return mlfs_err_set(ps->err, ENOMEM, "%s: out of memory", ps->name);
}

void mlfs_toml_free(struct mlfs_toml *t)
{
	if (!t)
		return;
	for (size_t i = 0; i < t->n; i++)
		mlfs_toml_free(t->v[i]);
	free(t->v);
	free(t->key);
	free(t->str);
	free(t);
}

static struct mlfs_toml *node_new(enum mlfs_toml_kind kind, int line)
{
	struct mlfs_toml *t = calloc(1, sizeof *t);
	if (t) {
		t->kind = kind;
		t->line = line;
	}
	return t;
}

/* Takes ownership of child (freed on failure). */
static int node_add(struct parser *ps, struct mlfs_toml *parent, struct mlfs_toml *child)
{
	if (parent->n >= MAX_ITEMS) {
		mlfs_toml_free(child);
		return bad(ps, "more than %d items in one table or array", MAX_ITEMS);
	}
	struct mlfs_toml **nv = realloc(parent->v, (parent->n + 1) * sizeof *nv);
	if (!nv) {
		mlfs_toml_free(child);
		return oom(ps);
	}
	parent->v = nv;
	parent->v[parent->n++] = child;
	return 0;
}

const struct mlfs_toml *mlfs_toml_get(const struct mlfs_toml *table, const char *key)
{
	if (!table || table->kind != MLFS_TOML_TABLE)
		return NULL;
	for (size_t i = 0; i < table->n; i++)
		if (!strcmp(table->v[i]->key, key))
			return table->v[i];
	return NULL;
}

/* ---- lexing -------------------------------------------------------------- */

static void skip_ws(struct parser *ps)
{
	while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t'))
		ps->p++;
}

static void skip_comment(struct parser *ps)
{
	if (ps->p < ps->end && *ps->p == '#')
		while (ps->p < ps->end && *ps->p != '\n')
			ps->p++;
}

/* At a newline ("\n" or "\r\n"): consumes it.  1 if there was one. */
static int eat_newline(struct parser *ps)
{
	if (ps->p < ps->end && *ps->p == '\n') {
		ps->p++;
		ps->line++;
		return 1;
	}
	if (ps->end - ps->p >= 2 && ps->p[0] == '\r' && ps->p[1] == '\n') {
		ps->p += 2;
		ps->line++;
		return 1;
	}
	return 0;
}

/* Whitespace, comments and newlines (inside arrays). */
static void skip_blank(struct parser *ps)
{
	for (;;) {
		skip_ws(ps);
		skip_comment(ps);
		if (!eat_newline(ps))
			return;
	}
}

/* After a key/value or a header: only a comment may follow on the line. */
static int end_of_line(struct parser *ps)
{
	skip_ws(ps);
	skip_comment(ps);
	if (ps->p == ps->end || eat_newline(ps))
		return 0;
	return bad(ps, "unexpected '%c' after the value: one key = value per line", *ps->p);
}

static int utf8_put(char *buf, size_t *len, uint32_t c)
{
	if (c < 0x80) {
		buf[(*len)++] = (char)c;
	} else if (c < 0x800) {
		buf[(*len)++] = (char)(0xc0 | (c >> 6));
		buf[(*len)++] = (char)(0x80 | (c & 0x3f));
	} else if (c < 0x10000) {
		buf[(*len)++] = (char)(0xe0 | (c >> 12));
		buf[(*len)++] = (char)(0x80 | ((c >> 6) & 0x3f));
		buf[(*len)++] = (char)(0x80 | (c & 0x3f));
	} else {
		buf[(*len)++] = (char)(0xf0 | (c >> 18));
		buf[(*len)++] = (char)(0x80 | ((c >> 12) & 0x3f));
		buf[(*len)++] = (char)(0x80 | ((c >> 6) & 0x3f));
		buf[(*len)++] = (char)(0x80 | (c & 0x3f));
	}
	return 0;
}

/* A control character other than tab may not appear in a string. */
static bool is_control(unsigned char c)
{
	return (c < 0x20 && c != '\t') || c == 0x7f;
}

/* "..." or '...' at ps->p; *out malloc'd. */
static int parse_string(struct parser *ps, char **out)
{
	char quote = *ps->p;
	if (ps->end - ps->p >= 3 && ps->p[1] == quote && ps->p[2] == quote)
		return bad(ps, "multi-line strings are not supported");
	ps->p++;
	/* Escapes only shrink ("\u00e9" is 6 bytes for 2), so the raw length bounds the result. */
	const char *close = ps->p;
	while (close < ps->end && *close != quote && *close != '\n') {
		if (quote == '"' && *close == '\\' && close + 1 < ps->end)
			close++;
		close++;
	}
	if (close >= ps->end || *close != quote)
		return bad(ps, "unterminated string");
	char *buf = malloc((size_t)(close - ps->p) + 1);
	if (!buf)
		return oom(ps);
	size_t len = 0;
	while (ps->p < close) {
		unsigned char c = (unsigned char)*ps->p++;
		if (is_control(c)) {
			free(buf);
			return bad(ps, "control character 0x%02x in a string", c);
		}
		if (c != '\\' || quote == '\'') {
			buf[len++] = (char)c;
			continue;
		}
		char e = *ps->p++;
		switch (e) {
		case 'b': buf[len++] = '\b'; break;
		case 't': buf[len++] = '\t'; break;
		case 'n': buf[len++] = '\n'; break;
		case 'f': buf[len++] = '\f'; break;
		case 'r': buf[len++] = '\r'; break;
		case '"': buf[len++] = '"'; break;
		case '\\': buf[len++] = '\\'; break;
		case 'u':
		case 'U': {
			int digits = e == 'u' ? 4 : 8;
			uint32_t cp = 0;
			if (close - ps->p < digits) {
				free(buf);
				return bad(ps, "short \\%c escape", e);
			}
			for (int i = 0; i < digits; i++) {
				char h = *ps->p++;
				int v = h >= '0' && h <= '9' ? h - '0' : h >= 'a' && h <= 'f' ? h - 'a' + 10
					: h >= 'A' && h <= 'F' ? h - 'A' + 10 : -1;
				if (v < 0) {
					free(buf);
					return bad(ps, "bad \\%c escape", e);
				}
				cp = cp << 4 | (uint32_t)v;
			}
			if (cp == 0 || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
				free(buf);
				return bad(ps, "\\%c escape of U+%04" PRIX32 " is not allowed here", e, cp);
			}
			utf8_put(buf, &len, cp);
			break;
		}
		default:
			free(buf);
			return bad(ps, "unknown escape \\%c", e >= 0x20 && e < 0x7f ? e : '?');
		}
	}
	ps->p = close + 1;
	buf[len] = '\0';
	*out = buf;
	return 0;
}

static bool is_bare(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
}

/* One key part: bare, or a quoted string. */
static int parse_key_part(struct parser *ps, char **out)
{
	if (ps->p < ps->end && (*ps->p == '"' || *ps->p == '\''))
		return parse_string(ps, out);
	const char *s = ps->p;
	while (ps->p < ps->end && is_bare(*ps->p))
		ps->p++;
	if (ps->p == s)
		return ps->p < ps->end && *ps->p != '\n' ? bad(ps, "expected a key, found '%c'", *ps->p)
							   : bad(ps, "expected a key");
	if (!(*out = strndup(s, (size_t)(ps->p - s))))
		return oom(ps);
	return 0;
}

struct key {
	size_t n;
	char *part[16];
};

static void key_clear(struct key *k)
{
	for (size_t i = 0; i < k->n; i++)
		free(k->part[i]);
	k->n = 0;
}

/* a.b."c d" */
static int parse_key(struct parser *ps, struct key *k)
{
	k->n = 0;
	for (;;) {
		skip_ws(ps);
		if (k->n == sizeof k->part / sizeof k->part[0])
			return bad(ps, "a key with too many dotted parts");
		int r = parse_key_part(ps, &k->part[k->n]);
		if (r < 0)
			return r;
		k->n++;
		skip_ws(ps);
		if (ps->p >= ps->end || *ps->p != '.')
			return 0;
		ps->p++;
	}
}

/* ---- values -------------------------------------------------------------- */

static int parse_value(struct parser *ps, int depth, struct mlfs_toml **out);

static int parse_keyval_into(struct parser *ps, struct mlfs_toml *table, int depth);

static int parse_int(struct parser *ps, struct mlfs_toml **out)
{
	const char *s = ps->p;
	bool neg = false;
	if (*ps->p == '+' || *ps->p == '-')
		neg = *ps->p++ == '-';
	if (ps->end - ps->p >= 2 && ps->p[0] == '0' && (ps->p[1] == 'x' || ps->p[1] == 'o' || ps->p[1] == 'b'))
		return bad(ps, "hexadecimal, octal and binary integers are not supported");
	uint64_t v = 0;
	int digits = 0;
	bool last_underscore = false;
	while (ps->p < ps->end && ((*ps->p >= '0' && *ps->p <= '9') || *ps->p == '_')) {
		if (*ps->p == '_') {
			if (!digits || last_underscore)
				return bad(ps, "misplaced '_' in a number");
			last_underscore = true;
			ps->p++;
			continue;
		}
		last_underscore = false;
		if (v > (UINT64_C(1) << 63) / 10)
			return bad(ps, "integer out of range");
		v = v * 10 + (uint64_t)(*ps->p++ - '0');
		digits++;
	}
	if (!digits || last_underscore)
		return bad(ps, "invalid value");
	if (ps->p < ps->end && (*ps->p == '.' || *ps->p == 'e' || *ps->p == 'E' || *ps->p == ':' || *ps->p == '-' ||
				*ps->p == 'T'))
		return bad(ps, "floats, dates and times are not supported");
	if (digits > 1 && s[neg || *s == '+' ? 1 : 0] == '0')
		return bad(ps, "leading zeros in an integer");
	if (v > (neg ? UINT64_C(1) << 63 : (uint64_t)INT64_MAX))
		return bad(ps, "integer out of range");
	if (!(*out = node_new(MLFS_TOML_INT, ps->line)))
		return oom(ps);
	(*out)->i = neg ? (int64_t)(0 - v) : (int64_t)v;
	return 0;
}

static int parse_array(struct parser *ps, int depth, struct mlfs_toml **out)
{
	struct mlfs_toml *a = node_new(MLFS_TOML_ARRAY, ps->line);
	if (!a)
		return oom(ps);
	a->closed = true;
	ps->p++; /* [ */
	for (;;) {
		skip_blank(ps);
		if (ps->p >= ps->end) {
			mlfs_toml_free(a);
			return bad(ps, "unterminated array");
		}
		if (*ps->p == ']') {
			ps->p++;
			*out = a;
			return 0;
		}
		struct mlfs_toml *item = NULL;
		int r = parse_value(ps, depth + 1, &item);
		if (r == 0)
			r = node_add(ps, a, item);
		if (r < 0) {
			mlfs_toml_free(a);
			return r;
		}
		skip_blank(ps);
		if (ps->p < ps->end && *ps->p == ',') {
			ps->p++;
		} else if (ps->p >= ps->end || *ps->p != ']') {
			mlfs_toml_free(a);
			return bad(ps, "expected ',' or ']' in an array");
		}
	}
}

static int parse_inline_table(struct parser *ps, int depth, struct mlfs_toml **out)
{
	struct mlfs_toml *t = node_new(MLFS_TOML_TABLE, ps->line);
	if (!t)
		return oom(ps);
	ps->p++; /* { */
	skip_ws(ps);
	if (ps->p < ps->end && *ps->p == '}') {
		ps->p++;
	} else {
		for (;;) {
			int r = parse_keyval_into(ps, t, depth + 1);
			if (r < 0) {
				mlfs_toml_free(t);
				return r;
			}
			skip_ws(ps);
			if (ps->p < ps->end && *ps->p == ',') {
				ps->p++;
				continue;
			}
			if (ps->p < ps->end && *ps->p == '}') {
				ps->p++;
				break;
			}
			mlfs_toml_free(t);
			return bad(ps, "expected ',' or '}' in an inline table (on one line)");
		}
	}
	t->closed = true;
	*out = t;
	return 0;
}

static int parse_value(struct parser *ps, int depth, struct mlfs_toml **out)
{
	if (depth > MAX_DEPTH)
		return bad(ps, "values nested too deeply");
	skip_ws(ps);
	if (ps->p >= ps->end || *ps->p == '\n' || *ps->p == '\r' || *ps->p == '#')
		return bad(ps, "expected a value");
	char c = *ps->p;
	if (c == '"' || c == '\'') {
		char *s;
		int r = parse_string(ps, &s);
		if (r < 0)
			return r;
		if (!(*out = node_new(MLFS_TOML_STRING, ps->line))) {
			free(s);
			return oom(ps);
		}
		(*out)->str = s;
		return 0;
	}
	if (c == '[')
		return parse_array(ps, depth, out);
	if (c == '{')
		return parse_inline_table(ps, depth, out);
	static const struct { const char *word; bool value; } bools[] = { { "true", true }, { "false", false } };
	for (size_t i = 0; i < 2; i++) {
		size_t n = strlen(bools[i].word);
		if ((size_t)(ps->end - ps->p) >= n && !memcmp(ps->p, bools[i].word, n) &&
		    (ps->p + n == ps->end || !is_bare(ps->p[n]))) {
			ps->p += n;
			if (!(*out = node_new(MLFS_TOML_BOOL, ps->line)))
				return oom(ps);
			(*out)->b = bools[i].value;
			return 0;
		}
	}
	if ((c >= '0' && c <= '9') || c == '+' || c == '-') {
		if (ps->end - ps->p >= 4 && (!memcmp(ps->p + 1, "inf", 3) || !memcmp(ps->p + 1, "nan", 3)))
			return bad(ps, "floats are not supported");
		return parse_int(ps, out);
	}
	if ((ps->end - ps->p >= 3 && (!memcmp(ps->p, "inf", 3) || !memcmp(ps->p, "nan", 3))))
		return bad(ps, "floats are not supported");
	return bad(ps, "invalid value starting with '%c'", c >= 0x20 && c < 0x7f ? c : '?');
}

/* ---- tables -------------------------------------------------------------- */

/* The table at `key` in t, made (implicitly) when absent; an array of
 * tables gives its last table (how [a.b] after [[a]] reaches into it). */
static int descend(struct parser *ps, struct mlfs_toml *t, const char *key, struct mlfs_toml **out)
{
	struct mlfs_toml *c = (struct mlfs_toml *)mlfs_toml_get(t, key);
	if (!c) {
		if (!(c = node_new(MLFS_TOML_TABLE, ps->line)) || !(c->key = strdup(key))) {
			mlfs_toml_free(c);
			return oom(ps);
		}
		int r = node_add(ps, t, c);
		if (r < 0)
			return r;
	} else if (c->kind == MLFS_TOML_ARRAY && c->of_tables && c->n) {
		c = c->v[c->n - 1];
	} else if (c->kind != MLFS_TOML_TABLE || c->closed) {
		return bad(ps, "\"%s\" is already defined (line %d) and is not a table that can be extended", SHOW(key),
			   c->line);
	}
	*out = c;
	return 0;
}

/* key = value, into table (dotted keys make tables on the way). */
static int parse_keyval_into(struct parser *ps, struct mlfs_toml *table, int depth)
{
	struct key k;
	int r = parse_key(ps, &k);
	if (r < 0) {
		key_clear(&k);
		return r;
	}
	struct mlfs_toml *t = table, *v = NULL;
	for (size_t i = 0; r == 0 && i + 1 < k.n; i++)
		r = descend(ps, t, k.part[i], &t);
	if (r == 0 && mlfs_toml_get(t, k.part[k.n - 1]))
		r = bad(ps, "key \"%s\" is defined twice", SHOW(k.part[k.n - 1]));
	if (r == 0) {
		skip_ws(ps);
		if (ps->p >= ps->end || *ps->p != '=')
			r = bad(ps, "expected '=' after the key \"%s\"", SHOW(k.part[k.n - 1]));
		else
			ps->p++;
	}
	if (r == 0)
		r = parse_value(ps, depth, &v);
	if (r == 0) {
		v->key = k.part[k.n - 1];
		k.part[k.n - 1] = NULL;
		r = node_add(ps, t, v);
	}
	key_clear(&k);
	return r;
}

/* [a.b] or [[a.b]] at ps->p; *cur becomes the table to fill. */
static int parse_header(struct parser *ps, struct mlfs_toml *root, struct mlfs_toml **cur)
{
	bool aot = ps->end - ps->p >= 2 && ps->p[1] == '[';
	ps->p += aot ? 2 : 1;
	struct key k;
	int r = parse_key(ps, &k);
	if (r == 0 && (ps->end - ps->p < (aot ? 2 : 1) || ps->p[0] != ']' || (aot && ps->p[1] != ']')))
		r = bad(ps, "expected '%s' to end the table header", aot ? "]]" : "]");
	if (r == 0)
		ps->p += aot ? 2 : 1;
	struct mlfs_toml *t = root;
	for (size_t i = 0; r == 0 && i + 1 < k.n; i++)
		r = descend(ps, t, k.part[i], &t);
	if (r < 0) {
		key_clear(&k);
		return r;
	}
	const char *last = k.part[k.n - 1];
	struct mlfs_toml *c = (struct mlfs_toml *)mlfs_toml_get(t, last);
	if (aot) {
		if (!c) {
			if (!(c = node_new(MLFS_TOML_ARRAY, ps->line)) || !(c->key = strdup(last))) {
				mlfs_toml_free(c);
				key_clear(&k);
				return oom(ps);
			}
			c->of_tables = true;
			if ((r = node_add(ps, t, c)) < 0) {
				key_clear(&k);
				return r;
			}
		} else if (c->kind != MLFS_TOML_ARRAY || !c->of_tables) {
			r = bad(ps, "\"%s\" is already defined (line %d) and is not an array of tables", SHOW(last),
				c->line);
			key_clear(&k);
			return r;
		}
		struct mlfs_toml *item = node_new(MLFS_TOML_TABLE, ps->line);
		if (!item) {
			key_clear(&k);
			return oom(ps);
		}
		item->defined = true;
		r = node_add(ps, c, item);
		*cur = item;
	} else if (!c) {
		if (!(c = node_new(MLFS_TOML_TABLE, ps->line)) || !(c->key = strdup(last))) {
			mlfs_toml_free(c);
			key_clear(&k);
			return oom(ps);
		}
		c->defined = true;
		r = node_add(ps, t, c);
		*cur = c;
	} else if (c->kind != MLFS_TOML_TABLE || c->closed || c->defined) {
		r = bad(ps, "table \"%s\" is defined twice (first on line %d)", SHOW(last), c->line);
	} else {
		c->defined = true; /* made implicitly by an earlier [last.x] */
		*cur = c;
	}
	key_clear(&k);
	return r;
}

int mlfs_toml_parse(const void *buf, size_t len, const char *name, struct mlfs_toml **out, struct mlfs_err *err)
{
	struct parser ps = { .p = buf, .end = (const char *)buf + len, .name = name, .line = 1, .err = err };
	*out = NULL;
	if (memchr(buf, '\0', len))
		return mlfs_err_set(err, EINVAL, "%s: a NUL byte: not a text file", name);
	struct mlfs_toml *root = node_new(MLFS_TOML_TABLE, 1), *cur;
	if (!root)
		return oom(&ps);
	cur = root;
	/* A UTF-8 byte order mark is allowed at the start. */
	if (len >= 3 && !memcmp(buf, "\xef\xbb\xbf", 3))
		ps.p += 3;
	int r = 0;
	while (r == 0 && ps.p < ps.end) {
		skip_ws(&ps);
		skip_comment(&ps);
		if (ps.p >= ps.end || eat_newline(&ps))
			continue;
		if (*ps.p == '[')
			r = parse_header(&ps, root, &cur);
		else
			r = parse_keyval_into(&ps, cur, 0);
		if (r == 0)
			r = end_of_line(&ps);
	}
	if (r < 0) {
		mlfs_toml_free(root);
		return r;
	}
	*out = root;
	return 0;
}
