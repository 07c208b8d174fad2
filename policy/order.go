package policy

// Order is the order in which checks run within each stage. Ordering matters:
//
//   - access control first (TLS/AUTH policy, relay, recipients, barring): they are cheap and decide alone;
//   - then the sender lists, so that a white-list hit is known before any anti-spam check runs and the
//     anti-spam checks after it can be skipped;
//   - then the DNS checks (DNSBL, rDNS, SPF), whose results greylisting and DMARC read;
//   - greylisting after SPF (it groups SPF-passing senders by domain) and after the DNSWL;
//   - at end of message DKIM verification before DMARC (DMARC reads its results); DKIM signing last of the
//     message checkers, after the attachment check. The
//     scanners (clamd, spamd) run after all message checkers, in parallel with each other.
//
// The configuration file turns checks on and off; it never changes this order.
var Order = []string{
	"test", // test-only check (built with the moattest tag): scripted verdicts for end-to-end tests
	"tlsauth",
	"relay",
	"recipients",
	"barring",
	"senderlists",
	"dnsbl",
	"rdns",
	"spf",
	"greylist",
	"dkim",
	"dmarc",
	"attachments",
	"clamd",
	"spamd",
	"dkimsign",
}
