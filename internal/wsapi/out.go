package wsapi

import (
	"runtime"
	"sync"
	"time"
)

// Output. Every frame for a socket is appended to the socket's pending
// output, and one of the writers (chosen by socket) writes all that is
// pending for it in one system call. What arrives for a socket while its
// writer is busy goes out with it: under load a peer gets the offers of
// several announces and its own reply in one write instead of one each
// (a write is most of what a message costs). Appending never blocks, so
// the subscription and the readers never wait for a slow socket; a socket
// with more than maxPending bytes waiting drops what comes (counted), and
// one whose write does not finish within the write timeout is closed.
// Buffers come from a pool: an idle socket holds none.

const (
	writers      = 4
	maxPending   = 256 << 10
	gatherYields = 2
)

type writer struct {
	mu    sync.Mutex
	list  []*conn
	spare []*conn
	wake  chan struct{}
}

func newWriter() *writer { return &writer{wake: make(chan struct{}, 1)} }

func (w *writer) push(c *conn) {
	w.mu.Lock()
	w.list = append(w.list, c)
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// run writes what is pending for the sockets pushed, until stop.
func (w *writer) run(stop <-chan struct{}) {
	for {
		select {
		case <-w.wake:
		case <-stop:
			return
		}
		// Let the goroutines that are ready run first (the readers
		// handling messages, the subscription): what they queue for
		// the same sockets goes out in the same writes. A writer woken
		// by a reader would otherwise run right after it, one message
		// a write.
		for range gatherYields {
			runtime.Gosched()
		}
		w.mu.Lock()
		list := w.list
		w.list, w.spare = w.spare[:0], nil
		w.mu.Unlock()
		for _, c := range list {
			c.omu.Lock()
			c.queued = false
			c.omu.Unlock()
			c.flush(writeTimeout)
		}
		clear(list)
		w.mu.Lock()
		if w.spare == nil && cap(list) <= 4096 {
			w.spare = list[:0]
		}
		w.mu.Unlock()
	}
}

func getBuf() *[]byte { return bufs.Get().(*[]byte) }

// smallBufs hold control frames and short replies: a ping to every socket
// at once must not take a read buffer's size each.
var smallBufs = sync.Pool{New: func() any { b := make([]byte, 0, 256); return &b }}

// getBufFor is a pooled buffer for about n bytes.
func getBufFor(n int) *[]byte {
	if n <= 256 {
		return smallBufs.Get().(*[]byte)
	}
	return getBuf()
}

func putBuf(b *[]byte) {
	switch c := cap(*b); {
	case c < 256:
	case c < readBufferSize:
		*b = (*b)[:0]
		smallBufs.Put(b)
	case c <= 1<<16:
		*b = (*b)[:0]
		bufs.Put(b)
	}
}

// send queues one frame for the socket; false: dropped (the socket is
// closed, or too much is pending for it).
func (c *conn) send(op byte, payload []byte) bool {
	c.omu.Lock()
	pending := 0
	if c.out != nil {
		pending = len(*c.out)
	}
	if c.outClosed || pending+len(payload) > maxPending {
		closed := c.outClosed
		c.omu.Unlock()
		if !closed {
			c.srv.m.dropped.WithLabelValues("queue_full").Inc()
		}
		return false
	}
	if c.out == nil {
		c.out = getBufFor(len(payload) + 10)
	}
	*c.out = appendFrame(*c.out, op, payload)
	queue := !c.queued
	c.queued = true
	c.omu.Unlock()
	if queue {
		c.srv.writers[c.slot%writers].push(c)
	}
	return true
}

// flush writes what is pending, in order (whoever flushes takes the
// output under wmu); a write that fails closes the socket.
func (c *conn) flush(timeout time.Duration) {
	c.wmu.Lock()
	c.omu.Lock()
	b := c.out
	c.out = nil
	c.omu.Unlock()
	if b == nil {
		c.wmu.Unlock()
		return
	}
	c.nc.SetWriteDeadline(time.Now().Add(timeout))
	_, err := c.nc.Write(*b)
	c.wmu.Unlock()
	putBuf(b)
	if err != nil {
		c.srv.m.dropped.WithLabelValues("write_failed").Inc()
		c.kill("error")
	}
}

// closeOutput writes what is still pending (close frames) and takes no
// more.
func (c *conn) closeOutput() {
	c.flush(time.Second)
	c.omu.Lock()
	c.outClosed = true
	if c.out != nil {
		putBuf(c.out)
		c.out = nil
	}
	c.omu.Unlock()
}
