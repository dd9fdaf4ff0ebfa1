package redisstore

import (
	"testing"

	"github.com/tracklink/tracklink/internal/bittorrent"
)

// TestExtensions: a swarm is due for an extension unless this table
// recorded one within every; a swarm whose slot another took is due; the
// zero info hash (what an empty slot holds) is due until recorded; a
// table of every 0 always extends and records nothing; the table is
// made at the first use.
func TestExtensions(t *testing.T) {
	e := newExtensions(10)
	if e.slots != nil {
		t.Fatal("the table was made before its first use")
	}
	a, b := hash("ext-a"), hash("ext-b")
	if k, c := e.due(a, true, 1000); !k || !c {
		t.Fatalf("an unknown swarm: due %v, %v; want both", k, c)
	}
	if k, c := e.due(a, false, 1000); !k || c {
		t.Fatalf("an unknown swarm refreshing no seeder: due %v, %v; want the keys only", k, c)
	}
	e.done(a, true, false, 1000)
	if k, c := e.due(a, true, 1000+9999); k || !c {
		t.Fatalf("within every of the keys' extension: due %v, %v; want the completed counter only", k, c)
	}
	e.done(a, false, true, 1000+9999)
	if k, c := e.due(a, true, 1000+10000); !k || c {
		t.Fatalf("every after the keys', within every of the counter's: due %v, %v; want the keys only", k, c)
	}
	// Another swarm, b, took a's slot (as a colliding hash would): a is
	// due again, though its last extension was recent.
	e.done(a, true, true, 20000)
	if k, c := e.due(a, true, 20001); k || c {
		t.Fatalf("just extended: due %v, %v; want neither", k, c)
	}
	*e.slot(a) = extension{ih: b, keys: 20000, completed: 20000}
	if k, c := e.due(a, true, 20001); !k || !c {
		t.Fatalf("a swarm whose slot another took: due %v, %v; want both", k, c)
	}
	always := newExtensions(0)
	always.done(a, true, true, 1000)
	if k, c := always.due(a, true, 1001); !k || !c || always.slots != nil {
		t.Fatalf("every 0: due %v, %v, table made %v; want both due, no table", k, c, always.slots != nil)
	}
	var zero bittorrent.InfoHash
	if k, _ := e.due(zero, false, 1); !k {
		t.Fatal("the zero info hash, never recorded, is not due")
	}
}
