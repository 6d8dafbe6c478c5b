package pagecodec

import (
	"io"
	"testing"
)

// BenchmarkEncode compresses 64 MiB of each kind of page data, in the
// dumper's 32 MiB writes, to nowhere.
func BenchmarkEncode(b *testing.B) {
	for _, kind := range []string{"random", "text", "mixed"} {
		data := pageData(kind, 64<<20/page)
		b.Run(kind, func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				e, err := NewEncoder(io.Discard)
				if err != nil {
					b.Fatal(err)
				}
				for p := data; len(p) > 0; p = p[32<<20:] {
					if _, err := e.WriteThrough(p[:32<<20]); err != nil {
						b.Fatal(err)
					}
				}
				if err := e.Close(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
