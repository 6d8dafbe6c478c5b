/* zombie: a child exits with 42 early and stays unreaped; the parent checks
 * at every step that it is still a zombie with that status, then reaps it. */
#include "suite.h"

static char state_of(pid_t pid)
{
	char path[64], buf[512], *p;
	int fd, n;
	snprintf(path, sizeof path, "/proc/%d/stat", pid);
	fd = SYS(open(path, O_RDONLY));
	n = (int)SYS(read(fd, buf, sizeof buf - 1));
	close(fd);
	buf[n] = 0;
	p = strrchr(buf, ')');
	CHECK(p != NULL && p[1] == ' ', "malformed %s", path);
	return p[2];
}

int main(int argc, char **argv)
{
	pid_t c;
	suite_init(argc, argv);
	c = SYS(fork());
	if (c == 0)
		_exit(42);
	for (long i = 1; i <= N; i++) {
		siginfo_t si = {0};
		if (i > 3) {
			SYS(waitid(P_PID, (id_t)c, &si, WEXITED | WNOHANG | WNOWAIT));
			CHECK(si.si_pid == c, "waitid found no exited child %d (si_pid %d)", c, si.si_pid);
			CHECK(si.si_code == CLD_EXITED && si.si_status == 42,
			      "zombie %d: si_code %d status %d, want exited 42", c, si.si_code, si.si_status);
			CHECK(state_of(c) == 'Z', "child %d is in state %c, want Z", c, state_of(c));
		}
		say("zombie %d checked", c);
		tick();
	}
	reap(c, 42);
	CHECK(waitpid(-1, NULL, WNOHANG) < 0 && errno == ECHILD, "children left after reaping the zombie");
	done("zombie reaped with 42");
}
