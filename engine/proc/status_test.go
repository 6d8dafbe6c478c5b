package proc

import "testing"

func TestStatusBytes(t *testing.T) {
	st := Status{"RssAnon": "1234 kB", "VmSwap": "0 kB", "Bad": "x kB", "NoUnit": "12"}
	for key, want := range map[string]int64{"RssAnon": 1234 << 10, "VmSwap": 0, "Bad": 0, "NoUnit": 0, "Missing": 0} {
		if got := st.Bytes(key); got != want {
			t.Errorf("Bytes(%s) = %d, want %d", key, got, want)
		}
	}
}
