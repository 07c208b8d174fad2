package ops

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/moatmail/moat/metrics"
	"github.com/moatmail/moat/test/stack"
)

// TestUnitVerifies runs systemd-analyze verify on dist/moat.service with the binary path pointed at the
// binary under test (verify insists that ExecStart exists).
func TestUnitVerifies(t *testing.T) {
	stack.Need(t, "systemd-analyze")
	bin := stack.BuildMoat(t)
	unit, err := os.ReadFile(filepath.Join(stack.RepoRoot(t), "dist", "moat.service"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Type=notify", "ExecReload=/bin/kill -HUP $MAINPID", "User=moat", "RuntimeDirectory=moat",
		"StateDirectory=moat", "NoNewPrivileges=yes", "ProtectSystem=strict", "PrivateTmp=yes", "ProtectHome=yes",
		"CapabilityBoundingSet=\n", "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6", "SystemCallFilter=@system-service"} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("the unit lacks %q", want)
		}
	}
	path := filepath.Join(t.TempDir(), "moat.service")
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(string(unit), "/usr/bin/moat", bin)), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("systemd-analyze", "verify", path).CombinedOutput(); err != nil || len(out) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

var metricRE = regexp.MustCompile(`\b(moat_[a-z_]+|process_[a-z_]+|go_[a-z_]+)\b`)

// exported lists every metric name moat serves (histograms with their _bucket, _sum and _count).
func exported(t *testing.T) map[string]bool {
	t.Helper()
	metrics.Enable("test")
	defer metrics.Disable()
	for _, f := range []func(){func() { metrics.DNSQuery("NOERROR") }, metrics.DNSCacheHit, func() { metrics.DNSBLListed("z") },
		func() { metrics.GreylistDecision("known") }, func() { metrics.ScannerUp("clamd", "s", true) },
		func() { metrics.ScannerError("clamd", "error") }, metrics.MilterProtocolError, metrics.Panic} {
		f()
	}
	mfs, err := metrics.NewRegistry(func() int64 { return 0 }).Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{
		// The engine's metrics appear once a message passed; they are named here.
		"moat_messages_total": true, "moat_recipients_total": true, "moat_check_results_total": true,
		"moat_check_duration_seconds_bucket": true, "moat_check_duration_seconds_sum": true, "moat_check_duration_seconds_count": true,
	}
	for _, mf := range mfs {
		names[mf.GetName()] = true
	}
	return names
}

// TestDashboardAndAlerts: the example dashboard and alert rules parse and name only metrics moat exports.
func TestDashboardAndAlerts(t *testing.T) {
	names := exported(t)
	root := stack.RepoRoot(t)
	check := func(file, expr string) {
		for _, m := range metricRE.FindAllString(expr, -1) {
			if !names[m] {
				t.Errorf("%s: %q names %s, which moat does not export", file, expr, m)
			}
		}
	}
	raw, err := os.ReadFile(filepath.Join(root, "dist", "grafana-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("dashboard: %v", err)
	}
	if len(dash.Panels) < 10 {
		t.Errorf("dashboard has %d panels", len(dash.Panels))
	}
	for _, p := range dash.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("dashboard panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			check("grafana-dashboard.json", tg.Expr)
		}
	}
	raw, err = os.ReadFile(filepath.Join(root, "dist", "prometheus-alerts.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert, Expr string
			}
		}
	}
	if err := yaml.Unmarshal(raw, &rules); err != nil {
		t.Fatalf("alerts: %v", err)
	}
	alerts := map[string]bool{}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			alerts[r.Alert] = true
			check("prometheus-alerts.yml", r.Expr)
		}
	}
	for _, a := range []string{"MoatScannerDown", "MoatTempfailRateHigh", "MoatDNSLookupsFailing"} {
		if !alerts[a] {
			t.Errorf("alert %s is missing", a)
		}
	}
}
