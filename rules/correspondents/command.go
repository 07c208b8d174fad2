package correspondents

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/moatmail/moat/config"
	"github.com/moatmail/moat/internal/addr"
	"github.com/moatmail/moat/store"
)

// Usage describes the correspondents command.
const Usage = `usage: moat correspondents list USER
       moat correspondents forget USER [ADDR|DOMAIN]
       moat correspondents import USER FILE

list    lists USER's live correspondents: kind (address, domain, reply), hashed key, expiry; addresses are
        stored only as hashes, so they cannot be shown; the count is of addresses and domains
forget  forgets every correspondent of USER, or one address (its domain and the Message-IDs sent to it),
        or one domain
import  records the addresses of FILE (one a line, "Name <addr>" or addr; # comments) as correspondents
        of USER, as if USER had written to them`

// ErrUsage is returned for a malformed command line.
var ErrUsage = errors.New("correspondents: bad usage")

// Command runs `moat correspondents ARGS` against the store of the configuration f, writing to stdout.
//
// The store is opened with open, which the composition root hands in, once the command line is known to
// be well formed; the command closes it.
func Command(ctx context.Context, f *config.File, open store.Opener, args []string, stdout io.Writer) error {
	if len(args) < 2 {
		return fmt.Errorf("%w: missing subcommand or USER\n%s", ErrUsage, Usage)
	}
	sub, userArg, rest := args[0], args[1], args[2:]
	switch {
	case sub == "list" && len(rest) == 0, sub == "forget" && len(rest) <= 1, sub == "import" && len(rest) == 1:
	case sub == "list" || sub == "forget" || sub == "import":
		return fmt.Errorf("%w: wrong number of arguments for %s\n%s", ErrUsage, sub, Usage)
	default:
		return fmt.Errorf("%w: unknown subcommand %q\n%s", ErrUsage, sub, Usage)
	}
	user, err := addr.Parse(userArg)
	if err != nil || user.Null() || user.Domain == "" {
		return fmt.Errorf("%w: USER %q is not an address", ErrUsage, userArg)
	}
	cfg, err := DecodeConfig(f.Section("checks."+Name).Without("enabled", "dry_run", "timeout"))
	if err != nil {
		return err
	}
	st, err := open(ctx)
	if err != nil {
		return err
	}
	defer st.Close()
	cs, err := store.CorrespondentsOf(st)
	if err != nil {
		return err
	}
	uk := UserKey(addrString(user))
	now := clock()
	switch sub {
	case "list":
		es, err := cs.CorrespondentEntries(ctx, uk, now)
		if err != nil {
			return err
		}
		rs, err := cs.CorrespondentEntries(ctx, RepliesKey(addrString(user)), now)
		if err != nil {
			return err
		}
		es = append(es, rs...)
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "KIND\tKEY\tEXPIRES")
		for _, e := range es {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", KeyKind(e.Key), e.Key, e.Expires.UTC().Format(time.RFC3339))
		}
		tw.Flush()
		fmt.Fprintf(stdout, "%d correspondents of %s, %d sent Message-IDs\n", len(es)-len(rs), addrString(user), len(rs))
	case "forget":
		return forget(ctx, cs, user, rest, now, stdout)
	case "import":
		keys, err := readAddressBook(rest[0])
		if err != nil {
			return err
		}
		if len(keys) > cfg.MaxPerUser {
			return fmt.Errorf("correspondents: %s has %d keys (addresses and their domains), more than max_per_user = %d",
				rest[0], len(keys), cfg.MaxPerUser)
		}
		rec := store.CorrRecord{User: uk, Keys: keys, Now: now, Expiry: cfg.Expiry.D(), Max: cfg.MaxPerUser}
		if err := cs.RecordCorrespondents(ctx, []store.CorrRecord{rec}); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "imported %d keys for %s from %s\n", len(keys), addrString(user), rest[0])
	}
	return nil
}

// forget deletes USER's correspondents: all of them, or one address with its domain and the Message-IDs sent
// to it, or one domain.
func forget(ctx context.Context, cs store.Correspondents, user addr.Address, rest []string, now time.Time, stdout io.Writer) error {
	var keys []string
	what, replyTag := "every correspondent", "" // replyTag: that of the Message-IDs sent to the address forgotten
	if len(rest) == 1 {
		target := rest[0]
		if a, err := addr.Parse(target); err == nil && a.Local != "" && a.Domain != "" {
			keys = []string{AddressKey(addrString(a)), DomainKey(a.Domain)}
			what = addrString(a) + " and " + a.Domain
			replyTag = ReplyTag(addrString(a))
		} else if d, err := addr.DomainASCII(target); err == nil && !strings.Contains(target, "@") {
			keys = []string{DomainKey(d)}
			what = d
		} else {
			return fmt.Errorf("%w: %q is neither an address nor a domain", ErrUsage, target)
		}
	}
	n, err := cs.ForgetCorrespondents(ctx, UserKey(addrString(user)), keys)
	if err != nil {
		return err
	}
	rk, m := RepliesKey(addrString(user)), 0
	switch {
	case len(rest) == 0:
		m, err = cs.ForgetCorrespondents(ctx, rk, nil)
	case replyTag != "":
		m, err = forgetReplies(ctx, cs, rk, replyTag, now)
	}
	if err != nil {
		return err
	}
	n += m
	fmt.Fprintf(stdout, "forgot %s of %s: %d keys deleted\n", what, addrString(user), n)
	return nil
}

// forgetReplies deletes the sent Message-IDs of a user's replies set that are bound to the address whose
// ReplyTag is tag.
func forgetReplies(ctx context.Context, cs store.Correspondents, user, tag string, now time.Time) (int, error) {
	es, err := cs.CorrespondentEntries(ctx, user, now)
	if err != nil {
		return 0, err
	}
	var keys []string
	for _, e := range es {
		if strings.HasSuffix(e.Key, tag) {
			keys = append(keys, e.Key)
		}
	}
	if len(keys) == 0 {
		return 0, nil
	}
	return cs.ForgetCorrespondents(ctx, user, keys)
}

// readAddressBook reads one address a line ("addr", "<addr>" or "Name <addr>"; blank lines and # comments
// skipped) and returns their address and domain keys. A line that holds no address is an error naming it.
func readAddressBook(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("correspondents: import: %w", err)
	}
	defer f.Close()
	var keys []string
	seen := map[string]bool{}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		raw := line
		if i := strings.LastIndexByte(line, '<'); i >= 0 {
			j := strings.IndexByte(line[i:], '>')
			if j < 0 {
				return nil, fmt.Errorf("correspondents: %s:%d: unclosed '<'", path, n)
			}
			raw = line[i+1 : i+j]
		}
		a, err := addr.Parse(raw)
		if err != nil || a.Null() || a.Local == "" || a.Domain == "" {
			return nil, fmt.Errorf("correspondents: %s:%d: %q is not an address", path, n, line)
		}
		for _, k := range []string{AddressKey(addrString(a)), DomainKey(a.Domain)} {
			if !seen[k] {
				seen[k] = true
				keys = append(keys, k)
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("correspondents: import %s: %w", path, err)
	}
	return keys, nil
}
