package testkit

import (
	"bytes"
	"sync"
)

// Buffer collects a process's output (for checks and failure messages),
// safe for writers and readers at once. It keeps the first MiB: the start
// is what explains a failure, and a process that logs without end cannot
// fill the test's memory.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *Buffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b.Len() > 1<<20 {
		return len(p), nil
	}
	return l.b.Write(p)
}

// String is what was written so far.
func (l *Buffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
