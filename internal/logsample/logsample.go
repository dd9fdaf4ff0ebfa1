// Package logsample keeps error paths from flooding logs: a Logger writes
// at most one line per period, with the number of lines it held back
// since the last one, so a failure that repeats on every request or every
// message (a dead Redis under load) is a line every few seconds.
package logsample

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Logger is safe for concurrent use.
type Logger struct {
	log    *slog.Logger
	period time.Duration
	mu     sync.Mutex
	last   time.Time
	quiet  int
}

// New returns a Logger that writes to log at most once per period.
func New(log *slog.Logger, period time.Duration) *Logger {
	return &Logger{log: log, period: period}
}

// Log writes msg with args at level, unless a line was written less than
// a period ago; then it only counts it.
func (l *Logger) Log(level slog.Level, msg string, args ...any) {
	l.mu.Lock()
	now := time.Now()
	if !l.last.IsZero() && now.Sub(l.last) < l.period {
		l.quiet++
		l.mu.Unlock()
		return
	}
	held := l.quiet
	l.last, l.quiet = now, 0
	l.mu.Unlock()
	l.log.Log(context.Background(), level, msg, append(args, "suppressed_since_last", held)...)
}
