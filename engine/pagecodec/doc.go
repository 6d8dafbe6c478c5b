// Package pagecodec compresses a page file in independent blocks.
//
// A checkpoint's page data is cut into blocks of BlockSize bytes, each
// compressed on its own (zstd), so a restore decompresses them on every core
// and reads any page without decompressing the blocks before it; a block
// that does not shrink is stored as it is. Page runs keep their offsets in
// the data as it was before compression (data offsets): an encoded page file
// is read through its Index, and everything above this package (runs,
// incremental references, pre-copy offsets) is unchanged.
//
// An encoded file is the blocks' frames back to back, then the index (one
// little-endian uint32 per block: the frame's length, with storedRaw set on
// a block stored as it is), then a trailer:
//
//	magic "CKPTPZ01" | block size u32 | blocks u32 | data size u64 | index offset u64
//
// The file's checksum in the manifest covers all of it, so a damaged frame,
// index or trailer is found like any damaged page file; the index is still
// checked on its own before it is used (ReadIndex), since a restore reads it
// before the checksum is complete.
package pagecodec
