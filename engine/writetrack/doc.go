// Package writetrack tells which pages a process wrote since a checkpoint,
// so that the next incremental checkpoint or the stopped part of a pre-copy
// reads only those.
//
// Two kernel mechanisms serve, whichever the node has:
//
//   - soft-dirty bits (CONFIG_MEM_SOFT_DIRTY, Debian's and RHEL's kernels):
//     writing "4" to /proc/PID/clear_refs clears them, and pagemap bit 55
//     shows a page written since;
//   - userfaultfd asynchronous write-protection (UFFD_FEATURE_WP_ASYNC,
//     6.7): the job's private mappings are registered with a userfaultfd
//     and write-protected; a write makes the kernel drop the protection of
//     that page without stopping the process, and pagemap bit 57 shows the
//     pages still protected. The userfaultfd is made inside the stopped
//     process (an injected call, UFFD_USER_MODE_ONLY, so no privilege is
//     needed), copied into the supervisor with pidfd_getfd and closed in
//     the process: the job's descriptor table is left as it was, and the
//     registration lives as long as the Tracker holds the copy.
//
// Either way a page is taken as unchanged only when it is present and
// mapped by this process alone: a page shared with a forked process, the
// shared zero page, swapped pages and shared mappings are compared by
// content. A range that cannot be armed (a mapping gone meanwhile) keeps
// no protection the kernel did not leave by itself, so its pages read as
// written: failures cost reading, never a missed write.
package writetrack
