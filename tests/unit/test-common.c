/* common/: digests, one-line error messages, whole small files. */
#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/digest.h"
#include "common/err.h"
#include "common/log.h"
#include "common/readfile.h"
#include "tap.h"

/* The one sanitiser, as every message and log line uses it: C0, DEL and
 * C1 controls (raw, or CSI as UTF-8 U+009B) never reach a terminal; what
 * was there shows as \xNN; valid UTF-8 text stays. */
static void test_untrusted_text(void)
{
	struct mlfs_err err = { 0 };
	mlfs_err_set(&err, EPROTO, "name %s", "a\x1b[2Jb\xc2\x9b" "31mc\x9b" "1md");
	tap_ok(!strchr(err.msg, 0x1b) && !strstr(err.msg, "\xc2\x9b") && !strchr(err.msg, (char)0x9b),
	       "err: no ESC, no C1 (raw or UTF-8)");
	tap_is_str(err.msg, "name a\\x1b[2Jb\\xc2\\x9b31mc\\x9b1md", "err: controls shown as \\xNN");
	mlfs_err_set(&err, EPROTO, "caf\xc3\xa9 \xe6\x97\xa5");
	tap_is_str(err.msg, "caf\xc3\xa9 \xe6\x97\xa5", "err: UTF-8 text kept");
	mlfs_err_set(&err, EPROTO, "%s", "abc\xe2\x80\xaexyz");
	tap_is_str(err.msg, "abc\\xe2\\x80\\xaexyz", "err: bidi override escaped");

	char buf[64];
	tap_is_str(mlfs_printable("a\x1b" "b\x7f" "c\td", buf, sizeof buf), "a\\x1bb\\x7fc\\x09d",
		   "printable: escapes");
	tap_is_str(mlfs_printable("\xc3\xa9t\xc3\xa9", buf, sizeof buf), "\xc3\xa9t\xc3\xa9", "printable: UTF-8 kept");
	tap_is_str(mlfs_printable("\xff\xc0\xaf", buf, sizeof buf), "\\xff\\xc0\\xaf", "printable: bad UTF-8 escaped");

	/* The logger escapes every line, whoever calls it. */
	char path[] = "/tmp/mlfs-test-log-XXXXXX";
	int fd = mkstemp(path), saved = dup(2);
	unlink(path);
	fflush(stderr);
	dup2(fd, 2);
	mlfs_log_setup(MLFS_LOG_WARN, 0, false);
	log_warn(MLFS_AREA_FETCH, "tar name %s!", "evil\x1b]0;title\x07\nsecond line\xc2\x9b");
	fflush(stderr);
	dup2(saved, 2);
	close(saved);
	char got[512] = "";
	ssize_t n = pread(fd, got, sizeof got - 1, 0);
	close(fd);
	got[n > 0 ? n : 0] = '\0';
	tap_is_str(got, "mlfs: warning: tar name evil\\x1b]0;title\\x07\\x0asecond line\\xc2\\x9b!\n",
		   "log: one escaped line");
}

/* A file of n bytes ('a' + i % 26), unlinked: its fd, at offset 0. */
static int file_of(size_t n)
{
	char path[] = "/tmp/mlfs-test-read-XXXXXX";
	int fd = mkstemp(path);
	unlink(path);
	for (size_t i = 0; i < n; i++) {
		char c = (char)('a' + i % 26);
		if (write(fd, &c, 1) != 1)
			return -1;
	}
	lseek(fd, 0, SEEK_SET);
	return fd;
}

/* Whole small files: up to max bytes, a NUL after them, and a buffer the
 * size of the file, never of max (why: common/readfile.c). */
static void test_read_whole(void)
{
	char *buf = NULL;
	size_t len = 99;
	int fd = file_of(0);
	tap_is_int(mlfs_read_whole(fd, 100, &buf, &len), 0, "read_whole: empty file");
	tap_ok(buf && len == 0 && buf[0] == '\0', "read_whole: empty, NUL-terminated");
	free(buf);
	close(fd);

	fd = file_of(10000);
	tap_is_int(mlfs_read_whole(fd, 10000, &buf, &len), 0, "read_whole: exactly max bytes");
	tap_ok(buf && len == 10000 && buf[9999] == (char)('a' + 9999 % 26) && buf[10000] == '\0',
	       "read_whole: every byte, then a NUL");
	free(buf);
	lseek(fd, 0, SEEK_SET);
	tap_is_int(mlfs_read_whole(fd, 9999, &buf, &len), -EFBIG, "read_whole: one byte over max");
	tap_ok(buf == NULL, "read_whole: nothing handed out on failure");
	close(fd);

	fd = file_of(100);
	tap_is_int(mlfs_read_whole(fd, 4u << 20, &buf, &len), 0, "read_whole: 100 bytes, max 4 MiB");
	tap_ok(buf && malloc_usable_size(buf) < 64 << 10, "read_whole: the buffer fits the file, not max (%zu bytes)",
	       buf ? malloc_usable_size(buf) : 0);
	free(buf);
	close(fd);

	int p[2];
	if (pipe(p) < 0)
		return;
	char chunk[5000];
	memset(chunk, 'x', sizeof chunk);
	tap_ok(write(p[1], chunk, sizeof chunk) == (ssize_t)sizeof chunk, "read_whole: pipe written");
	close(p[1]);
	tap_is_int(mlfs_read_whole(p[0], 1 << 20, &buf, &len), 0, "read_whole: a pipe, to its end");
	tap_ok(len == sizeof chunk && !memcmp(buf, chunk, len), "read_whole: the pipe's bytes");
	free(buf);
	close(p[0]);
}

int main(void)
{
	char d[MLFS_DIGEST_MAX];
	tap_is_int(mlfs_digest_buf("", 0, d), 0, "digest of empty buffer");
	tap_is_str(d, "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
		   "sha256 of empty string");
	tap_is_int(mlfs_digest_validate(d), 0, "valid digest");
	tap_is_int(mlfs_digest_validate("sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855"),
		   -EINVAL, "uppercase hex refused");
	tap_is_int(mlfs_digest_validate("sha256:abc"), -EINVAL, "short hex refused");
	tap_is_int(mlfs_digest_validate("sha512:abc"), -ENOTSUP, "other algorithm unsupported");
	tap_is_int(mlfs_digest_validate("nocolon"), -EINVAL, "no colon refused");
	tap_is_int(mlfs_digest_validate(":abc"), -EINVAL, "empty algorithm refused");
	tap_is_int(mlfs_digest_validate("SHA!:abc"), -EINVAL, "bad algorithm characters refused");
	/* Errors are one line, whatever text went into them. */
	struct mlfs_err err = { 0 };
	tap_is_int(mlfs_err_set(&err, EPROTO, "near '%s'", "a\nb\r\x1b[2J"), -EPROTO, "err_set returns -code");
	tap_ok(!strpbrk(err.msg, "\n\r\x1b"), "control characters removed: %s", err.msg);
	mlfs_err_wrap(&err, "ctx\n%d", 1);
	/* Control characters are escaped (common/escape.c), not blanked: the
	 * line still shows what was there. */
	tap_ok(!strchr(err.msg, '\n') && !strncmp(err.msg, "ctx\\x0a1: near", 14), "wrap keeps one line: %s",
	       err.msg);
	test_untrusted_text();
	test_read_whole();
	return tap_done();
}
