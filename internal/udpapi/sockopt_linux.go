package udpapi

import (
	"encoding/binary"
	"net"
	"syscall"
)

// countDrops asks the kernel to report, with each datagram read, how many
// datagrams it has dropped on this socket because its receive buffer was
// full (SO_RXQ_OVFL): the one queue in front of the workers is counted too.
func countDrops(c *net.UDPConn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RXQ_OVFL, 1)
	}); err != nil {
		return err
	}
	return serr
}

// dropCount reads the SO_RXQ_OVFL control message: the socket's drops so
// far. The kernel sends it only once there has been a drop.
func dropCount(oob []byte) (uint64, bool) {
	msgs, err := syscall.ParseSocketControlMessage(oob)
	if err != nil {
		return 0, false
	}
	for _, m := range msgs {
		if m.Header.Level == syscall.SOL_SOCKET && m.Header.Type == syscall.SO_RXQ_OVFL && len(m.Data) >= 4 {
			return uint64(binary.NativeEndian.Uint32(m.Data)), true
		}
	}
	return 0, false
}

// readBufferOf returns the receive buffer size in force (the kernel
// doubles what was asked, within net.core.rmem_max), or -1.
func readBufferOf(c *net.UDPConn) int {
	rc, err := c.SyscallConn()
	if err != nil {
		return -1
	}
	n := -1
	rc.Control(func(fd uintptr) {
		if v, err := syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF); err == nil {
			n = v
		}
	})
	return n
}
