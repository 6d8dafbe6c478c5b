/* fdflags: fds with and without FD_CLOEXEC, O_NONBLOCK, O_APPEND and
 * O_RDONLY/O_WRONLY are checked with F_GETFD and F_GETFL at every step. */
#include "suite.h"

struct want {
	int fd, fdflags, flflags;
};

int main(int argc, char **argv)
{
	struct want w[5];
	int p[2];
	char *path;
	suite_init(argc, argv);
	path = scratch("flags.txt");
	w[0] = (struct want){SYS(open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644)), FD_CLOEXEC, O_RDWR};
	w[1] = (struct want){SYS(open(path, O_WRONLY | O_APPEND)), 0, O_WRONLY | O_APPEND};
	w[2] = (struct want){SYS(open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)), FD_CLOEXEC, O_RDONLY | O_NONBLOCK};
	SYS(pipe2(p, O_NONBLOCK));
	w[3] = (struct want){p[0], 0, O_RDONLY | O_NONBLOCK};
	w[4] = (struct want){SYS(fcntl(w[1].fd, F_DUPFD_CLOEXEC, 30)), FD_CLOEXEC, O_WRONLY | O_APPEND};
	for (long i = 1; i <= N; i++) {
		for (int k = 0; k < 5; k++) {
			int fdf = SYS(fcntl(w[k].fd, F_GETFD));
			int fl = SYS(fcntl(w[k].fd, F_GETFL)) & (O_ACCMODE | O_APPEND | O_NONBLOCK);
			CHECK(fdf == w[k].fdflags, "fd %d: F_GETFD %#x, want %#x", w[k].fd, fdf, w[k].fdflags);
			CHECK(fl == w[k].flflags, "fd %d: F_GETFL %#o, want %#o", w[k].fd, fl, w[k].flflags);
		}
		say("flags of 5 fds kept");
		tick();
	}
	done("fd flags kept");
}
