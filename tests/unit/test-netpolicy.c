/* fetch/netpolicy.c: which destinations a request may reach (blind SSRF
 * through foreign-layer URLs, redirects and token realms), and host
 * literals parsed as the kernel would, not with sscanf. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

#include "fetch/internal.h"
#include "tap.h"

static int classify(const char *ip)
{
	enum mlfs_addr_class c;
	return mlfs_ip_literal_class(ip, &c) == 0 ? (int)c : -1;
}

int main(void)
{
	static const struct {
		const char *host;
		bool loopback;
	} lb[] = {
		{ "127.0.0.1:5000", true },  { "127.1.2.3", true },    { "localhost:5000", true },
		{ "LOCALHOST", true },       { "[::1]:5000", true },   { "[::1]", true },
		{ "[::ffff:127.0.0.1]:80", true },                     { "0.0.0.0:5000", true },
		/* 2^32 + 127: sscanf("%u") wrapped it to 127 */
		{ "4294967423.0.0.1:5000", false },                    { "4294967423.0.0.1", false },
		{ "127.0.0.1.evil.com:80", false },                    { "127.0.0.1x", false },
		{ "127.1:5000", false },     { "0x7f.0.0.1", false },  { "2130706433", false },
		{ "128.0.0.1", false },      { "10.0.0.1:5000", false }, { "registry.example.com", false },
		{ "localhost.evil.com", false },                       { "[::2]:5000", false },
		{ "[::1", false },           { "[::1]x", false },      { "127.0.0.256", false },
		{ "", false },
	};
	for (size_t i = 0; i < sizeof lb / sizeof lb[0]; i++) {
		tap_ok(mlfs_host_is_loopback(lb[i].host) == lb[i].loopback, "loopback(%s) == %d", lb[i].host,
		       lb[i].loopback);
	}

	static const struct {
		const char *ip;
		int cls;
	} cl[] = {
		{ "8.8.8.8", MLFS_ADDR_PUBLIC },          { "2606:4700::1111", MLFS_ADDR_PUBLIC },
		{ "[2001:db8::1]", MLFS_ADDR_PUBLIC },    { "172.32.0.1", MLFS_ADDR_PUBLIC },
		{ "127.0.0.1", MLFS_ADDR_LOOPBACK },      { "127.255.255.254", MLFS_ADDR_LOOPBACK },
		{ "0.0.0.0", MLFS_ADDR_LOOPBACK },        { "::", MLFS_ADDR_LOOPBACK },
		{ "::1", MLFS_ADDR_LOOPBACK },            { "::ffff:127.0.0.1", MLFS_ADDR_LOOPBACK },
		{ "::127.0.0.1", MLFS_ADDR_LOOPBACK },    { "64:ff9b::7f00:1", MLFS_ADDR_LOOPBACK },
		{ "2002:7f00:1::1", MLFS_ADDR_LOOPBACK },
		{ "10.1.2.3", MLFS_ADDR_PRIVATE },        { "172.16.0.1", MLFS_ADDR_PRIVATE },
		{ "172.31.255.255", MLFS_ADDR_PRIVATE },  { "192.168.1.1", MLFS_ADDR_PRIVATE },
		{ "100.64.0.1", MLFS_ADDR_PRIVATE },      { "fd12:3456::1", MLFS_ADDR_PRIVATE },
		{ "::ffff:10.0.0.1", MLFS_ADDR_PRIVATE }, { "fec0::1", MLFS_ADDR_PRIVATE },
		{ "169.254.169.254", MLFS_ADDR_LINKLOCAL }, { "fe80::1", MLFS_ADDR_LINKLOCAL },
		{ "fe80::1%eth0", MLFS_ADDR_LINKLOCAL },  { "::ffff:169.254.169.254", MLFS_ADDR_LINKLOCAL },
		{ "fd00:ec2::254", MLFS_ADDR_LINKLOCAL }, { "100.100.100.200", MLFS_ADDR_LINKLOCAL },
		{ "224.0.0.1", MLFS_ADDR_SPECIAL },       { "255.255.255.255", MLFS_ADDR_SPECIAL },
		{ "ff02::1", MLFS_ADDR_SPECIAL },
		{ "localhost", -1 },                      { "4294967423.0.0.1", -1 },
		{ "127.1", -1 },                          { "example.com", -1 },
	};
	for (size_t i = 0; i < sizeof cl / sizeof cl[0]; i++)
		tap_is_int(classify(cl[i].ip), cl[i].cls, cl[i].ip);

	struct sockaddr_in6 s6 = { .sin6_family = AF_INET6 };
	inet_pton(AF_INET6, "::ffff:169.254.169.254", &s6.sin6_addr);
	tap_is_int(mlfs_addr_classify((struct sockaddr *)&s6), MLFS_ADDR_LINKLOCAL, "sockaddr: mapped link-local");
	struct sockaddr_in s4 = { .sin_family = AF_INET };
	inet_pton(AF_INET, "192.168.0.7", &s4.sin_addr);
	tap_is_int(mlfs_addr_classify((struct sockaddr *)&s4), MLFS_ADDR_PRIVATE, "sockaddr: private");

	unsigned mask = 0;
	tap_ok(mlfs_host_classes("localhost", &mask) == 0 && mask == 1u << MLFS_ADDR_LOOPBACK,
	       "localhost resolves to loopback only");
	tap_ok(mlfs_host_classes("[fe80::1]", &mask) == 0 && mask == 1u << MLFS_ADDR_LINKLOCAL, "literal classes");

	/* The rule: public always; for the registry's choices (not an image's
	 * URLs) the registry's own private or loopback class too; link-local
	 * and special-purpose never. */
	enum mlfs_addr_class P = MLFS_ADDR_PUBLIC, V = MLFS_ADDR_PRIVATE, L = MLFS_ADDR_LOOPBACK,
			     K = MLFS_ADDR_LINKLOCAL, S = MLFS_ADDR_SPECIAL;
	tap_ok(mlfs_dest_allowed(P, P, false) && mlfs_dest_allowed(P, L, true), "public: allowed");
	tap_ok(!mlfs_dest_allowed(L, P, false) && !mlfs_dest_allowed(V, P, false) && !mlfs_dest_allowed(K, P, false),
	       "from a public registry: nothing internal");
	tap_ok(mlfs_dest_allowed(V, V, false) && !mlfs_dest_allowed(L, V, false) && !mlfs_dest_allowed(K, V, false),
	       "from a private registry: private only");
	tap_ok(mlfs_dest_allowed(L, L, false) && !mlfs_dest_allowed(V, L, false) && !mlfs_dest_allowed(K, L, false),
	       "from a loopback registry: loopback only");
	tap_ok(!mlfs_dest_allowed(K, K, false) && !mlfs_dest_allowed(S, S, false), "link-local, special: never");
	tap_ok(!mlfs_dest_allowed(L, L, true) && !mlfs_dest_allowed(V, V, true), "foreign URLs: public only");
	return tap_done();
}
