// Package memory dumps a process's address space and rebuilds it in a
// restored process.
//
// At checkpoint, ReadVMAs classifies every mapping from smaps (anonymous,
// file-backed private or shared, shared memory without a path, System V
// attachments, the kernel's special mappings), and a Dumper copies the
// pages only the image can give back (pagemap says which) into the page
// file: process_vm_readv into large batches while the previous batch goes
// to disk. Shared tells the dumpers of one job which pages of a shared
// memory object are stored already, so that an object mapped by several
// processes is stored once.
//
// At restore, a Restorer parks the stub's vDSO and vvar, re-creates every
// mapping (files opened again by path, shared memory as one memfd that
// every process maps, System V segments attached again), fills the page
// data in from the page file in large sequential reads, sets the recorded
// protections and guard regions, and moves the vDSO and vvar where the
// process had them.
package memory
