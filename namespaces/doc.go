// Package namespaces owns the job sandbox: the user, PID, mount, IPC and
// (optionally) time and network namespaces a job runs in, the init process
// that is PID 1 inside them, the user-mode network stack that connects a
// private network to the outside (usernet.go), and the runtime-spec records
// of namespaces and mounts that go into a checkpoint manifest.
//
// The supervisor calls Start, which re-executes the running binary as the
// sandbox init (main must call InitMain when os.Args[1] is InitArg). Init
// mounts a fresh /proc, reaps every process of the sandbox, forwards
// signals to the job's main process, and starts either the user's command
// (Run, with no capabilities) or a restore stub at a chosen PID (SpawnStub,
// with the capabilities a restorer needs inside the job user namespace).
//
// Init's own threads take PIDs in the sandbox too. So that they never sit on
// a PID a job process had (or will need again at restore), a tiny generated
// pre-init program moves the namespace's PID counter near pid_max before the
// Go runtime of init starts, and init moves it back to 1 when it starts the
// job: the job's first process is PID 2, init's threads live at the top.
// SpawnStub sets the counter itself for each stub.
package namespaces
