/*
 * suite.h: what every program of the integration suite shares.
 *
 * Every program is run as "PROG LOG TICKS [ARGS...]". It works in about TICKS
 * steps of TICK_MS each and appends to LOG, with one write(2) per line:
 *
 *   T <tag> <seq> <text>   progress: seq counts 1, 2, 3... per tag (a tag
 *                          names one process or thread of the program)
 *   I <tag> <text>         information the test reads (refused fds, ipc ids)
 *   FAIL: <tag>: <why>     the program found its own state wrong; exits 1
 *   SKIP <why>             the machine lacks something; exits 77
 *   DONE <summary>         the last line of a good run; exits 0
 *
 * Scratch files go into the directory of LOG. The test checks the log; the
 * program checks its own state at every step, so a restore that breaks it
 * shows as a FAIL line or a gap or repeat in the sequence of a tag.
 */
#ifndef SUITE_H
#define SUITE_H

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define TICK_MS 75

static __attribute__((unused)) int s_logfd = -1;
static __attribute__((unused)) char s_tag[32] = "main";
static __attribute__((unused)) long s_seq;
static __attribute__((unused)) long N; /* TICKS */
static __attribute__((unused)) char s_dir[PATH_MAX];
static __attribute__((unused)) const char *s_log;
static __attribute__((unused)) char **s_argv;
static __attribute__((unused)) int s_argc;

static __attribute__((unused)) void s_write(int fd, const char *buf, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, buf, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			_exit(3);
		buf += w;
		n -= (size_t)w;
	}
}

static __attribute__((unused)) void s_line(const char *prefix, const char *fmt, va_list ap)
{
	char buf[1024];
	int k = snprintf(buf, sizeof buf, "%s", prefix);
	k += vsnprintf(buf + k, sizeof buf - (size_t)k - 1, fmt, ap);
	if (k > (int)sizeof buf - 2)
		k = (int)sizeof buf - 2;
	buf[k++] = '\n';
	s_write(s_logfd, buf, (size_t)k);
}

/* say logs one progress line of this process's tag. */
__attribute__((format(printf, 1, 2), unused)) static void say(const char *fmt, ...)
{
	char prefix[64];
	va_list ap;
	snprintf(prefix, sizeof prefix, "T %s %ld ", s_tag, ++s_seq);
	va_start(ap, fmt);
	s_line(prefix, fmt, ap);
	va_end(ap);
}

__attribute__((format(printf, 1, 2), unused)) static void info(const char *fmt, ...)
{
	char prefix[64];
	va_list ap;
	snprintf(prefix, sizeof prefix, "I %s ", s_tag);
	va_start(ap, fmt);
	s_line(prefix, fmt, ap);
	va_end(ap);
}

__attribute__((format(printf, 1, 2), noreturn, unused)) static void fail(const char *fmt, ...)
{
	char prefix[64];
	va_list ap;
	snprintf(prefix, sizeof prefix, "FAIL: %s: ", s_tag);
	va_start(ap, fmt);
	s_line(prefix, fmt, ap);
	va_end(ap);
	_exit(1);
}

__attribute__((format(printf, 1, 2), noreturn, unused)) static void done(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	s_line("DONE ", fmt, ap);
	va_end(ap);
	exit(0);
}

__attribute__((format(printf, 1, 2), noreturn, unused)) static void skip(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	s_line("SKIP ", fmt, ap);
	va_end(ap);
	exit(77);
}

#define CHECK(cond, ...)                 \
	do {                             \
		if (!(cond))             \
			fail(__VA_ARGS__); \
	} while (0)

/* SYS fails with the call's text and errno when it returns a negative value. */
#define SYS(x)                                                             \
	({                                                                 \
		long s_r_ = (long)(x);                                     \
		if (s_r_ < 0)                                              \
			fail("%s: %s (line %d)", #x, strerror(errno), __LINE__); \
		s_r_;                                                      \
	})

/* set_tag starts a new tag, for a child process or a thread. */
static __attribute__((unused)) void set_tag(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(s_tag, sizeof s_tag, fmt, ap);
	va_end(ap);
	s_seq = 0;
}

static __attribute__((unused)) void suite_init(int argc, char **argv)
{
	char *slash;
	if (argc < 3) {
		fprintf(stderr, "usage: %s LOG TICKS [ARGS...]\n", argv[0]);
		exit(2);
	}
	s_argc = argc;
	s_argv = argv;
	s_log = argv[1];
	N = strtol(argv[2], NULL, 10);
	if (N < 40) {
		fprintf(stderr, "%s: TICKS must be at least 40\n", argv[0]);
		exit(2);
	}
	s_logfd = open(s_log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	if (s_logfd < 0) {
		fprintf(stderr, "%s: open %s: %s\n", argv[0], s_log, strerror(errno));
		exit(2);
	}
	snprintf(s_dir, sizeof s_dir, "%s", s_log);
	slash = strrchr(s_dir, '/');
	if (slash == NULL)
		snprintf(s_dir, sizeof s_dir, ".");
	else if (slash == s_dir)
		slash[1] = 0;
	else
		*slash = 0;
}

/* scratch returns the path of name in the log's directory (a new string). */
static __attribute__((unused)) char *scratch(const char *name)
{
	char *p;
	if (asprintf(&p, "%s/%s", s_dir, name) < 0)
		fail("asprintf");
	return p;
}

/* uniq returns a name unique to this job (its directory), for /dev/shm. */
static __attribute__((unused)) const char *uniq(void)
{
	const char *b = strrchr(s_dir, '/');
	return b ? b + 1 : s_dir;
}

static __attribute__((unused)) long long now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* sleep_ms sleeps ms milliseconds even when signal handlers interrupt it. */
static __attribute__((unused)) void sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L}, rem;
	while (nanosleep(&ts, &rem) < 0 && errno == EINTR)
		ts = rem;
}

static __attribute__((unused)) void tick(void) { sleep_ms(TICK_MS); }

/* reap waits for pid and fails unless it exited with want. */
static __attribute__((unused)) void reap(pid_t pid, int want)
{
	int st;
	pid_t r;
	while ((r = waitpid(pid, &st, 0)) < 0 && errno == EINTR)
		;
	CHECK(r == pid, "waitpid(%d): %s", pid, strerror(errno));
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == want,
	      "child %d ended with status %#x, want exit %d", pid, st, want);
}

/* count_loop is a child's body: n steps, each checking that its pid and
 * parent pid did not change. */
static __attribute__((unused)) void count_loop(long n)
{
	pid_t me = getpid(), parent = getppid();
	for (long i = 1; i <= n; i++) {
		CHECK(getpid() == me, "getpid() is %d, was %d", getpid(), me);
		CHECK(getppid() == parent, "getppid() is %d, was %d", getppid(), parent);
		CHECK(syscall(SYS_gettid) == me, "gettid() is %ld, pid %d", (long)syscall(SYS_gettid), me);
		say("count %ld", i);
		tick();
	}
}

/* pingpong moves a counter shared by two processes in turns, n rounds: side 0
 * moves it from even to odd, side 1 from odd to even. A restore that gives
 * each process its own copy stalls it; one that loses writes breaks the
 * expected value. */
static __attribute__((unused)) void pingpong(volatile long *c, int side, long n)
{
	for (long i = 0; i < n; i++) {
		long want = 2 * i + side, spins = 0, v;
		while ((v = __atomic_load_n(c, __ATOMIC_SEQ_CST)) != want) {
			CHECK(v == want - 1, "shared counter is %ld, want %ld or %ld", v, want - 1, want);
			CHECK(++spins < 60000, "shared counter stuck at %ld for 60 s of polling: the peer's writes are not visible", v);
			sleep_ms(1);
		}
		__atomic_store_n(c, want + 1, __ATOMIC_SEQ_CST);
		say("counter %ld", want + 1);
		tick();
	}
}

/* write_all and read_full move exactly n bytes or fail. */
static __attribute__((unused)) void write_all(int fd, const void *buf, size_t n)
{
	const char *p = buf;
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		CHECK(w > 0, "write fd %d: %s", fd, strerror(errno));
		p += w;
		n -= (size_t)w;
	}
}

static __attribute__((unused)) void read_full(int fd, void *buf, size_t n)
{
	char *p = buf;
	while (n > 0) {
		ssize_t r = read(fd, p, n);
		if (r < 0 && errno == EINTR)
			continue;
		CHECK(r > 0, "read fd %d: %s", fd, r == 0 ? "end of file" : strerror(errno));
		p += r;
		n -= (size_t)r;
	}
}

/* rec is a numbered record for byte streams: "%015ld\n". */
#define REC 16
static __attribute__((unused)) void rec_make(char *b, long i)
{
	b[REC - 1] = '\n';
	for (int k = REC - 2; k >= 0; k--, i /= 10)
		b[k] = (char)('0' + i % 10);
	b[REC] = 0;
}
static __attribute__((unused)) void rec_check(const char *b, long want)
{
	char e[REC + 1];
	rec_make(e, want);
	CHECK(memcmp(b, e, REC) == 0, "record %.15s, want %ld", b, want);
}

#endif
