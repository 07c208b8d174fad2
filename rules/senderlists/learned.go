package senderlists

import (
	"context"
	"time"

	"github.com/moatmail/moat/config"
	"github.com/moatmail/moat/internal/proof"
	"github.com/moatmail/moat/policy"
	"github.com/moatmail/moat/store"
)

// learnedEntry stands for the learned white list (the store's LearnedSenders) in outcomes, findings and the
// header: source=learned.
var learnedEntry = &Entry{text: "learned sender", Line: config.ListLine{Source: "learned"}, Proof: ProofSPF | ProofDKIM, proofSet: true}

// clock is the time source of learned-list lookups; tests replace it.
var clock = time.Now

// learned looks the envelope sender up in the learned white list. A store error changes nothing (the sender
// is treated as not learned) and is returned for the log.
func (c *Check) learned(ctx context.Context, s *policy.Session) (bool, error) {
	if c.learnedStore == nil || s.From.Null() || s.From.Domain == "" {
		return false, nil
	}
	return c.learnedStore.LearnedSender(ctx, s.From.Local+"@"+s.From.CanonDomain(), clock())
}

// learnedProof applies the sender proof rule to a learned sender: SPF pass for the sender's own domain, or
// (at end of message) a DKIM pass of an aligned domain; learned_require_proof = false needs none.
func (c *Check) learnedProof(s *policy.Session, snd sender, atEOM bool) (proofState, string) {
	if !c.learnedRequireProof {
		return proven, "none"
	}
	if proof.SPF(s.Get(policy.FactSPFResult), s.Get(policy.FactSPFDomain), snd.domain) {
		return proven, "spf:" + snd.domain
	}
	if !atEOM {
		return pending, ""
	}
	if d, ok := proof.DKIM(s.Get(policy.FactDKIMPassDomains), snd.domain); ok {
		return proven, "dkim:" + d
	}
	return failed, ""
}

// StatusUnproven is the status of a learned sender without proof: the log line and X-Moat show
// senderlists=unproven, the finding's reason says which proof failed.
const StatusUnproven policy.Status = "unproven"

// unprovenLearned is the trace's note that a learned sender came without proof: nothing changes.
func unprovenLearned(s *policy.Session) policy.Finding {
	spf := s.Get(policy.FactSPFResult)
	if spf == "" {
		spf = "none"
	}
	return policy.Finding{Status: StatusUnproven, Reason: "learned-unproven-spf-" + spf + "-no-aligned-dkim",
		Detail: "sender on the learned white list, but neither SPF pass for its domain nor an aligned DKIM pass"}
}

// openLearned returns the store's learned white list when learned = true.
func openLearned(env *policy.Env, on bool) (store.LearnedSenders, error) {
	if !on || env == nil {
		return nil, nil
	}
	st, err := env.Store()
	if err != nil {
		return nil, err
	}
	return st, nil
}
