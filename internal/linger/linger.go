// Package linger is how a batcher that waits a little for its batch to
// fill (the store's pipeline workers, the soft state's read rounds)
// decides when not to wait. Each round trip to Redis costs it a fixed
// part, a system call pair and a wake-up, besides the work per item, so
// a lightly loaded process should send batches of a few rather than of
// one; but a lone client sending one request at a time would then wait
// the whole linger at every request, since nothing can arrive meanwhile.
package linger

// Fill is the batch a lingering batcher waits for: as many items as make
// the round trip's fixed cost a small part of each.
const Fill = 4

// MaxSkip bounds how many batches go at once after lingers that caught
// nothing.
const MaxSkip = 64

// Backoff counts the lingers that caught nothing: two in a row (a lone
// client; one alone is not taken for one, as at a few hundred requests a
// second a linger now and then catches nothing) make the next 1, 2, 4,
// ... up to MaxSkip batches go at once, so that such a client pays the
// wait about once in MaxSkip requests; a linger that caught something
// resets it. Its zero value lingers. It is not safe for concurrent use.
type Backoff struct {
	// Skip is how many batches go at once, Step what the next linger
	// that catches nothing sets Skip to, Misses how many lingers in a
	// row caught nothing.
	Skip, Step, Misses int
}

// Linger reports whether this batch may linger; false uses up a skip.
func (b *Backoff) Linger() bool {
	if b.Skip > 0 {
		b.Skip--
		return false
	}
	return true
}

// Settle counts a linger that caught something or nothing.
func (b *Backoff) Settle(caught bool) {
	if caught {
		b.Step, b.Misses = 0, 0
		return
	}
	if b.Misses++; b.Misses < 2 {
		return
	}
	b.Step = min(max(1, 2*b.Step), MaxSkip)
	b.Skip = b.Step
}
