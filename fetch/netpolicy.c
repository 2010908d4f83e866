/* Where a request may go: the answer to blind SSRF through an image.
 *
 * Whoever writes an image picks its foreign-layer URLs, and whoever runs a
 * registry picks its redirects and token realm; the mount makes the
 * requests from the mounting host, inside its network.  So a destination
 * that is not the registry the user named is reached only when its address
 * is public (global unicast), with one relaxation for what the registry
 * chooses (redirects, token realms, never layer URLs): the same class as
 * the registry's own address.  A registry on a private network sending
 * blobs to object storage next to it (Harbor or GitLab with MinIO) keeps
 * working, a registry on loopback may send its clients to another loopback
 * port, and nothing reaches link-local addresses (cloud metadata at
 * 169.254.169.254) or goes from a public registry into the local network.
 * `insecure` lifts all of it.
 *
 * Addresses are classified as the kernel would route them: IPv4 in IPv6
 * (mapped, compatible, NAT64, 6to4) by the IPv4 address inside, 0.0.0.0 and
 * :: as loopback (connecting to them reaches this host).  Literals are
 * parsed with inet_pton only: "127.1" or "4294967423.0.0.1" are names, not
 * loopback (curl's URL parser rewrites numeric IPv4 forms into dotted quads
 * before they get here).  http.c applies the rule to the address a
 * connection actually uses, not to a name resolved beforehand. */
#include "fetch/internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

static enum mlfs_addr_class classify_v4(const unsigned char b[4])
{
	uint32_t a = (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
#define IN_NET(net, bits) ((a >> (32 - (bits))) == ((uint32_t)(net) >> (32 - (bits))))
	if (IN_NET(0x00000000, 8) || IN_NET(0x7f000000, 8))
		return MLFS_ADDR_LOOPBACK;     /* 0.0.0.0/8 ("this host"), 127/8 */
	if (IN_NET(0xa9fe0000, 16))
		return MLFS_ADDR_LINKLOCAL;    /* 169.254/16, where clouds keep their metadata service */
	if (a == 0x646464c8u)
		return MLFS_ADDR_LINKLOCAL;    /* 100.100.100.200: Alibaba Cloud's metadata service */
	if (IN_NET(0x0a000000, 8) || IN_NET(0xac100000, 12) || IN_NET(0xc0a80000, 16) ||
	    IN_NET(0x64400000, 10) || IN_NET(0xc6120000, 15) || IN_NET(0xc0000000, 24))
		return MLFS_ADDR_PRIVATE;      /* RFC 1918, CGNAT 100.64/10, 198.18/15, 192.0.0/24 */
	if (IN_NET(0xe0000000, 4) || IN_NET(0xf0000000, 4))
		return MLFS_ADDR_SPECIAL;      /* multicast, reserved, broadcast */
#undef IN_NET
	return MLFS_ADDR_PUBLIC;
}

static enum mlfs_addr_class classify_v6(const unsigned char b[16])
{
	static const unsigned char zero[12] = { 0 };
	static const unsigned char mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
	static const unsigned char nat64[12] = { 0, 0x64, 0xff, 0x9b };
	static const unsigned char ec2_metadata[16] = { 0xfd, 0, 0x0e, 0xc2, [14] = 0x02, [15] = 0x54 };
	if (!memcmp(b, zero, 12)) {
		if (!memcmp(b + 12, "\0\0\0\0", 4) || !memcmp(b + 12, "\0\0\0\1", 4))
			return MLFS_ADDR_LOOPBACK; /* ::, ::1 */
		if (b[12] == 0)
			return MLFS_ADDR_SPECIAL;  /* ::2 and the like: no IPv4 address inside */
		return classify_v4(b + 12);     /* IPv4-compatible (deprecated) */
	}
	if (!memcmp(b, mapped, 12) || !memcmp(b, nat64, 12))
		return classify_v4(b + 12);
	if (b[0] == 0x20 && b[1] == 0x02)
		return classify_v4(b + 2);      /* 6to4 */
	if (!memcmp(b, ec2_metadata, 16))
		return MLFS_ADDR_LINKLOCAL;     /* fd00:ec2::254: AWS's metadata service */
	if (b[0] == 0xfe && (b[1] & 0xc0) == 0x80)
		return MLFS_ADDR_LINKLOCAL;     /* fe80::/10 */
	if ((b[0] & 0xfe) == 0xfc || (b[0] == 0xfe && (b[1] & 0xc0) == 0xc0) ||
	    (b[0] == 0 && b[1] == 0x64 && b[2] == 0xff && b[3] == 0x9b && b[4] == 0 && b[5] == 1))
		return MLFS_ADDR_PRIVATE;       /* ULA fc00::/7, site-local fec0::/10, NAT64 local 64:ff9b:1::/48 */
	if (b[0] == 0xff)
		return MLFS_ADDR_SPECIAL;       /* multicast */
	return MLFS_ADDR_PUBLIC;
}

enum mlfs_addr_class mlfs_addr_classify(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET)
		return classify_v4((const unsigned char *)&((const struct sockaddr_in *)sa)->sin_addr);
	if (sa->sa_family == AF_INET6)
		return classify_v6(((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr);
	return MLFS_ADDR_SPECIAL;
}

int mlfs_ip_literal_class(const char *host, enum mlfs_addr_class *out)
{
	char buf[INET6_ADDRSTRLEN + 8];
	size_t n = strlen(host);
	if (n >= 2 && host[0] == '[' && host[n - 1] == ']') {
		host++;
		n -= 2;
	}
	if (n >= sizeof buf)
		return -EINVAL;
	memcpy(buf, host, n);
	buf[n] = '\0';
	/* A zone ("fe80::1%eth0") names a link: the address alone classifies it. */
	char *zone = strchr(buf, '%');
	if (zone)
		*zone = '\0';
	unsigned char a[16];
	if (inet_pton(AF_INET, buf, a) == 1) {
		*out = classify_v4(a);
		return 0;
	}
	if (inet_pton(AF_INET6, buf, a) == 1) {
		*out = classify_v6(a);
		return 0;
	}
	return -EINVAL;
}

bool mlfs_host_is_loopback(const char *hostport)
{
	char host[256];
	size_t n;
	if (hostport[0] == '[') {
		const char *end = strchr(hostport, ']');
		if (!end)
			return false;
		n = (size_t)(end - hostport) + 1; /* with the brackets */
		if (end[1] && end[1] != ':')
			return false;
	} else {
		n = strcspn(hostport, ":");
		if (hostport[n] && strchr(hostport + n + 1, ':'))
			return false; /* a bare IPv6 address is not a host:port */
	}
	if (n >= sizeof host)
		return false;
	memcpy(host, hostport, n);
	host[n] = '\0';
	if (!strcasecmp(host, "localhost"))
		return true;
	enum mlfs_addr_class c;
	return mlfs_ip_literal_class(host, &c) == 0 && c == MLFS_ADDR_LOOPBACK;
}

int mlfs_host_classes(const char *host, unsigned *mask)
{
	enum mlfs_addr_class c;
	if (mlfs_ip_literal_class(host, &c) == 0) {
		*mask = 1u << c;
		return 0;
	}
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *res = NULL;
	if (getaddrinfo(host, NULL, &hints, &res) != 0 || !res)
		return -EHOSTUNREACH;
	*mask = 0;
	for (struct addrinfo *ai = res; ai; ai = ai->ai_next)
		*mask |= 1u << mlfs_addr_classify(ai->ai_addr);
	freeaddrinfo(res);
	return 0;
}

bool mlfs_dest_allowed(enum mlfs_addr_class dest, enum mlfs_addr_class home, bool foreign)
{
	if (dest == MLFS_ADDR_PUBLIC)
		return true;
	if (foreign)
		return false;
	return (dest == MLFS_ADDR_PRIVATE || dest == MLFS_ADDR_LOOPBACK) && dest == home;
}

const char *mlfs_addr_class_name(enum mlfs_addr_class c)
{
	switch (c) {
	case MLFS_ADDR_PUBLIC: return "public";
	case MLFS_ADDR_PRIVATE: return "private";
	case MLFS_ADDR_LOOPBACK: return "loopback";
	case MLFS_ADDR_LINKLOCAL: return "link-local";
	default: return "special-purpose";
	}
}
