/* vforkexec: the parent vforks and execs this program again as a child that
 * counts; both count and the parent reaps it. */
#include "suite.h"

int main(int argc, char **argv)
{
	pid_t c;
	char self[PATH_MAX];
	ssize_t n;
	suite_init(argc, argv);
	if (argc == 4) {
		set_tag("exec");
		CHECK(getppid() == atoi(argv[3]), "exec'ed child's parent is %d, want %s", getppid(), argv[3]);
		count_loop(N);
		return 3;
	}
	n = SYS(readlink("/proc/self/exe", self, sizeof self - 1));
	self[n] = 0;
	char ppid[16];
	snprintf(ppid, sizeof ppid, "%d", getpid());
	c = vfork();
	if (c == 0) {
		execl(self, self, argv[1], argv[2], ppid, (char *)NULL);
		_exit(127);
	}
	SYS(c);
	count_loop(N);
	reap(c, 3);
	done("vfork+exec child exited 3");
}
