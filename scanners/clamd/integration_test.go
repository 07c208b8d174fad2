package clamd

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/base64"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/moatmail/moat/config"
	"github.com/moatmail/moat/internal/spool"
	"github.com/moatmail/moat/policy"
	"github.com/moatmail/moat/policy/policytest"
	"github.com/moatmail/moat/test/stack"
)

// mimeWith returns a message with a text part and one base64 attachment.
func mimeWith(name string, content []byte) []byte {
	var b bytes.Buffer
	b.WriteString("From: <a@example.org>\r\nTo: <b@example.net>\r\nSubject: attachment\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: multipart/mixed; boundary=\"BOUNDARY\"\r\n\r\n--BOUNDARY\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n" +
		"--BOUNDARY\r\nContent-Type: application/octet-stream; name=\"" + name + "\"\r\nContent-Transfer-Encoding: base64\r\n" +
		"Content-Disposition: attachment; filename=\"" + name + "\"\r\n\r\n")
	enc := base64.StdEncoding.EncodeToString(content)
	for len(enc) > 76 {
		b.WriteString(enc[:76] + "\r\n")
		enc = enc[76:]
	}
	b.WriteString(enc + "\r\n--BOUNDARY--\r\n")
	return b.Bytes()
}

func zipOf(t *testing.T, name string, content []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	z := zip.NewWriter(&b)
	w, err := z.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(content)
	if err := z.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestRealClamd(t *testing.T) {
	c := stack.StartClamd(t, stack.ClamdOptions{})
	check, err := New(nil, Config{Servers: []string{"unix:" + c.Socket, "tcp:" + c.TCPAddr}, MaxSize: 25 << 20,
		OnVirus: "reject", OnFailure: "tempfail", ConnectTimeout: config.Duration(2 * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	defer check.Close()
	eicar := []byte(stack.EICAR)
	cases := []struct {
		name  string
		msg   []byte
		virus string // "" for clean
	}{
		{"clean", []byte("From: <a@example.org>\r\nSubject: hello\r\n\r\nNothing to see here.\r\n"), ""},
		{"clean attachment", mimeWith("notes.txt", []byte("plain notes, no virus\n")), ""},
		{"eicar plain", []byte("From: <a@example.org>\r\nSubject: eicar\r\n\r\n" + stack.EICAR + "\r\n"), stack.ClamEicarBodySig},
		{"eicar base64 attachment", mimeWith("eicar.com", eicar), "Eicar-Test-"},
		{"eicar in zip", mimeWith("eicar.zip", zipOf(t, "eicar.com", eicar)), "Eicar-Test-"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			fs := check.Scan(ctx, policy.NewSession(), policytest.Msg(tc.msg))
			if len(fs) != 1 {
				t.Fatalf("findings: %+v", fs)
			}
			f := fs[0]
			if tc.virus == "" {
				if f.Status != StatusClean || f.Verdict != policy.None {
					t.Fatalf("clean message: %+v (err %v)", f, f.Err)
				}
				return
			}
			if f.Status != StatusFound || f.Verdict != policy.Reject || !strings.Contains(f.Reply.Text, tc.virus) ||
				f.Reply.Code != 554 || f.Reply.Enhanced != "5.7.1" {
				t.Fatalf("infected message: %+v (err %v)", f, f.Err)
			}
		})
	}
}

// Every sample of Debian's clamav-testfiles holds the same 544-byte test file; clamd must unpack each
// (zip, 7z, cab, pdf, OLE, rtf, mbox, tnef, packed executables…) and find it, both when the sample is the
// whole stream and when it is a base64 attachment of a mail.
func TestRealClamdTestFiles(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join(stack.ClamAVTestFilesDir, "*"))
	if len(files) == 0 {
		if stack.InCI() {
			t.Fatalf("no samples in %s (package clamav-testfiles)", stack.ClamAVTestFilesDir)
		}
		t.Skipf("no samples in %s", stack.ClamAVTestFilesDir)
	}
	// clam_cache_emax.tgz nests tgz in tgz in tgz; the MIME layers of a mail on top pass clamd's default
	// MaxRecursion, so clamd stops before the sample inside. It is found when streamed on its own.
	tooDeepInMail := map[string]bool{"clam_cache_emax.tgz": true}
	c := stack.StartClamd(t, stack.ClamdOptions{})
	check, err := New(nil, Config{Servers: []string{"unix:" + c.Socket}, MaxSize: 25 << 20,
		OnVirus: "reject", OnFailure: "tempfail", ConnectTimeout: config.Duration(2 * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	defer check.Close()
	scan := func(msg []byte) []policy.Finding {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		return check.Scan(ctx, policy.NewSession(), policytest.Msg(msg))
	}
	isFound := func(fs []policy.Finding) bool {
		return len(fs) == 1 && fs[0].Status == StatusFound && strings.Contains(fs[0].Reply.Text, stack.ClamTestFileSig)
	}
	raw, inMail := 0, 0
	for _, p := range files {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		name := filepath.Base(p)
		if fs := scan(data); isFound(fs) {
			raw++
		} else {
			t.Errorf("%s: not found: %+v", name, fs)
		}
		fs := scan(mimeWith(name, data))
		switch {
		case isFound(fs):
			inMail++
		case !tooDeepInMail[name]:
			t.Errorf("%s: not found in a mail attachment: %+v", name, fs)
		}
	}
	t.Logf("found %d of %d samples streamed alone, %d in mail attachments", raw, len(files), inMail)
	if raw != len(files) || len(files) < 44 {
		t.Errorf("found %d of %d samples (want all, at least 44)", raw, len(files))
	}
}

// A 30 MB message streams from the spool file to clamd: the scan allocates a few chunk buffers, never the
// message.
func TestRealClamdLargeMessageBoundedMemory(t *testing.T) {
	c := stack.StartClamd(t, stack.ClamdOptions{StreamMaxLength: "40M"})
	check, err := New(nil, Config{Servers: []string{"unix:" + c.Socket}, MaxSize: 40 << 20,
		OnVirus: "reject", OnFailure: "tempfail", ConnectTimeout: config.Duration(2 * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	defer check.Close()
	sp := spool.New(t.TempDir(), 1<<20)
	defer sp.Close()
	sp.Write([]byte("From: <a@example.org>\r\nSubject: big\r\n\r\n"))
	line := []byte(strings.Repeat("all work and no play makes jack a dull boy ", 2) + "\r\n")
	for sp.Size() < 30<<20 {
		sp.Write(line)
	}
	sp.Write([]byte(stack.EICAR + "\r\n")) // at the very end: proves the whole stream was scanned
	if sp.InMemory() {
		t.Fatal("spool kept 30 MB in memory")
	}
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	fs := check.Scan(ctx, policy.NewSession(), sp)
	runtime.ReadMemStats(&after)
	if len(fs) != 1 || fs[0].Status != StatusFound {
		t.Fatalf("30 MB message with EICAR at the end: %+v", fs)
	}
	allocated := after.TotalAlloc - before.TotalAlloc
	t.Logf("scan of %d bytes allocated %d bytes in total", sp.Size(), allocated)
	if allocated > 4<<20 {
		t.Fatalf("scan of %d bytes allocated %d bytes: the message is being buffered", sp.Size(), allocated)
	}
}

// With clamd's StreamMaxLength below the message size and moat's max_size above it, clamd's own error text
// reaches the log and the message is skipped as too large: a tempfail would be refused the same on every
// retry, until the sender bounces it.
func TestRealClamdSizeLimitError(t *testing.T) {
	c := stack.StartClamd(t, stack.ClamdOptions{StreamMaxLength: "1M"})
	check, err := New(nil, Config{Servers: []string{"unix:" + c.Socket}, MaxSize: 25 << 20,
		OnVirus: "reject", OnFailure: "tempfail", ConnectTimeout: config.Duration(2 * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	defer check.Close()
	msg := append([]byte("Subject: big\r\n\r\n"), bytes.Repeat([]byte("x"), 3<<20)...)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	fs := check.Scan(ctx, policy.NewSession(), policytest.Msg(msg))
	if len(fs) != 1 || fs[0].Verdict != policy.None || fs[0].Reason != ReasonTooLarge || fs[0].Err == nil ||
		!strings.Contains(fs[0].Err.Error(), "size limit exceeded") {
		t.Fatalf("findings: %+v", fs)
	}
	t.Logf("clamd said: %v", fs[0].Err)
}

// The reviewer's case with a real clamd: a silent server first, the default configuration (no
// attempt_timeout) and a 4 s deadline. The real clamd must get the scan (EICAR found) and stay up.
func TestRealClamdFailoverFromSilentServer(t *testing.T) {
	c := stack.StartClamd(t, stack.ClamdOptions{})
	silent := startFake(t, "", silentFake)
	check, err := New(nil, Config{Servers: []string{silent.srv.String(), "unix:" + c.Socket}, MaxSize: 25 << 20,
		OnVirus: "reject", OnFailure: "tempfail", ConnectTimeout: config.Duration(2 * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	defer check.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	defer cancel()
	msg := []byte("Subject: eicar\r\n\r\n" + stack.EICAR + "\r\n")
	fs := check.Scan(ctx, policy.NewSession(), policytest.Msg(msg))
	if len(fs) != 1 || fs[0].Status != StatusFound || fs[0].Verdict != policy.Reject {
		t.Fatalf("findings %+v, want EICAR found by the real clamd", fs)
	}
	down := check.Pool().Down()
	if _, ok := down[silent.srv.String()]; !ok || len(down) != 1 {
		t.Fatalf("down = %v, want only the silent server", down)
	}
}
