#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fetch/fetch.h"
#include "tap.h"

static struct mlfs_platform P(const char *os, const char *arch, const char *variant)
{
	struct mlfs_platform p = { 0 };
	snprintf(p.os, sizeof p.os, "%s", os);
	snprintf(p.arch, sizeof p.arch, "%s", arch);
	snprintf(p.variant, sizeof p.variant, "%s", variant);
	return p;
}

static const char *fmt(const struct mlfs_platform *p)
{
	static char buf[4][160]; /* a few live at once in one tap call */
	static int n;
	char *b = buf[n++ % 4];
	mlfs_platform_format(p, b, sizeof buf[0]);
	return b;
}

/* ---- parse ------------------------------------------------------------- */

static const struct {
	const char *in, *want;
} parse_good[] = {
	{ "linux/amd64", "linux/amd64" },
	{ "linux/x86_64", "linux/amd64" },
	{ "linux/x86-64", "linux/amd64" },
	{ "linux/amd64/v1", "linux/amd64" },
	{ "linux/amd64/v2", "linux/amd64/v2" },
	{ "linux/amd64/v3", "linux/amd64/v3" },
	{ "linux/arm64", "linux/arm64" },
	{ "linux/aarch64", "linux/arm64" },
	{ "linux/arm64/v8", "linux/arm64" },
	{ "linux/arm64/8", "linux/arm64" },
	{ "linux/arm64/v8.2", "linux/arm64/v8.2" },
	{ "linux/arm64/v9", "linux/arm64/v9" },
	{ "linux/arm", "linux/arm/v7" },
	{ "linux/arm/7", "linux/arm/v7" },
	{ "linux/arm/v7", "linux/arm/v7" },
	{ "linux/arm/v6", "linux/arm/v6" },
	{ "linux/arm/6", "linux/arm/v6" },
	{ "linux/arm/5", "linux/arm/v5" },
	{ "linux/arm/8", "linux/arm/v8" },
	{ "linux/armhf", "linux/arm/v7" },
	{ "linux/armel", "linux/arm/v6" },
	{ "linux/i386", "linux/386" },
	{ "linux/i686", "linux/386" },
	{ "linux/i586", "linux/386" },
	{ "linux/386", "linux/386" },
	{ "Linux/AMD64", "linux/amd64" },
	{ "LINUX/ARM/V6", "linux/arm/v6" },
	{ "macos/arm64", "darwin/arm64" },
	{ "freebsd/amd64", "freebsd/amd64" },
	{ "linux/riscv64", "linux/riscv64" },
	{ "linux/s390x", "linux/s390x" },
	{ "linux/ppc64le", "linux/ppc64le" },
	{ "linux/mips64le", "linux/mips64le" },
	{ "linux/loong64", "linux/loong64" },
	/* os/arch pairs are not checked against a list, as in containerd. */
	{ "linux/foo_bar-1", "linux/foo_bar-1" },
	{ "arm64", "linux/arm64" },
	{ "aarch64", "linux/arm64" },
	{ "amd64", "linux/amd64" },
	{ "x86_64", "linux/amd64" },
	{ "armhf", "linux/arm/v7" },
	{ "armel", "linux/arm/v6" },
	{ "arm", "linux/arm/v7" },
	{ "i386", "linux/386" },
	{ "riscv64", "linux/riscv64" },
	{ "s390x", "linux/s390x" },
	{ "windows(10.0.17763)/amd64", "windows(10.0.17763)/amd64" },
	{ "windows()/amd64", "windows/amd64" },
	{ "linux/arm64/v8.2-rc_1", "linux/arm64/v8.2-rc_1" },
};

static const struct {
	const char *in, *why;
} parse_bad[] = {
	{ "", "empty" },
	{ "/", "bad operating system" },
	{ "linux/", "bad architecture" },
	{ "/amd64", "bad operating system" },
	{ "linux//v7", "bad architecture" },
	{ "linux/amd64/", "bad variant" },
	{ "linux/amd64/v3/x", "too many" },
	{ "linux/amd64/v3/", "too many" },
	{ "linux amd64", "bad operating system" },
	{ "linux/amd64!", "bad architecture" },
	{ "linux/amd 64", "bad architecture" },
	{ "linux/arm/v7\n", "bad variant" },
	{ "*", "wildcards" },
	{ "linux/*", "wildcards" },
	{ "foo", "unknown operating system or architecture" },
	{ "amd46", "unknown operating system or architecture" },
	{ "amd64(1)", "unknown operating system" },
	{ "linux(/amd64", "unclosed" },
	{ "linux(1.0/amd64", "unclosed" },
	{ "linux(a b)/amd64", "bad OS version" },
	{ "linux(1)x/amd64", "text after ')'" },
	{ "li.nux/amd64", "bad operating system" },
	{ "linux/am\xc3\xa9" "d64", "bad architecture" },
	{ "linuxlinuxlinuxlinuxlinuxlinuxlinux/amd64", "operating system name too long" },
	{ "linux/amd64amd64amd64amd64amd64amd64amd64", "architecture name too long" },
	{ "linux/arm/v7v7v7v7v7v7v7v7v7", "variant too long" },
	{ "windows(10.0.17763.1234.10.0.17763.1234.10.0.17763.1234.10.0.17763.1234.1)/amd64", "OS version too long" },
};

static void check_bad(const char *in, const char *why)
{
	struct mlfs_platform p;
	struct mlfs_err err = { 0 };
	char name[200];
	snprintf(name, sizeof name, "refused: \"%s\"", in);
	for (char *c = name; *c; c++)
		if ((unsigned char)*c < 0x20 || (unsigned char)*c >= 0x7f)
			*c = '?';
	int r = mlfs_platform_parse(in, &p, &err);
	tap_ok(r == -EINVAL && err.code == EINVAL, "%s", name);
	bool said = strstr(err.msg, why) != NULL;
	tap_ok(said, "  says \"%s\"", why);
	if (!said)
		tap_diag("message: %s", err.msg);
	tap_ok(!strncmp(err.msg, "invalid platform \"", 18) && !strchr(err.msg, '\n'),
	       "  one line naming the platform");
	tap_ok(!p.os[0] && !p.arch[0] && !p.variant[0], "  out left empty");
}

static void test_parse(void)
{
	for (size_t i = 0; i < sizeof parse_good / sizeof parse_good[0]; i++) {
		struct mlfs_platform p;
		struct mlfs_err err = { 0 };
		int r = mlfs_platform_parse(parse_good[i].in, &p, &err);
		tap_ok(r == 0, "parse \"%s\"", parse_good[i].in);
		if (r < 0) {
			tap_diag("%s", err.msg);
			continue;
		}
		char name[200];
		snprintf(name, sizeof name, "  is %s", parse_good[i].want);
		tap_is_str(fmt(&p), parse_good[i].want, name);

		struct mlfs_platform again;
		tap_ok(mlfs_platform_parse(fmt(&p), &again, NULL) == 0 &&
			       !strcmp(fmt(&again), fmt(&p)),
		       "  formatted form re-parses to itself");
	}

	for (size_t i = 0; i < sizeof parse_bad / sizeof parse_bad[0]; i++)
		check_bad(parse_bad[i].in, parse_bad[i].why);
	struct mlfs_platform p;
	tap_is_int(mlfs_platform_parse(NULL, &p, NULL), -EINVAL, "NULL refused");

	tap_is_int(mlfs_platform_parse("windows(10.0.17763)/amd64", &p, NULL), 0, "windows with version");
	tap_is_str(p.os_version, "10.0.17763", "  os_version kept");
	tap_is_str(p.os, "windows", "  os without the version");

	/* A bare OS means this machine's architecture. */
	struct mlfs_platform host;
	if (mlfs_platform_host(&host) == 0) {
		tap_is_int(mlfs_platform_parse("linux", &p, NULL), 0, "parse \"linux\"");
		tap_ok(!strcmp(p.os, "linux") && !strcmp(p.arch, host.arch) &&
			       !strcmp(p.variant, host.variant),
		       "  linux/ + the host's architecture (%s)", fmt(&p));
		tap_is_int(mlfs_platform_parse("Windows", &p, NULL), 0, "parse \"Windows\"");
		tap_ok(!strcmp(p.os, "windows") && !strcmp(p.arch, host.arch),
		       "  windows/ + the host's architecture (%s)", fmt(&p));
	}
}

/* ---- normalize --------------------------------------------------------- */

static void test_normalize(void)
{
	static const struct {
		const char *os, *arch, *variant, *want;
	} cases[] = {
		{ "linux", "aarch64", "v8", "linux/arm64" },
		{ "linux", "arm64", "8", "linux/arm64" },
		{ "linux", "arm64", "v8.0", "linux/arm64" },
		{ "linux", "arm64", "v8.1", "linux/arm64/v8.1" },
		{ "LINUX", "ARM", "", "linux/arm/v7" },
		{ "linux", "arm", "8", "linux/arm/v8" },
		{ "linux", "arm", "5", "linux/arm/v5" },
		{ "linux", "arm", "v9", "linux/arm/v9" },
		{ "linux", "arm", "V6", "linux/arm/v6" },
		{ "linux", "armhf", "", "linux/arm/v7" },
		{ "linux", "armel", "v7", "linux/arm/v6" },
		{ "linux", "i686", "v1", "linux/386" },
		{ "linux", "i386", "", "linux/386" },
		{ "macOS", "x86_64", "V1", "darwin/amd64" },
		{ "linux", "x86-64", "v2", "linux/amd64/v2" },
		{ "linux", "amd64", "v4", "linux/amd64/v4" },
		{ "linux", "riscv64", "", "linux/riscv64" },
		{ "Plan9", "MIPS64LE", "", "plan9/mips64le" },
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		struct mlfs_platform p = P(cases[i].os, cases[i].arch, cases[i].variant);
		char name[200];
		mlfs_platform_normalize(&p);
		snprintf(name, sizeof name, "normalize %s/%s/%s", cases[i].os, cases[i].arch,
			 cases[i].variant);
		tap_is_str(fmt(&p), cases[i].want, name);
		struct mlfs_platform q = p;
		mlfs_platform_normalize(&q);
		tap_ok(!memcmp(&p, &q, sizeof p), "  idempotent");
	}
}

/* ---- host detection ---------------------------------------------------- */

static const char pi1_cpuinfo[] =
	"processor\t: 0\n"
	"model name\t: ARMv6-compatible processor rev 7 (v6l)\n"
	"BogoMIPS\t: 697.95\n"
	"Features\t: half thumb fastmult vfp edsp java tls \n"
	"CPU implementer\t: 0x41\n"
	"CPU architecture: 7\n"
	"CPU variant\t: 0x0\n"
	"CPU part\t: 0xb76\n"
	"\n"
	"Hardware\t: BCM2835\n";

static const char pi3_32bit_cpuinfo[] =
	"processor\t: 0\n"
	"model name\t: ARMv7 Processor rev 4 (v7l)\n"
	"BogoMIPS\t: 38.40\n"
	"Features\t: half thumb fastmult vfp edsp neon vfpv3 tls vfpv4 idiva idivt vfpd32 lpae evtstrm crc32 \n"
	"CPU implementer\t: 0x41\n"
	"CPU architecture: 7\n";

static const char armv8l_cpuinfo[] =
	"processor\t: 0\n"
	"BogoMIPS\t: 108.00\n"
	"Features\t: half thumb fastmult vfp edsp neon vfpv3 tls vfpv4 idiva idivt lpae evtstrm aes pmull sha1 sha2 crc32\n"
	"CPU implementer\t: 0x41\n"
	"CPU architecture: 8\n"
	"CPU variant\t: 0x0\n";

static const char arm64_cpuinfo[] =
	"processor\t: 0\n"
	"BogoMIPS\t: 50.00\n"
	"Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid\n"
	"CPU implementer\t: 0x41\n"
	"CPU architecture: 8\n";

static const char armv5_cpuinfo[] =
	"Processor\t: Feroceon 88FR131 rev 1 (v5l)\n"
	"BogoMIPS\t: 1191.11\n"
	"Features\t: swp half thumb fastmult edsp \n"
	"CPU implementer\t: 0x56\n"
	"CPU architecture: 5TE\n";

#define X86_V1 "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 syscall nx lm"
#define X86_V2 X86_V1 " pni ssse3 cx16 sse4_1 sse4_2 popcnt lahf_lm"
#define X86_V3 X86_V2 " avx avx2 bmi1 bmi2 f16c fma abm movbe xsave"
#define X86_V4 X86_V3 " avx512f avx512dq avx512cd avx512bw avx512vl"

static const struct {
	const char *machine, *cpuinfo, *want, *name;
} machines[] = {
	{ "x86_64", NULL, "linux/amd64", "x86_64 without cpuinfo" },
	{ "x86_64", "processor\t: 0\nflags\t\t: " X86_V1 "\n", "linux/amd64", "x86_64 baseline" },
	{ "x86_64", "processor\t: 0\nflags\t\t: " X86_V2 "\n", "linux/amd64/v2", "x86_64 level 2" },
	{ "x86_64", "processor\t: 0\nflags\t\t: " X86_V3 "\nbugs\t\t: spectre_v1\n", "linux/amd64/v3", "x86_64 level 3" },
	{ "x86_64", "processor\t: 0\nflags\t\t: " X86_V4 " \n", "linux/amd64/v4", "x86_64 level 4" },
	{ "x86_64", "flags\t\t: " X86_V2 " avx avx2-x bmi1 bmi2 f16c fma abm movbe xsave\n", "linux/amd64/v2", "x86_64 flags matched as whole words" },
	{ "aarch64", NULL, "linux/arm64", "aarch64" },
	{ "aarch64", arm64_cpuinfo, "linux/arm64", "aarch64 with cpuinfo" },
	{ "armv8l", armv8l_cpuinfo, "linux/arm/v8", "armv8l (32-bit on a v8 CPU)" },
	{ "armv8l", NULL, "linux/arm/v8", "armv8l without cpuinfo" },
	{ "armv7l", NULL, "linux/arm/v7", "armv7l without cpuinfo" },
	{ "armv7l", pi3_32bit_cpuinfo, "linux/arm/v7", "armv7l, Raspberry Pi 3 in 32-bit" },
	{ "armv6l", pi1_cpuinfo, "linux/arm/v6", "Raspberry Pi 1: architecture 7 but ARMv6-compatible" },
	{ "armv7l", pi1_cpuinfo, "linux/arm/v6", "ARMv6-compatible wins over uname" },
	{ "armv6l", NULL, "linux/arm/v6", "armv6l without cpuinfo" },
	{ "armv5tel", armv5_cpuinfo, "linux/arm/v5", "armv5tel, architecture 5TE" },
	{ "armv5tel", NULL, "linux/arm/v5", "armv5tel without cpuinfo" },
	{ "armv7l", "cpu architecture\t: 6\n", "linux/arm/v6", "cpuinfo key in any case" },
	{ "armv7l", "CPU architecture: 5TEJ\n", "linux/arm/v5", "architecture 5TEJ" },
	{ "armv7l", "CPU architecture: 7M\n", "linux/arm/v7", "architecture 7M" },
	{ "armv7l", "CPU architecture: ?(12)\n", "linux/arm/v7", "architecture ?(12)" },
	{ "armv7l", "CPU architecture: weird\n", "linux/arm/v7", "unknown cpuinfo value falls back to uname" },
	{ "armv7l", "processor\t: 0\nflags\t\t: fpu\n", "linux/arm/v7", "qemu-user: the host's cpuinfo" },
	{ "armv7l", "", "linux/arm/v7", "empty cpuinfo" },
	{ "i686", NULL, "linux/386", "i686" },
	{ "i386", NULL, "linux/386", "i386" },
	{ "i586", NULL, "linux/386", "i586" },
	{ "s390x", NULL, "linux/s390x", "s390x" },
	{ "ppc64le", NULL, "linux/ppc64le", "ppc64le" },
	{ "ppc64", NULL, "linux/ppc64", "ppc64" },
	{ "riscv64", NULL, "linux/riscv64", "riscv64" },
	{ "mips64", NULL, "linux/mips64", "mips64" },
	{ "mips64el", NULL, "linux/mips64le", "mips64el" },
	{ "mipsel", NULL, "linux/mipsle", "mipsel" },
	{ "loongarch64", NULL, "linux/loong64", "loongarch64" },
};

static void test_from_machine(void)
{
	for (size_t i = 0; i < sizeof machines / sizeof machines[0]; i++) {
		struct mlfs_platform p;
		int r = mlfs_platform_from_machine(machines[i].machine, machines[i].cpuinfo, &p);
		tap_ok(r == 0, "machine %s", machines[i].name);
		if (r == 0)
			tap_is_str(fmt(&p), machines[i].want, "  platform");
	}

	struct mlfs_platform p;
	tap_is_int(mlfs_platform_from_machine("sparc", NULL, &p), -ENOTSUP, "unknown machine: ENOTSUP");
	tap_ok(!p.os[0] && !p.arch[0], "  out left empty");
	tap_is_int(mlfs_platform_from_machine("armvx", NULL, &p), -ENOTSUP, "armvx: ENOTSUP");
	tap_is_int(mlfs_platform_from_machine("armv9l", "CPU architecture: 12\n", &p), -ENOTSUP,
		   "unknown arm generation: ENOTSUP");
	tap_is_int(mlfs_platform_from_machine("", NULL, &p), -EINVAL, "empty machine: EINVAL");
	tap_is_int(mlfs_platform_from_machine(NULL, NULL, &p), -EINVAL, "NULL machine: EINVAL");

	struct mlfs_platform host;
	tap_is_int(mlfs_platform_host(&host), 0, "host platform detected");
	tap_diag("host: %s", fmt(&host));
	tap_is_str(host.os, "linux", "  host os is linux");
	tap_ok(host.arch[0] != '\0', "  host arch set");
	tap_is_int(mlfs_platform_rank(&host, &host), 0, "  host ranks itself 0");
}

/* ---- rank -------------------------------------------------------------- */

static const struct {
	const char *want, *have;
	int rank;
} ranks[] = {
	{ "linux/amd64", "linux/amd64", 0 },
	{ "linux/amd64", "linux/amd64/v1", 0 },
	{ "linux/amd64", "linux/386", 1 },
	{ "linux/amd64", "linux/amd64/v2", -1 },
	{ "linux/amd64", "linux/arm64", -1 },
	{ "linux/amd64/v3", "linux/amd64/v3", 0 },
	{ "linux/amd64/v3", "linux/amd64/v2", 1 },
	{ "linux/amd64/v3", "linux/amd64", 2 },
	{ "linux/amd64/v3", "linux/386", 3 },
	{ "linux/amd64/v3", "linux/amd64/v4", -1 },
	{ "linux/amd64/v2", "linux/386", 2 },
	{ "linux/386", "linux/386", 0 },
	{ "linux/386", "linux/amd64", -1 },
	{ "linux/arm64", "linux/arm64", 0 },
	{ "linux/arm64", "linux/arm64/v8", 0 },
	{ "linux/arm64", "linux/aarch64", 0 },
	{ "linux/arm64", "linux/arm/v8", 1 },
	{ "linux/arm64", "linux/arm/v7", 2 },
	{ "linux/arm64", "linux/arm", 2 },
	{ "linux/arm64", "linux/armhf", 2 },
	{ "linux/arm64", "linux/arm/v6", 3 },
	{ "linux/arm64", "linux/armel", 3 },
	{ "linux/arm64", "linux/arm/v5", 4 },
	{ "linux/arm64", "linux/arm/v4", -1 },
	{ "linux/arm64", "linux/arm64/v8.2", -1 },
	{ "linux/arm64", "linux/amd64", -1 },
	{ "linux/arm/v7", "linux/arm/v7", 0 },
	{ "linux/arm/v7", "linux/arm", 0 },
	{ "linux/arm/v7", "linux/arm/v6", 1 },
	{ "linux/arm/v7", "linux/arm/v5", 2 },
	{ "linux/arm/v7", "linux/arm/v8", -1 },
	{ "linux/arm/v7", "linux/arm64", -1 },
	{ "linux/arm/v8", "linux/arm/v7", 1 },
	{ "linux/arm/v8", "linux/arm/v5", 3 },
	{ "linux/arm/v6", "linux/arm/v7", -1 },
	{ "linux/arm/v6", "linux/arm/v5", 1 },
	{ "linux/arm/v5", "linux/arm/v5", 0 },
	{ "linux/arm/v5", "linux/arm/v6", -1 },
	{ "linux/arm64/v8.2", "linux/arm64/v8.2", 0 },
	{ "linux/arm64/v8.2", "linux/arm64/v8.1", 1 },
	{ "linux/arm64/v8.2", "linux/arm64", 2 },
	{ "linux/arm64/v8.2", "linux/arm/v8", 3 },
	{ "linux/arm64/v8.2", "linux/arm/v7", 4 },
	{ "linux/arm64/v8.2", "linux/arm64/v8.3", -1 },
	{ "linux/arm64/v9", "linux/arm64/v8.5", 1 },
	{ "linux/arm64/v9", "linux/arm64/v8.1", 5 },
	{ "linux/arm64/v9", "linux/arm64", 6 },
	{ "linux/arm64/v9.2", "linux/arm64/v9.1", 1 },
	{ "linux/arm64/v9.2", "linux/arm64/v9", 2 },
	{ "linux/arm64/v9.2", "linux/arm64/v8.7", 3 },
	{ "linux/arm64/v9.2", "linux/arm64", 10 },
	{ "linux/arm64/v9.2", "linux/arm/v8", 11 },
	{ "linux/arm64/v9.2", "linux/arm/v5", 14 },
	{ "windows/amd64", "linux/amd64", -1 },
	{ "linux/amd64", "windows/amd64", -1 },
	{ "linux/riscv64", "linux/riscv64", 0 },
	{ "linux/ppc64le", "linux/ppc64", -1 },
	{ "linux/s390x", "linux/s390x", 0 },
};

static void test_rank(void)
{
	for (size_t i = 0; i < sizeof ranks / sizeof ranks[0]; i++) {
		struct mlfs_platform w, h;
		char name[200];
		int rw = mlfs_platform_parse(ranks[i].want, &w, NULL);
		int rh = mlfs_platform_parse(ranks[i].have, &h, NULL);
		snprintf(name, sizeof name, "rank of %s for %s", ranks[i].have, ranks[i].want);
		tap_is_int(rw || rh ? -99 : mlfs_platform_rank(&w, &h), ranks[i].rank, name);
	}

	/* Descriptors straight out of JSON are not normalised. */
	struct mlfs_platform w = P("linux", "arm64", ""), h = P("linux", "arm", "");
	tap_is_int(mlfs_platform_rank(&w, &h), 2, "arm without variant is v7 for an arm64 host");
	h = P("Linux", "x86_64", "");
	w = P("linux", "amd64", "");
	tap_is_int(mlfs_platform_rank(&w, &h), 0, "Linux/x86_64 is linux/amd64");
	w = P("linux", "amd64", "v99");
	h = P("linux", "386", "");
	tap_is_int(mlfs_platform_rank(&w, &h), 99, "amd64/v99 still falls back to 386");
	w = P("linux", "amd64", "v100000");
	tap_is_int(mlfs_platform_rank(&w, &h), 1, "absurd amd64 level: no intermediate levels");
	w = P("linux", "arm", "v100000");
	h = P("linux", "arm", "v5");
	tap_is_int(mlfs_platform_rank(&w, &h), -1, "absurd arm level: no fallback");
}

/* ---- format ------------------------------------------------------------ */

static void test_format(void)
{
	struct mlfs_platform p = P("linux", "arm", "v7");
	char buf[8];
	mlfs_platform_format(&p, buf, sizeof buf);
	tap_is_str(buf, "linux/a", "format truncates and terminates");
	buf[0] = 'x';
	mlfs_platform_format(&p, buf, 0);
	tap_ok(buf[0] == 'x', "format with len 0 writes nothing");
	p = P("", "", "");
	tap_is_str(fmt(&p), "unknown", "empty platform formats as unknown");
	p = P("linux", "", "v7");
	tap_is_str(fmt(&p), "linux", "no arch: the variant is not shown");
	p = P("windows", "amd64", "");
	snprintf(p.os_version, sizeof p.os_version, "10.0.20348.1");
	tap_is_str(fmt(&p), "windows(10.0.20348.1)/amd64", "os version in parentheses");
}

/* ---- select ------------------------------------------------------------ */

struct entry {
	const char *platform; /* NULL: no platform */
};

static struct mlfs_index *make_index(const char *const *platforms, size_t n)
{
	struct mlfs_index *idx = calloc(1, sizeof *idx);
	idx->media = MLFS_MEDIA_OCI_INDEX;
	idx->n_manifests = n;
	idx->manifests = calloc(n ? n : 1, sizeof *idx->manifests);
	for (size_t i = 0; i < n; i++) {
		struct mlfs_descriptor *d = &idx->manifests[i];
		d->media = MLFS_MEDIA_OCI_MANIFEST;
		snprintf(d->digest, sizeof d->digest, "sha256:%064zx", i);
		d->size = 1000;
		if (!platforms[i])
			continue;
		d->has_platform = true;
		/* Fill the struct by hand, un-normalised, as a JSON decoder would. */
		char tmp[128], *save = NULL;
		snprintf(tmp, sizeof tmp, "%s", platforms[i]);
		char *os = strtok_r(tmp, "/", &save), *arch = strtok_r(NULL, "/", &save),
		     *variant = strtok_r(NULL, "/", &save);
		d->platform = P(os ? os : "", arch ? arch : "", variant ? variant : "");
	}
	return idx;
}

static void free_index(struct mlfs_index *idx)
{
	free(idx->manifests);
	free(idx);
}

#define N(a) (sizeof(a) / sizeof((a)[0]))

static void check_select(const char *const *platforms, size_t n, const char *want, int expect,
			 const char *name)
{
	struct mlfs_index *idx = make_index(platforms, n);
	struct mlfs_platform w;
	struct mlfs_err err = { 0 };
	size_t chosen = 12345;
	mlfs_platform_parse(want, &w, NULL);
	int r = mlfs_platform_select(idx, &w, &chosen, &err);
	if (expect >= 0) {
		tap_ok(r == 0 && chosen == (size_t)expect, "%s", name);
		if (r != 0 || chosen != (size_t)expect)
			tap_diag("r=%d chosen=%zu err=%s", r, chosen, err.msg);
	} else {
		tap_ok(r == -ENOENT && err.code == ENOENT, "%s", name);
	}
	free_index(idx);
}

static void test_select(void)
{
	static const char *const multi[] = { "linux/amd64", "linux/arm64/v8", "linux/arm/v7",
					     "unknown/unknown", "linux/arm/v6", "linux/ppc64le" };
	check_select(multi, N(multi), "linux/amd64", 0, "select amd64");
	check_select(multi, N(multi), "linux/arm64", 1, "select arm64 (index says arm64/v8)");
	check_select(multi, N(multi), "linux/arm/v7", 2, "select arm/v7");
	check_select(multi, N(multi), "linux/arm/v8", 2, "arm/v8 falls back to arm/v7");
	check_select(multi, N(multi), "linux/arm/v6", 4, "select arm/v6");
	check_select(multi, N(multi), "linux/arm/v5", -1, "no arm/v5");
	check_select(multi, N(multi), "linux/386", -1, "386 does not run amd64");
	check_select(multi, N(multi), "linux/amd64/v3", 0, "amd64/v3 takes plain amd64");
	check_select(multi, N(multi), "linux/ppc64le", 5, "select ppc64le");
	check_select(multi, N(multi), "windows/amd64", -1, "os must match");

	static const char *const fallback_first[] = { "linux/386", "linux/amd64" };
	check_select(fallback_first, 2, "linux/amd64", 1, "exact match beats an earlier fallback");
	check_select(fallback_first, 2, "linux/amd64/v2", 1, "amd64 beats 386 for amd64/v2");

	static const char *const levels[] = { "linux/amd64", "linux/amd64/v3", "linux/amd64/v2" };
	check_select(levels, 3, "linux/amd64/v3", 1, "amd64/v3 host takes the v3 build");
	check_select(levels, 3, "linux/amd64/v2", 2, "amd64/v2 host takes the v2 build");
	check_select(levels, 3, "linux/amd64", 0, "baseline host takes the baseline build");

	static const char *const arms[] = { "linux/arm/v6", "linux/arm/v7" };
	check_select(arms, 2, "linux/arm64", 1, "arm64 prefers arm/v7 to arm/v6");
	static const char *const old_arms[] = { "linux/arm/v5", "linux/arm/v6" };
	check_select(old_arms, 2, "linux/arm/v7", 1, "arm/v7 prefers v6 to v5");

	static const char *const twins[] = { "linux/amd64", "linux/amd64" };
	check_select(twins, 2, "linux/amd64", 0, "ties keep index order");
	static const char *const twin_fallbacks[] = { "linux/arm64", "linux/arm/v7", "linux/arm/v7" };
	check_select(twin_fallbacks + 1, 2, "linux/arm64", 0, "tied fallbacks keep index order");

	static const char *const no_variant[] = { "linux/arm", "linux/arm64" };
	check_select(no_variant, 2, "linux/arm/v7", 0, "arm without variant is arm/v7");
	static const char *const raw[] = { "Linux/x86_64", "linux/aarch64" };
	check_select(raw, 2, "linux/arm64", 1, "un-normalised index entries are normalised");
	check_select(raw, 2, "linux/amd64", 0, "x86_64 in an index is amd64");

	static const char *const attest[] = { "unknown/unknown", "linux/amd64" };
	check_select(attest, 2, "linux/amd64", 1, "attestation manifests skipped");
	static const char *const unknown_arch[] = { "linux/unknown", "linux/amd64" };
	check_select(unknown_arch, 2, "linux/amd64", 1, "arch unknown skipped");
	static const char *const none[] = { NULL, "linux/amd64" };
	check_select(none, 2, "linux/amd64", 1, "entries without platform skipped");
	static const char *const only_386[] = { "linux/386" };
	check_select(only_386, 1, "linux/amd64/v3", 0, "amd64/v3 runs 386 as a last resort");

	/* The message the user reads. */
	static const char *const three[] = { "linux/amd64", "unknown/unknown", "linux/arm64",
					     "linux/arm/v7", "linux/amd64", NULL };
	struct mlfs_index *idx = make_index(three, N(three));
	struct mlfs_platform w;
	struct mlfs_err err = { 0 };
	size_t chosen;
	mlfs_platform_parse("linux/riscv64", &w, NULL);
	tap_is_int(mlfs_platform_select(idx, &w, &chosen, &err), -ENOENT, "no riscv64: ENOENT");
	tap_is_str(err.msg,
		   "no matching platform for linux/riscv64: the image has linux/amd64, linux/arm64, "
		   "linux/arm/v7 (choose one with --platform, or -o platform= for a mount)",
		   "  message lists what there is, once each");
	free_index(idx);

	static const char *const only_attest[] = { "unknown/unknown", NULL };
	idx = make_index(only_attest, N(only_attest));
	mlfs_platform_parse("linux/amd64", &w, NULL);
	tap_is_int(mlfs_platform_select(idx, &w, &chosen, &err), -ENOENT, "nothing selectable: ENOENT");
	tap_ok(strstr(err.msg, "names no platform") != NULL, "  message says so");
	free_index(idx);

	idx = make_index(NULL, 0);
	tap_is_int(mlfs_platform_select(idx, &w, &chosen, &err), -ENOENT, "empty index: ENOENT");
	free_index(idx);

	/* Many platforms: the list is cut, the message stays one bounded line. */
	static char names[80][32];
	const char *many[80];
	for (int i = 0; i < 80; i++) {
		snprintf(names[i], sizeof names[i], "linux/arch%d/v%d", i, i);
		many[i] = names[i];
	}
	idx = make_index(many, 80);
	tap_is_int(mlfs_platform_select(idx, &w, &chosen, &err), -ENOENT, "80 platforms, none matching");
	tap_ok(strstr(err.msg, "linux/arch0/v0, linux/arch1/v1") != NULL && strstr(err.msg, ", ...") &&
		       strlen(err.msg) < sizeof err.msg - 1,
	       "  long list shortened with ...");
	free_index(idx);

	tap_is_int(mlfs_platform_select(NULL, &w, &chosen, &err), -EINVAL, "NULL index: EINVAL");
}

int main(void)
{
	test_parse();
	test_normalize();
	test_from_machine();
	test_rank();
	test_format();
	test_select();
	return tap_done();
}
