//go:build !linux

package udpapi

import (
	"errors"
	"net"
)

// countDrops: only Linux reports a socket's receive-buffer drops.
func countDrops(*net.UDPConn) error {
	return errors.New("counting receive-buffer drops needs Linux (SO_RXQ_OVFL)")
}

func dropCount([]byte) (uint64, bool) { return 0, false }

func readBufferOf(*net.UDPConn) int { return -1 }
