// Package reuseport lets the replicas of one tracker share its address: each
// process opens its sockets with SO_REUSEPORT, so the kernel spreads
// connections and datagrams over all of them, and steers every client
// address to one replica (a classic BPF program on the port's group that
// picks a socket by a hash of the source address, IPv6 by its /64, modulo
// the number of replicas). A client's connections and datagrams thus meet
// one process's per-address limits and min-interval table, not N of them,
// whatever source ports it uses.
//
// The program needs the number of replicas; Group (group.go) keeps it from
// the node's registry of processes and re-attaches the program when it
// changes. While the count is off (a replica just started or died), the
// kernel's own 4-tuple hash serves the addresses whose index is out of
// range: nothing is refused, limits are looser for a moment.
//
// Where the kernel will not run such a program on a TCP listener (as on
// this project's test machines), TCP connections meet their owner through
// Affinity (affinity.go): a replica hands a connection it should not serve
// to the one that should, passing the descriptor over a Unix socket. The
// owners of TCP and of UDP are picked apart, so one client address meets
// at most two replicas' limits, whatever the number of replicas.
package reuseport

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"

	"golang.org/x/net/bpf"
)

// ListenConfig returns a net.ListenConfig whose sockets are opened with
// SO_REUSEPORT: any number of processes of one user may then bind the same
// address.
func ListenConfig() *net.ListenConfig {
	return &net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) { serr = setReusePort(int(fd)) }); err != nil {
			return err
		}
		return serr
	}}
}

// Listen opens a TCP listener on addr with SO_REUSEPORT.
func Listen(addr string) (net.Listener, error) {
	return ListenConfig().Listen(context.Background(), "tcp", addr)
}

// MaxReplicas bounds the count Steer takes (the kernel's reuseport group
// holds at most 65,535 sockets; far more than a host runs replicas).
const MaxReplicas = 4096

// netOff is the classic BPF offset of the packet's network header
// (SKF_NET_OFF), whatever header the program is run at.
const netOff = 0xfff00000

// hashMul mixes the address bits before the modulo (the golden ratio's
// 32-bit multiplier), so that neighbouring addresses spread.
const hashMul = 0x9e3779b1

// program returns the steering program for n replicas: the index of the
// socket that serves a packet is a hash of its source address (IPv4 whole;
// IPv6 by its first 64 bits, the prefix the per-address limits count by)
// modulo n.
func program(n int) ([]bpf.RawInstruction, error) {
	if n < 1 || n > MaxReplicas {
		return nil, fmt.Errorf("reuseport: %d replicas, want 1 to %d", n, MaxReplicas)
	}
	return bpf.Assemble([]bpf.Instruction{
		bpf.LoadAbsolute{Off: netOff, Size: 1},               // A = first byte of the IP header
		bpf.ALUOpConstant{Op: bpf.ALUOpShiftRight, Val: 4},   // A = IP version
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: 6, SkipTrue: 2}, // IPv6: skip the IPv4 load
		bpf.LoadAbsolute{Off: netOff + 12, Size: 4},          // IPv4 source address
		bpf.Jump{Skip: 3},                          // to the hash
		bpf.LoadAbsolute{Off: netOff + 8, Size: 4}, // IPv6 source address, bytes 0-3
		bpf.TAX{}, // X = them
		bpf.LoadAbsolute{Off: netOff + 12, Size: 4},         // bytes 4-7
		bpf.ALUOpX{Op: bpf.ALUOpXor},                        // A = the /64, folded
		bpf.ALUOpConstant{Op: bpf.ALUOpMul, Val: hashMul},   // mix
		bpf.ALUOpConstant{Op: bpf.ALUOpShiftRight, Val: 16}, // the well-mixed high bits
		bpf.ALUOpConstant{Op: bpf.ALUOpMod, Val: uint32(n)}, // the replica's socket
		bpf.RetA{},
	})
}

// ErrUnsupported is returned where the kernel has no SO_REUSEPORT steering
// (or, for Affinity, no passing of descriptors).
var ErrUnsupported = errors.New("reuseport: steering needs Linux")

// Steer attaches the program for n replicas to the reuseport group of
// conn's socket (a *net.UDPConn opened with ListenConfig). The program
// belongs to the group: the last process to attach one sets it for every
// socket of that address. Some kernels (this project's test machines
// among them) refuse a classic program on a TCP listener
// (EOPNOTSUPP); TCP uses Affinity, which needs nothing of the kernel.
func Steer(conn syscall.Conn, n int) error {
	prog, err := program(n)
	if err != nil {
		return err
	}
	rc, err := conn.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = attach(int(fd), prog) }); err != nil {
		return err
	}
	return serr
}

func readSysctl(path string) (string, error) {
	b, err := os.ReadFile(path)
	return strings.TrimSpace(string(b)), err
}
