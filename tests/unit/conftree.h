/* Configuration files written under a throwaway root, for the tests of
 * what reads /etc/containers, /etc/containerd and /etc/docker. */
#pragma once
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common/dirs.h"

#define CT_UNUSED __attribute__((unused))

/* root/rel holding text, its directories made. */
static CT_UNUSED void conftree_put(const char *root, const char *rel, const char *text)
{
	char path[512], dir[512];
	snprintf(path, sizeof path, "%s/%s", root, rel);
	snprintf(dir, sizeof dir, "%s", path);
	*strrchr(dir, '/') = '\0';
	mlfs_mkdir_p(dir, 0755);
	FILE *f = fopen(path, "we");
	fputs(text, f);
	fclose(f);
}

static CT_UNUSED void conftree_drop(const char *root, const char *rel)
{
	char path[512];
	snprintf(path, sizeof path, "%s/%s", root, rel);
	unlink(path);
}
