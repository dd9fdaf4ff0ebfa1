//go:build linux

package wsapi

import (
	"errors"
	"os"
	"sync"
	"syscall"
)

// poller waits for idle connections to become readable, with no goroutine
// of their own: each socket is in one epoll set, and that set's descriptor
// is itself waited on by the Go runtime's poller (an epoll descriptor is
// readable when one of its sockets is), so no thread blocks in epoll_wait
// either. A readable connection is handed to a new goroutine that reads and
// handles its messages, then ends. The sockets are edge-triggered, added
// once: bytes that arrive are reported once, and those that arrive while
// a goroutine reads the socket make it read again (conn.again), so that a
// socket needs no epoll_ctl after each message to wait again. (One-shot
// and armed again after each burst, it cost a system call a message:
// about 5 % of the process's CPU under the side-by-side load.)
type poller struct {
	f    *os.File // the epoll descriptor, closed by stop
	rc   syscall.RawConn
	mu   sync.Mutex
	byID map[int32]*conn
	next int32
}

func newPoller() (*poller, error) {
	fd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	if err := syscall.SetNonblock(fd, true); err != nil {
		syscall.Close(fd)
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "epoll")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	return &poller{f: f, rc: rc, byID: make(map[int32]*conn)}, nil
}

// epollET is EPOLLET as an event mask (syscall's constant is negative).
const epollET = 1 << 31

var errNotPollable = errors.New("connection has no descriptor to poll")

// add makes c known to the poller (not armed yet).
func (p *poller) add(c *conn) error {
	sc, ok := c.nc.(syscall.Conn)
	if !ok {
		return errNotPollable
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for {
		p.next++
		if p.next == 0 {
			continue
		}
		if _, used := p.byID[p.next]; !used {
			break
		}
	}
	c.rc, c.pollID = rc, p.next
	p.byID[p.next] = c
	return nil
}

// arm makes c wait in the poller: it adds the socket the first time
// (bytes already there are reported then), and does nothing after. It
// runs with c.mu held.
func (p *poller) arm(c *conn) error {
	if c.armedOnce {
		return nil
	}
	var err error
	cerr := c.rc.Control(func(fd uintptr) {
		ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | epollET, Fd: c.pollID}
		p.withFD(func(ep int) { err = syscall.EpollCtl(ep, syscall.EPOLL_CTL_ADD, int(fd), &ev) })
	})
	if cerr != nil {
		return cerr
	}
	if err == nil {
		c.armedOnce = true
	}
	return err
}

// remove forgets c, and takes its socket out of the set (before it is
// closed, so that no event of it is pending).
func (p *poller) remove(c *conn) {
	if c.pollID == 0 {
		return
	}
	if c.armedOnce {
		c.rc.Control(func(fd uintptr) {
			p.withFD(func(ep int) { syscall.EpollCtl(ep, syscall.EPOLL_CTL_DEL, int(fd), nil) })
		})
	}
	p.mu.Lock()
	delete(p.byID, c.pollID)
	p.mu.Unlock()
}

// withFD runs f with the epoll descriptor, unless it is closed.
func (p *poller) withFD(f func(ep int)) {
	p.rc.Control(func(ep uintptr) { f(int(ep)) })
}

// run hands readable connections to wake until stop.
func (p *poller) run(wake func(*conn)) {
	events := make([]syscall.EpollEvent, 256)
	for {
		var n int
		err := p.rc.Read(func(ep uintptr) bool {
			var err error
			n, err = syscall.EpollWait(int(ep), events, 0)
			if err != nil {
				n = 0 // EINTR: wait again
			}
			return n > 0
		})
		if err != nil {
			return // stopped
		}
		for _, ev := range events[:n] {
			p.mu.Lock()
			c := p.byID[ev.Fd]
			p.mu.Unlock()
			if c != nil {
				wake(c)
			}
		}
	}
}

// stop ends run; call it once every connection is gone.
func (p *poller) stop() { p.f.Close() }
