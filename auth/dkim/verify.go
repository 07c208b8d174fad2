// Package dkim implements moat's DKIM checks (RFC 6376): "dkim" verifies every signature of incoming
// mail while the message streams in, and "dkimsign" signs outgoing mail of authenticated and trusted
// senders. [Keygen] makes a key pair and the DNS record to publish.
//
// # Verifying
//
// The verifier is github.com/emersion/go-msgauth/dkim, fed through a pipe while the MTA sends the body.
// The pipe never blocks the MTA: the library looks the keys up before it reads the body, so bytes wait in
// memory meanwhile (up to max_buffer), and the keys are fetched through moat's resolver as soon as the
// header block is complete. At most max_signatures signatures are verified (the library is unbounded by
// default). Each signature gives one Authentication-Results entry with header.d, header.s and header.b
// (RFC 8601 section 2.7.1, RFC 6008), and the fact policy.FactDKIMPassDomains lists the d= domains that passed, for
// DMARC. A failing signature alone never refuses mail: by default results are only recorded. The fail and
// temperror actions apply only when no signature passed: RFC 6376 section 6.1 treats a signature that does
// not verify as if it were absent, so a broken signature next to a good one changes nothing. The d= domains
// are compared and looked up in A-label form (IDNA).
//
//	[checks.dkim]
//	max_signatures = 5
//	max_buffer = 4194304       # bytes buffered per message while keys are looked up (4 MB)
//	fail = "ignore"            # action for a failing signature: score[:N], quarantine, reject, ignore
//	temperror = "ignore"
//	lookup_timeout = "10s"
//
// # Signing
//
// See [SignCheck].
package dkim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	msgdkim "github.com/emersion/go-msgauth/dkim"

	"github.com/moatmail/moat/auth/resolver"
	"github.com/moatmail/moat/config"
	"github.com/moatmail/moat/internal/addr"
	"github.com/moatmail/moat/policy"
	"github.com/moatmail/moat/policy/action"
)

func init() {
	policy.Register("dkim", setupVerify)
	policy.Register("dkimsign", setupSign)
}

// DefaultMaxBuffer is the default of max_buffer: the bytes one session may hold while its keys are looked
// up. The verifier reads the body as soon as the keys are in, so this bounds only the part that arrives during
// the lookup; a message that outruns it gets temperror (and the temperror action).
const DefaultMaxBuffer = 4 << 20

type verifyCfg struct {
	MaxSignatures int             `toml:"max_signatures"`
	MaxBuffer     int             `toml:"max_buffer"`
	Fail          string          `toml:"fail"`
	TempError     string          `toml:"temperror"`
	LookupTimeout config.Duration `toml:"lookup_timeout"`
}

// VerifyCheck is the dkim check.
type VerifyCheck struct {
	res           *resolver.Resolver
	maxSigs       int
	maxBuffer     int
	fail, temp    action.Action
	lookupTimeout time.Duration
}

func setupVerify(sec *config.Section, env *policy.Env) (policy.Check, error) {
	c := verifyCfg{MaxSignatures: 5, MaxBuffer: DefaultMaxBuffer, Fail: "ignore", TempError: "ignore",
		LookupTimeout: config.Duration(10 * time.Second)}
	if err := sec.Decode(&c); err != nil {
		return nil, err
	}
	if c.MaxSignatures < 1 || c.MaxSignatures > 50 {
		return nil, sec.Errorf("max_signatures", "must be between 1 and 50")
	}
	if c.MaxBuffer < 64<<10 {
		return nil, sec.Errorf("max_buffer", "must be at least 65536")
	}
	if c.LookupTimeout <= 0 {
		return nil, sec.Errorf("lookup_timeout", "must be positive")
	}
	ch := &VerifyCheck{maxSigs: c.MaxSignatures, maxBuffer: c.MaxBuffer, lookupTimeout: c.LookupTimeout.D()}
	var err error
	if ch.fail, err = action.Parse(c.Fail, 1); err != nil {
		return nil, sec.Errorf("fail", "%v", err)
	}
	if ch.temp, err = action.Parse(c.TempError, 1); err != nil {
		return nil, sec.Errorf("temperror", "%v", err)
	}
	if ch.res, err = env.Resolver(); err != nil {
		return nil, err
	}
	return ch, nil
}

// Name implements policy.Check.
func (c *VerifyCheck) Name() string { return "dkim" }

// Kind implements policy.Check.
func (c *VerifyCheck) Kind() policy.Kind { return policy.KindAntispam }

// sigInfo is what Authentication-Results needs of a DKIM-Signature field beyond the library's result.
type sigInfo struct {
	d, s, b string
}

// parseTags splits a tag-list (RFC 6376 section 3.2) leniently; values lose their white space.
func parseTags(v string) map[string]string {
	out := map[string]string{}
	for _, part := range strings.Split(v, ";") {
		k, val, ok := strings.Cut(part, "=")
		if !ok {
			continue
		}
		k = strings.TrimSpace(k)
		val = strings.Map(func(r rune) rune {
			if r == ' ' || r == '\t' || r == '\r' || r == '\n' {
				return -1
			}
			return r
		}, val)
		if _, dup := out[k]; !dup {
			out[k] = val
		}
	}
	return out
}

func signatures(s *policy.Session, max int) []sigInfo {
	var out []sigInfo
	for _, v := range s.HeaderValues("DKIM-Signature") {
		if len(out) == max {
			break
		}
		t := parseTags(v)
		b := t["b"]
		if len(b) > 8 {
			b = b[:8] // RFC 6008 section 4: enough of b= to tell signatures apart
		}
		out = append(out, sigInfo{d: addr.Domain(t["d"]), s: t["s"], b: b})
	}
	return out
}

// StartBody starts verifying; the keys are fetched right away.
func (c *VerifyCheck) StartBody(ctx context.Context, s *policy.Session) policy.BodyStream {
	sigs := signatures(s, c.maxSigs)
	if len(sigs) == 0 {
		return noneStream{}
	}
	// The lookups must outlive the header stage's context; they are bounded by lookup_timeout.
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.lookupTimeout)
	for _, sg := range sigs {
		if sg.d != "" && sg.s != "" {
			go func() { _, _ = c.res.LookupTXT(lctx, sg.s+"._domainkey."+sg.d) }()
		}
	}
	st := &stream{c: c, s: s, sigs: sigs, pipe: newBufPipe(c.maxBuffer), done: make(chan struct{}), cancel: cancel}
	go func() {
		defer close(st.done)
		defer cancel()
		opts := &msgdkim.VerifyOptions{
			LookupTXT:        func(name string) ([]string, error) { return c.res.LookupTXT(lctx, name) },
			MaxVerifications: c.maxSigs,
		}
		st.verifs, st.err = msgdkim.VerifyWithOptions(st.pipe, opts)
		// Drain: the library may stop reading early, and the writer must never wait for it.
		_, _ = io.Copy(io.Discard, st.pipe)
	}()
	return st
}

type noneStream struct{}

func (noneStream) Write(p []byte) (int, error) { return len(p), nil }
func (noneStream) Finish(context.Context) []policy.Finding {
	return []policy.Finding{{Status: policy.StatusNone, Detail: "no DKIM signature",
		AuthResult: &policy.AuthResult{Method: "dkim", Result: "none"}}}
}

type stream struct {
	c      *VerifyCheck
	s      *policy.Session
	sigs   []sigInfo
	pipe   *bufPipe
	done   chan struct{}
	cancel context.CancelFunc

	verifs []*msgdkim.Verification
	err    error
}

// Write hands message bytes to the verifier without waiting for it.
func (st *stream) Write(p []byte) (int, error) { return st.pipe.Write(p) }

// Finish waits for the verifier and turns its results into findings.
func (st *stream) Finish(ctx context.Context) []policy.Finding {
	st.pipe.CloseWrite()
	select {
	case <-st.done:
	case <-ctx.Done():
		st.pipe.CloseRead(ctx.Err())
		st.cancel()
		<-st.done
		return []policy.Finding{st.result(policy.StatusTempError, sigInfo{}, "verification did not finish: "+ctx.Err().Error())}
	}
	if st.err != nil && !errors.Is(st.err, msgdkim.ErrTooManySignatures) {
		if errors.Is(st.err, errBufferFull) || len(st.verifs) == 0 {
			status := policy.StatusPermError
			if errors.Is(st.err, errBufferFull) {
				status = policy.StatusTempError
			}
			return []policy.Finding{st.result(status, sigInfo{}, st.err.Error())}
		}
	}
	var out []policy.Finding
	var pass []string
	for _, v := range st.verifs {
		if v.Err == nil {
			pass = append(pass, addr.Domain(v.Domain))
		}
	}
	// RFC 6376 section 6.1: a signature that fails is as if absent; with one that passes, the others'
	// failures are recorded but not acted on.
	act := len(pass) == 0
	for i, v := range st.verifs {
		info := sigInfo{d: addr.Domain(v.Domain)}
		if i < len(st.sigs) {
			info = st.sigs[i]
			if v.Domain != "" {
				info.d = addr.Domain(v.Domain)
			}
		}
		status, why := policy.StatusPass, ""
		switch {
		case v.Err == nil:
		case msgdkim.IsTempFail(v.Err):
			status, why = policy.StatusTempError, v.Err.Error()
		case msgdkim.IsPermFail(v.Err):
			status, why = policy.StatusPermError, v.Err.Error()
		default:
			status, why = policy.StatusFail, v.Err.Error()
		}
		f := st.result(status, info, why)
		if !act && status != policy.StatusPass {
			f.Verdict, f.Reply, f.Score, f.Scored = policy.None, policy.Reply{}, 0, false
			f.Detail += " (another signature passed: no action)"
		}
		out = append(out, f)
	}
	if errors.Is(st.err, msgdkim.ErrTooManySignatures) && len(out) > 0 {
		out[len(out)-1].Detail += fmt.Sprintf("; more than %d signatures, the rest ignored", st.c.maxSigs)
	}
	st.s.Set(policy.FactDKIMPassDomains, strings.Join(dedupe(pass), ","))
	return out
}

func (st *stream) result(status policy.Status, info sigInfo, why string) policy.Finding {
	f := policy.Finding{Status: status, Reason: "dkim-" + string(status),
		AuthResult: &policy.AuthResult{Method: "dkim", Result: string(status)}}
	if why != "" {
		f.AuthResult.Reason = strings.TrimPrefix(why, "dkim: ")
	}
	if info.d != "" {
		f.AuthResult.Props = append(f.AuthResult.Props, policy.Prop{Type: "header", Property: "d", Value: info.d})
	}
	if info.s != "" {
		f.AuthResult.Props = append(f.AuthResult.Props, policy.Prop{Type: "header", Property: "s", Value: info.s})
	}
	if info.b != "" {
		f.AuthResult.Props = append(f.AuthResult.Props, policy.Prop{Type: "header", Property: "b", Value: info.b})
	}
	f.Detail = fmt.Sprintf("d=%s s=%s: %s", info.d, info.s, status)
	if why != "" {
		f.Detail += ": " + why
	}
	switch status {
	case policy.StatusFail, policy.StatusPermError:
		f.Tests = []string{"DKIM_INVALID"}
		f.ApplyAction(st.c.fail, policy.Reply{Code: 550, Enhanced: "5.7.20", Text: "DKIM signature did not verify"}, policy.Reply{})
	case policy.StatusTempError:
		f.ApplyAction(st.c.temp, policy.Reply{}, policy.Reply{Code: 451, Enhanced: "4.7.0", Text: "DKIM key lookup failed temporarily, please try again later"})
	case policy.StatusPass:
		f.Tests = []string{"DKIM_VALID"}
	}
	return f
}

func dedupe(in []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range in {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}
