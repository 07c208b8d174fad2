package audit

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// stsPolicy is an MTA-STS policy file (RFC 8461 section 3.2).
type stsPolicy struct {
	Version, Mode, MaxAge string
	MX                    []string
}

func parseSTSPolicy(r io.Reader) (stsPolicy, error) {
	var p stsPolicy
	sc := bufio.NewScanner(io.LimitReader(r, 64<<10)) // RFC 8461 section 3.3: at most 64 KB
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		switch strings.TrimSpace(k) {
		case "version":
			p.Version = v
		case "mode":
			p.Mode = v
		case "max_age":
			p.MaxAge = v
		case "mx":
			p.MX = append(p.MX, strings.ToLower(strings.TrimSuffix(v, ".")))
		}
	}
	if err := sc.Err(); err != nil {
		return p, err
	}
	if p.Version != "STSv1" {
		return p, fmt.Errorf("version %q, want STSv1", p.Version)
	}
	return p, nil
}

// stsMatch reports whether an MX name matches a policy's mx pattern ("*.example.org" matches one label).
func stsMatch(pattern, host string) bool {
	if rest, ok := strings.CutPrefix(pattern, "*."); ok {
		i := strings.IndexByte(host, '.')
		return i > 0 && host[i+1:] == rest
	}
	return pattern == host
}

// checkMTASTS checks the _mta-sts TXT record, fetches the HTTPS policy and compares its mx lines with the MX.
func (a *auditor) checkMTASTS(ctx context.Context, mxs []*mxHost) {
	s := a.section("mta-sts")
	txts, err := a.txt(ctx, "_mta-sts."+a.domain)
	if err != nil {
		s.warn("record", "make the domain's name servers answer", "MTA-STS lookup failed: %v", err)
		return
	}
	var recs []string
	for _, t := range txts {
		if strings.HasPrefix(t, "v=STSv1") {
			recs = append(recs, t)
		}
	}
	switch {
	case len(recs) == 0:
		s.warn("record", fmt.Sprintf("publish _mta-sts.%s. IN TXT \"v=STSv1; id=20260101\" and the policy at https://mta-sts.%s/.well-known/mta-sts.txt", a.domain, a.domain),
			"no MTA-STS record: senders may deliver without TLS")
		return
	case len(recs) > 1:
		s.fail("record", "keep one v=STSv1 record (RFC 8461 section 3.1)", "%d MTA-STS records", len(recs))
		return
	case !strings.Contains(recs[0], "id="):
		s.fail("record", "add id= (change it with every policy change)", "%s: no id", recs[0])
		return
	}
	s.pass("record", "%s", recs[0])

	url := a.opts.MTASTSURL
	if url == "" {
		url = "https://mta-sts." + a.domain + "/.well-known/mta-sts.txt"
	}
	client := &http.Client{
		Timeout: a.opts.StepTimeout,
		Transport: &http.Transport{
			Proxy: nil,
			// RFC 8461 section 3.3: the certificate must be valid for mta-sts.DOMAIN, whatever URL tests use.
			TLSClientConfig: &tls.Config{ServerName: "mta-sts." + a.domain, RootCAs: a.opts.RootCAs, MinVersion: tls.VersionTLS12},
		},
		// RFC 8461 section 3.3: redirects must not be followed.
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return errors.New("redirect refused (RFC 8461 section 3.3)")
		},
	}
	sctx, cancel := a.step(ctx)
	defer cancel()
	req, err := http.NewRequestWithContext(sctx, http.MethodGet, url, nil)
	if err != nil {
		s.fail("policy", "give a valid --mta-sts-url", "%v", err)
		return
	}
	resp, err := client.Do(req)
	if err != nil {
		s.fail("policy", fmt.Sprintf("serve the policy over HTTPS at mta-sts.%s with a valid certificate", a.domain), "fetch %s: %v", url, err)
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		s.fail("policy", "serve the policy file with status 200", "fetch %s: %s", url, resp.Status)
		return
	}
	pol, err := parseSTSPolicy(resp.Body)
	if err != nil {
		s.fail("policy", "correct the policy file (RFC 8461 section 3.2)", "%s: %v", url, err)
		return
	}
	switch pol.Mode {
	case "enforce":
		s.pass("mode", "mode: enforce")
	case "testing", "none":
		s.warn("mode", "set mode: enforce once TLS-RPT reports show no failures", "mode: %s: senders still deliver when TLS fails", pol.Mode)
	default:
		s.fail("mode", "set mode: enforce, testing or none", "mode %q", pol.Mode)
	}
	// RFC 8461 section 3.2: max_age in seconds, at most 31557600; weeks are recommended.
	switch age, err := strconv.Atoi(pol.MaxAge); {
	case err != nil || age < 0 || age > 31557600:
		s.fail("max_age", "set max_age: 604800 (a week) or more, at most 31557600", "max_age %q is not a number of seconds up to 31557600", pol.MaxAge)
	case age < 86400:
		s.warn("max_age", "set max_age: 604800 (a week) or more", "max_age %d: senders forget the policy within a day", age)
	default:
		s.pass("max_age", "max_age %d", age)
	}
	for _, mx := range mxs {
		ok := false
		for _, p := range pol.MX {
			ok = ok || stsMatch(p, mx.Name)
		}
		if ok {
			s.pass("mx", "%s is listed in the policy", mx.Name)
		} else {
			s.fail("mx", fmt.Sprintf("add \"mx: %s\" to the policy and change the id of the TXT record", mx.Name),
				"%s is not in the policy's mx lines (%s): enforcing senders will refuse to deliver to it", mx.Name, strings.Join(pol.MX, ", "))
		}
	}
}

// checkTLSRPT checks the TLS reporting record (RFC 8460 section 3).
func (a *auditor) checkTLSRPT(ctx context.Context) {
	s := a.section("tls-rpt")
	name := "_smtp._tls." + a.domain
	txts, err := a.txt(ctx, name)
	if err != nil {
		s.warn("record", "make the domain's name servers answer", "TLS-RPT lookup failed: %v", err)
		return
	}
	for _, t := range txts {
		if strings.HasPrefix(t, "v=TLSRPTv1") {
			if strings.Contains(t, "rua=") {
				s.pass("record", "%s", t)
			} else {
				s.fail("record", "add rua=mailto:... to the record", "%s: no rua", t)
			}
			return
		}
	}
	s.warn("record", fmt.Sprintf("publish %s. IN TXT \"v=TLSRPTv1; rua=mailto:tls-reports@%s\"", name, a.domain),
		"no TLS-RPT record: nobody tells you when TLS to your MX fails")
}
