package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/moatmail/moat/auth/resolver/dnstest"
)

// auditJSON runs `moat audit` in process and decodes its JSON output.
func auditJSON(t *testing.T, args ...string) (map[string]any, int, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(append([]string{"audit"}, args...), &out, &errb)
	var rep map[string]any
	if out.Len() > 0 {
		if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
			t.Fatalf("output is not JSON: %v\n%s", err, out.String())
		}
	}
	return rep, code, errb.String()
}

func TestAuditCommand(t *testing.T) {
	srv := dnstest.Start(t,
		"good.test. MX 0 .", // a null MX: no SMTP step, no MX address to pass SPF
		`good.test. TXT "v=spf1 -all"`,
		`_dmarc.good.test. TXT "v=DMARC1; p=reject; rua=mailto:d@good.test"`,
		`bad.test. TXT "v=spf1 -all"`,
		`bad.test. TXT "v=spf1 ~all"`,
	)
	cfg := writeConfig(t, "[milter]\nlisten = [\"tcp:127.0.0.1:7357\"]\n[checks.relay]\nlocal_domains = [\"good.test\"]\n")

	// Flags before and after the domain.
	rep, code, stderr := auditJSON(t, "-c", cfg, "--dns", srv.Addr, "good.test", "--json", "--skip-mta", "--step-timeout", "1s")
	if code != 0 || rep["failed"] != false || rep["domain"] != "good.test" {
		t.Fatalf("good.test: exit %d, report %v, stderr %s", code, rep, stderr)
	}
	var sawRelay bool
	for _, f := range rep["findings"].([]any) {
		m := f.(map[string]any)
		sawRelay = sawRelay || (m["section"] == "moat" && m["check"] == "relay" && m["level"] == "PASS")
	}
	if !sawRelay {
		t.Errorf("the moat step did not read -c: %v", rep["findings"])
	}

	rep, code, _ = auditJSON(t, "-c", cfg, "--dns", srv.Addr, "--json", "--skip-mta", "--step-timeout", "1s", "bad.test")
	if code != 1 || rep["failed"] != true {
		t.Errorf("bad.test (two SPF records): exit %d, failed %v; want 1, true", code, rep["failed"])
	}

	for _, args := range [][]string{
		{},                            // no domain
		{"a.test", "b.test"},          // two domains
		{"--timeout", "0s", "a.test"}, // no bound
		{"--smtp-port", "0", "a.test"},
		{"--no-such-flag", "a.test"},
		{"--dns", srv.Addr, "not a domain"},
	} {
		if _, code, stderr := auditJSON(t, args...); code != 2 {
			t.Errorf("audit %q: exit %d, want 2 (%s)", args, code, stderr)
		}
	}
	if _, code, stderr := auditJSON(t, "-c", cfg+".missing", "good.test"); code != 1 || !strings.Contains(stderr, "missing") {
		t.Errorf("a missing -c file: exit %d, stderr %q; want 1 naming it", code, stderr)
	}
	if _, code, stderr := auditJSON(t, "--ca-file", cfg, "good.test"); code != 1 || !strings.Contains(stderr, "no PEM certificate") {
		t.Errorf("a --ca-file without certificates: exit %d, stderr %q", code, stderr)
	}
}
