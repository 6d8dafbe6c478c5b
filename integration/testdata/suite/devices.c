/* devices: /dev/null, /dev/zero and /dev/urandom stay open and behave. */
#include "suite.h"
#include <sys/sysmacros.h>

int main(int argc, char **argv)
{
	int nul, zero, rnd;
	unsigned char b[256], prev[256] = {0};
	suite_init(argc, argv);
	nul = SYS(open("/dev/null", O_RDWR));
	zero = SYS(open("/dev/zero", O_RDONLY | O_CLOEXEC));
	rnd = SYS(open("/dev/urandom", O_RDONLY));
	for (long i = 1; i <= N; i++) {
		struct stat st;
		write_all(nul, "x", 1);
		CHECK(read(nul, b, 1) == 0, "/dev/null gave data");
		memset(b, 1, sizeof b);
		read_full(zero, b, sizeof b);
		for (size_t k = 0; k < sizeof b; k++)
			CHECK(b[k] == 0, "/dev/zero gave %#x", b[k]);
		read_full(rnd, b, sizeof b);
		CHECK(memcmp(b, prev, sizeof b) != 0, "/dev/urandom repeated itself");
		memcpy(prev, b, sizeof b);
		SYS(fstat(rnd, &st));
		CHECK(S_ISCHR(st.st_mode) && major(st.st_rdev) == 1 && minor(st.st_rdev) == 9, "fd %d is no longer /dev/urandom", rnd);
		CHECK((fcntl(zero, F_GETFD) & FD_CLOEXEC) && !(fcntl(nul, F_GETFD) & FD_CLOEXEC), "close-on-exec flags changed");
		say("devices ok");
		tick();
	}
	done("devices kept");
}
