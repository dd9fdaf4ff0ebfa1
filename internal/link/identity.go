package link

import (
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"

	"golang.org/x/crypto/argon2"
)

// Identities on the link. The network secret (TRACKER_LINK_PASSWORD) is the
// hub's. From it, one memory-hard derivation gives a master key,
// argon2id(secret) (64 MiB, 1 pass: about 0.1 s here), and from the master
// key, by HMAC-SHA256:
//
//   - each node id's key, NodeKey: a node signs what it publishes with its
//     key, and the hub checks each message with the key of the node id it
//     claims, so a node's key lets it sign as itself only. An operator gives
//     a friend's node its key alone (`tracker link key NODE_ID`), never the
//     secret; a key reveals nothing of the master key (HMAC is a PRF).
//   - the hub's Ed25519 key pair, HubKeys: the hub signs its heartbeats;
//     nodes check them with the public key, which cannot sign.
//
// Whoever captured a message, or holds a node's key, tests password guesses
// at one argon2id run each, not at the cost of one HMAC; while the hub,
// holding the master key, derives any node's key in microseconds (no cache
// and no rate limit on node names it has not seen). A node configured with
// the secret derives its credentials once, at start.
const (
	kdfTime    = 1
	kdfMemory  = 64 << 10 // KiB
	kdfThreads = 1
	// KeyLen is the length of a node key.
	KeyLen = 32
)

// Master is the master key of a network, derived from its secret.
type Master []byte

// NewMaster derives the master key from the network secret (one argon2id
// run).
func NewMaster(secret string) Master {
	return argon2.IDKey([]byte(secret), []byte("tracklink link v2 master key"), kdfTime, kdfMemory, kdfThreads, KeyLen)
}

// NodeKey returns the key of node.
func (m Master) NodeKey(node string) Key {
	h := hmac.New(sha256.New, m)
	h.Write([]byte("node key:" + node))
	return h.Sum(nil)
}

// HubKeys returns the hub's signing key pair.
func (m Master) HubKeys() (ed25519.PrivateKey, ed25519.PublicKey) {
	h := hmac.New(sha256.New, m)
	h.Write([]byte("hub signing key"))
	priv := ed25519.NewKeyFromSeed(h.Sum(nil))
	return priv, priv.Public().(ed25519.PublicKey)
}

// ParseNodeKey reads a node key as `tracker link key` prints it (hex).
func ParseNodeKey(s string) (Key, error) {
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != KeyLen {
		return nil, fmt.Errorf("a node key is %d hex digits", 2*KeyLen)
	}
	return b, nil
}

// ParseHubKey reads the hub's public key as `tracker link key` prints it.
func ParseHubKey(s string) (ed25519.PublicKey, error) {
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != ed25519.PublicKeySize {
		return nil, errors.New("the hub's public key is 64 hex digits")
	}
	return b, nil
}

// Credentials are what a node signs and verifies with.
type Credentials struct {
	Node Key               // signs what the node publishes
	Hub  ed25519.PublicKey // checks the hub's heartbeats
}

// NodeCredentials returns a node's credentials from its configuration:
// derived from the network secret when the node has it, else its key and
// the hub's public key as given.
func NodeCredentials(cfg Config, node string) (Credentials, error) {
	if cfg.Password != "" {
		m := NewMaster(cfg.Password)
		_, pub := m.HubKeys()
		return Credentials{Node: m.NodeKey(node), Hub: pub}, nil
	}
	k, err := ParseNodeKey(cfg.Key)
	if err != nil {
		return Credentials{}, fmt.Errorf("TRACKER_LINK_KEY: %w", err)
	}
	pub, err := ParseHubKey(cfg.HubKey)
	if err != nil {
		return Credentials{}, fmt.Errorf("TRACKER_LINK_HUB_KEY: %w", err)
	}
	return Credentials{Node: k, Hub: pub}, nil
}
