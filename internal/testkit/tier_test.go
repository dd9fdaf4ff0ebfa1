package testkit

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
)

// recorder is a testing.TB that records how a helper ended the test:
// Skipf and Fatalf end the calling goroutine, as the real ones do.
type recorder struct {
	testing.TB
	skipped, failed string
}

func (r *recorder) Helper() {}
func (r *recorder) Skipf(format string, args ...any) {
	r.skipped = fmt.Sprintf(format, args...)
	runtime.Goexit()
}
func (r *recorder) Fatalf(format string, args ...any) {
	r.failed = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// run calls f with a recorder on a goroutine of its own, as a test runs.
func run(t *testing.T, f func(tb testing.TB)) *recorder {
	r := &recorder{TB: t}
	done := make(chan struct{})
	go func() { defer close(done); f(r) }()
	<-done
	return r
}

// TestTier: without its variable a tier's test skips and says which
// variable runs it; with it, a missing tool fails the test, never skips.
func TestTier(t *testing.T) {
	tier := Tier{Var: "TRACKLINK_TESTKIT_SELFTEST", Needs: "a tool that is nowhere"}
	t.Setenv(tier.Var, "")
	r := run(t, func(tb testing.TB) { tier.Require(tb) })
	if r.failed != "" || !strings.Contains(r.skipped, tier.Var+"=1") || !strings.Contains(r.skipped, tier.Needs) {
		t.Errorf("tier off: skipped %q, failed %q; want a skip naming %s and what it needs", r.skipped, r.failed, tier.Var)
	}

	t.Setenv(tier.Var, "1")
	r = run(t, func(tb testing.TB) {
		tier.Require(tb)
		tier.Tool(tb, "tracklink-no-such-tool", "nowhere to get it")
	})
	if r.skipped != "" || !strings.Contains(r.failed, "tracklink-no-such-tool is not installed") || !strings.Contains(r.failed, tier.Var) {
		t.Errorf("tier on, tool missing: skipped %q, failed %q; want a failure naming the tool and %s", r.skipped, r.failed, tier.Var)
	}

	r = run(t, func(tb testing.TB) {
		tier.Require(tb)
		if p := tier.Tool(tb, "go", "the Go toolchain"); p == "" {
			tb.Fatalf("no path for go")
		}
	})
	if r.skipped != "" || r.failed != "" {
		t.Errorf("tier on, tool present: skipped %q, failed %q", r.skipped, r.failed)
	}
}

// TestTestCommandRunsEveryTier: README.md's test command, which CI runs
// (.ci/run reads the line after the marker's fence), sets every tier's
// variable and TRACKLINK_FAULTS, so no tier is left out of CI.
func TestTestCommandRunsEveryTier(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(b), "<!-- test-command -->\n")
	lines := strings.SplitN(after, "\n", 3)
	if !ok || len(lines) < 2 {
		t.Fatal("README.md has no test command after <!-- test-command -->")
	}
	cmd := lines[1]
	for _, tier := range Tiers {
		if !strings.Contains(cmd, tier.Var+"=1 ") {
			t.Errorf("the test command does not set %s=1: %s", tier.Var, cmd)
		}
	}
	if !strings.Contains(cmd, "TRACKLINK_FAULTS=short ") {
		t.Errorf("the test command does not run the fault suite (TRACKLINK_FAULTS=short): %s", cmd)
	}
}
