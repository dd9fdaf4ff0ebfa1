package logsample

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestLogger(t *testing.T) {
	var buf bytes.Buffer
	l := New(slog.New(slog.NewTextHandler(&buf, nil)), 50*time.Millisecond)
	for i := 0; i < 100; i++ {
		l.Log(slog.LevelWarn, "it failed", "i", i)
	}
	if n := strings.Count(buf.String(), "\n"); n != 1 {
		t.Fatalf("100 failures at once: %d lines, want 1:\n%s", n, buf.String())
	}
	time.Sleep(60 * time.Millisecond)
	l.Log(slog.LevelWarn, "it failed", "i", 100)
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[1], "suppressed_since_last=99") || !strings.Contains(lines[1], "level=WARN") {
		t.Fatalf("after the period: %q", lines)
	}
}
