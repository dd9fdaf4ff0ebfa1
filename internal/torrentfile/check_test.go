package torrentfile

import (
	"bytes"
	"encoding/hex"
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"
)

// nested is the shape that crashed the hub: an info value of depth lists
// inside each other.
func nested(depth int) []byte {
	return []byte("d4:info" + strings.Repeat("l", depth) + strings.Repeat("e", depth) + "e")
}

func TestCheck(t *testing.T) {
	for name, tc := range map[string]struct {
		in   string
		info string // "" with want "": no info
		want string // part of the error; "" for none
	}{
		"info dict":         {in: "d8:announce1:a4:infod1:ai1eee", info: "d1:ai1ee"},
		"info last of many": {in: "d1:al1:xe4:infoi-3e1:zdee", info: "i-3e"},
		"no info":           {in: "d1:ai1ee"},
		"nested info key":   {in: "d1:ad4:infoi1eee"},
		"empty":             {in: "", want: "not a dictionary"},
		"list":              {in: "le", want: "not a dictionary"},
		"truncated":         {in: "d4:infod", want: "truncated"},
		"trailing":          {in: "de1", want: "after the dictionary"},
		"key not string":    {in: "di1ei1ee", want: "key is not a string"},
		"key without value": {in: "d1:ae", want: "without a value"},
		"two infos":         {in: "d4:infoi1e4:infoi2ee", want: "two info"},
		"bad int":           {in: "d1:aiee", want: "malformed integer"},
		"long int":          {in: "d1:ai" + strings.Repeat("9", 30) + "ee", want: "integer too long"},
		"string past end":   {in: "d1:a9:abce", want: "past the end"},
		"huge length":       {in: "d1:a99999999999:e", want: "too long"},
		"stray byte":        {in: "d1:axe", want: "unexpected"},
		"stray e":           {in: "dee", want: "after the dictionary"},
		"too deep":          {in: string(nested(MaxDepth)), want: "nested deeper"},
		"deep enough":       {in: string(nested(MaxDepth - 1)), info: strings.Repeat("l", MaxDepth-1) + strings.Repeat("e", MaxDepth-1)},
		"too many":          {in: "d4:infol" + strings.Repeat("i0e", MaxElements) + "ee", want: "more than"},
	} {
		info, err := Check([]byte(tc.in))
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: err = %v, want %q", name, err, tc.want)
		case tc.want == "" && string(info) != tc.info:
			t.Errorf("%s: info %q, want %q", name, info, tc.info)
		}
	}
}

// TestNestedRefusedQuickly: the 8 MB value that overflowed the decoder's
// stack (and its 2 MB cousin, 6 s and 1 GB in the decoder) is refused by
// Parse at once, in a few kilobytes.
func TestNestedRefusedQuickly(t *testing.T) {
	for _, depth := range []int{1_000_000, 4_000_000} {
		b := nested(depth)
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		start := time.Now()
		_, err := Parse(b)
		took := time.Since(start)
		runtime.ReadMemStats(&after)
		if !errors.Is(err, ErrTooDeep) {
			t.Fatalf("depth %d: err = %v", depth, err)
		}
		if alloc := after.TotalAlloc - before.TotalAlloc; took > time.Second || alloc > 64<<10 {
			t.Fatalf("depth %d: refused in %s with %d bytes allocated", depth, took, alloc)
		}
		t.Logf("%d bytes, depth %d: refused in %s", len(b), depth, took)
	}
	// Wide rather than deep: many values, each cheap to a decoder but
	// not in bulk.
	wide := []byte("d4:infol" + strings.Repeat("le", 4_000_000) + "ee")
	start := time.Now()
	if _, err := Parse(wide); !errors.Is(err, ErrTooMany) || time.Since(start) > time.Second {
		t.Fatalf("4M empty lists: %v after %s", err, time.Since(start))
	}
}

// TestCheckAgreesWithDecoder: the info bytes Check finds are those the
// decoder hashes, and NamedBy accepts a torrent's own hashes only.
func TestCheckAgreesWithDecoder(t *testing.T) {
	for name, b := range map[string][]byte{"v1": create(t, func() string { _, s := fixture(t); return s }(), false), "v2": v2(t, false), "hybrid": v2(t, true)} {
		f, err := Parse(b)
		if err != nil {
			t.Fatal(err)
		}
		info, err := Check(b)
		if err != nil || !bytes.Equal(info, f.top["info"]) {
			t.Fatalf("%s: Check's info differs from the decoder's (%v)", name, err)
		}
		var names []string
		if h, ok := f.InfoHashV1(); ok {
			names = append(names, hex.EncodeToString(h[:]))
		}
		if h, ok := f.InfoHashV2(); ok {
			names = append(names, hex.EncodeToString(h[:20]))
		}
		for _, n := range names {
			if ok, err := NamedBy(b, n); !ok || err != nil {
				t.Errorf("%s: not named by its own hash %s (%v)", name, n, err)
			}
		}
		if ok, _ := NamedBy(b, strings.Repeat("ff", 20)); ok {
			t.Errorf("%s: named by another torrent's hash", name)
		}
		if ok, _ := NamedBy(b, "short"); ok {
			t.Errorf("%s: named by a non-hash", name)
		}
	}
	if _, err := NamedBy([]byte("d4:infoi1ee"), strings.Repeat("ff", 20)); err == nil {
		t.Error("an info that is not a dictionary is named")
	}
}
