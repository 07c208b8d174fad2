package attachments_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moatmail/moat/config"
	"github.com/moatmail/moat/policy"
	"github.com/moatmail/moat/policy/policytest"
	"github.com/moatmail/moat/rules/attachments"
	"github.com/moatmail/moat/rules/attachments/attachtest"
)

// TestArchiveBounds: every zip bomb bound stops the inspection with an archive-limit hit, without reading
// the rest.
func TestArchiveBounds(t *testing.T) {
	random := func(n int) []byte {
		b := make([]byte, n)
		x := uint32(3)
		for i := range b {
			x = x*1664525 + 1013904223
			b[i] = byte(x >> 24)
		}
		return b
	}
	var many []attachtest.ZipFile
	for i := 0; i < 30; i++ {
		many = append(many, attachtest.ZipFile{Name: fmt.Sprintf("f%d.txt", i), Data: []byte("x")})
	}
	var large []attachtest.ZipFile
	for i := 0; i < 4; i++ {
		large = append(large, attachtest.ZipFile{Name: fmt.Sprintf("r%d.bin", i), Data: random(400 << 10), Store: true})
	}
	nested := attachtest.Zip(attachtest.ZipFile{Name: "in.zip", Data: attachtest.Zip(large...), Store: true})
	tests := []struct {
		name, table, want string
		data              []byte
	}{
		{"entries", "archive_max_entries = 20", "more than 20 archive entries", attachtest.Zip(many...)},
		{"total", "archive_max_total = \"1M\"", "more than 1048576 bytes uncompressed", attachtest.Zip(large...)},
		{"total over nested archives", "archive_max_total = \"1M\"", "more than 1048576 bytes uncompressed", nested},
		{"ratio", "archive_max_ratio = 100", "compression ratio above 100", attachtest.Bomb(8 << 20)},
		{"size", "archive_max_size = \"1M\"", "zip larger than 1048576 bytes", attachtest.Zip(large...)},
		{"spooled to a file past memory_buffer", "memory_buffer = \"64K\"\narchive_max_entries = 2", "more than 2 archive entries", attachtest.Zip(large...)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := newCheck(t, "[checks.attachments]\n"+tc.table+"\n")
			msg := attachtest.Message(tc.name, attachtest.Attachment{Header: attachtest.Named("application/zip", "x.zip"), Data: tc.data})
			fs := c.Message(context.Background(), policy.NewSession(), bytesMessage(msg))
			v, f := verdict(fs)
			if v != "reject" || !strings.HasPrefix(f.Reason, attachments.ReasonArchiveLim+":") || !strings.Contains(f.Detail, tc.want) {
				t.Fatalf("%s %q %q", v, f.Reason, f.Detail)
			}
		})
	}
}

// TestOverridesInEngine: a domain override applies to its recipients; with recipients under two rule sets
// the strictest wins.
func TestOverridesInEngine(t *testing.T) {
	e := policytest.Engine(t, policytest.Policy+`
[checks.attachments]
[[checks.attachments.domain]]
domains = [".lab.example"]
names = ["~*.iso"]
`)
	iso := attachtest.Message("iso", attachtest.Attachment{Header: attachtest.Named("application/octet-stream", "disk.iso"), Data: []byte("data")})
	for _, tc := range []struct {
		rcpts []string
		want  policy.Action
	}{
		{[]string{"a@lab.example"}, policy.ActAccept},
		{[]string{"a@x.lab.example"}, policy.ActAccept},
		{[]string{"a@other.example"}, policy.ActReject},
		{[]string{"a@lab.example", "b@other.example"}, policy.ActReject},
	} {
		s := policy.NewSession()
		e.Mail(context.Background(), s, "alice@example.org", "")
		for _, r := range tc.rcpts {
			e.Rcpt(context.Background(), s, r, "")
		}
		s.Headers = policytest.Headers(iso)
		if out := e.EOM(context.Background(), s, policytest.Msg(iso)); out.Action != tc.want {
			t.Errorf("%v: %v, want %v (%v)", tc.rcpts, out.Action, tc.want, out.Reply)
		}
	}
}

// TestConfigErrors: errors name file, line and key.
func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "names")
	os.WriteFile(bad, []byte("*.exe\n\n*.a b\n"), 0o644)
	for _, tc := range []struct{ table, want string }{
		{"macros = \"strip\"", `moat.toml:4: checks.attachments.macros: want "reject", "quarantine", "score:N" or "accept", got "strip"`},
		{"names_action = \"tempfail\"", "checks.attachments.names_action"},
		{"archive_depth = 0", "checks.attachments.archive_depth: must be at least 1"},
		{"names_file = " + fmt.Sprintf("%q", bad), bad + ":3"},
		{"names = [\"~~*.exe\"]", "checks.attachments.names"},
		{"frobnicate = 1", "checks.attachments.frobnicate: unknown key"},
		{"[[checks.attachments.domain]]\nnames = [\"*.x\"]", "checks.attachments.domain[0].domains: a domain override needs domains"},
		{"temp_dir = \"/nonexistent/dir\"", "checks.attachments.temp_dir"},
	} {
		err := policytest.BuildError(t, policytest.Policy+"[checks.attachments]\n"+tc.table+"\n")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.table, err, tc.want)
		}
		var ce *config.Error
		if err != nil && (!errors.As(err, &ce) || ce.File != "moat.toml" || ce.Line == 0) {
			t.Errorf("%s: error %v is not located in moat.toml", tc.table, err)
		}
	}
}
