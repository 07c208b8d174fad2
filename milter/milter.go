// Package milter implements moat's side of the milter protocol: it accepts connections from Postfix or
// Sendmail, translates each callback into a call of the policy engine, and turns the engine's decision into the
// milter reply and header changes. It decides nothing itself.
//
// It runs on github.com/d--j/go-milter's raw Server: unlike emersion/go-milter it negotiates protocol 6,
// honours the no-reply and skip flags, keeps macros per stage and one handler per MTA connection, and the raw
// Server (not its mailfilter wrapper) lets moat answer at RCPT as well as at end of message. The library does
// not recover from panics: see guardedConn for the crash we protect against.
package milter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	gomilter "github.com/d--j/go-milter"

	"github.com/moatmail/moat/config"
	"github.com/moatmail/moat/internal/spool"
	"github.com/moatmail/moat/policy"
)

// Config is the [milter] table.
type Config struct {
	// Listen lists the sockets: "unix:/run/moat/moat.sock", "tcp:127.0.0.1:7357" or "tcp:[::1]:7357".
	Listen []string `toml:"listen"`
	// SocketMode, SocketOwner and SocketGroup set the unix sockets' permissions (the MTA must be able to connect).
	SocketMode  string `toml:"socket_mode"`
	SocketOwner string `toml:"socket_owner"`
	SocketGroup string `toml:"socket_group"`
	// SpoolDir holds messages larger than SpoolMemory while they are checked; "" is the system temp directory.
	SpoolDir    string      `toml:"spool_dir"`
	SpoolMemory config.Size `toml:"spool_memory"`
	// ProgressInterval is how often moat tells the MTA it is still working during end-of-message checks.
	ProgressInterval config.Duration `toml:"progress_interval"`
	// ShutdownTimeout bounds how long SIGTERM waits for sessions in flight.
	ShutdownTimeout config.Duration `toml:"shutdown_timeout"`
	// WriteTimeout bounds each write to the MTA.
	WriteTimeout config.Duration `toml:"write_timeout"`
}

// maxSpoolMemory bounds spool_memory: it is held for each message in flight, so a typo must not let a
// hundred sessions take gigabytes.
const maxSpoolMemory = 256 << 20

// DefaultConfig is what an absent [milter] table means.
func DefaultConfig() Config {
	return Config{
		Listen:           []string{"unix:moat.sock"},
		SocketMode:       "0660",
		SpoolMemory:      1 << 20,
		ProgressInterval: config.Duration(5 * time.Second),
		ShutdownTimeout:  config.Duration(30 * time.Second),
		WriteTimeout:     config.Duration(10 * time.Second),
	}
}

// LoadConfig decodes and validates the [milter] table of f.
func LoadConfig(f *config.File) (Config, error) {
	c := DefaultConfig()
	sec := f.Section("milter")
	if err := sec.Decode(&c); err != nil {
		return c, err
	}
	if len(c.Listen) == 0 {
		return c, sec.Errorf("listen", "at least one socket is needed")
	}
	// Relative socket and spool paths are relative to the configuration file, like every path in it.
	for i, l := range c.Listen {
		if p, ok := strings.CutPrefix(l, "unix:"); ok {
			c.Listen[i] = "unix:" + f.Abs(p)
		}
	}
	c.SpoolDir = f.Abs(c.SpoolDir)
	seen := map[string]bool{}
	for i, l := range c.Listen {
		key := fmt.Sprintf("listen[%d]", i)
		if _, _, err := parseListen(l); err != nil {
			return c, sec.Errorf(key, "%v", err)
		}
		if seen[l] {
			return c, sec.Errorf(key, "%q is listed twice", l)
		}
		seen[l] = true
	}
	if mode, err := strconv.ParseUint(c.SocketMode, 8, 32); err != nil || mode > 0o777 {
		return c, sec.Errorf("socket_mode", "want an octal mode such as \"0660\", got %q", c.SocketMode)
	}
	if c.SocketOwner != "" {
		if _, err := user.Lookup(c.SocketOwner); err != nil {
			return c, sec.Errorf("socket_owner", "%v", err)
		}
	}
	if c.SocketGroup != "" {
		if _, err := user.LookupGroup(c.SocketGroup); err != nil {
			return c, sec.Errorf("socket_group", "%v", err)
		}
	}
	if c.SpoolMemory < 0 || c.SpoolMemory > maxSpoolMemory {
		return c, sec.Errorf("spool_memory", "must be between 0 and 256M: it is held per message in flight")
	}
	if c.SpoolDir != "" {
		if st, err := os.Stat(c.SpoolDir); err != nil || !st.IsDir() {
			return c, sec.Errorf("spool_dir", "%q is not a directory", c.SpoolDir)
		}
	}
	for key, d := range map[string]config.Duration{"progress_interval": c.ProgressInterval,
		"shutdown_timeout": c.ShutdownTimeout, "write_timeout": c.WriteTimeout} {
		if d <= 0 {
			return c, sec.Errorf(key, "must be positive")
		}
	}
	return c, nil
}

func parseListen(s string) (network, addr string, err error) {
	network, addr, ok := strings.Cut(s, ":")
	if !ok || addr == "" {
		return "", "", fmt.Errorf("%q: want \"unix:/path\" or \"tcp:host:port\"", s)
	}
	switch network {
	case "unix":
		return "unix", addr, nil
	case "tcp", "inet":
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return "", "", fmt.Errorf("%q: %v", s, err)
		}
		if _, err := strconv.ParseUint(port, 10, 16); err != nil {
			return "", "", fmt.Errorf("%q: bad port", s)
		}
		if host == "" {
			return "", "", fmt.Errorf("%q: give an address to bind (e.g. 127.0.0.1), not all interfaces by accident", s)
		}
		return "tcp", addr, nil
	}
	return "", "", fmt.Errorf("%q: unknown socket type %q (want unix or tcp)", s, network)
}

// Server serves the milter protocol on any number of listeners with one engine, which Swap replaces on reload.
type Server struct {
	cfg    Config
	log    *slog.Logger
	engine atomic.Pointer[policy.Engine]
	srv    *gomilter.Server
	active atomic.Int64
}

// NewServer returns a server that answers with eng.
func NewServer(cfg Config, eng *policy.Engine, log *slog.Logger) *Server {
	if log == nil {
		log = slog.Default()
	}
	s := &Server{cfg: cfg, log: log}
	s.engine.Store(eng)
	s.srv = gomilter.NewServer(
		gomilter.WithDynamicMilter(func(version uint32, action gomilter.OptAction, protocol gomilter.OptProtocol, maxData gomilter.DataSize) gomilter.Milter {
			return &session{srv: s}
		}),
		gomilter.WithProtocols(protocolFor(eng)),
		gomilter.WithNegotiationCallback(s.negotiate),
		gomilter.WithActions(gomilter.OptAddHeader|gomilter.OptChangeHeader|gomilter.OptQuarantine),
		gomilter.WithMacroRequest(gomilter.StageConnect, []string{"j", "{daemon_name}", "{client_addr}", "{client_port}", "{client_name}", "{client_ptr}"}),
		gomilter.WithMacroRequest(gomilter.StageHelo, []string{"{tls_version}", "{cipher}", "{cipher_bits}", "{cert_subject}", "{cert_issuer}"}),
		gomilter.WithMacroRequest(gomilter.StageMail, []string{"i", "{auth_type}", "{auth_authen}", "{auth_author}", "{mail_addr}", "{tls_version}", "{cipher}", "{cipher_bits}", "{cert_subject}", "{cert_issuer}"}),
		gomilter.WithMacroRequest(gomilter.StageRcpt, []string{"{rcpt_addr}", "{rcpt_mailer}"}),
		gomilter.WithMacroRequest(gomilter.StageEOH, []string{"i"}),
		gomilter.WithMacroRequest(gomilter.StageEOM, []string{"i"}),
		gomilter.WithWriteTimeout(cfg.WriteTimeout.D()),
	)
	return s
}

// negotiate answers the MTA's option negotiation from the current engine (so a reload that enables a body
// check takes effect on the next connection). Flags the MTA does not offer are dropped with a loud log line
// instead of failing the connection, which the library would do and which would leave every SMTP session to
// milter_default_action.
func (s *Server) negotiate(mtaVersion, milterVersion uint32, mtaActions, milterActions gomilter.OptAction,
	mtaProtocol, _ gomilter.OptProtocol, _ gomilter.DataSize) (uint32, gomilter.OptAction, gomilter.OptProtocol, gomilter.DataSize, error) {
	if mtaVersion < 2 {
		return 0, 0, 0, 0, fmt.Errorf("milter: MTA speaks protocol version %d, need 2 or later", mtaVersion)
	}
	version := min(mtaVersion, milterVersion)
	want := protocolFor(s.engine.Load())
	got := want & mtaProtocol
	if got != want {
		s.log.Warn("MTA does not offer some milter protocol options; continuing without them",
			"missing", (want &^ got).String(), "mta_version", mtaVersion)
	}
	actions := milterActions & mtaActions
	if actions != milterActions {
		s.log.Error("MTA does not allow some milter actions: header changes or quarantine will fail",
			"missing", (milterActions &^ actions).String())
	}
	return version, actions, got, gomilter.DataSize64K, nil
}

// protocolFor asks the MTA for what the checks need and nothing more. Stages without checks get the no-reply
// flag (the MTA does not wait for an answer that is always "continue"). Headers and end of message are always
// needed: moat writes Authentication-Results and strips forged copies; the body only when a check reads it.
func protocolFor(eng *policy.Engine) gomilter.OptProtocol {
	stages := eng.Stages()
	p := gomilter.OptNoData | gomilter.OptNoUnknown | gomilter.OptNoUnknownReply | gomilter.OptNoDataReply |
		gomilter.OptNoHeaderReply | gomilter.OptHeaderLeadingSpace | gomilter.OptSkip
	if !stages[policy.StageConnect] {
		p |= gomilter.OptNoConnReply
	}
	if !stages[policy.StageHelo] {
		p |= gomilter.OptNoHeloReply
	}
	if !stages[policy.StageHeaders] {
		p |= gomilter.OptNoEOHReply
	}
	if !eng.NeedsBody() {
		p |= gomilter.OptNoBody | gomilter.OptNoBodyReply
	} else if eng.BodyLimit() < 0 {
		// Body chunks need no answer unless moat may skip the rest of a message too large for every scanner.
		p |= gomilter.OptNoBodyReply
	}
	// MAIL and RCPT always answer: a malformed address is refused there whatever the checks.
	return p
}

// Engine returns the engine new sessions use.
func (s *Server) Engine() *policy.Engine { return s.engine.Load() }

// Swap makes new sessions use eng and retires the old engine, which closes once its last session ends.
// Stages the new engine needs but the old one did not are asked of the MTA only on new connections.
func (s *Server) Swap(eng *policy.Engine) {
	old := s.engine.Swap(eng)
	if old != nil && old != eng {
		old.Retire()
	}
}

// Listen opens the configured sockets. Unix sockets get the configured mode and owner; a stale socket file
// is removed first.
func Listen(cfg Config, log *slog.Logger) ([]net.Listener, error) {
	var out []net.Listener
	closeAll := func() {
		for _, l := range out {
			_ = l.Close()
		}
	}
	for _, spec := range cfg.Listen {
		network, addr, err := parseListen(spec)
		if err != nil {
			closeAll()
			return nil, err
		}
		if network == "unix" {
			if st, err := os.Lstat(addr); err == nil && st.Mode()&os.ModeSocket != 0 {
				// A socket someone answers on belongs to a running moat: taking it over would cut that one off
				// from the MTA. Only a stale socket (nobody listening) is removed.
				if c, err := net.DialTimeout("unix", addr, time.Second); err == nil {
					c.Close()
					closeAll()
					return nil, fmt.Errorf("listen %s: the socket is in use by another process", spec)
				}
				_ = os.Remove(addr)
			}
			if err := os.MkdirAll(filepath.Dir(addr), 0o755); err != nil {
				closeAll()
				return nil, fmt.Errorf("listen %s: %w", spec, err)
			}
		}
		ln, err := net.Listen(network, addr)
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("listen %s: %w", spec, err)
		}
		if network == "unix" {
			if err := setSocketPerms(addr, cfg); err != nil {
				_ = ln.Close()
				closeAll()
				return nil, fmt.Errorf("listen %s: %w", spec, err)
			}
		}
		out = append(out, &guardedListener{Listener: ln, log: log, tcp: network == "tcp"})
	}
	return out, nil
}

func setSocketPerms(path string, cfg Config) error {
	mode, _ := strconv.ParseUint(cfg.SocketMode, 8, 32)
	if err := os.Chmod(path, os.FileMode(mode)); err != nil {
		return err
	}
	uid, gid := -1, -1
	if cfg.SocketOwner != "" {
		u, err := user.Lookup(cfg.SocketOwner)
		if err != nil {
			return fmt.Errorf("socket_owner: %w", err)
		}
		uid, _ = strconv.Atoi(u.Uid)
	}
	if cfg.SocketGroup != "" {
		g, err := user.LookupGroup(cfg.SocketGroup)
		if err != nil {
			return fmt.Errorf("socket_group: %w", err)
		}
		gid, _ = strconv.Atoi(g.Gid)
	}
	if uid >= 0 || gid >= 0 {
		return os.Lchown(path, uid, gid)
	}
	return nil
}

// Serve serves one listener until Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	err := s.srv.Serve(ln)
	if errors.Is(err, gomilter.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting connections and waits for sessions in flight until ctx ends, then closes them.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	if err != nil {
		_ = s.srv.Close()
	}
	if eng := s.engine.Load(); eng != nil {
		eng.Retire()
	}
	return err
}

// Active returns the number of MTA connections being served.
func (s *Server) Active() int64 { return s.active.Load() }

// CleanSpool removes spool files a crashed moat left behind.
func (s *Server) CleanSpool() {
	if n, err := spool.CleanDir(s.cfg.SpoolDir); err != nil {
		s.log.Warn("cleaning spool directory", "err", err)
	} else if n > 0 {
		s.log.Info("removed spool files left by a crash", "count", n)
	}
}
