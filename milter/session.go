package milter

import (
	"context"
	"fmt"
	"net/netip"
	"runtime/debug"
	"sync"
	"time"

	gomilter "github.com/d--j/go-milter"

	"github.com/moatmail/moat/metrics"
	"github.com/moatmail/moat/policy"
)

// session is one MTA connection: one SMTP session and the messages in it. The library calls its methods one at
// a time, in protocol order. The stages themselves run in a policy.Transaction; the session translates: macros
// into session fields, decisions into milter replies, and the outcome into header changes and quarantine.
type session struct {
	gomilter.NoOpMilter
	srv *Server
	eng *policy.Engine
	s   *policy.Session
	tx  *policy.Transaction

	// bodyLimit: once the spool holds more, no check will read the body (-1: no limit); canSkip: the MTA
	// takes SMFIR_SKIP and waits for a reply to each body chunk, so the rest of the body can be skipped.
	bodyLimit int64
	canSkip   bool
	// proto is the negotiated protocol; held is a refusal found at connect or HELO when the MTA was told not
	// to wait for an answer there (the engine changed between negotiation and now): it is given at MAIL.
	proto gomilter.OptProtocol
	held  *policy.Decision
}

// answer turns a decision into the milter reply for an envelope stage.
func answer(d policy.Decision) *gomilter.Response {
	switch d.Action {
	case policy.ActReject, policy.ActTempfail:
		resp, err := gomilter.RejectWithCodeAndReason(uint16(d.Reply.Code), d.Reply.Enhanced+" "+d.Reply.Text)
		if err != nil {
			if d.Action == policy.ActReject {
				return gomilter.RespReject
			}
			return gomilter.RespTempFail
		}
		return resp
	case policy.ActDiscard:
		return gomilter.RespDiscard
	}
	return gomilter.RespContinue
}

// guard turns a panic in the callback into a tempfail for the message, logged with its stack, so that one bad
// message never takes the daemon down.
func (m *session) guard(stage string, resp **gomilter.Response, err *error) {
	p := recover()
	if p == nil {
		return
	}
	if m.tx == nil {
		m.srv.log.Error("panic in milter session", "stage", stage, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
		metrics.Panic()
		*resp, *err = gomilter.RespTempFail, nil
		return
	}
	*resp, *err = answer(m.tx.Recovered(stage, p)), nil
}

func (m *session) NewConnection(mod gomilter.Modifier) error {
	m.srv.active.Add(1)
	// A reload may retire the engine between Load and Acquire: then load the new one.
	for {
		m.eng = m.srv.engine.Load()
		if m.eng.Acquire() {
			break
		}
	}
	m.proto = mod.Protocol()
	m.bodyLimit = m.eng.BodyLimit()
	p := m.proto
	m.canSkip = p&gomilter.OptSkip != 0 && p&gomilter.OptNoBodyReply == 0 && p&gomilter.OptNoBody == 0
	m.s = policy.NewSession()
	m.tx = policy.NewTransaction(m.eng, m.s, policy.SpoolSettings{Dir: m.srv.cfg.SpoolDir, Memory: int64(m.srv.cfg.SpoolMemory)})
	return nil
}

func (m *session) Connect(host, family string, port uint16, addr string, mod gomilter.Modifier) (resp *gomilter.Response, err error) {
	defer m.guard("connect", &resp, &err)
	s := m.s
	s.ClientName = host
	s.ClientPort = port
	switch family {
	case "tcp4", "tcp6":
		if ip, perr := netip.ParseAddr(addr); perr == nil {
			s.ClientIP = ip.Unmap()
		}
	case "unknown":
		// No network client at all: the MTA's own local submission (Sendmail -bs, SMFIA_UNKNOWN). A unix-socket
		// client is not vouched for and gets nothing.
		s.Set(policy.FactLocalSubmission, "yes")
	}
	s.ClientPTR = mod.Get("{client_ptr}")
	s.Daemon = mod.Get("{daemon_name}")
	return m.hold(m.tx.Connect(context.Background()), gomilter.OptNoConnReply), nil
}

func (m *session) Helo(name string, mod gomilter.Modifier) (resp *gomilter.Response, err error) {
	defer m.guard("helo", &resp, &err)
	m.s.Helo = name
	m.readTLS(mod)
	return m.hold(m.tx.Helo(context.Background()), gomilter.OptNoHeloReply), nil
}

// hold answers a connect or HELO decision, or keeps a refusal for MAIL when the MTA does not wait for an
// answer at this stage.
func (m *session) hold(d policy.Decision, noReply gomilter.OptProtocol) *gomilter.Response {
	if m.proto&noReply != 0 && (d.Action == policy.ActReject || d.Action == policy.ActTempfail) {
		m.held = &d
		return gomilter.RespContinue
	}
	return answer(d)
}

func (m *session) readTLS(mod gomilter.Modifier) {
	if v := mod.Get("{tls_version}"); v != "" {
		m.s.TLS = policy.TLSInfo{Version: v, Cipher: mod.Get("{cipher}"), CipherBits: mod.Get("{cipher_bits}"),
			CertSubject: mod.Get("{cert_subject}"), CertIssuer: mod.Get("{cert_issuer}")}
	}
}

func (m *session) MailFrom(from, args string, mod gomilter.Modifier) (resp *gomilter.Response, err error) {
	defer m.guard("mail", &resp, &err)
	m.tx.Abort() // the message before this one, summarised with the macros it had
	m.readTLS(mod)
	m.s.Auth = policy.AuthInfo{Type: mod.Get("{auth_type}"), Authen: mod.Get("{auth_authen}"), Author: mod.Get("{auth_author}")}
	d := m.tx.Mail(context.Background(), policy.MailCommand{From: from, Args: args, QueueID: mod.Get("i"), Held: m.held})
	return answer(d), nil
}

func (m *session) RcptTo(rcpt, args string, mod gomilter.Modifier) (resp *gomilter.Response, err error) {
	defer m.guard("rcpt", &resp, &err)
	return answer(m.tx.Rcpt(context.Background(), rcpt, args)), nil
}

func (m *session) Header(name, value string, _ gomilter.Modifier) (resp *gomilter.Response, err error) {
	defer m.guard("header", &resp, &err)
	m.tx.Header(name, value)
	return gomilter.RespContinue, nil
}

func (m *session) Headers(mod gomilter.Modifier) (resp *gomilter.Response, err error) {
	defer m.guard("headers", &resp, &err)
	if q := mod.Get("i"); q != "" {
		m.s.QueueID = q
	}
	return answer(m.tx.EndHeaders(context.Background())), nil
}

func (m *session) BodyChunk(chunk []byte, _ gomilter.Modifier) (resp *gomilter.Response, err error) {
	defer m.guard("body", &resp, &err)
	m.tx.Body(chunk)
	if m.canSkip && m.bodyLimit >= 0 && m.tx.BodySize() > m.bodyLimit {
		// Too large for every scanner: they will skip it; stop the MTA sending (and us spooling) the rest.
		return gomilter.RespSkip, nil
	}
	return gomilter.RespContinue, nil
}

func (m *session) EndOfMessage(mod gomilter.Modifier) (resp *gomilter.Response, err error) {
	defer m.guard("eom", &resp, &err)
	if q := mod.Get("i"); q != "" {
		m.s.QueueID = q
	}
	out := m.eomWithProgress(mod)
	if out.Action == policy.ActQuarantine && out.Stored {
		// The quarantine committed the message: the MTA accepts it (250) and drops it.
		return gomilter.RespDiscard, nil
	}
	if out.Action == policy.ActAccept || out.Action == policy.ActQuarantine {
		if herr := applyHeaders(mod, out); herr != nil {
			m.srv.log.Error("changing headers failed", "ref", m.s.Ref, "err", herr)
		}
		if out.Action == policy.ActQuarantine {
			reason := "moat: " + out.Check + "/" + out.Reason + " (ref=" + m.s.Ref + ")"
			if qerr := mod.Quarantine(reason); qerr != nil {
				m.srv.log.Error("quarantine failed", "ref", m.s.Ref, "err", qerr)
			}
		}
	}
	if out.Action == policy.ActAccept || out.Action == policy.ActQuarantine {
		return gomilter.RespAccept, nil
	}
	return answer(out.Decision), nil
}

// eomWithProgress runs the end-of-message checks while telling the MTA every few seconds that we are still
// at work, so that milter_content_timeout does not fire during a slow scan.
func (m *session) eomWithProgress(mod gomilter.Modifier) policy.Outcome {
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(m.srv.cfg.ProgressInterval.D())
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				if err := mod.Progress(); err != nil {
					return
				}
			}
		}
	}()
	defer func() {
		close(stop)
		wg.Wait()
	}()
	return m.tx.EOM(context.Background())
}

func applyHeaders(mod gomilter.Modifier, out policy.Outcome) error {
	var first error
	keep := func(err error) {
		if err != nil && first == nil {
			first = err
		}
	}
	// Delete from the highest index down, so that earlier deletions do not shift the later indexes.
	for i := len(out.RemoveHeaders) - 1; i >= 0; i-- {
		h := out.RemoveHeaders[i]
		keep(mod.ChangeHeader(h.Index, h.Name, ""))
	}
	for i, h := range out.InsertHeaders {
		keep(mod.InsertHeader(i, h.Name, h.Value))
	}
	for _, h := range out.AddHeaders {
		keep(mod.AddHeader(h.Name, h.Value))
	}
	return first
}

func (m *session) Abort(gomilter.Modifier) error {
	defer func() {
		if p := recover(); p != nil {
			m.srv.log.Error("panic in milter abort", "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
		}
	}()
	if m.tx != nil {
		m.tx.Abort()
	}
	return nil
}

func (m *session) Cleanup(gomilter.Modifier) {
	defer func() {
		if p := recover(); p != nil {
			m.srv.log.Error("panic in milter cleanup", "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
		}
	}()
	if m.tx != nil {
		m.tx.Abort()
	}
	if m.eng != nil {
		m.eng.Release()
		m.eng = nil
		m.srv.active.Add(-1)
	}
}
