package greylist

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/moatmail/moat/config"
	"github.com/moatmail/moat/store"
)

// Usage describes the greylist command.
const Usage = `usage: moat greylist list [-state pending|passed] [-client S] [-from S] [-to S] [-limit N] [-json]
       moat greylist show ID
       moat greylist release ID
       moat greylist purge

list     lists live entries, oldest first; -client, -from and -to match substrings (ASCII case-insensitive)
show     shows one entry (ID or a unique prefix of at least 4 characters) and its client's auto-whitelist count
release  lets a pending entry pass now: the sender's next retry is delivered
purge    deletes expired entries (SQLite; Redis expires entries itself)`

// ErrUsage is returned for a malformed command line.
var ErrUsage = errors.New("greylist: bad usage")

// Command runs `moat greylist ARGS` against the store of the configuration f, writing to stdout.
//
// The store is opened with open, which the composition root hands in, once the command line is known to
// be well formed; the command closes it.
func Command(ctx context.Context, f *config.File, open store.Opener, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: missing subcommand\n%s", ErrUsage, Usage)
	}
	cfg, err := DecodeConfig(f.Section("checks."+Name).Without("enabled", "dry_run", "timeout"))
	if err != nil {
		return err
	}
	sub, args := args[0], args[1:]
	fs := flag.NewFlagSet("moat greylist "+sub, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	state := fs.String("state", "", "pending or passed")
	client := fs.String("client", "", "client key substring")
	from := fs.String("from", "", "sender substring")
	to := fs.String("to", "", "recipient substring")
	limit := fs.Int("limit", 0, "at most this many entries (0: all)")
	asJSON := fs.Bool("json", false, "one JSON object per line")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %v\n%s", ErrUsage, err, Usage)
	}
	switch sub {
	case "list":
		if fs.NArg() != 0 {
			return fmt.Errorf("%w: list takes no arguments\n%s", ErrUsage, Usage)
		}
		if *state != "" && *state != string(store.GreyPending) && *state != string(store.GreyPassed) {
			return fmt.Errorf("%w: -state must be pending or passed", ErrUsage)
		}
	case "show", "release":
		if fs.NArg() != 1 {
			return fmt.Errorf("%w: %s takes one entry ID\n%s", ErrUsage, sub, Usage)
		}
	case "purge":
		if fs.NArg() != 0 {
			return fmt.Errorf("%w: purge takes no arguments", ErrUsage)
		}
	default:
		return fmt.Errorf("%w: unknown subcommand %q\n%s", ErrUsage, sub, Usage)
	}

	st, err := open(ctx)
	if err != nil {
		return err
	}
	defer st.Close()
	now := clock()

	switch sub {
	case "list":
		list, err := st.GreyList(ctx, now, store.GreyQuery{State: store.GreyState(*state), Client: *client,
			Sender: *from, Rcpt: *to, Limit: *limit})
		if err != nil {
			return err
		}
		return printList(stdout, list, *asJSON)
	case "show":
		e, err := resolve(ctx, st, fs.Arg(0), now)
		if err != nil {
			return err
		}
		printEntry(stdout, e, now)
		if cfg.AutoWhitelist > 0 {
			c, err := st.GreyClient(ctx, e.Client, now)
			switch {
			case errors.Is(err, store.ErrNotFound):
				fmt.Fprintf(stdout, "client-passes: 0 of %d\n", cfg.AutoWhitelist)
			case err != nil:
				return err
			default:
				fmt.Fprintf(stdout, "client-passes: %d of %d (until %s)\n", c.Count, cfg.AutoWhitelist, fmtTime(c.Expires))
			}
		}
		return nil
	case "release":
		e, err := resolve(ctx, st, fs.Arg(0), now)
		if err != nil {
			return err
		}
		if e.State != store.GreyPending {
			return fmt.Errorf("greylist: entry %s has already passed", e.ID)
		}
		if err := st.GreyRelease(ctx, e.ID, now, cfg.Expiry.D()); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "released %s (%s from %s to %s)\n", e.ID, e.Client, e.Sender, e.Rcpt)
		return nil
	default: // purge
		n, err := st.Purge(ctx, now)
		if err != nil {
			return err
		}
		if st.Backend() == "redis" {
			fmt.Fprintln(stdout, "redis expires entries itself; nothing to purge")
			return nil
		}
		fmt.Fprintf(stdout, "purged %d expired entries\n", n)
		return nil
	}
}

// resolve finds an entry by its ID or a unique prefix of it.
func resolve(ctx context.Context, st store.Store, id string, now time.Time) (store.GreyEntry, error) {
	id = strings.ToLower(strings.TrimSpace(id))
	if len(id) == 32 {
		e, err := st.GreyEntry(ctx, id, now)
		if errors.Is(err, store.ErrNotFound) {
			return e, fmt.Errorf("greylist: no live entry %s", id)
		}
		return e, err
	}
	if len(id) < 4 {
		return store.GreyEntry{}, fmt.Errorf("%w: an ID prefix needs at least 4 characters", ErrUsage)
	}
	if strings.Trim(id, "0123456789abcdef") != "" || len(id) > 32 {
		return store.GreyEntry{}, fmt.Errorf("%w: an ID is hexadecimal, at most 32 digits", ErrUsage)
	}
	// Two are enough to tell a unique prefix from an ambiguous one; SQLite reads them by a range on the
	// primary key.
	found, err := st.GreyList(ctx, now, store.GreyQuery{IDPrefix: id, Limit: 2})
	switch {
	case err != nil:
		return store.GreyEntry{}, err
	case len(found) == 0:
		return store.GreyEntry{}, fmt.Errorf("greylist: no live entry with ID %s…", id)
	case len(found) > 1:
		return store.GreyEntry{}, fmt.Errorf("greylist: ID prefix %s is ambiguous", id)
	}
	return found[0], nil
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format("2006-01-02 15:04:05Z")
}

type jsonEntry struct {
	ID        string    `json:"id"`
	State     string    `json:"state"`
	Client    string    `json:"client"`
	Sender    string    `json:"sender"`
	Rcpt      string    `json:"rcpt"`
	IP        string    `json:"ip"`
	Helo      string    `json:"helo"`
	FirstSeen time.Time `json:"first_seen"`
	LastSeen  time.Time `json:"last_seen"`
	PassedAt  time.Time `json:"passed_at,omitzero"`
	Attempts  int       `json:"attempts"`
	Passes    int       `json:"passes"`
	Expires   time.Time `json:"expires"`
}

func printList(w io.Writer, list []store.GreyEntry, asJSON bool) error {
	if asJSON {
		enc := json.NewEncoder(w)
		for _, e := range list {
			if err := enc.Encode(jsonEntry{ID: e.ID, State: string(e.State), Client: e.Client, Sender: e.Sender,
				Rcpt: e.Rcpt, IP: e.IP, Helo: e.Helo, FirstSeen: e.FirstSeen.UTC(), LastSeen: e.LastSeen.UTC(),
				PassedAt: e.PassedAt.UTC(), Attempts: e.Attempts, Passes: e.Passes, Expires: e.Expires.UTC()}); err != nil {
				return err
			}
		}
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATE\tCLIENT\tSENDER\tRECIPIENT\tFIRST SEEN\tATTEMPTS\tPASSES\tEXPIRES")
	for _, e := range list {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\n", e.ID, e.State, e.Client, e.Sender, e.Rcpt,
			fmtTime(e.FirstSeen), e.Attempts, e.Passes, fmtTime(e.Expires))
	}
	return tw.Flush()
}

func printEntry(w io.Writer, e store.GreyEntry, now time.Time) {
	fmt.Fprintf(w, "id:         %s\nstate:      %s\nclient:     %s\nsender:     %s\nrecipient:  %s\n", e.ID, e.State,
		e.Client, e.Sender, e.Rcpt)
	fmt.Fprintf(w, "last ip:    %s\nlast helo:  %s\nfirst seen: %s\nlast seen:  %s\npassed at:  %s\n", e.IP, e.Helo,
		fmtTime(e.FirstSeen), fmtTime(e.LastSeen), fmtTime(e.PassedAt))
	fmt.Fprintf(w, "attempts:   %d\npasses:     %d\nexpires:    %s (in %s)\n", e.Attempts, e.Passes, fmtTime(e.Expires),
		e.Expires.Sub(now).Round(time.Second))
}
