//go:build linux

package reuseport

import (
	"errors"
	"hash/fnv"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Affinity is a TCP listener shared by the replicas of one node (opened
// with ListenConfig) that serves each client address in one replica: a
// connection the kernel gives to another replica than the address's owner
// is handed to the owner, its file descriptor passed over a Unix datagram
// socket in the abstract namespace (one per process, named after the node
// and the process). So per-address limits and the min-interval table hold
// for the whole tracker, whatever source ports a client uses, where the
// kernel cannot steer TCP by address itself (Steer works for UDP).
//
// The owner of an address is picked by rendezvous hashing over the live
// replicas (SetReplicas), so a replica joining or leaving moves only the
// addresses it takes or had. Only processes of the same user may hand a
// connection over (the kernel's credentials on each message); a connection
// that cannot be handed over (the owner gone, its queue full) is served
// where it arrived: nothing is refused.
type Affinity struct {
	ln    net.Listener
	self  string
	space string // abstract socket names: "@" + space + "/" + process
	uln   *net.UnixConn
	out   *net.UnixConn // unbound, to send to peers

	mu    sync.RWMutex
	procs []string // live replicas, this one included

	conns   chan net.Conn
	done    chan struct{}
	ended   sync.Once // closes done
	once    sync.Once // Close
	closing atomic.Bool
	stop    chan struct{}  // closed when Close starts
	accepts sync.WaitGroup // acceptTCP
	wg      sync.WaitGroup // receive
	handed  atomic.Int64
	taken   atomic.Int64
	refused atomic.Int64
}

// NewAffinity serves ln for process self of the replicas named by space
// (the node's prefix and id: processes of other nodes never meet).
func NewAffinity(ln net.Listener, space, self string) (*Affinity, error) {
	uln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: "@" + space + "/" + self, Net: "unixgram"})
	if err != nil {
		return nil, err
	}
	if err := passCred(uln); err != nil {
		uln.Close()
		return nil, err
	}
	out, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Net: "unixgram"})
	if err != nil {
		uln.Close()
		return nil, err
	}
	a := &Affinity{ln: ln, self: self, space: space, uln: uln, out: out, procs: []string{self},
		conns: make(chan net.Conn, 256), done: make(chan struct{}), stop: make(chan struct{})}
	a.accepts.Add(1)
	a.wg.Add(1)
	go func() { defer a.accepts.Done(); a.acceptTCP() }()
	go func() { defer a.wg.Done(); a.receive() }()
	return a, nil
}

// SetReplicas sets the live replicas (process ids, this one's included or
// not: a process that is leaving leaves itself out, and hands every
// connection to the others).
func (a *Affinity) SetReplicas(procs []string) {
	p := slices.Clone(procs)
	slices.Sort(p)
	a.mu.Lock()
	a.procs = slices.Compact(p)
	a.mu.Unlock()
}

// Accept returns the next connection this process serves.
func (a *Affinity) Accept() (net.Conn, error) {
	select {
	case c := <-a.conns:
		return c, nil
	case <-a.done:
		return nil, net.ErrClosed
	}
}

// Addr is the shared listener's address.
func (a *Affinity) Addr() net.Addr { return a.ln.Addr() }

// Close stops accepting and receiving, handing to the other replicas
// what this one got and will not serve: the connections queued in the
// kernel (the listener is closed right after they are taken, so almost
// none is reset there: the host's net.ipv4.tcp_migrate_req=1 closes that
// last gap), those handed to it and not yet accepted, and those other
// replicas hand it while it closes. What no other replica can take is
// closed.
func (a *Affinity) Close() error {
	var err error
	a.once.Do(func() {
		a.closing.Store(true)
		close(a.stop)
		// Stop the accept loop without closing the listener: its queue
		// goes to the others first.
		if d, ok := a.ln.(interface{ SetDeadline(time.Time) error }); ok {
			d.SetDeadline(time.Now())
		} else {
			a.ln.Close()
		}
		a.accepts.Wait()
		a.handQueued()
		err = a.ln.Close()
		// Take what the others hand over until they see this one gone.
		a.uln.SetReadDeadline(time.Now().Add(closeListen))
		a.wg.Wait()
		a.uln.Close()
		a.end()
		for {
			select {
			case c := <-a.conns:
				a.handOff(c)
			default:
				a.out.Close()
				return
			}
		}
	})
	return err
}

// closeListen is how long a closing replica still takes connections
// handed to it (a replica that read the registry a moment before this one
// left).
const closeListen = 20 * time.Millisecond

// handQueued hands the connections waiting in the listener's queue to
// their owners among the other replicas.
func (a *Affinity) handQueued() {
	sc, ok := a.ln.(syscall.Conn)
	if !ok {
		return
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return
	}
	rc.Control(func(lfd uintptr) {
		for range maxQueued {
			fd, sa, err := syscall.Accept4(int(lfd), syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC)
			if err != nil {
				return // EAGAIN: the queue is empty
			}
			to := a.Owner(sockaddrIP(sa))
			if to != a.self && to != "" {
				a.handFD(fd, to)
			}
			syscall.Close(fd) // this process's copy; not handed: reset

		}
	})
}

// maxQueued bounds the connections handQueued takes (a listen backlog is
// at most somaxconn, 4096 by default).
const maxQueued = 1 << 16

// handOff hands c, which this replica will not serve, to its owner among
// the others, or closes it.
func (a *Affinity) handOff(c net.Conn) {
	if to := a.Owner(remoteAddr(c)); to == a.self || to == "" || !a.hand(c, to) {
		c.Close()
	}
}

func sockaddrIP(sa syscall.Sockaddr) netip.Addr {
	switch v := sa.(type) {
	case *syscall.SockaddrInet4:
		return netip.AddrFrom4(v.Addr)
	case *syscall.SockaddrInet6:
		return netip.AddrFrom16(v.Addr)
	}
	return netip.Addr{}
}

func (a *Affinity) end() { a.ended.Do(func() { close(a.done) }) }

// Counts returns the connections handed to other replicas, taken from
// them, and refused from processes of another user.
func (a *Affinity) Counts() (handed, taken, refused int64) {
	return a.handed.Load(), a.taken.Load(), a.refused.Load()
}

// Owner returns the replica that serves addr.
func (a *Affinity) Owner(addr netip.Addr) string {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return owner(a.procs, addr)
}

// owner picks, by rendezvous hashing, the replica of procs that serves
// addr (IPv4 whole, IPv6 by its /64, as the per-address limits count).
func owner(procs []string, addr netip.Addr) string {
	addr = addr.Unmap()
	var key []byte
	if addr.Is4() {
		b := addr.As4()
		key = b[:]
	} else {
		b := addr.As16()
		key = b[:8]
	}
	var best string
	var top uint64
	for _, p := range procs {
		h := fnv.New64a()
		h.Write(key)
		h.Write([]byte(p))
		if v := mix(h.Sum64()); best == "" || v > top {
			best, top = p, v
		}
	}
	return best
}

// mix is splitmix64's finalizer: FNV alone leaves names that differ in
// their last byte too alike to rank fairly.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ x>>31
}

func (a *Affinity) acceptTCP() {
	for {
		c, err := a.ln.Accept()
		if err != nil {
			if a.closing.Load() {
				return // Close takes the queue from here
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(5 * time.Millisecond)
				continue
			}
			a.end() // the listener is gone
			return
		}
		if to := a.Owner(remoteAddr(c)); to != a.self && to != "" && a.hand(c, to) {
			continue
		}
		if !a.queue(c) {
			return
		}
	}
}

// queue gives c to Accept; once Close has started, c goes to another
// replica unless Accept takes it at once. False when the listener is
// done.
func (a *Affinity) queue(c net.Conn) bool {
	select {
	case a.conns <- c:
		return true
	case <-a.stop:
	}
	select {
	case a.conns <- c:
	default:
		a.handOff(c)
	}
	return !a.closing.Load()
}

func remoteAddr(c net.Conn) netip.Addr {
	if t, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return t.AddrPort().Addr()
	}
	return netip.Addr{}
}

// handWait bounds how long handing a connection over may wait.
const handWait = 50 * time.Millisecond

// hand passes c to replica to; true when it went (c is then closed here).
func (a *Affinity) hand(c net.Conn, to string) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	var sent bool
	if err := rc.Control(func(fd uintptr) { sent = a.handFD(int(fd), to) }); err != nil || !sent {
		return false
	}
	c.Close()
	return true
}

// handFD passes the connection fd to replica to (the caller still closes
// its copy of fd).
func (a *Affinity) handFD(fd int, to string) bool {
	// A replica that reads no more (hung, its queue full) must not hold
	// up this one's accepting: after a short wait, serve here.
	a.out.SetWriteDeadline(time.Now().Add(handWait))
	if _, _, err := a.out.WriteMsgUnix([]byte{1}, syscall.UnixRights(fd), &net.UnixAddr{Name: "@" + a.space + "/" + to, Net: "unixgram"}); err != nil {
		return false
	}
	a.handed.Add(1)
	return true
}

// receive takes the connections other replicas hand over.
func (a *Affinity) receive() {
	buf := make([]byte, 16)
	oob := make([]byte, syscall.CmsgSpace(4)+syscall.CmsgSpace(syscall.SizeofUcred))
	for {
		_, oobn, _, _, err := a.uln.ReadMsgUnix(buf, oob)
		if err != nil {
			if a.closing.Load() {
				return // Close's last read ended
			}
			select {
			case <-a.done:
				return
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		c, ok := a.take(oob[:oobn])
		if !ok {
			continue
		}
		a.queue(c)
	}
}

// take reads one handed-over connection from a message's control data:
// the sender must be a process of this user.
func (a *Affinity) take(oob []byte) (net.Conn, bool) {
	msgs, err := syscall.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, false
	}
	var fds []int
	var cred *syscall.Ucred
	for _, m := range msgs {
		if m.Header.Level != syscall.SOL_SOCKET {
			continue
		}
		switch m.Header.Type {
		case syscall.SCM_RIGHTS:
			if f, err := syscall.ParseUnixRights(&m); err == nil {
				fds = append(fds, f...)
			}
		case syscall.SCM_CREDENTIALS:
			if c, err := syscall.ParseUnixCredentials(&m); err == nil {
				cred = c
			}
		}
	}
	mine := cred != nil && int(cred.Uid) == os.Getuid()
	var out net.Conn
	for _, fd := range fds {
		if !mine || out != nil {
			syscall.Close(fd)
			continue
		}
		f := os.NewFile(uintptr(fd), "handed")
		c, err := net.FileConn(f)
		f.Close()
		if err == nil {
			if _, ok := c.(*net.TCPConn); ok {
				out = c
				continue
			}
			c.Close()
		}
	}
	if !mine && len(fds) > 0 {
		a.refused.Add(1)
	}
	if out != nil {
		a.taken.Add(1)
	}
	return out, out != nil
}

// passCred asks the kernel for the sender's credentials with every
// message.
func passCred(c *net.UnixConn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_PASSCRED, 1)
	}); err != nil {
		return err
	}
	return serr
}
