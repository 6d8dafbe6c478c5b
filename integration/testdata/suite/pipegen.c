/* pipegen: the two ends of the shell pipeline entry. "gen" prints the lines
 * "line 1" .. "line TICKS" to stdout, one per step; "check" reads such lines
 * from stdin and checks that every number is there once and in order. */
#include "suite.h"

int main(int argc, char **argv)
{
	suite_init(argc, argv);
	CHECK(argc == 4, "usage: pipegen LOG TICKS gen|check");
	if (strcmp(argv[3], "gen") == 0) {
		set_tag("gen");
		for (long i = 1; i <= N; i++) {
			char b[64];
			int n = snprintf(b, sizeof b, "line %ld\n", i);
			write_all(1, b, (size_t)n);
			say("line %ld", i);
			tick();
		}
		return 0;
	}
	set_tag("check");
	char line[128];
	long want = 1;
	while (fgets(line, sizeof line, stdin) != NULL) {
		char e[64];
		snprintf(e, sizeof e, "line %ld\n", want);
		CHECK(strcmp(line, e) == 0, "output line %ld is %.60s, want %.60s", want, line, e);
		want++;
	}
	CHECK(want == N + 1, "output has %ld lines, want %ld", want - 1, N);
	say("checked %ld lines", N);
	done("%ld lines through the pipeline, each once", N);
}
