package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/moatmail/moat/auth/resolver/dnstest"
)

func TestReportOutput(t *testing.T) {
	r := &Report{Domain: "example.test"}
	s := section{r, "dns"}
	s.pass("mx", "MX: 10 mail.example.test")
	s.warn("dnssec", "sign the zone", "not signed/validated")
	if r.Failed() {
		t.Error("a report without FAIL failed")
	}
	s.fail("ptr", "set the PTR", "no PTR record\r\nfor 192.0.2.1") // a remote text with a line break
	if !r.Failed() {
		t.Error("a report with a FAIL did not fail")
	}

	var table bytes.Buffer
	if err := r.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	out := table.String()
	for _, want := range []string{"PASS  dns      mx      MX: 10 mail.example.test", "FAIL  dns      ptr     no PTR record for 192.0.2.1",
		"fix: set the PTR", "1 pass, 1 warn, 1 fail"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}

	var js bytes.Buffer
	if err := r.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	var got struct {
		Domain   string    `json:"domain"`
		Failed   bool      `json:"failed"`
		Pass     int       `json:"pass"`
		Warn     int       `json:"warn"`
		Fail     int       `json:"fail"`
		Findings []Finding `json:"findings"`
	}
	if err := json.Unmarshal(js.Bytes(), &got); err != nil {
		t.Fatalf("%v\n%s", err, js.String())
	}
	if got.Domain != "example.test" || !got.Failed || got.Pass != 1 || got.Warn != 1 || got.Fail != 1 || len(got.Findings) != 3 ||
		got.Findings[2].Level != Fail || got.Findings[2].Fix != "set the PTR" {
		t.Errorf("JSON = %+v", got)
	}
}

// TestRunBounded: with a DNS server that never answers, every step gives up after its timeout, and the
// run's deadline cuts the rest short with a FAIL that says so.
func TestRunBounded(t *testing.T) {
	srv := dnstest.Start(t)
	srv.Down(true)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	rep, err := Run(ctx, Options{Domain: "silent.test", DNSServers: []string{srv.Addr}, StepTimeout: 100 * time.Millisecond,
		SkipMTA: true})
	if err != nil {
		t.Fatal(err)
	}
	mustLevel(t, rep, "dns", "mx", Fail, "MX lookup failed")
	mustLevel(t, rep, "audit", "deadline", Fail, "cut short")
}

func TestRunRefusesNonDomain(t *testing.T) {
	for _, d := range []string{"", "localhost", "bad domain.test"} {
		if _, err := Run(context.Background(), Options{Domain: d}); err == nil {
			t.Errorf("Run(%q) ran", d)
		}
	}
}
