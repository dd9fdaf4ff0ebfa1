//go:build !linux

package reuseport

import (
	"net"
	"net/netip"
)

// Affinity needs Linux (file descriptors passed over Unix sockets, with
// the sender's credentials).
type Affinity struct{ net.Listener }

// NewAffinity returns ErrUnsupported.
func NewAffinity(net.Listener, string, string) (*Affinity, error) { return nil, ErrUnsupported }

func (a *Affinity) SetReplicas([]string)                   {}
func (a *Affinity) Owner(netip.Addr) string                { return "" }
func (a *Affinity) Counts() (handed, taken, refused int64) { return 0, 0, 0 }
