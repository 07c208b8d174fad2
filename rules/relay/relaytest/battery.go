// Package relaytest implements the relay test battery shared by the relay check's unit tests and the
// end-to-end tests through Postfix: the classic relay-test forms (after the rlytest and abuse.net suites), with
// upper case, trailing dots, address literals, nested quoting and mixed separators. Every attempt must be
// refused for an untrusted, unauthenticated client.
package relaytest

import "strings"

// Attempt is one relay attempt: an SMTP envelope that must not be relayed.
type Attempt struct {
	Helo, From, Rcpt string
	Note             string
}

// Battery returns the relay attempts for a server whose local domain is local and whose own address is ip
// (without brackets). No attempt names a domain other than local as a local or relay destination; the remote
// domain is remote.example.
func Battery(local, ip string) []Attempt {
	L, R := local, "remote.example"
	LU, RU := strings.ToUpper(L), strings.ToUpper(R)
	lit := "[" + ip + "]"
	forged := "postmaster@" + L
	a := []Attempt{
		{"client.example", "spammer@" + R, "victim@" + R, "plain relay"},
		{"client.example", "spammer@" + R, "victim@" + RU, "upper-case remote"},
		{"client.example", "spammer@" + R, "victim@" + R + ".", "trailing dot on remote"},
		{"client.example", "spammer@" + R, "Victim@Remote.Example", "mixed case remote"},
		{L, "spammer@" + R, "victim@" + R, "HELO claims the local domain"},
		{"client.example", forged, "victim@" + R, "MAIL FROM forged as local"},
		{L, forged, "victim@" + R, "HELO and MAIL FROM both local"},
		{"localhost", "", "victim@" + R, "null sender"},
		{"client.example", "spammer@" + R, "victim%" + R + "@" + L, "percent hack"},
		{"client.example", "spammer@" + R, "victim%" + R + "@" + LU, "percent hack, upper-case local"},
		{"client.example", "spammer@" + R, "victim%" + R + "@" + L + ".", "percent hack, trailing dot"},
		{"client.example", "spammer@" + R, "victim%" + R + ".@" + L, "percent hack, dot after remote"},
		{"client.example", "spammer@" + R, "victim%" + R + "@" + lit, "percent hack via address literal"},
		{"client.example", "spammer@" + R, "victim%" + R + "%" + L + "@" + L, "double percent hack"},
		{"client.example", "spammer@" + R, `"victim@` + R + `"`, "quoted address, no domain"},
		{"client.example", "spammer@" + R, `"victim%` + R + `"`, "quoted percent, no domain"},
		{"client.example", "spammer@" + R, `"victim@` + R + `"@` + L, "quoted at"},
		{"client.example", "spammer@" + R, `"victim@` + R + `"@` + LU + ".", "quoted at, upper case and dot"},
		{"client.example", "spammer@" + R, `"victim%` + R + `"@` + L, "quoted percent"},
		{"client.example", "spammer@" + R, `"` + R + `!victim"@` + L, "quoted bang"},
		{"client.example", "spammer@" + R, `"victim@` + R + `"@` + lit, "quoted at via address literal"},
		{"client.example", "spammer@" + R, `"victim\@` + R + `"@` + L, "quoted at with backslash"},
		{"client.example", "spammer@" + R, `"\"victim@` + R + `\""@` + L, "nested quoting"},
		{"client.example", "spammer@" + R, `"victim@` + R + `@` + L + `"@` + L, "quoted double at"},
		{"client.example", "spammer@" + R, "victim@" + R + "@" + L, "unquoted double at"},
		{"client.example", "spammer@" + R, "victim@" + R + "@" + lit, "unquoted double at, literal"},
		{"client.example", "spammer@" + R, R + "!victim", "bang path, no domain"},
		{"client.example", "spammer@" + R, R + "!victim@" + L, "bang path"},
		{"client.example", "spammer@" + R, RU + "!victim@" + LU + ".", "bang path, upper case and dot"},
		{"client.example", "spammer@" + R, R + "!victim@" + lit, "bang path via address literal"},
		{"client.example", "spammer@" + R, L + "!" + R + "!victim@" + L, "double bang path"},
		{"client.example", "spammer@" + R, R + "!victim%" + L + "@" + L, "bang and percent"},
		{"client.example", "spammer@" + R, "victim%" + L + "!" + R + "@" + L, "percent then bang"},
		{"client.example", "spammer@" + R, "@" + L + ":victim@" + R, "source route through local"},
		{"client.example", "spammer@" + R, "@" + lit + ":victim@" + R, "source route through literal"},
		{"client.example", "spammer@" + R, "@" + L + ",@" + L + ":victim@" + R, "two-hop source route"},
		{"client.example", "spammer@" + R, "@" + LU + ".:victim@" + R + ".", "source route, case and dots"},
		{"client.example", "spammer@" + R, "victim@[192.0.2.1]", "address literal"},
		{"client.example", "spammer@" + R, "victim@" + lit, "our own address literal, unlisted"},
		{"client.example", "spammer@" + R, "victim@[IPv6:2001:db8::1]", "IPv6 address literal"},
		{"client.example", "spammer@" + R, "victim@" + L + "." + R, "local domain as a prefix"},
		{"client.example", "spammer@" + R, "victim@evil" + L, "local domain as a suffix without a dot"},
		{"client.example", "spammer@" + R, "victim@" + strings.ReplaceAll(L, ".", "-") + ".net", "look-alike domain"},
		{"client.example", "spammer@" + R, "victim@" + L + "..", "two trailing dots"},
		{"client.example", "spammer@" + R, `"victim"@` + R, "quoted plain local part, remote"},
		{"client.example", "spammer@" + R, "postmaster@" + R, "postmaster elsewhere"},
		// An unqualified recipient gets the MTA's default domain (Postfix: $myorigin), which need not be ours.
		{"client.example", "spammer@" + R, "nobody", "unqualified recipient"},
		{"client.example", "spammer@" + R, "Victim", "unqualified recipient, upper case"},
	}
	return a
}
