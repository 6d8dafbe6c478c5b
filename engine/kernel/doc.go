// Package kernel knows what the running kernel offers the checkpointer.
//
// Clusters run kernels from 4.18 (RHEL 8) to the newest, and enterprise
// kernels backport features without changing their version, so nothing in
// the tool compares version numbers: this package probes each feature once
// (as CRIU's kerndat does), and the rest of the code asks Has. Every feature
// has a fallback that the caller chooses when Has says no; Info describes
// the feature and what the tool does without it, which `ckpt-apptainer
// check` prints.
//
// CKPT_APPTAINER_DISABLE switches features off, so that every fallback can
// be exercised on any kernel: a comma-separated list of feature names, and
// the word rhel8 for everything mainline 4.18 lacks. The sandbox init does
// not probe: the supervisor hands it its results (Adopt).
package kernel
