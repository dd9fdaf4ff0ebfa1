package linger

import "testing"

// TestBackoff: a lone client's lingers (none catching anything) linger
// twice, then skip 1, 2, 4, ... up to MaxSkip batches between lingers; a
// linger that catches something resets it.
func TestBackoff(t *testing.T) {
	var b Backoff
	var lingered []int // batch numbers that lingered
	for i := range 300 {
		if b.Linger() {
			lingered = append(lingered, i)
			b.Settle(false)
		}
	}
	want := []int{0, 1, 3, 6, 11, 20, 37, 70, 135, 200, 265}
	if len(lingered) != len(want) {
		t.Fatalf("lingered at %v, want %v", lingered, want)
	}
	for i := range want {
		if lingered[i] != want[i] {
			t.Fatalf("lingered at %v, want %v", lingered, want)
		}
	}
	b.Settle(true)
	if b.Step != 0 || b.Misses != 0 {
		t.Fatalf("after a linger that caught something: %+v, want step and misses 0", b)
	}
	b.Skip = 0
	b.Settle(false)
	if !b.Linger() {
		t.Fatal("one empty linger alone made the next batch skip")
	}
}
