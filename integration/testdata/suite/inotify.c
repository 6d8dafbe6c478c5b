/* inotify: a child creates one file per step in a watched directory; the
 * parent reads an IN_CREATE event per file, in order, with the watch
 * descriptor it got at the start. */
#include "suite.h"
#include <sys/inotify.h>

int main(int argc, char **argv)
{
	char *dir, buf[4096] __attribute__((aligned(8)));
	int in, wd;
	long next = 1;
	pid_t k;
	suite_init(argc, argv);
	dir = scratch("watched");
	mkdir(dir, 0755);
	in = SYS(inotify_init1(IN_CLOEXEC));
	wd = SYS(inotify_add_watch(in, dir, IN_CREATE));
	k = SYS(fork());
	if (k == 0) {
		set_tag("child");
		for (long i = 1; i <= N; i++) {
			char name[PATH_MAX];
			int fd;
			snprintf(name, sizeof name, "%s/f%ld", dir, i);
			unlink(name); /* a restart may find it made after the checkpoint */
			fd = SYS(open(name, O_WRONLY | O_CREAT | O_EXCL, 0644));
			close(fd);
			say("created f%ld", i);
			tick();
		}
		_exit(0);
	}
	while (next <= N) {
		ssize_t n = read(in, buf, sizeof buf);
		if (n < 0 && errno == EINTR)
			continue;
		CHECK(n > 0, "read inotify: %s", strerror(errno));
		for (char *p = buf; p < buf + n;) {
			struct inotify_event *e = (struct inotify_event *)p;
			char want[32];
			snprintf(want, sizeof want, "f%ld", next);
			CHECK(e->wd == wd, "event for wd %d, the watch is %d", e->wd, wd);
			CHECK(e->mask == IN_CREATE, "event mask %#x, want IN_CREATE", e->mask);
			CHECK(e->len > 0 && strcmp(e->name, want) == 0, "event for %s, want %s", e->len ? e->name : "", want);
			say("event %s", want);
			next++;
			p += sizeof *e + e->len;
		}
	}
	reap(k, 0);
	done("%ld inotify events", N);
}
