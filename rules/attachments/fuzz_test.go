package attachments

import (
	"archive/zip"
	"bytes"
	"context"
	"io"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// FuzzWalk feeds arbitrary messages to the MIME walker and the whole inspection: they must never panic,
// never hand out more parts than the limit, and keep every limit error an ErrLimit.
func FuzzWalk(f *testing.F) {
	f.Add(nested)
	f.Add("Content-Type: multipart/mixed; boundary=a\r\n\r\n--a\r\nContent-Type: application/zip; name=x.zip\r\nContent-Transfer-Encoding: base64\r\n\r\nUEsDBAo=\r\n--a--\r\n")
	f.Add("Content-Type: multipart/mixed; boundary=\"\"\r\n\r\n--\r\n\r\n----\r\n")
	f.Add("Content-Type: message/rfc822\r\n\r\nContent-Type: message/rfc822\r\n\r\n")
	f.Add("\r\n\r\n")
	f.Fuzz(func(t *testing.T, msg string) {
		lim := Limits{MaxDepth: 8, MaxParts: 50, MaxHeaderBytes: 2048}
		leaves := 0
		res, err := Walk(strings.NewReader(msg), lim, func(e *Entity, body io.Reader) error {
			leaves++
			_, err := io.Copy(io.Discard, body)
			return err
		})
		if res.Parts > lim.MaxParts+1 || leaves > res.Parts {
			t.Fatalf("parts %d, leaves %d", res.Parts, leaves)
		}
		if err != nil && !strings.Contains(err.Error(), "mime limit") {
			t.Fatalf("unexpected error %v", err)
		}
		// A hang is a failure too: the input is reported instead of stalling the fuzzer.
		done := make(chan error, 1)
		go func() {
			_, err := Inspect(context.Background(), strings.NewReader(msg), lim,
				ArchiveLimits{Depth: 2, MaxEntries: 100, MaxTotal: 1 << 20, MaxRatio: 100, MaxSize: 1 << 20, MemoryBuffer: 1 << 20})
			done <- err
		}()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("Inspect: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("Inspect still running after 5s on %q", msg)
		}
	})
}

// FuzzNames feeds arbitrary Content-Disposition values to the parameter parser, the name decoders and the
// normaliser: never a panic, always valid UTF-8 out, no bidi control or trailing dot left in a normalised
// name, bounded length.
func FuzzNames(f *testing.F) {
	for _, s := range []string{
		`attachment; filename="a.txt"`, `attachment; filename*=UTF-8''%E2%80%AE.exe`,
		`attachment; filename*0*=utf-8''%C3; filename*1="b"`, `inline; filename="=?utf-8?b?YS5leGU=?="`,
		`attachment; filename="a.ex%65. "`, `;;;=;"`, `attachment; filename*99999999999999999999=x`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		e := &Entity{}
		e.Disposition, e.DispParams = parseParams(v)
		e.MediaType, e.Params = parseParams(v)
		for _, raw := range rawNames(e) {
			n := NormalizeName(raw)
			if !utf8.ValidString(n.Norm) {
				t.Fatalf("invalid UTF-8 %q from %q", n.Norm, raw)
			}
			if strings.HasSuffix(n.Norm, ".") || strings.HasSuffix(n.Norm, " ") || strings.ContainsAny(n.Norm, "\u202E\u202D\u2066\u200B") {
				t.Fatalf("normalised %q from %q keeps a trick", n.Norm, raw)
			}
			if utf8.RuneCountInString(n.Norm) > 4*maxNameLen {
				t.Fatalf("normalised name of %d characters", utf8.RuneCountInString(n.Norm))
			}
			_ = escapeName(raw)
			_ = token(raw)
		}
	})
}

// FuzzContainers feeds arbitrary bytes to every archive and document reader as if an attachment of that
// kind held them: never a panic or a hang, and the bounds hold.
func FuzzContainers(f *testing.F) {
	f.Add(attachtestZip())
	f.Add([]byte("Rar!\x1a\x07\x00\x00\x00\x73\x00\x00\x0d\x00"))
	f.Add([]byte("7z\xbc\xaf\x27\x1c\x00\x04"))
	f.Add(append([]byte{0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1}, make([]byte, 600)...))
	f.Add([]byte("\x1f\x8b\x08\x00\x00\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, kind := range []string{"zip", "tar", "gzip", "bzip2", "rar", "7z", "ole"} {
			in := &inspector{ctx: context.Background(), facts: &Facts{},
				lim: ArchiveLimits{Depth: 2, MaxEntries: 50, MaxTotal: 1 << 20, MaxRatio: 100, MaxSize: 1 << 20, MemoryBuffer: 1 << 20}}
			sp := &spill{memLimit: 1 << 20, max: 1 << 20}
			sp.Write(data)
			done := make(chan struct{})
			o := Object{Where: "1"}
			go func() {
				defer close(done)
				in.container(&o, kind, sp, 1)
			}()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				t.Fatalf("%s reader still running after 5s on %q", kind, data)
			}
			// Past a bound (entries, or declared and read bytes), the inspection must have stopped with a limit.
			if in.entries > 50 || in.total > 1<<20 {
				limited := false
				for _, x := range in.facts.Objects {
					limited = limited || x.Limit != ""
				}
				if !limited || in.entries > 51 {
					t.Fatalf("%s: %d entries, %d bytes counted, no archive limit recorded", kind, in.entries, in.total)
				}
			}
		}
	})
}

// attachtestZip is a small zip with a nested zip, as a seed.
func attachtestZip() []byte {
	var b bytes.Buffer
	w := zip.NewWriter(&b)
	fw, _ := w.Create("a/b.exe")
	fw.Write([]byte("MZ"))
	w.Close()
	return b.Bytes()
}
