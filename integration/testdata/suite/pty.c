/* pty: a parent holding a pseudo-terminal's master and a child holding its
 * raw slave, as mpirun and a rank do: each sends the other numbered
 * records one ahead of what it reads, so that records wait at both ends. */
#include "suite.h"
#include <termios.h>

int main(int argc, char **argv)
{
	int m, s;
	pid_t k;
	struct termios t;
	char rec[REC + 1], got[REC + 1];
	suite_init(argc, argv);
	m = SYS(posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC));
	SYS(grantpt(m));
	SYS(unlockpt(m));
	s = SYS(open(ptsname(m), O_RDWR | O_NOCTTY | O_CLOEXEC));
	SYS(tcgetattr(s, &t));
	cfmakeraw(&t);
	SYS(tcsetattr(s, TCSANOW, &t));
	k = SYS(fork());
	if (k == 0) {
		set_tag("child");
		close(m);
		rec_make(rec, 1);
		write_all(s, rec, REC);
		for (long i = 1; i <= N; i++) {
			read_full(s, got, REC);
			rec_check(got, i);
			if (i < N) {
				rec_make(rec, i + 1);
				write_all(s, rec, REC);
			}
		}
		_exit(0);
	}
	close(s);
	rec_make(rec, 1);
	write_all(m, rec, REC);
	for (long i = 1; i <= N; i++) {
		if (i < N) {
			rec_make(rec, i + 1);
			write_all(m, rec, REC);
		}
		read_full(m, got, REC);
		rec_check(got, i);
		say("record %ld through the terminal", i);
		tick();
	}
	reap(k, 0);
	done("%ld records each way through a pseudo-terminal", N);
}
