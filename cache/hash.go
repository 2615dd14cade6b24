package cache

import "io"

// pipeHash hashes, on a goroutine of its own and in order, the chunks a
// fill has written, while the fill receives and writes the next ones. On a
// cold fill the three costs are of a size (SHA-256 with SHA-NI runs at
// about 1.4 GB/s a core; receiving and writing the page cache take about as
// long together): one after the other they bound a fill to one core, side
// by side they take two. The fill reads into a buffer from next and hands
// it back, written, with hash (or unused, with unused); the hash holds
// every chunk once wait returns.
type pipeHash struct {
	h    io.Writer     // a hash.Hash, which never fails
	free chan []byte   // buffers not in use
	work chan []byte   // written chunks to hash, in order
	done chan struct{} // closed once every chunk handed over is hashed
}

// pipeBuffers is how many read buffers of pipeBufSize a fill has: one
// being hashed while the next is read and written.
const (
	pipeBuffers = 2
	pipeBufSize = 256 << 10
)

func newPipeHash(h io.Writer) *pipeHash {
	p := &pipeHash{h: h, free: make(chan []byte, pipeBuffers), work: make(chan []byte, pipeBuffers), done: make(chan struct{})}
	for range pipeBuffers {
		p.free <- make([]byte, pipeBufSize)
	}
	go func() {
		defer close(p.done)
		for c := range p.work {
			_, _ = p.h.Write(c)
			p.free <- c[:cap(c)]
		}
	}()
	return p
}

// next returns a buffer to read into, waiting for one to be hashed.
func (p *pipeHash) next() []byte { return <-p.free }

// hash hands over c, a buffer from next cut to the bytes written, to be
// hashed after every chunk handed over before it. The caller lets go of c.
func (p *pipeHash) hash(c []byte) { p.work <- c }

// unused gives back a buffer from next that holds nothing to hash.
func (p *pipeHash) unused(b []byte) { p.free <- b[:cap(b)] }

// wait ends the hashing goroutine once it has hashed every chunk.
func (p *pipeHash) wait() {
	close(p.work)
	<-p.done
}
