// Package bufpool pools byte buffers by power-of-two size class, for data
// paths (NBD requests, replication frames) that would otherwise allocate,
// and zero, a buffer of up to tens of MiB per request.
package bufpool

import "sync"

// Pool hands out buffers; the zero value is ready to use.
type Pool struct {
	classes [27]sync.Pool // up to 64 MiB
}

func sizeClass(n int) int {
	c := 0
	for 1<<c < n {
		c++
	}
	return c
}

// Get returns a buffer of length n; its contents are undefined.
func (p *Pool) Get(n int) []byte {
	if n == 0 {
		return nil
	}
	c := sizeClass(n)
	if c >= len(p.classes) {
		return make([]byte, n)
	}
	if b, ok := p.classes[c].Get().(*[]byte); ok {
		return (*b)[:n]
	}
	return make([]byte, n, 1<<c)
}

// Put returns a buffer from Get; the caller must not use it afterwards.
func (p *Pool) Put(b []byte) {
	if cap(b) == 0 {
		return
	}
	c := sizeClass(cap(b))
	if c >= len(p.classes) || 1<<c != cap(b) {
		return
	}
	b = b[:cap(b)]
	p.classes[c].Put(&b)
}
