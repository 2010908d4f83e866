/* Platforms, following containerd's `platforms` package so that mlfs picks
 * the same manifest of a multi-platform image as `docker pull` / `ctr pull`
 * on the same host would.
 *
 * Normalisation folds the many spellings of one platform into one:
 * x86_64 is amd64, aarch64 is arm64, armhf is arm/v7.  The variant is empty
 * for the baseline of an architecture that has one (amd64 v1, arm64 v8),
 * but always explicit for 32-bit arm, whose baseline (v7) is not the oldest
 * that exists.
 *
 * Ranking is containerd's platformVector: the platform itself, then what
 * the CPU can also run, best first.  An amd64/v3 host runs v2, v1 and 386
 * code; an arm/v7 host runs v6 and v5; an arm64 host runs 32-bit arm down
 * to v5.  arm64 v8.x / v9.x minors fall back through the earlier minors
 * (v9.x also through v8.{x+5}, where v9.0 branched off), as containerd
 * does.  The rank of an image's platform is its position in that list.
 *
 * The host is found as containerd finds it: uname's machine, refined by
 * /proc/cpuinfo ("CPU architecture" for arm, the feature flags for the
 * amd64 micro-architecture level). */
#include "fetch/fetch.h"

#include "common/escape.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "common/cleanup.h"

/* The first core's block is all that is read (a few KiB), so the start of
 * the file is enough; and under glibc's 128 KiB mmap threshold, the buffer
 * does not raise it for the rest of the process (common/readfile.c). */
#define CPUINFO_MAX (64u << 10)

static void lower(char *s)
{
	for (; *s; s++)
		*s = (char)tolower((unsigned char)*s);
}

/* Zero-fills the rest of the field: two equal platforms are equal bytes,
 * which keeps memcmp() and hashing of the struct honest. */
static void set(char *dst, size_t len, const char *src)
{
	size_t n = strlen(src);
	if (n >= len)
		n = len - 1;
	memmove(dst, src, n);
	memset(dst + n, 0, len - n);
}

#define SET(field, value) set(field, sizeof(field), value)

static bool is_one_of(const char *s, const char *const *list)
{
	for (; *list; list++)
		if (!strcmp(s, *list))
			return true;
	return false;
}

static bool known_os(const char *os)
{
	static const char *const oses[] = {
		"aix", "android", "darwin", "dragonfly", "freebsd", "hurd", "illumos", "ios", "js",
		"linux", "nacl", "netbsd", "openbsd", "plan9", "solaris", "windows", "zos", NULL,
	};
	return is_one_of(os, oses);
}

static bool known_arch(const char *arch)
{
	static const char *const arches[] = {
		"386", "amd64", "amd64p32", "arm", "armbe", "arm64", "arm64be", "ppc64", "ppc64le",
		"loong64", "mips", "mipsle", "mips64", "mips64le", "mips64p32", "mips64p32le", "ppc",
		"riscv", "riscv64", "s390", "s390x", "sparc", "sparc64", "wasm", NULL,
	};
	return is_one_of(arch, arches);
}

void mlfs_platform_normalize(struct mlfs_platform *p)
{
	lower(p->os);
	lower(p->arch);
	lower(p->variant);
	if (!strcmp(p->os, "macos"))
		SET(p->os, "darwin");

	static const char *const x86[] = { "i386", "i486", "i586", "i686", "386", NULL };
	if (is_one_of(p->arch, x86)) {
		SET(p->arch, "386");
		SET(p->variant, "");
	} else if (!strcmp(p->arch, "x86_64") || !strcmp(p->arch, "x86-64") ||
		   !strcmp(p->arch, "amd64")) {
		SET(p->arch, "amd64");
		if (!strcmp(p->variant, "v1"))
			SET(p->variant, "");
	} else if (!strcmp(p->arch, "aarch64") || !strcmp(p->arch, "arm64")) {
		SET(p->arch, "arm64");
		if (!strcmp(p->variant, "8") || !strcmp(p->variant, "v8") ||
		    !strcmp(p->variant, "v8.0"))
			SET(p->variant, "");
	} else if (!strcmp(p->arch, "armhf")) {
		SET(p->arch, "arm");
		SET(p->variant, "v7");
	} else if (!strcmp(p->arch, "armel")) {
		SET(p->arch, "arm");
		SET(p->variant, "v6");
	} else if (!strcmp(p->arch, "arm")) {
		if (!p->variant[0] || !strcmp(p->variant, "7"))
			SET(p->variant, "v7");
		else if (!strcmp(p->variant, "5") || !strcmp(p->variant, "6") ||
			 !strcmp(p->variant, "8")) {
			char v[4] = { 'v', p->variant[0], '\0', '\0' };
			SET(p->variant, v);
		}
	}
}

/* [A-Za-z0-9_.-]+, or without '.' for the os. */
static bool component_ok(const char *s, size_t n, bool dots)
{
	if (n == 0)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!(isalnum((unsigned char)s[i]) || s[i] == '_' || s[i] == '-' || (dots && s[i] == '.')))
			return false;
	return true;
}

static int platform_fail(struct mlfs_err *err, const char *input, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int platform_fail(struct mlfs_err *err, const char *input, const char *fmt, ...)
{
	char q[160], what[512], clean[512];
	va_list ap;
	/* Input goes into a one-line message, between quotes. */
	mlfs_escape(input, strlen(input), MLFS_ESC_QUOTES, q, sizeof q);
	va_start(ap, fmt);
	vsnprintf(what, sizeof what, fmt, ap);
	va_end(ap);
	mlfs_escape(what, strlen(what), 0, clean, sizeof clean);
	return mlfs_err_set(err, EINVAL, "invalid platform \"%s\": %s", q, clean);
}

/* Copies s[0..n) into a fixed field, refusing what does not fit rather
 * than silently matching a truncated name. */
static bool copy_field(char *dst, size_t dst_len, const char *s, size_t n)
{
	if (n >= dst_len)
		return false;
	memcpy(dst, s, n);
	dst[n] = '\0';
	return true;
}

/* "os", "os(version)": containerd's osRe without the "+feature" part. */
static int parse_os(const char *input, const char *s, size_t n, struct mlfs_platform *p,
		    struct mlfs_err *err)
{
	const char *paren = memchr(s, '(', n);
	size_t os_len = paren ? (size_t)(paren - s) : n;
	if (!component_ok(s, os_len, false))
		return platform_fail(err, input, "bad operating system \"%.*s\" (letters, digits, '_', '-')",
				     (int)(os_len > 32 ? 32 : os_len), s);
	if (!copy_field(p->os, sizeof p->os, s, os_len))
		return platform_fail(err, input, "operating system name too long");
	if (!paren)
		return 0;
	const char *ver = paren + 1;
	size_t ver_len = n - os_len - 1;
	const char *close = memchr(ver, ')', ver_len);
	if (!close)
		return platform_fail(err, input, "unclosed '(' after the operating system");
	if (close != ver + ver_len - 1)
		return platform_fail(err, input, "text after ')' in the operating system");
	ver_len--;
	if (ver_len > 0 && !component_ok(ver, ver_len, true))
		return platform_fail(err, input, "bad OS version \"%.*s\" (letters, digits, '_', '.', '-')",
				     (int)(ver_len > 64 ? 64 : ver_len), ver);
	if (!copy_field(p->os_version, sizeof p->os_version, ver, ver_len))
		return platform_fail(err, input, "OS version too long");
	return 0;
}

int mlfs_platform_parse(const char *s, struct mlfs_platform *out, struct mlfs_err *err)
{
	struct mlfs_platform p = { 0 };
	const char *part[3];
	size_t len[3], n = 0;

	memset(out, 0, sizeof *out);
	if (!s || !*s)
		return platform_fail(err, s ? s : "", "empty (want os/arch[/variant], e.g. linux/arm64)");
	if (strchr(s, '*'))
		return platform_fail(err, s, "wildcards are not supported");
	for (const char *c = s;; n++) {
		const char *slash = strchr(c, '/');
		if (n == 3)
			return platform_fail(err, s, "too many '/' (want os/arch[/variant])");
		part[n] = c;
		len[n] = slash ? (size_t)(slash - c) : strlen(c);
		if (!slash) {
			n++;
			break;
		}
		c = slash + 1;
	}

	int r = parse_os(s, part[0], len[0], &p, err);
	if (r < 0)
		return r;
	for (size_t i = 1; i < n; i++)
		if (!component_ok(part[i], len[i], true))
			return platform_fail(err, s, "bad %s \"%.*s\" (letters, digits, '_', '.', '-')",
					     i == 1 ? "architecture" : "variant",
					     (int)(len[i] > 32 ? 32 : len[i]), part[i]);
	if (n >= 2 && !copy_field(p.arch, sizeof p.arch, part[1], len[1]))
		return platform_fail(err, s, "architecture name too long");
	if (n == 3 && !copy_field(p.variant, sizeof p.variant, part[2], len[2]))
		return platform_fail(err, s, "variant too long");

	if (n == 1) {
		/* One word: an OS means "this machine's architecture under that
		 * OS", anything else must be an architecture we know of. */
		mlfs_platform_normalize(&p);
		if (known_os(p.os)) {
			struct mlfs_platform host;
			r = mlfs_platform_host(&host);
			if (r < 0)
				return platform_fail(err, s, "cannot tell this machine's architecture: %s",
						     strerror(-r));
			SET(p.arch, host.arch);
			SET(p.variant, host.variant);
		} else {
			if (p.os_version[0])
				return platform_fail(err, s, "unknown operating system \"%s\"", p.os);
			memcpy(p.arch, p.os, sizeof p.arch);
			SET(p.os, "");
			SET(p.os_version, "");
			mlfs_platform_normalize(&p);
			if (!known_arch(p.arch))
				return platform_fail(err, s, "unknown operating system or architecture");
			SET(p.os, "linux");
		}
	}
	mlfs_platform_normalize(&p);
	*out = p;
	return 0;
}

/* ---- the host ---------------------------------------------------------- */

/* The value of the first "key : value" line whose key matches (any case),
 * as containerd reads /proc/cpuinfo: the first core speaks for all. */
static bool cpuinfo_get(const char *cpuinfo, const char *key, const char **val, size_t *val_len)
{
	size_t key_len = strlen(key);
	for (const char *line = cpuinfo; line && *line;) {
		const char *eol = strchr(line, '\n');
		size_t line_len = eol ? (size_t)(eol - line) : strlen(line);
		const char *colon = memchr(line, ':', line_len);
		if (colon) {
			const char *k = line, *ke = colon;
			while (k < ke && (*k == ' ' || *k == '\t'))
				k++;
			while (ke > k && (ke[-1] == ' ' || ke[-1] == '\t'))
				ke--;
			if ((size_t)(ke - k) == key_len && !strncasecmp(k, key, key_len)) {
				const char *v = colon + 1, *ve = line + line_len;
				while (v < ve && (*v == ' ' || *v == '\t'))
					v++;
				while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t' || ve[-1] == '\r'))
					ve--;
				*val = v;
				*val_len = (size_t)(ve - v);
				return true;
			}
		}
		line = eol ? eol + 1 : NULL;
	}
	return false;
}

static bool word_in(const char *list, size_t len, const char *word)
{
	size_t wl = strlen(word);
	for (size_t i = 0; i < len;) {
		while (i < len && (list[i] == ' ' || list[i] == '\t'))
			i++;
		size_t start = i;
		while (i < len && list[i] != ' ' && list[i] != '\t')
			i++;
		if (i - start == wl && !memcmp(list + start, word, wl))
			return true;
	}
	return false;
}

static bool all_words_in(const char *list, size_t len, const char *const *words)
{
	for (; *words; words++)
		if (!word_in(list, len, *words))
			return false;
	return true;
}

/* The x86-64 psABI micro-architecture level, from the kernel's flag names. */
static int amd64_level(const char *cpuinfo)
{
	static const char *const v2[] = { "cx16", "lahf_lm", "popcnt", "pni", "sse4_1", "sse4_2", "ssse3", NULL };
	static const char *const v3[] = { "avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave", NULL };
	static const char *const v4[] = { "avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl", NULL };
	const char *flags;
	size_t len;
	if (!cpuinfo || !cpuinfo_get(cpuinfo, "flags", &flags, &len))
		return 1;
	if (!all_words_in(flags, len, v2))
		return 1;
	if (!all_words_in(flags, len, v3))
		return 2;
	if (!all_words_in(flags, len, v4))
		return 3;
	return 4;
}

/* "CPU architecture" values the ARM kernel prints, as containerd maps them. */
static int arm_variant_from_cpuinfo_value(const char *v, size_t n)
{
	static const struct {
		const char *value;
		int variant;
	} map[] = {
		{ "8", 8 },     { "aarch64", 8 }, { "7", 7 },     { "7m", 7 },      { "?(12)", 7 },
		{ "?(13)", 7 }, { "?(14)", 7 },   { "?(15)", 7 }, { "?(16)", 7 },   { "?(17)", 7 },
		{ "6", 6 },     { "6tej", 6 },    { "5", 5 },     { "5t", 5 },      { "5te", 5 },
		{ "5tej", 5 },  { "4", 4 },       { "4t", 4 },    { "3", 3 },
	};
	for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
		if (strlen(map[i].value) == n && !strncasecmp(v, map[i].value, n))
			return map[i].variant;
	return 0;
}

/* 32-bit arm: cpuinfo first (it knows an armv8l CPU runs v8 code), uname's
 * "armvN..." when cpuinfo says nothing usable (qemu-user does not fake it). */
static int arm_variant(const char *machine, const char *cpuinfo)
{
	int variant = 0;
	const char *v;
	size_t n;
	if (cpuinfo && cpuinfo_get(cpuinfo, "CPU architecture", &v, &n))
		variant = arm_variant_from_cpuinfo_value(v, n);
	if (!variant && !strncasecmp(machine, "armv", 4) && machine[4] >= '3' && machine[4] <= '8')
		variant = machine[4] - '0';
	/* The Raspberry Pi 1 and Zero kernels report architecture 7 for their
	 * ARMv6 core; their v7 binaries die with SIGILL. */
	if (variant == 7 && cpuinfo && cpuinfo_get(cpuinfo, "model name", &v, &n) &&
	    n >= 16 && !strncasecmp(v, "armv6-compatible", 16))
		variant = 6;
	return variant;
}

int mlfs_platform_from_machine(const char *machine, const char *cpuinfo, struct mlfs_platform *out)
{
	static const struct {
		const char *machine;
		const char *arch;
	} same[] = {
		{ "x86_64", "amd64" },    { "amd64", "amd64" },         { "i386", "386" },
		{ "i486", "386" },        { "i586", "386" },            { "i686", "386" },
		{ "aarch64", "arm64" },   { "arm64", "arm64" },         { "s390x", "s390x" },
		{ "s390", "s390" },       { "ppc64le", "ppc64le" },     { "ppc64", "ppc64" },
		{ "ppc", "ppc" },         { "riscv64", "riscv64" },     { "mips64", "mips64" },
		{ "mips64el", "mips64le" }, { "mips", "mips" },         { "mipsel", "mipsle" },
		{ "loongarch64", "loong64" }, { "sparc64", "sparc64" },
	};

	memset(out, 0, sizeof *out);
	if (!machine || !*machine)
		return -EINVAL;
	SET(out->os, "linux");

	for (size_t i = 0; i < sizeof same / sizeof same[0]; i++) {
		if (strcasecmp(machine, same[i].machine))
			continue;
		SET(out->arch, same[i].arch);
		if (!strcmp(out->arch, "amd64")) {
			int level = amd64_level(cpuinfo);
			if (level > 1)
				snprintf(out->variant, sizeof out->variant, "v%d", level);
		}
		return 0;
	}

	/* armv5tel, armv6l, armv7l, armv8l: 32-bit user space. */
	if (!strncasecmp(machine, "armv", 4) && machine[4] >= '0' && machine[4] <= '9') {
		int variant = arm_variant(machine, cpuinfo);
		if (!variant)
			return -ENOTSUP;
		SET(out->arch, "arm");
		snprintf(out->variant, sizeof out->variant, "v%d", variant);
		return 0;
	}
	memset(out, 0, sizeof *out);
	return -ENOTSUP;
}

/* Only the first core's block is needed, so a bounded read is enough even
 * on machines with hundreds of cores. */
static char *read_cpuinfo(void)
{
	_cleanup_close_ int fd = open("/proc/cpuinfo", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	_cleanup_free_ char *buf = malloc(CPUINFO_MAX + 1);
	if (!buf)
		return NULL;
	size_t len = 0;
	while (len < CPUINFO_MAX) {
		ssize_t n = read(fd, buf + len, CPUINFO_MAX - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	buf[len] = '\0';
	return steal_pointer(&buf);
}

int mlfs_platform_host(struct mlfs_platform *out)
{
	struct utsname u;
	if (uname(&u) < 0) {
		memset(out, 0, sizeof *out);
		return -errno;
	}
	_cleanup_free_ char *cpuinfo = NULL;
	if (!strncasecmp(u.machine, "arm", 3) || !strcasecmp(u.machine, "x86_64"))
		cpuinfo = read_cpuinfo();
	return mlfs_platform_from_machine(u.machine, cpuinfo, out);
}

/* ---- ranking ----------------------------------------------------------- */

struct candidate {
	char arch[32];
	char variant[16];
};

/* Big enough for the longest vector: arm64/v9.9 gives 1 + 9 + 1 + 14 + 5. */
#define MAX_CANDIDATES 128

struct vector {
	size_t n;
	struct candidate c[MAX_CANDIDATES];
};

static void add(struct vector *v, const char *arch, const char *variant)
{
	if (v->n == MAX_CANDIDATES)
		return;
	struct mlfs_platform p = { 0 };
	SET(p.arch, arch);
	SET(p.variant, variant);
	mlfs_platform_normalize(&p);
	SET(v->c[v->n].arch, p.arch);
	SET(v->c[v->n].variant, p.variant);
	v->n++;
}

/* "vN" (or "vN" followed by `rest`): N, or -1.  Capped so that a silly
 * variant cannot make the vector long. */
static int variant_number(const char *s, const char **rest)
{
	int n = 0;
	if (s[0] != 'v' || !isdigit((unsigned char)s[1]))
		return -1;
	for (s++; isdigit((unsigned char)*s); s++) {
		n = n * 10 + (*s - '0');
		if (n > 99)
			return -1;
	}
	if (rest)
		*rest = s;
	else if (*s)
		return -1;
	return n;
}

static void arm_vector(struct vector *v, const char *variant)
{
	add(v, "arm", variant);
	int n = variant_number(variant, NULL);
	for (n--; n >= 5; n--) {
		char buf[16];
		snprintf(buf, sizeof buf, "v%d", n);
		add(v, "arm", buf);
	}
}

static void arm64_minors(struct vector *v, int major, int from_minor)
{
	for (int m = from_minor; m >= 0; m--) {
		char buf[16];
		if (m == 0)
			snprintf(buf, sizeof buf, "v%d", major);
		else
			snprintf(buf, sizeof buf, "v%d.%d", major, m);
		add(v, "arm64", buf);
	}
}

static void arm64_vector(struct vector *v, const struct mlfs_platform *want)
{
	char variant[sizeof want->variant];
	SET(variant, want->variant[0] ? want->variant : "v8");
	add(v, "arm64", want->variant);

	const char *rest;
	int major = variant_number(variant, &rest);
	if (major >= 8 && (*rest == '\0' || *rest == '.')) {
		int minor = 0;
		/* containerd reads a minor only from the four-character "vM.m". */
		if (strlen(variant) == 4 && rest[0] == '.' && isdigit((unsigned char)rest[1]))
			minor = rest[1] - '0';
		if (major == 9) {
			char buf[16];
			arm64_minors(v, 9, minor - 1);
			minor += 5;
			major = 8;
			snprintf(buf, sizeof buf, "v8.%d", minor);
			add(v, "arm64", buf);
		}
		arm64_minors(v, major, minor - 1);
	}
	if (!strncmp(variant, "v8.", 3) || !strncmp(variant, "v9.", 3))
		SET(variant, "v8");
	arm_vector(v, variant);
}

static void build_vector(struct vector *v, const struct mlfs_platform *want)
{
	v->n = 0;
	if (!strcmp(want->arch, "amd64")) {
		add(v, "amd64", want->variant);
		int n = variant_number(want->variant, NULL);
		for (n--; n >= 1; n--) {
			char buf[16];
			snprintf(buf, sizeof buf, "v%d", n);
			add(v, "amd64", buf);
		}
		add(v, "386", "");
	} else if (!strcmp(want->arch, "arm")) {
		arm_vector(v, want->variant);
	} else if (!strcmp(want->arch, "arm64")) {
		arm64_vector(v, want);
	} else {
		add(v, want->arch, want->variant);
	}
}

int mlfs_platform_rank(const struct mlfs_platform *want, const struct mlfs_platform *have)
{
	/* Cheap, and it spares callers a class of bug: an index entry that
	 * says "arm" without a variant is arm/v7. */
	struct mlfs_platform w = *want, h = *have;
	mlfs_platform_normalize(&w);
	mlfs_platform_normalize(&h);
	if (strcmp(w.os, h.os))
		return -1;

	struct vector v;
	build_vector(&v, &w);
	for (size_t i = 0; i < v.n; i++)
		if (!strcmp(v.c[i].arch, h.arch) && !strcmp(v.c[i].variant, h.variant))
			return (int)i;
	return -1;
}

void mlfs_platform_format(const struct mlfs_platform *p, char *buf, size_t len)
{
	if (!len)
		return;
	if (!p->os[0]) {
		snprintf(buf, len, "unknown");
		return;
	}
	bool ov = p->os_version[0], arch = p->arch[0], variant = arch && p->variant[0];
	snprintf(buf, len, "%s%s%s%s%s%s%s%s", p->os, ov ? "(" : "", p->os_version, ov ? ")" : "",
		 arch ? "/" : "", p->arch, variant ? "/" : "", variant ? p->variant : "");
}
