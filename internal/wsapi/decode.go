package wsapi

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"math/bits"
	"unicode/utf8"
)

// decodeMessage reads a client's message into m in one pass over data,
// checking that all of it is valid JSON (RFC 8259) as it goes: it does
// what json.Unmarshal(data, m) does (about three times as fast on an
// announce with offers, whose SDP text is most of the bytes and is only
// checked and kept), except that keys match exactly, not whatever their
// case. m's raw values (info_hash, left, offer, answer) are slices of
// data.
func decodeMessage(data []byte, m *message) error {
	d := decoder{data: data, strs: m.strs[:0]}
	d.space()
	if err := d.object(func(key []byte) error {
		switch string(key) {
		case "action":
			s, err := d.stringOrNull()
			if s != nil {
				m.Action = *s
			}
			return err
		case "info_hash":
			return d.raw(&m.InfoHash)
		case "peer_id":
			return d.optString(&m.PeerID)
		case "event":
			return d.optString(&m.Event)
		case "left":
			return d.raw(&m.Left)
		case "answer":
			return d.raw(&m.Answer)
		case "to_peer_id":
			return d.optString(&m.ToPeerID)
		case "offer_id":
			return d.optString(&m.OfferID)
		case "offers":
			return d.offers(&m.Offers)
		}
		_, _, err := d.value(0)
		return err
	}); err != nil {
		return err
	}
	d.space()
	if d.i != len(d.data) {
		return errSyntax
	}
	return nil
}

var (
	errSyntax = errors.New("invalid JSON")
	errType   = errors.New("a JSON value of the wrong type")
)

// maxDepth bounds nesting (an offer's object and what it holds).
const maxDepth = 512

type decoder struct {
	data []byte
	i    int
	strs []string // where the strings read go, while it has room
}

func (d *decoder) space() {
	for d.i < len(d.data) {
		switch d.data[d.i] {
		case ' ', '\t', '\n', '\r':
			d.i++
		default:
			return
		}
	}
}

func (d *decoder) peek() byte {
	if d.i < len(d.data) {
		return d.data[d.i]
	}
	return 0
}

// object reads an object, calling field for each key with d after the
// colon (field reads the value).
func (d *decoder) object(field func(key []byte) error) error {
	if d.peek() != '{' {
		if d.peek() == 0 {
			return errSyntax
		}
		if _, _, err := d.value(0); err != nil {
			return err
		}
		return errType
	}
	d.i++
	d.space()
	if d.peek() == '}' {
		d.i++
		return nil
	}
	for {
		d.space()
		start, end, esc, err := d.str()
		if err != nil {
			return err
		}
		key := d.data[start+1 : end-1]
		if esc {
			var k string
			if json.Unmarshal(d.data[start:end], &k) != nil {
				return errSyntax
			}
			key = []byte(k)
		}
		d.space()
		if d.peek() != ':' {
			return errSyntax
		}
		d.i++
		d.space()
		if err := field(key); err != nil {
			return err
		}
		d.space()
		switch d.peek() {
		case ',':
			d.i++
		case '}':
			d.i++
			return nil
		default:
			return errSyntax
		}
	}
}

// raw reads any value into *dst (a slice of data).
func (d *decoder) raw(dst *json.RawMessage) error {
	start, end, err := d.value(0)
	*dst = d.data[start:end]
	return err
}

// optString reads a string or null (nil).
func (d *decoder) optString(dst **string) error {
	s, err := d.stringOrNull()
	*dst = s
	return err
}

func (d *decoder) stringOrNull() (*string, error) {
	switch d.peek() {
	case 'n':
		return nil, d.literal("null")
	case '"':
	default:
		if _, _, err := d.value(0); err != nil {
			return nil, err
		}
		return nil, errType
	}
	start, end, esc, err := d.str()
	if err != nil {
		return nil, err
	}
	inner := d.data[start+1 : end-1]
	var s *string
	if len(d.strs) < cap(d.strs) {
		d.strs = d.strs[:len(d.strs)+1]
		s = &d.strs[len(d.strs)-1]
	} else {
		s = new(string)
	}
	switch {
	case !esc && string(inner) == "announce":
		*s = "announce" // the action of most messages, not copied
	case !esc && utf8.Valid(inner):
		*s = string(inner)
	case json.Unmarshal(d.data[start:end], s) != nil: // escapes, or bytes that are not UTF-8 (replaced, as encoding/json does)
		return nil, errSyntax
	}
	return s, nil
}

// offers reads null or an array of offers.
func (d *decoder) offers(dst *[]offerIn) error {
	switch d.peek() {
	case 'n':
		*dst = nil
		return d.literal("null")
	case '[':
	default:
		if _, _, err := d.value(0); err != nil {
			return err
		}
		return errType
	}
	d.i++
	out := (*dst)[:0]
	if out == nil {
		out = []offerIn{} // [] is no offers, not null
	}
	d.space()
	if d.peek() == ']' {
		d.i++
		*dst = out
		return nil
	}
	for {
		d.space()
		var o offerIn
		if d.peek() == 'n' {
			if err := d.literal("null"); err != nil {
				return err
			}
		} else if err := d.object(func(key []byte) error {
			switch string(key) {
			case "offer_id":
				return d.optString(&o.OfferID)
			case "offer":
				return d.raw(&o.Offer)
			}
			_, _, err := d.value(0)
			return err
		}); err != nil {
			return err
		}
		out = append(out, o)
		d.space()
		switch d.peek() {
		case ',':
			d.i++
		case ']':
			d.i++
			*dst = out
			return nil
		default:
			return errSyntax
		}
	}
}

// value checks one value and returns where it is.
func (d *decoder) value(depth int) (start, end int, err error) {
	if depth > maxDepth {
		return d.i, d.i, errSyntax
	}
	start = d.i
	switch c := d.peek(); {
	case c == '"':
		_, end, _, err = d.str()
		return start, end, err
	case c == '{':
		err = d.object(func([]byte) error { _, _, err := d.value(depth + 1); return err })
	case c == '[':
		d.i++
		d.space()
		if d.peek() == ']' {
			d.i++
			return start, d.i, nil
		}
		for {
			d.space()
			if _, _, err = d.value(depth + 1); err != nil {
				return start, d.i, err
			}
			d.space()
			if d.peek() == ',' {
				d.i++
				continue
			}
			if d.peek() != ']' {
				return start, d.i, errSyntax
			}
			d.i++
			break
		}
	case c == 't':
		err = d.literal("true")
	case c == 'f':
		err = d.literal("false")
	case c == 'n':
		err = d.literal("null")
	case c == '-' || (c >= '0' && c <= '9'):
		err = d.number()
	default:
		err = errSyntax
	}
	return start, d.i, err
}

func (d *decoder) literal(lit string) error {
	if len(d.data)-d.i < len(lit) || string(d.data[d.i:d.i+len(lit)]) != lit {
		return errSyntax
	}
	d.i += len(lit)
	return nil
}

func (d *decoder) digits() int {
	n := 0
	for d.i < len(d.data) && d.data[d.i] >= '0' && d.data[d.i] <= '9' {
		d.i++
		n++
	}
	return n
}

func (d *decoder) number() error {
	if d.peek() == '-' {
		d.i++
	}
	switch c := d.peek(); {
	case c == '0':
		d.i++
	case c >= '1' && c <= '9':
		d.digits()
	default:
		return errSyntax
	}
	if d.peek() == '.' {
		d.i++
		if d.digits() == 0 {
			return errSyntax
		}
	}
	if c := d.peek(); c == 'e' || c == 'E' {
		d.i++
		if c := d.peek(); c == '+' || c == '-' {
			d.i++
		}
		if d.digits() == 0 {
			return errSyntax
		}
	}
	return nil
}

// str checks a string token; esc: it has escapes.
func (d *decoder) str() (start, end int, esc bool, err error) {
	start = d.i
	if d.peek() != '"' {
		return start, d.i, false, errSyntax
	}
	d.i++
	for d.i < len(d.data) {
		// Skip plain bytes eight at a time (most of a message is the
		// offers' SDP text), and to the first special one of the eight
		// that holds one: not one by one up to it. An SDP has an escape
		// (\r\n) every line; skipping to it took decoding an announce
		// with 5 offers from 2.9-4.0 µs to 2.0-2.9 (BenchmarkDecodeMessage,
		// five runs each, run in turn).
		i := d.i
		for i+8 <= len(d.data) {
			if m := specials(binary.LittleEndian.Uint64(d.data[i:])); m != 0 {
				i += bits.TrailingZeros64(m) / 8
				break
			}
			i += 8
		}
		d.i = i
		if d.i >= len(d.data) {
			break
		}
		c := d.data[d.i]
		switch {
		case c == '"':
			d.i++
			return start, d.i, esc, nil
		case c == '\\':
			esc = true
			d.i++
			switch d.peek() {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				d.i++
			case 'u':
				d.i++
				if len(d.data)-d.i < 4 {
					return start, d.i, esc, errSyntax
				}
				for _, h := range d.data[d.i : d.i+4] {
					if !isHex(h) {
						return start, d.i, esc, errSyntax
					}
				}
				d.i += 4
			default:
				return start, d.i, esc, errSyntax
			}
		case c < 0x20:
			return start, d.i, esc, errSyntax
		default:
			d.i++
		}
	}
	return start, d.i, esc, errSyntax
}

// special8 reports whether any of the eight bytes of w ends or escapes a
// string or is a control character ('"', '\\', or below 0x20).
func special8(w uint64) bool { return specials(w) != 0 }

// specials marks with its high bit the first byte of w (little-endian)
// that is special as special8 says, and maybe later ones: the classic
// tests for a zero byte and a byte below n, on w and on w with each quote
// or backslash made zero. A borrow runs only up from a byte that is
// marked rightly, so the lowest mark is always right.
func specials(w uint64) uint64 {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	q := w ^ (ones * '"')
	b := w ^ (ones * '\\')
	return ((q-ones)&^q | (b-ones)&^b | (w-ones*0x20)&^w) & highs
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}
