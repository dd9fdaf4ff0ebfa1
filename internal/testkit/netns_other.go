//go:build !linux

package testkit

import "errors"

func canMakeNetns() error { return errors.New("network namespaces are Linux's") }
