/* sysv_msg: a child queues numbered System V messages far ahead of the
 * parent, which takes one per step and checks number and body. */
#include "suite.h"
#include <sys/ipc.h>
#include <sys/msg.h>

struct msg {
	long type;
	long seq;
	char body[48];
};

int main(int argc, char **argv)
{
	struct msg m;
	pid_t k;
	int q;
	suite_init(argc, argv);
	q = SYS(msgget(IPC_PRIVATE, IPC_CREAT | 0600));
	info("ipc msg %d", q);
	k = SYS(fork());
	if (k == 0) {
		set_tag("child");
		for (long i = 1; i <= N; i++) {
			m.type = 1 + i % 3;
			m.seq = i;
			snprintf(m.body, sizeof m.body, "message %ld", i);
			while (msgsnd(q, &m, sizeof m - sizeof m.type, 0) < 0)
				CHECK(errno == EINTR, "msgsnd: %s", strerror(errno));
			if (i % 20 == 0)
				say("queued %ld", i);
		}
		_exit(0);
	}
	for (long i = 1; i <= N; i++) {
		char want[48];
		struct msqid_ds ds;
		while (msgrcv(q, &m, sizeof m - sizeof m.type, 0, 0) < 0)
			CHECK(errno == EINTR, "msgrcv: %s", strerror(errno));
		snprintf(want, sizeof want, "message %ld", i);
		CHECK(m.seq == i && m.type == 1 + i % 3 && strcmp(m.body, want) == 0,
		      "got message %ld type %ld %.48s, want %ld", m.seq, m.type, m.body, i);
		SYS(msgctl(q, IPC_STAT, &ds));
		say("message %ld, %lu in flight", i, (unsigned long)ds.msg_qnum);
		tick();
	}
	reap(k, 0);
	SYS(msgctl(q, IPC_RMID, NULL));
	done("%ld messages in order", N);
}
