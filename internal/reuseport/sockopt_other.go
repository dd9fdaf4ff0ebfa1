//go:build !linux

package reuseport

import "golang.org/x/net/bpf"

func setReusePort(int) error { return ErrUnsupported }

func attach(int, []bpf.RawInstruction) error { return ErrUnsupported }

// MigratesRequests reports false: only Linux migrates requests.
func MigratesRequests() (bool, error) { return false, ErrUnsupported }
