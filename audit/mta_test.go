package audit

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func TestPostfixList(t *testing.T) {
	got := postfixList("permit_mynetworks,  permit_sasl_authenticated,\n\treject_unauth_destination { inet:127.0.0.1:7357, default_action=accept } unix:/x")
	want := []string{"permit_mynetworks", "permit_sasl_authenticated", "reject_unauth_destination", "{ inet:127.0.0.1:7357, default_action=accept }", "unix:/x"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("postfixList = %q, want %q", got, want)
	}
	if postfixList("") != nil {
		t.Error("empty value gave entries")
	}
}

func TestMilterAddresses(t *testing.T) {
	for in, want := range map[string]string{
		"inet:127.0.0.1:7357":                              "tcp:127.0.0.1:7357",
		"unix:/run/moat.sock":                              "unix:/run/moat.sock",
		"{ inet:127.0.0.1:7357, default_action=tempfail }": "tcp:127.0.0.1:7357",
	} {
		if got := postfixMilterAddr(in); got != want {
			t.Errorf("postfixMilterAddr(%q) = %q, want %q", in, got, want)
		}
	}
	for in, want := range map[string]string{
		"inet:7357@127.0.0.1": "tcp:127.0.0.1:7357",
		"inet6:7357@::1":      "tcp:[::1]:7357",
		"local:/run/m.sock":   "unix:/run/m.sock",
		"unix:/run/m.sock":    "unix:/run/m.sock",
	} {
		if got := sendmailMilterAddr(in); got != want {
			t.Errorf("sendmailMilterAddr(%q) = %q, want %q", in, got, want)
		}
	}
}

// goodPostfix is postconf -x output of a Postfix set up as the checklist asks.
func goodPostfix() map[string]string {
	return map[string]string{
		"smtpd_milters":            "inet:127.0.0.1:7357",
		"milter_default_action":    "tempfail",
		"smtpd_relay_restrictions": "permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination",
		"mynetworks":               "127.0.0.0/8 [::1]/128",
		"smtpd_tls_auth_only":      "yes",
		"disable_vrfy_command":     "yes",
		"message_size_limit":       "52428800",
	}
}

func TestPostfixGoodAndBad(t *testing.T) {
	a := &auditor{rep: &Report{}, opts: Options{MilterListen: []string{"unix:/run/moat/moat.sock", "tcp:127.0.0.1:7357"}}}
	a.checkPostfixParams(a.section("postfix"), goodPostfix())
	for _, c := range []string{"smtpd_milters", "milter_default_action", "relay", "smtpd_tls_auth_only", "disable_vrfy_command", "message_size_limit"} {
		mustLevel(t, a.rep, "postfix", c, Pass)
	}
	if a.rep.Failed() {
		t.Fatalf("good configuration failed:\n%s", dump(a.rep))
	}

	bad := goodPostfix()
	bad["smtpd_milters"] = "inet:127.0.0.1:9999"
	bad["milter_default_action"] = "accept"
	bad["smtpd_relay_restrictions"] = "permit_mynetworks, permit, reject_unauth_destination"
	bad["mynetworks"] = "0.0.0.0/0"
	bad["smtpd_tls_auth_only"] = "no"
	bad["disable_vrfy_command"] = "no"
	bad["message_size_limit"] = "0"
	a = &auditor{rep: &Report{}, opts: Options{MilterListen: []string{"tcp:127.0.0.1:7357"}}}
	a.checkPostfixParams(a.section("postfix"), bad)
	mustLevel(t, a.rep, "postfix", "smtpd_milters", Fail, "does not name moat's socket")
	mustLevel(t, a.rep, "postfix", "milter_default_action", Fail, "accept")
	mustLevel(t, a.rep, "postfix", "relay", Fail, "open relay")
	mustLevel(t, a.rep, "postfix", "mynetworks", Fail, "0.0.0.0/0")
	mustLevel(t, a.rep, "postfix", "smtpd_tls_auth_only", Fail, "no")
	mustLevel(t, a.rep, "postfix", "disable_vrfy_command", Warn)
	mustLevel(t, a.rep, "postfix", "message_size_limit", Fail, "no limit")

	// Relay restrictions in smtpd_recipient_restrictions when smtpd_relay_restrictions is empty.
	old := goodPostfix()
	old["smtpd_relay_restrictions"] = ""
	old["smtpd_recipient_restrictions"] = "permit_mynetworks, reject_unauth_destination"
	old["smtpd_milters"] = ""
	old["milter_default_action"] = "reject"
	old["message_size_limit"] = "1000"
	a = &auditor{rep: &Report{}}
	a.checkPostfixParams(a.section("postfix"), old)
	mustLevel(t, a.rep, "postfix", "relay", Pass, "smtpd_recipient_restrictions")
	mustLevel(t, a.rep, "postfix", "smtpd_milters", Fail, "empty")
	mustLevel(t, a.rep, "postfix", "milter_default_action", Warn, "reject")
	mustLevel(t, a.rep, "postfix", "message_size_limit", Warn, "less than 1 MB")

	// Without moat's configuration, a milter whose socket says moat counts.
	a = &auditor{rep: &Report{}}
	p := goodPostfix()
	p["smtpd_milters"] = "unix:/run/moat/moat.sock"
	a.checkPostfixParams(a.section("postfix"), p)
	mustLevel(t, a.rep, "postfix", "smtpd_milters", Pass)
}

const sendmailCFGood = `# sendmail.cf fragment
O PrivacyOptions=authwarnings,novrfy,noexpn,restrictqrun
O MaxMessageSize=52428800
O InputMailFilters=moat
Xmoat, S=inet:7357@127.0.0.1, F=T, T=C:10s;S:10s;R:30s;E:5m
`

const sendmailCFBad = `O PrivacyOptions=authwarnings
O InputMailFilters=other
Xmoat, S=inet:7357@127.0.0.1, F=, T=C:10s
Xother, S=unix:/run/other.sock, F=R
`

func TestSendmailCF(t *testing.T) {
	dir := t.TempDir()
	good, bad := filepath.Join(dir, "good.cf"), filepath.Join(dir, "bad.cf")
	os.WriteFile(good, []byte(sendmailCFGood), 0o644)
	os.WriteFile(bad, []byte(sendmailCFBad), 0o644)

	a := &auditor{rep: &Report{}, opts: Options{MilterListen: []string{"tcp:127.0.0.1:7357"}}}
	a.checkSendmail(good)
	mustLevel(t, a.rep, "sendmail", "milter", Pass, "Xmoat", "InputMailFilters")
	mustLevel(t, a.rep, "sendmail", "F=T", Pass)
	mustLevel(t, a.rep, "sendmail", "PrivacyOptions", Pass)
	mustLevel(t, a.rep, "sendmail", "MaxMessageSize", Pass)

	a = &auditor{rep: &Report{}, opts: Options{MilterListen: []string{"tcp:127.0.0.1:7357"}}}
	a.checkSendmail(bad)
	mustLevel(t, a.rep, "sendmail", "milter", Fail, "not in InputMailFilters")
	mustLevel(t, a.rep, "sendmail", "F=T", Fail, "passes unchecked")
	mustLevel(t, a.rep, "sendmail", "PrivacyOptions", Warn, "authwarnings")
	mustLevel(t, a.rep, "sendmail", "MaxMessageSize", Fail, "no limit")

	a = &auditor{rep: &Report{}, opts: Options{MilterListen: []string{"unix:/run/moat/moat.sock"}}}
	a.checkSendmail(good)
	mustLevel(t, a.rep, "sendmail", "milter", Fail, "no milter", "names moat's socket")

	a = &auditor{rep: &Report{}}
	a.checkSendmail(filepath.Join(dir, "missing.cf"))
	mustLevel(t, a.rep, "sendmail", "sendmail.cf", Fail, "missing.cf")
}

func TestMTANotFound(t *testing.T) {
	oldP, oldS := defaultPostfixDir, defaultSendmailCF
	defaultPostfixDir, defaultSendmailCF = t.TempDir(), filepath.Join(t.TempDir(), "sendmail.cf")
	t.Cleanup(func() { defaultPostfixDir, defaultSendmailCF = oldP, oldS })
	a := &auditor{rep: &Report{}}
	a.checkMTA(t.Context())
	mustLevel(t, a.rep, "mta", "found", Warn, "no local MTA configuration found")
}
