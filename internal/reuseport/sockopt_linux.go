//go:build linux

package reuseport

import (
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

func setReusePort(fd int) error {
	return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
}

func attach(fd int, prog []bpf.RawInstruction) error {
	filter := make([]unix.SockFilter, len(prog))
	for i, ins := range prog {
		filter[i] = unix.SockFilter{Code: ins.Op, Jt: ins.Jt, Jf: ins.Jf, K: ins.K}
	}
	return unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_REUSEPORT_CBPF, &unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]})
}

// MigratesRequests reports whether the kernel hands the connections
// queued at a closing listener to another listener of its reuseport group
// (net.ipv4.tcp_migrate_req), so a replica that leaves resets none.
func MigratesRequests() (bool, error) {
	b, err := readSysctl("/proc/sys/net/ipv4/tcp_migrate_req")
	return b == "1", err
}
