package bufpool

import "testing"

func TestGetPut(t *testing.T) {
	var p Pool
	for _, tc := range []struct {
		n       int
		wantCap int
	}{
		{0, 0},
		{1, 1},
		{4096, 4096},
		{4097, 8192},
		{1 << 20, 1 << 20},
		{100 << 20, 100 << 20}, // past the largest class: not pooled
	} {
		b := p.Get(tc.n)
		if len(b) != tc.n || cap(b) != tc.wantCap {
			t.Errorf("Get(%d): len %d cap %d, want len %d cap %d", tc.n, len(b), cap(b), tc.n, tc.wantCap)
		}
		p.Put(b)
	}
	// a buffer not from Get (capacity not a power of two) is not pooled
	p.Put(make([]byte, 3000))
	if b := p.Get(2048); cap(b) != 2048 {
		t.Errorf("Get(2048) after a foreign Put: cap %d", cap(b))
	}
}
