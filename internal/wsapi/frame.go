package wsapi

import (
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"net/http"
	"strings"
)

// The WebSocket protocol (RFC 6455), server side, as much as a tracker
// needs: the opening handshake, frames read from a client (masked, at most
// MaxMessageBytes a message, fragments joined, pings answered) and frames
// written to it (unmasked, one write each). No extension (permessage-deflate
// is declined by not answering it) and no subprotocol. It is written here,
// not taken from a library, because serving an idle connection with no
// goroutine and no buffer of its own (poll_linux.go) needs frames read from
// a buffer lent for one burst of messages, which the libraries' connections
// (each with its reader and buffers for life) do not allow.

// Opcodes.
const (
	opContinuation = 0x0
	opText         = 0x1
	opBinary       = 0x2
	opClose        = 0x8
	opPing         = 0x9
	opPong         = 0xa
)

// Close codes.
const (
	closeNormal          = 1000
	closeGoingAway       = 1001
	closeProtocolError   = 1002
	closeNoStatus        = 1005
	closePolicyViolation = 1008
	closeTooBig          = 1009
)

// acceptGUID is the RFC's constant for Sec-WebSocket-Accept.
const acceptGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// handshakeError is an opening handshake the server refuses.
type handshakeError struct {
	status int
	reason string
}

func (e *handshakeError) Error() string { return e.reason }

// checkHandshake returns the client's key of a valid opening handshake.
func checkHandshake(r *http.Request) (string, error) {
	switch {
	case r.Method != http.MethodGet:
		return "", &handshakeError{http.StatusMethodNotAllowed, "a WebSocket handshake is a GET"}
	case !hasToken(r.Header, "Connection", "upgrade"), !hasToken(r.Header, "Upgrade", "websocket"):
		return "", &handshakeError{http.StatusBadRequest, "not a WebSocket handshake"}
	case r.Header.Get("Sec-WebSocket-Version") != "13":
		return "", &handshakeError{http.StatusUpgradeRequired, "WebSocket version 13 only"}
	}
	key := r.Header.Get("Sec-WebSocket-Key")
	if b, err := base64.StdEncoding.DecodeString(key); err != nil || len(b) != 16 {
		return "", &handshakeError{http.StatusBadRequest, "invalid Sec-WebSocket-Key"}
	}
	return key, nil
}

// hasToken reports whether a comma-separated header lists token (case
// insensitive).
func hasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// handshakeResponse is the server's answer to key.
func handshakeResponse(key string) []byte {
	h := sha1.New()
	h.Write([]byte(key))
	h.Write([]byte(acceptGUID))
	b := []byte("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ")
	b = base64.StdEncoding.AppendEncode(b, h.Sum(nil))
	return append(b, "\r\n\r\n"...)
}

// closeError is a frame or message that ends the connection with a close
// frame of code (label: the closed-connections metric's reason).
type closeError struct {
	code   int
	reason string
	label  string
}

func (e *closeError) Error() string { return e.reason }

func protocolError(reason string) *closeError {
	return &closeError{closeProtocolError, reason, "malformed"}
}

// peerClosed: the client sent a close frame (answered).
var errPeerClosed = &closeError{closeNormal, "closed by the client", "client"}

type frameHeader struct {
	fin    bool
	op     byte
	length int64
	mask   [4]byte
}

// parseHeader reads a client's frame header at the start of b and checks
// what the protocol requires of it; hlen is its length, 0 if b does not
// hold all of it yet.
func parseHeader(b []byte) (h frameHeader, hlen int, err error) {
	if len(b) < 2 {
		return h, 0, nil
	}
	h.fin, h.op = b[0]&0x80 != 0, b[0]&0x0f
	if b[0]&0x70 != 0 {
		return h, 0, protocolError("reserved bits set (no extension was agreed)")
	}
	if b[1]&0x80 == 0 {
		return h, 0, protocolError("unmasked client frame")
	}
	switch h.op {
	case opContinuation, opText, opBinary:
	case opClose, opPing, opPong:
		if !h.fin || b[1]&0x7f > 125 {
			return h, 0, protocolError("invalid control frame")
		}
	default:
		return h, 0, protocolError(fmt.Sprintf("unknown opcode %d", h.op))
	}
	hlen = 2
	switch n := b[1] & 0x7f; n {
	case 126:
		if len(b) < 4 {
			return h, 0, nil
		}
		h.length = int64(binary.BigEndian.Uint16(b[2:4]))
		hlen = 4
	case 127:
		if len(b) < 10 {
			return h, 0, nil
		}
		u := binary.BigEndian.Uint64(b[2:10])
		if u>>63 != 0 {
			return h, 0, protocolError("invalid frame length")
		}
		h.length = int64(u)
		hlen = 10
	default:
		h.length = int64(n)
	}
	if len(b) < hlen+4 {
		return h, 0, nil
	}
	copy(h.mask[:], b[hlen:hlen+4])
	return h, hlen + 4, nil
}

// unmask XORs b, which starts at byte pos of its frame's payload, with
// the frame's mask.
func unmask(b []byte, mask [4]byte, pos int) {
	i := 0
	if len(b) >= 16 {
		var k [8]byte
		for j := range k {
			k[j] = mask[(pos+j)&3]
		}
		key := binary.LittleEndian.Uint64(k[:])
		for ; i+8 <= len(b); i += 8 {
			binary.LittleEndian.PutUint64(b[i:], binary.LittleEndian.Uint64(b[i:])^key)
		}
	}
	for ; i < len(b); i++ {
		b[i] ^= mask[(pos+i)&3]
	}
}

// appendFrame appends a server frame (final, unmasked) of op and payload.
func appendFrame(dst []byte, op byte, payload []byte) []byte {
	dst = append(dst, 0x80|op)
	switch n := len(payload); {
	case n < 126:
		dst = append(dst, byte(n))
	case n <= 0xffff:
		dst = append(dst, 126, byte(n>>8), byte(n))
	default:
		dst = append(dst, 127)
		dst = binary.BigEndian.AppendUint64(dst, uint64(n))
	}
	return append(dst, payload...)
}

// closePayload is a close frame's payload: the code, then a reason cut to
// what a control frame holds.
func closePayload(code int, reason string) []byte {
	if len(reason) > 120 {
		reason = reason[:120]
	}
	b := binary.BigEndian.AppendUint16(make([]byte, 0, 2+len(reason)), uint16(code))
	return append(b, reason...)
}

// validCloseCode reports whether a client may send code in a close frame.
func validCloseCode(code int) bool {
	switch {
	case code >= 1000 && code <= 1003, code >= 1007 && code <= 1014, code >= 3000 && code <= 4999:
		return true
	}
	return false
}
