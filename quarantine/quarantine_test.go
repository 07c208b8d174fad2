package quarantine

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moatmail/moat/config"
	"github.com/moatmail/moat/store"
)

type bytesSource []byte

func (b bytesSource) Open() io.Reader { return bytes.NewReader(b) }
func (b bytesSource) Size() int64     { return int64(len(b)) }

func newTestQuarantine(t *testing.T, cfg Config) (*Quarantine, store.Store) {
	t.Helper()
	st, err := store.OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "moat.db"), false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	q, err := New(cfg, func() (store.Store, error) { return st, nil }, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return q, st
}

// oddMessage has what a byte-exact store must keep: CRLF and a bare LF, trailing white space, a tab after a
// colon, 8-bit bytes, an encoded subject, a folded field and no final line end.
var oddMessage = []byte("Received: from x\r\n\tby y; Sat, 5 Dec 2026 10:00:00 +0000\r\nFrom: =?utf-8?q?J=C3=B6rg?= <j@example.org>\r\n" +
	"Subject:\t=?utf-8?b?R3LDvMOfZQ==?=  \r\nX-Odd:no-space\r\n\r\nbody \xe9\xff 8-bit\r\nbare\nlf  \r\n.\r\n..dots\r\nend")

func TestKeepOpenIsByteIdentical(t *testing.T) {
	q, _ := newTestQuarantine(t, DefaultConfig())
	ctx := context.Background()
	rec := Record{ID: "REF1", Sender: "j@example.org", Kind: KindSpam, Recipients: []Recipient{{Addr: "a@moat.test", State: StateHeld}}}
	if err := q.Keep(ctx, rec, bytesSource(oddMessage)); err != nil {
		t.Fatal(err)
	}
	rc, err := q.Open(ctx, "REF1")
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(rc)
	if !bytes.Equal(got, oddMessage) {
		t.Fatalf("stored bytes differ:\n%q\n%q", got, oddMessage)
	}
	r, err := q.Get(ctx, "REF1")
	if err != nil || r.Subject != "Grüße" || !strings.HasPrefix(r.From, "Jörg") || r.Size != int64(len(oddMessage)) {
		t.Fatalf("record = %+v, %v", r, err)
	}
	if _, err := q.Get(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing: %v", err)
	}
}

func TestKeepRefusesOverLimits(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxMessageSize = 10
	q, _ := newTestQuarantine(t, cfg)
	err := q.Keep(context.Background(), Record{ID: "BIG"}, bytesSource(oddMessage))
	if !errors.Is(err, ErrFull) {
		t.Fatalf("over max_message_size: %v", err)
	}
	cfg = DefaultConfig()
	cfg.MaxSize = config.Size(len(oddMessage) + 5)
	q, _ = newTestQuarantine(t, cfg)
	if err := q.Keep(context.Background(), Record{ID: "A"}, bytesSource(oddMessage)); err != nil {
		t.Fatal(err)
	}
	if err := q.Keep(context.Background(), Record{ID: "B"}, bytesSource(oddMessage)); !errors.Is(err, ErrFull) {
		t.Fatalf("over max_size: %v", err)
	}
}

func TestListFiltersAndPurge(t *testing.T) {
	q, _ := newTestQuarantine(t, DefaultConfig())
	ctx := context.Background()
	base := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	for i, k := range []Kind{KindSpam, KindVirus, KindPolicy} {
		rec := Record{ID: fmt.Sprintf("R%d", i), Time: base.Add(time.Duration(i) * time.Hour), Sender: fmt.Sprintf("s%d@example.org", i),
			Kind: k, Recipients: []Recipient{{Addr: fmt.Sprintf("u%d@moat.test", i), State: StateHeld}}}
		if err := q.Keep(ctx, rec, bytesSource(oddMessage)); err != nil {
			t.Fatal(err)
		}
	}
	recs, total, err := q.List(ctx, Query{Kind: KindVirus})
	if err != nil || total != 1 || recs[0].ID != "R1" {
		t.Fatalf("kind filter: %v %d %v", recs, total, err)
	}
	recs, total, _ = q.List(ctx, Query{Rcpt: "U2@", Desc: true})
	if total != 1 || recs[0].ID != "R2" {
		t.Fatalf("rcpt filter: %v", recs)
	}
	recs, total, _ = q.List(ctx, Query{Since: base.Add(30 * time.Minute), Sort: "time", Desc: true})
	if total != 2 || recs[0].ID != "R2" {
		t.Fatalf("since, desc: %v", recs)
	}
	// Retention: 14 days after the first message, only it has expired.
	n, err := q.Purge(ctx, base.Add(14*24*time.Hour+time.Minute))
	if err != nil || n != 1 {
		t.Fatalf("purge: %d %v", n, err)
	}
	if _, err := q.Get(ctx, "R0"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("R0 after purge: %v", err)
	}
}

// smtpSink is a minimal SMTP server that refuses recipients starting with "bad" and records the data.
func smtpSink(t *testing.T) (addr string, got chan string) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	got = make(chan string, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				fmt.Fprint(c, "220 sink\r\n")
				var env []string
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					cmd := strings.ToUpper(strings.TrimSpace(line))
					switch {
					case strings.HasPrefix(cmd, "EHLO"), strings.HasPrefix(cmd, "HELO"):
						fmt.Fprint(c, "250 sink\r\n")
					case strings.HasPrefix(cmd, "RCPT TO:<BAD"):
						fmt.Fprint(c, "550 5.1.1 no such user\r\n")
					case strings.HasPrefix(cmd, "MAIL"), strings.HasPrefix(cmd, "RCPT"), strings.HasPrefix(cmd, "RSET"):
						env = append(env, strings.TrimSpace(line))
						fmt.Fprint(c, "250 ok\r\n")
					case cmd == "DATA":
						fmt.Fprint(c, "354 go\r\n")
						var data strings.Builder
						for {
							l, err := r.ReadString('\n')
							if err != nil || l == ".\r\n" {
								break
							}
							data.WriteString(strings.TrimPrefix(l, "."))
						}
						got <- strings.Join(env, "\n") + "\n\n" + data.String()
						fmt.Fprint(c, "250 queued\r\n")
					case cmd == "QUIT":
						fmt.Fprint(c, "221 bye\r\n")
						return
					default:
						fmt.Fprint(c, "500 what\r\n")
					}
				}
			}()
		}
	}()
	return ln.Addr().String(), got
}

func TestReleasePerRecipient(t *testing.T) {
	addr, got := smtpSink(t)
	cfg := DefaultConfig()
	cfg.ReleaseVia = addr
	q, _ := newTestQuarantine(t, cfg)
	ctx := context.Background()
	msg := []byte("From: a@example.org\r\nSubject: hi\r\n\r\nline one\r\n.leading dot\r\nend\r\n")
	rec := Record{ID: "REL", Sender: "a@example.org", Kind: KindSpam,
		AddedHeaders: []Header{{Name: "X-Spam-Flag", Value: " YES"}},
		Recipients:   []Recipient{{Addr: "u1@moat.test", State: StateHeld}, {Addr: "bad@moat.test", State: StateHeld}, {Addr: "u2@moat.test", State: StateHeld}}}
	if err := q.Keep(ctx, rec, bytesSource(msg)); err != nil {
		t.Fatal(err)
	}
	out, err := q.Release(ctx, "REL", []string{"u1@moat.test", "bad@moat.test"}, Actor{Name: "admin", Admin: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 2 || out[0].State != StateReleased || out[1].State != StateHeld || !strings.HasPrefix(out[1].Reply, "550") {
		t.Fatalf("release result: %+v", out)
	}
	data := <-got
	if !strings.Contains(data, "RCPT TO:<u1@moat.test>") || strings.Contains(data, "u2@moat.test") {
		t.Fatalf("envelope: %s", data)
	}
	if !strings.Contains(data, "X-Moat-Released: by admin at ") || !strings.Contains(data, "X-Spam-Flag: YES\r\n") ||
		!strings.HasSuffix(data, string(msg)) {
		t.Fatalf("released data:\n%s", data)
	}
	r, _ := q.Get(ctx, "REL")
	if r.Recipients[0].State != StateReleased || r.Recipients[0].By != "admin" || r.Recipients[1].State != StateHeld || r.Recipients[2].State != StateHeld {
		t.Fatalf("states: %+v", r.Recipients)
	}
	// A recipient acting through a digest link releases only its own copy.
	if _, err := q.Release(ctx, "REL", []string{"u1@moat.test"}, Actor{Name: "u2", Recipient: "u2@moat.test"}); !errors.Is(err, ErrForbidden) {
		t.Fatalf("other's copy: %v", err)
	}
	if _, err := q.Release(ctx, "REL", nil, Actor{Name: "u2", Recipient: "u2@moat.test"}); err != nil {
		t.Fatal(err)
	}
	<-got
	// Deleting the last held copy keeps the record (one copy is released).
	if err := q.Delete(ctx, "REL", nil, Actor{Name: "admin", Admin: true}); err != nil {
		t.Fatal(err)
	}
	r, err = q.Get(ctx, "REL")
	if err != nil || r.Recipients[1].State != StateDeleted {
		t.Fatalf("after delete: %+v %v", r.Recipients, err)
	}
}

func TestVirusReleaseNeedsAdmin(t *testing.T) {
	q, _ := newTestQuarantine(t, DefaultConfig())
	ctx := context.Background()
	if err := q.Keep(ctx, Record{ID: "V", Kind: KindVirus, Recipients: []Recipient{{Addr: "u@moat.test", State: StateHeld}}}, bytesSource(oddMessage)); err != nil {
		t.Fatal(err)
	}
	if _, err := q.Release(ctx, "V", nil, Actor{Name: "u", Recipient: "u@moat.test"}); !errors.Is(err, ErrForbidden) {
		t.Fatalf("virus release by a recipient: %v", err)
	}
	if err := q.Delete(ctx, "V", nil, Actor{Name: "admin", Admin: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := q.Get(ctx, "V"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("every copy deleted: %v", err)
	}
}
