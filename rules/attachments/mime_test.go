package attachments

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
)

type seen struct {
	path, typ, body string
}

func walkAll(t *testing.T, msg string, lim Limits) ([]seen, WalkResult, error) {
	t.Helper()
	var out []seen
	res, err := Walk(strings.NewReader(msg), lim, func(e *Entity, body io.Reader) error {
		b, err := io.ReadAll(body)
		if err != nil {
			return err
		}
		out = append(out, seen{e.Label(), e.MediaType, string(b)})
		return nil
	})
	return out, res, err
}

const nested = "Content-Type: multipart/mixed; boundary=a\r\n\r\npreamble\r\n--a\r\nContent-Type: text/plain\r\n\r\none\r\n" +
	"--a\r\nContent-Type: multipart/alternative; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\ntwo\r\nline\r\n" +
	"--b\r\nContent-Type: text/html\r\n\r\n<p>three</p>\r\n--b--\r\n--a\r\nContent-Type: message/rfc822\r\n\r\n" +
	"Subject: inner\r\nContent-Type: application/pdf\r\n\r\n%PDF-1.4\r\n--a--\r\nepilogue\r\n"

func TestWalkNested(t *testing.T) {
	got, res, err := walkAll(t, nested, Limits{MaxDepth: 10, MaxParts: 100, MaxHeaderBytes: 4096})
	if err != nil {
		t.Fatal(err)
	}
	want := []seen{
		{"1", "text/plain", "one"},
		{"2.1", "text/plain", "two\r\nline"},
		{"2.2", "text/html", "<p>three</p>"},
		{"3.1", "application/pdf", "%PDF-1.4"},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("parts\n got %q\nwant %q", got, want)
	}
	if len(res.Defects) != 0 || res.Parts != 7 {
		t.Fatalf("parts %d, defects %q", res.Parts, res.Defects)
	}
}

func TestWalkDefects(t *testing.T) {
	tests := []struct {
		name, msg, defect string
		leaves            int
	}{
		{"no close delimiter", "Content-Type: multipart/mixed; boundary=a\r\n\r\n--a\r\n\r\nx\r\n", "not closed", 1},
		{"boundary never seen", "Content-Type: multipart/mixed; boundary=a\r\n\r\nx\r\n", "without any part", 0},
		{"no boundary", "Content-Type: multipart/mixed\r\n\r\nx\r\n", "without a boundary", 1},
		{"inner not closed", "Content-Type: multipart/mixed; boundary=a\r\n\r\n--a\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nx\r\n--a\r\n\r\ny\r\n--a--\r\n",
			"1: multipart not closed", 2},
		{"header without colon", "Subject x\r\n\r\nbody\r\n", "without a field name", 1},
		{"truncated in header", "Content-Type: multipart/mixed; boundary=a\r\n\r\n--a\r\nContent-Type: text/plain\r\n", "ends inside", 0},
		{"bad content type", "Content-Type: garbage\r\n\r\nx\r\n", "malformed Content-Type", 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, res, err := walkAll(t, tc.msg, Limits{MaxDepth: 10, MaxParts: 100, MaxHeaderBytes: 4096})
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != tc.leaves || !strings.Contains(strings.Join(res.Defects, "|"), tc.defect) {
				t.Fatalf("leaves %q, defects %q; want %d leaves and %q", got, res.Defects, tc.leaves, tc.defect)
			}
		})
	}
}

func TestWalkLimits(t *testing.T) {
	deep := strings.Repeat("Content-Type: message/rfc822\r\n\r\n", 30) + "x\r\n"
	var many strings.Builder
	many.WriteString("Content-Type: multipart/mixed; boundary=a\r\n\r\n")
	for i := 0; i < 50; i++ {
		many.WriteString("--a\r\n\r\nx\r\n")
	}
	many.WriteString("--a--\r\n")
	for _, tc := range []struct{ name, msg, want string }{
		{"depth", deep, "nested deeper than 10"},
		{"parts", many.String(), "more than 20 MIME parts"},
		{"header", "X-Long: " + strings.Repeat("y", 5000) + "\r\n\r\nx\r\n", "longer than 4096 bytes"},
		{"folded header", "X-Long: y\r\n" + strings.Repeat(" y\r\n", 2000) + "\r\nx\r\n", "longer than 4096 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := walkAll(t, tc.msg, Limits{MaxDepth: 10, MaxParts: 20, MaxHeaderBytes: 4096})
			if !errors.Is(err, ErrLimit) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrLimit with %q", err, tc.want)
			}
		})
	}
}

func TestWalkLongLines(t *testing.T) {
	// A body line longer than the line buffer is delivered whole, and a boundary-looking piece inside it is
	// not a delimiter.
	long := strings.Repeat("z", 3*lineBuf) + "--a--" + strings.Repeat("z", 10)
	msg := "Content-Type: multipart/mixed; boundary=a\r\n\r\n--a\r\n\r\n" + long + "\r\n--a--\r\n"
	got, res, err := walkAll(t, msg, Limits{MaxDepth: 5, MaxParts: 5, MaxHeaderBytes: 4096})
	if err != nil || len(got) != 1 || got[0].body != long || len(res.Defects) != 0 {
		t.Fatalf("err %v, %d leaves, defects %q", err, len(got), res.Defects)
	}
}
