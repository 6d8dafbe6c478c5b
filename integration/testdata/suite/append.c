/* append: an O_APPEND fd and a plain fd write the same file; appends must
 * land at the end even after the plain fd wrote in the middle. */
#include "suite.h"

int main(int argc, char **argv)
{
	int ap, pl;
	char *path, rec[REC + 1];
	struct stat st;
	suite_init(argc, argv);
	path = scratch("append.txt");
	ap = SYS(open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0644));
	pl = SYS(open(path, O_WRONLY));
	for (long i = 1; i <= N; i++) {
		rec_make(rec, i);
		write_all(ap, rec, REC);
		SYS(fstat(ap, &st));
		CHECK(st.st_size == i * REC, "file is %ld bytes after %ld appends", (long)st.st_size, i);
		CHECK(lseek(ap, 0, SEEK_CUR) == i * REC, "append fd at %ld, want end %ld", (long)lseek(ap, 0, SEEK_CUR), i * REC);
		/* The plain fd rewrites the first record in place: never grows the file. */
		rec_make(rec, 1);
		SYS(pwrite(pl, rec, REC, 0));
		CHECK(lseek(pl, 0, SEEK_CUR) == 0, "plain fd moved");
		CHECK((fcntl(ap, F_GETFL) & O_APPEND) != 0, "O_APPEND lost");
		say("appended %ld", i);
		tick();
	}
	done("%ld appends", N);
}
