// Command udp-responder is the bench's yardstick for its load generator:
// a UDP tracker that does nothing. It answers a BEP 15 connect with a
// connection id and an announce with a fixed reply (an interval, counts
// and ten IPv4 peers), reading nothing else, so that `tracker loadgen`
// against it shows the most the load generator can drive on this core
// layout (scripts/bench-udp.sh).
//
//	go run ./scripts/udp-responder 127.0.0.1:PORT
package main

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: udp-responder host:port")
		os.Exit(2)
	}
	addr, err := net.ResolveUDPAddr("udp", os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	conn, err := net.ListenUDP("udp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	buf := make([]byte, 2048)
	out := make([]byte, 0, 20+10*6)
	for {
		n, from, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		if n < 16 {
			continue
		}
		if reply := answer(buf[:n], out[:0]); reply != nil {
			conn.WriteToUDPAddrPort(reply, from)
		}
	}
}

// answer is the reply to request b: connect (action 0) or anything else
// taken as an announce (action 1).
func answer(b, out []byte) []byte {
	action, tx := binary.BigEndian.Uint32(b[8:]), binary.BigEndian.Uint32(b[12:])
	out = binary.BigEndian.AppendUint32(out, min(action, 1))
	out = binary.BigEndian.AppendUint32(out, tx)
	if action == 0 {
		return binary.BigEndian.AppendUint64(out, 0x5eed)
	}
	out = binary.BigEndian.AppendUint32(out, 1800) // interval
	out = binary.BigEndian.AppendUint32(out, 5)    // leechers
	out = binary.BigEndian.AppendUint32(out, 5)    // seeders
	for i := range 10 {
		a := netip.AddrFrom4([4]byte{10, 0, 0, byte(i + 1)}).As4()
		out = append(out, a[:]...)
		out = binary.BigEndian.AppendUint16(out, uint16(6881+i))
	}
	return out
}
