//go:build !linux

package wsapi

import "errors"

// poller is epoll's (poll_linux.go); elsewhere every connection keeps a
// goroutine that reads it.
type poller struct{}

func newPoller() (*poller, error) { return nil, errors.New("no epoll on this system") }

var errNotPollable = errors.New("no poller")

func (p *poller) add(c *conn) error    { return errNotPollable }
func (p *poller) arm(c *conn) error    { return errNotPollable }
func (p *poller) remove(c *conn)       {}
func (p *poller) run(wake func(*conn)) {}
func (p *poller) stop()                {}
