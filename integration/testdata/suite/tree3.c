/* tree3: a fork tree three levels deep (1 + 2 + 4 processes); every process
 * counts and checks its pid and parent pid at every step; parents reap their
 * children and check their exit codes. */
#include "suite.h"

static void node(const char *name, int depth)
{
	pid_t kids[2];
	int nk = 0;
	if (depth < 2) {
		for (int k = 0; k < 2; k++) {
			char sub[16];
			snprintf(sub, sizeof sub, "%s%d", name, k);
			kids[nk] = SYS(fork());
			if (kids[nk] == 0) {
				set_tag("%s", sub);
				node(sub, depth + 1);
				_exit(10 + depth);
			}
			nk++;
		}
	}
	count_loop(N);
	for (int k = 0; k < nk; k++)
		reap(kids[k], 10 + depth);
}

int main(int argc, char **argv)
{
	suite_init(argc, argv);
	set_tag("n");
	node("n", 0);
	done("7 processes counted %ld steps each", N);
}
