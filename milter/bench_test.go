package milter

import (
	"strings"
	"testing"

	gomilter "github.com/d--j/go-milter"
)

// BenchmarkTransaction measures moat's own cost of one message over one milter connection with no checks,
// driven by the go-milter client the way Postfix drives it (connect, helo, mail, rcpt, headers, end).
func BenchmarkTransaction(b *testing.B) {
	ts := mustServe(b, "[policy]\nauthserv_id = \"mx.example.test\"\n")
	headers := [][2]string{{"From", " a@example.org"}, {"To", " b@example.test"}, {"Subject", " bench"},
		{"Message-ID", " <1@example.org>"}, {"Date", " Thu, 26 Nov 2026 00:00:00 +0000"}}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		c := gomilter.NewClient("unix", ts.path)
		s, err := c.Session(gomilter.NewMacroBag())
		if err != nil {
			b.Fatal(err)
		}
		if _, err := s.Conn("client.example.org", gomilter.FamilyInet, 40000, "192.0.2.10"); err != nil {
			b.Fatal(err)
		}
		s.Helo("client.example.org")
		s.Mail("a@example.org", "")
		s.Rcpt("b@example.test", "")
		s.DataStart()
		for _, h := range headers {
			s.HeaderField(h[0], h[1], nil)
		}
		s.HeaderEnd()
		if _, _, err := s.BodyReadFrom(strings.NewReader("hello\r\n")); err != nil {
			b.Fatal(err)
		}
		s.Close()
	}
}
