/* A program as old 32-bit binaries are: built without large-file support
 * (no _FILE_OFFSET_BITS=64), so stat() and readdir() fail with EOVERFLOW
 * on any inode number above 2^32 - 1.
 *
 *   stat32 PATH...   stat() each path (no listing: answered before the
 *                    layers are merged), then walk each one that is a
 *                    directory with opendir/readdir/lstat.
 * Prints one line per failure ("ERR <errno name> <call> <path>") and a
 * last line "entries N errors N overflows N"; exits 0 even with errors. */
#ifdef _FILE_OFFSET_BITS
#error "built with large-file support: this program must not be"
#endif
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

static unsigned long entries, errors, overflows;

static void fail(const char *call, const char *path)
{
	int e = errno;
	errors++;
	overflows += e == EOVERFLOW;
	printf("ERR %s %s %s\n", e == EOVERFLOW ? "EOVERFLOW" : strerror(e), call, path);
}

static void walk(const char *dir, int depth)
{
	DIR *d = opendir(dir);
	if (!d) {
		fail("opendir", dir);
		return;
	}
	for (;;) {
		errno = 0;
		struct dirent *de = readdir(d);
		if (!de) {
			if (errno)
				fail("readdir", dir);
			break;
		}
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		char path[4096];
		snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
		entries++;
		struct stat st;
		if (lstat(path, &st) < 0) {
			fail("lstat", path);
			continue;
		}
		if (S_ISDIR(st.st_mode) && depth < 64)
			walk(path, depth + 1);
	}
	closedir(d);
}

int main(int argc, char **argv)
{
	struct stat st;
	for (int i = 1; i < argc; i++)
		if (stat(argv[i], &st) < 0)
			fail("stat", argv[i]);
	for (int i = 1; i < argc; i++)
		if (stat(argv[i], &st) == 0 && S_ISDIR(st.st_mode))
			walk(argv[i], 0);
	printf("entries %lu errors %lu overflows %lu\n", entries, errors, overflows);
	return 0;
}
