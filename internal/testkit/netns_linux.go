//go:build linux

package testkit

import (
	"runtime"
	"syscall"
)

// canMakeNetns tries what NewNetns needs: to make a network namespace
// (CAP_SYS_ADMIN, which root has). It does so on a thread of its own,
// which stays locked and so ends with its goroutine, namespace and all.
func canMakeNetns() error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		errc <- syscall.Unshare(syscall.CLONE_NEWNET)
	}()
	return <-errc
}
