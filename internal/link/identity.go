package link

import (
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"

	"golang.org/x/crypto/argon2"
)

// Identities on the link. The network secret (TRACKER_LINK_PASSWORD) is the
// hub's. From it:
//
//   - each node id has a key of its own, NodeKey(secret, node): argon2id of
//     the secret, salted with the node id. A node signs what it publishes
//     with its key (HMAC-SHA256), and the hub checks each message with the
//     key of the node id it claims, so a node's key lets it sign as itself
//     only. An operator gives a friend's node its key alone
//     (`tracker link key NODE_ID`), never the secret.
//   - the hub has an Ed25519 key pair, HubKeys(secret). It signs its
//     heartbeats with the private key; nodes check them with the public
//     key, which gives them no power to sign as the hub.
//
// Each derivation costs one argon2id run (64 MiB, about 0.1 s here), so a
// captured message lets an attacker test password guesses at that cost
// each, not at the cost of one HMAC. A node configured with the secret (the
// simple one-operator setup) derives its key and the hub's public key at
// start.
const (
	kdfTime    = 1
	kdfMemory  = 64 << 10 // KiB
	kdfThreads = 1
	// KeyLen is the length of a node key.
	KeyLen = 32
)

// NodeKey derives the key of node from the network secret.
func NodeKey(secret, node string) Key {
	return argon2.IDKey([]byte(secret), []byte("tracklink link v2 node key:"+node), kdfTime, kdfMemory, kdfThreads, KeyLen)
}

// HubKeys derives the hub's signing key pair from the network secret.
func HubKeys(secret string) (ed25519.PrivateKey, ed25519.PublicKey) {
	seed := argon2.IDKey([]byte(secret), []byte("tracklink link v2 hub signing key"), kdfTime, kdfMemory, kdfThreads, ed25519.SeedSize)
	priv := ed25519.NewKeyFromSeed(seed)
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
		// Two derivations, on two cores when there are.
		hub := make(chan ed25519.PublicKey, 1)
		go func() { _, pub := HubKeys(cfg.Password); hub <- pub }()
		key := NodeKey(cfg.Password, node)
		return Credentials{Node: key, Hub: <-hub}, nil
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
