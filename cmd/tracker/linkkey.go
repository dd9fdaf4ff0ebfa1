package main

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/tracklink/tracklink/internal/bittorrent"
	"github.com/tracklink/tracklink/internal/config"
	"github.com/tracklink/tracklink/internal/link"
)

// runLinkKey is `tracker link key NODE_ID`: with the network secret in
// TRACKER_LINK_PASSWORD, it prints what the operator of that node needs
// instead of the secret: the node's own key and the hub's public key.
func runLinkKey(args, environ []string, stdout io.Writer) error {
	if len(args) != 2 || args[0] != "key" {
		return usageError("usage: tracker link key NODE_ID   (TRACKER_LINK_PASSWORD set to the network secret)")
	}
	node := args[1]
	if err := bittorrent.ValidName("NODE_ID", node); err != nil {
		return usageError(err.Error())
	}
	// Only the secret is read: this runs on the operator's machine, which
	// needs no Redis or anything else of a node's configuration.
	var secret string
	for _, kv := range environ {
		if v, ok := strings.CutPrefix(kv, config.EnvPrefix+"LINK_PASSWORD="); ok {
			secret = v
		}
	}
	cfg := link.Config{Password: secret}
	if secret == "" {
		return usageError("tracker link key: set TRACKER_LINK_PASSWORD to the network secret")
	}
	if len(secret) < 12 {
		return errors.New("TRACKER_LINK_PASSWORD must be at least 12 characters")
	}
	master := link.NewMaster(cfg.Password) // one argon2id run
	_, hubPub := master.HubKeys()
	fmt.Fprintf(stdout, "# link credentials of node %s: give these to its operator, not the network secret\n", node)
	fmt.Fprintf(stdout, "TRACKER_NODE_ID=%s\n", node)
	fmt.Fprintf(stdout, "TRACKER_LINK_KEY=%s\n", hex.EncodeToString(master.NodeKey(node)))
	fmt.Fprintf(stdout, "TRACKER_LINK_HUB_KEY=%s\n", hex.EncodeToString(hubPub))
	return nil
}
