package policy

import (
	"testing"
)

func TestAnalyze(t *testing.T) {
	reject := func(check string, kind Kind, stage Stage) Finding {
		return Finding{Check: check, Kind: kind, Stage: stage, Verdict: Reject, Reason: check + "-says-no",
			Reply: Reply{Code: 550, Enhanced: "5.7.1", Text: check + " refused"}}
	}
	tempfail := func(check string, kind Kind, stage Stage) Finding {
		return Finding{Check: check, Kind: kind, Stage: stage, Verdict: Tempfail, Reason: "later",
			Reply: Reply{Code: 451, Enhanced: "4.7.1", Text: "try later"}}
	}
	p := Params{TagScore: 5, QuarantineScore: 8, RejectScore: 15}
	tests := []struct {
		name       string
		in         Input
		wantAction Action
		wantCheck  string
		wantText   string
	}{
		{"nothing found continues", Input{Stage: StageRcpt}, ActContinue, "", ""},
		{"nothing found at eom accepts", Input{Stage: StageEOM}, ActAccept, "", ""},
		{"access reject at mail answers now",
			Input{Stage: StageMail, Ref: "R1", Findings: []Finding{reject("barring", KindAccess, StageMail)}},
			ActReject, "barring", "barring refused (ref=R1)"},
		{"anti-spam reject at connect waits for rcpt",
			Input{Stage: StageConnect, Findings: []Finding{reject("dnsbl", KindAntispam, StageConnect)}},
			ActContinue, "", ""},
		{"anti-spam reject applies at rcpt",
			Input{Stage: StageRcpt, Ref: "R2", Findings: []Finding{reject("dnsbl", KindAntispam, StageConnect)}},
			ActReject, "dnsbl", "dnsbl refused (ref=R2)"},
		{"white list overrides anti-spam reject",
			Input{Stage: StageRcpt, Whitelisted: true, Findings: []Finding{reject("spf", KindAntispam, StageMail)}},
			ActContinue, "", ""},
		{"white list does not override access control",
			Input{Stage: StageRcpt, Whitelisted: true, Findings: []Finding{reject("relay", KindAccess, StageRcpt)}},
			ActReject, "relay", ""},
		{"white list does not override the virus scan",
			Input{Stage: StageEOM, Whitelisted: true, Findings: []Finding{reject("clamd", KindVirus, StageEOM)}},
			ActReject, "clamd", ""},
		{"reject beats tempfail",
			Input{Stage: StageRcpt, Findings: []Finding{tempfail("greylist", KindAntispam, StageRcpt), reject("recipients", KindAccess, StageRcpt)}},
			ActReject, "recipients", ""},
		{"first of equals wins",
			Input{Stage: StageRcpt, Findings: []Finding{reject("relay", KindAccess, StageRcpt), reject("recipients", KindAccess, StageRcpt)}},
			ActReject, "relay", ""},
		{"quarantine waits for end of message",
			Input{Stage: StageRcpt, Findings: []Finding{{Check: "dmarc", Verdict: Quarantine}}},
			ActContinue, "", ""},
		{"quarantine at end of message",
			Input{Stage: StageEOM, Findings: []Finding{{Check: "dmarc", Verdict: Quarantine, Reason: "p=quarantine"}}},
			ActQuarantine, "dmarc", ""},
		{"score over reject threshold",
			Input{Stage: StageEOM, Ref: "R3", Score: 16},
			ActReject, "", "Message considered spam (score 16.0) (ref=R3)"},
		{"score over quarantine threshold",
			Input{Stage: StageEOM, Score: 9},
			ActQuarantine, "", ""},
		{"score ignored for white-listed mail",
			Input{Stage: StageEOM, Score: 100, Whitelisted: true},
			ActAccept, "", ""},
		{"dry run findings never act",
			Input{Stage: StageRcpt, Findings: []Finding{{Check: "relay", Kind: KindAccess, Verdict: None, DryRun: true, WouldBe: Reject}}},
			ActContinue, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := Analyze(tt.in, p)
			if d.Action != tt.wantAction {
				t.Fatalf("action = %v, want %v (%+v)", d.Action, tt.wantAction, d)
			}
			if d.Check != tt.wantCheck {
				t.Errorf("check = %q, want %q", d.Check, tt.wantCheck)
			}
			if tt.wantText != "" && d.Reply.Text != tt.wantText {
				t.Errorf("text = %q, want %q", d.Reply.Text, tt.wantText)
			}
		})
	}
}

func TestAnalyzeDryRunIsReported(t *testing.T) {
	d := Analyze(Input{Stage: StageRcpt, Findings: []Finding{{Check: "relay", Kind: KindAccess, DryRun: true, WouldBe: Reject, Reason: "relay-denied"}}}, Params{})
	if len(d.DryRun) != 1 || d.DryRun[0] != "relay: reject (relay-denied)" {
		t.Errorf("dry run = %v", d.DryRun)
	}
}

func TestFixReplyKeepsCodesConsistent(t *testing.T) {
	tests := []struct {
		name string
		in   Reply
		code int
		enh  string
		want string
	}{
		{"defaults", Reply{}, 550, "5.7.1", "550 5.7.1 Message rejected by policy (ref=X)"},
		{"class mismatch fixed", Reply{Code: 450, Enhanced: "4.7.1", Text: "no"}, 550, "5.7.1", "550 5.7.1 no (ref=X)"},
		{"enhanced class mismatch fixed", Reply{Code: 554, Enhanced: "4.7.1", Text: "no"}, 550, "5.7.1", "554 5.7.1 no (ref=X)"},
		{"line breaks removed", Reply{Code: 550, Enhanced: "5.7.1", Text: "a\r\nb"}, 550, "5.7.1", "550 5.7.1 a  b (ref=X)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := fixReply(tt.in, tt.code, tt.enh, "Message rejected by policy", "X").String()
			if got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestFormatAuthResults(t *testing.T) {
	got := FormatAuthResults("mx.example.test", []*AuthResult{
		{Method: "spf", Result: "pass", Props: []Prop{{Type: "smtp", Property: "mailfrom", Value: "a@example.org"}}},
		{Method: "dkim", Result: "fail", Reason: `bad "sig"`, Props: []Prop{{Type: "header", Property: "d", Value: "example.org"}, {Type: "header", Property: "b", Value: "abc/+="}}},
	})
	want := "mx.example.test;\n\tspf=pass smtp.mailfrom=a@example.org;\n\tdkim=fail reason=\"bad \\\"sig\\\"\" header.d=example.org header.b=\"abc/+=\""
	if got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
	if got := FormatAuthResults("mx", nil); got != "mx; none" {
		t.Errorf("no results: %q", got)
	}
}

func TestAuthservIDOf(t *testing.T) {
	for v, want := range map[string]string{
		" mx.example.test; spf=pass":            "mx.example.test",
		" mx.example.test 1; none":              "mx.example.test",
		" (comment) MX.example.test; dkim=pass": "MX.example.test",
		"other.example;":                        "other.example",
		"":                                      "",
	} {
		if got := authservIDOf(v); got != want {
			t.Errorf("authservIDOf(%q) = %q, want %q", v, got, want)
		}
	}
}
