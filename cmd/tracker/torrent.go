package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/tracklink/tracklink/internal/torrentfile"
)

const torrentUsage = `usage:
  tracker torrent reannounce --announce-list URL1,URL2,... [--tier URL,... ...] [--dry-run] FILE_OR_DIR...
  tracker torrent show [--json] FILE
  tracker torrent create --announce-list URL1,URL2,... -o OUT.torrent [--piece-length N] [--private] [--comment TEXT] PATH
`

// runTorrent is `tracker torrent ...`: tools for torrents of a tracker network.
func runTorrent(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usageError(torrentUsage)
	}
	switch args[0] {
	case "reannounce":
		return runReannounce(args[1:], stdout, stderr)
	case "show":
		return runShow(args[1:], stdout, stderr)
	case "create":
		return runCreate(args[1:], stdout, stderr)
	}
	return usageError(fmt.Sprintf("unknown torrent command %q\n%s", args[0], torrentUsage))
}

// tiersFlag collects --announce-list (one tier) and repeated --tier.
type tiersFlag struct{ tiers [][]string }

func (t *tiersFlag) String() string { return fmt.Sprint(t.tiers) }
func (t *tiersFlag) Set(v string) error {
	var tier []string
	for _, u := range strings.Split(v, ",") {
		if u = strings.TrimSpace(u); u != "" {
			tier = append(tier, u)
		}
	}
	if len(tier) == 0 {
		return errors.New("no URL")
	}
	t.tiers = append(t.tiers, tier)
	return nil
}

// tierFlags defines --announce-list and --tier on fs.
func tierFlags(fs *flag.FlagSet) *tiersFlag {
	var t tiersFlag
	fs.Var(&t, "announce-list", "comma-separated announce URLs, one tier (the first also becomes announce)")
	fs.Var(&t, "tier", "comma-separated announce URLs of one more tier (repeatable)")
	return &t
}

func runReannounce(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("tracker torrent reannounce", flag.ContinueOnError)
	fs.SetOutput(stderr)
	tiers := tierFlags(fs)
	dry := fs.Bool("dry-run", false, "print what would change, write nothing")
	if err := fs.Parse(args); err != nil {
		return usageError(err.Error())
	}
	if err := torrentfile.ValidTiers(tiers.tiers); err != nil {
		return usageError("reannounce: " + err.Error())
	}
	if fs.NArg() == 0 {
		return usageError("reannounce: no FILE_OR_DIR\n" + torrentUsage)
	}
	files, errs := torrentfile.Expand(fs.Args())
	for _, err := range errs {
		fmt.Fprintln(stderr, "error:", err)
	}
	failed := len(errs)
	for _, path := range files {
		if err := reannounceOne(path, tiers.tiers, *dry, stdout); err != nil {
			fmt.Fprintf(stderr, "error: %s: %v\n", path, err)
			failed++
		}
	}
	if failed > 0 {
		return fmt.Errorf("reannounce: %d of %d failed", failed, len(files)+len(errs))
	}
	return nil
}

func reannounceOne(path string, tiers [][]string, dry bool, stdout io.Writer) error {
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	f, err := torrentfile.Read(path)
	if err != nil {
		return err
	}
	before := f.Summary()
	if err := f.SetTrackers(tiers); err != nil {
		return err
	}
	b, err := f.Bytes()
	if err != nil {
		return err
	}
	// Verify before writing: the rewritten file must have the same info hash.
	again, err := torrentfile.Parse(b)
	if err != nil {
		return fmt.Errorf("rewritten torrent does not parse: %w", err)
	}
	after := again.Summary()
	if after.InfoHashV1 != before.InfoHashV1 || after.InfoHashV2 != before.InfoHashV2 {
		return errors.New("rewriting would change the info hash; file left alone")
	}
	verb := "rewrote"
	if dry {
		verb = "would rewrite"
	}
	fmt.Fprintf(stdout, "%s %s: announce %q -> %q, announce-list %v -> %v\n", verb, path, before.Announce, after.Announce, before.AnnounceList, after.AnnounceList)
	if dry {
		return nil
	}
	return torrentfile.WriteAtomic(path, b, st.Mode().Perm())
}

func runShow(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("tracker torrent show", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.Parse(args); err != nil {
		return usageError(err.Error())
	}
	if fs.NArg() != 1 {
		return usageError("show: one FILE\n" + torrentUsage)
	}
	f, err := torrentfile.Read(fs.Arg(0))
	if err != nil {
		return err
	}
	s := f.Summary()
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(s)
	}
	_, err = io.WriteString(stdout, s.Text())
	return err
}

func runCreate(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("tracker torrent create", flag.ContinueOnError)
	fs.SetOutput(stderr)
	tiers := tierFlags(fs)
	out := fs.String("o", "", "output .torrent file")
	pl := fs.Int64("piece-length", 0, "piece length in bytes, a power of two (default: chosen for 1000-2000 pieces)")
	private := fs.Bool("private", false, "set the private flag (BEP 27)")
	comment := fs.String("comment", "", "comment")
	if err := fs.Parse(args); err != nil {
		return usageError(err.Error())
	}
	if *out == "" || fs.NArg() != 1 {
		return usageError("create: -o OUT.torrent and one PATH\n" + torrentUsage)
	}
	b, err := torrentfile.Create(fs.Arg(0), torrentfile.CreateOptions{
		Tiers: tiers.tiers, PieceLength: *pl, Private: *private, Comment: *comment,
		CreatedBy: "Tracklink " + version, Now: time.Now(),
	})
	if err != nil {
		return fmt.Errorf("create: %w", err)
	}
	if err := torrentfile.WriteAtomic(*out, b, 0o644); err != nil {
		return fmt.Errorf("create: %w", err)
	}
	f, err := torrentfile.Parse(b)
	if err != nil {
		return fmt.Errorf("create: %w", err)
	}
	fmt.Fprintf(stdout, "created %s: %s, info hash %s\n", *out, f.Info.Name, f.Summary().InfoHashV1)
	return nil
}
