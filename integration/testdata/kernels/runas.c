/*
 * runas: run a command as another user, the way a login would, for the
 * kernel matrix's guest, whose busybox has no setpriv --reuid.
 *
 * usage: runas UID GID CMD [ARGS...]
 */
#define _GNU_SOURCE
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc < 4) {
		fprintf(stderr, "usage: %s UID GID CMD [ARGS...]\n", argv[0]);
		return 2;
	}
	uid_t uid = (uid_t)strtoul(argv[1], NULL, 10);
	gid_t gid = (gid_t)strtoul(argv[2], NULL, 10);
	if (setgroups(0, NULL) < 0 || setresgid(gid, gid, gid) < 0 || setresuid(uid, uid, uid) < 0) {
		fprintf(stderr, "runas: %s\n", strerror(errno));
		return 1;
	}
	execvp(argv[3], argv + 3);
	fprintf(stderr, "runas: exec %s: %s\n", argv[3], strerror(errno));
	return 127;
}
