package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"os/user"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/moatmail/moat/config"
	"github.com/moatmail/moat/internal/sdnotify"
	"github.com/moatmail/moat/metrics"
	"github.com/moatmail/moat/milter"
	"github.com/moatmail/moat/policy"
	"github.com/moatmail/moat/web"
)

// logConfig is the [log] table.
type logConfig struct {
	// Format is "text" (logfmt-style key=value) or "json".
	Format string `toml:"format"`
	// Level is "debug", "info", "warn" or "error".
	Level string `toml:"level"`
	// File is where logs go; "" or "-" is standard error.
	File string `toml:"file"`
}

func loadLogConfig(f *config.File) (logConfig, error) {
	c := logConfig{Format: "text", Level: "info"}
	sec := f.Section("log")
	if err := sec.Decode(&c); err != nil {
		return c, err
	}
	if c.Format != "text" && c.Format != "json" {
		return c, sec.Errorf("format", "want \"text\" or \"json\", got %q", c.Format)
	}
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(c.Level)); err != nil {
		return c, sec.Errorf("level", "want debug, info, warn or error, got %q", c.Level)
	}
	if c.File != "" && c.File != "-" {
		c.File = f.Abs(c.File)
		if st, err := os.Stat(filepath.Dir(c.File)); err != nil || !st.IsDir() {
			return c, sec.Errorf("file", "directory %s does not exist", filepath.Dir(c.File))
		}
	}
	return c, nil
}

// newLogger builds the logger of [log]; the closer of a log file also reopens it (SIGHUP).
func newLogger(c logConfig, stderr io.Writer) (*slog.Logger, logCloser, error) {
	var lv slog.Level
	_ = lv.UnmarshalText([]byte(c.Level))
	w, closer := stderr, logCloser(nopLog{})
	if c.File != "" && c.File != "-" {
		f, err := openLogFile(c.File)
		if err != nil {
			return nil, nil, err
		}
		w, closer = f, f
	}
	opts := &slog.HandlerOptions{Level: lv}
	if w == stderr && underJournald(stderr) {
		return slog.New(newJournalHandler(w, c.Format, opts)), closer, nil
	}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts)), closer, nil
	}
	return slog.New(slog.NewTextHandler(w, opts)), closer, nil
}

// logCloser closes the log output; Reopen opens a log file again by its name.
type logCloser interface {
	io.Closer
	Reopen() error
}

type nopLog struct{}

func (nopLog) Close() error  { return nil }
func (nopLog) Reopen() error { return nil }

func loadMilterConfig(f *config.File) (milter.Config, error) { return milter.LoadConfig(f) }

func runServe(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	given := configFlag(fs)
	if code, ok := parseFlags("serve", fs, args, stdout, stderr); !ok {
		return code
	}
	if code, ok := noOperands("serve", fs, stderr); !ok {
		return code
	}
	// Every error that stops start-up is printed plainly: a daemon that cannot read its configuration, bind its
	// sockets or open its state must not half-start and leave the MTA to milter_default_action.
	p, err := configPath(*given)
	if err != nil {
		return fail(stderr, err)
	}
	path := &p
	f, err := config.Load(*path)
	if err != nil {
		return fail(stderr, err)
	}
	lc, err := loadLogConfig(f)
	if err != nil {
		return fail(stderr, err)
	}
	log, logCloser, err := newLogger(lc, stderr)
	if err != nil {
		return fail(stderr, err)
	}
	defer logCloser.Close()
	slog.SetDefault(log)
	mc, err := milter.LoadConfig(f)
	if err != nil {
		return fail(stderr, err)
	}
	metc, err := metrics.LoadConfig(f)
	if err != nil {
		return fail(stderr, err)
	}
	if metc.Listen != "" {
		// Before the engine is built, so that the checks' set-up is counted too.
		metrics.Enable(policy.Version)
		policy.SetObserver(metrics.Observer)
	}
	stopPprof, err := startPprof(log)
	if err != nil {
		return fail(stderr, err)
	}
	defer stopPprof()
	lns, err := milter.Listen(mc, log)
	if err != nil {
		return fail(stderr, err)
	}
	// The sockets are bound (ports below 1024, sockets in root's directories): drop root before the checks
	// open their state, so that files they create belong to the user moat runs as.
	runAs, err := dropPrivileges(mc)
	if err == nil && runAs == "" && os.Geteuid() == 0 {
		log.Warn("running as root: set [milter] user (and group) to drop privileges once the sockets are bound")
	}
	var eng *policy.Engine
	if err == nil {
		eng, err = policy.Build(f, log, services())
	}
	if err != nil {
		for _, ln := range lns {
			ln.Close()
		}
		removeSockets(mc)
		return fail(stderr, err)
	}
	// Signals are caught before the start-up line: a SIGHUP sent as soon as it shows must reload, not kill.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	srv := milter.NewServer(mc, eng, log)
	srv.CleanSpool()
	var failed failedListeners
	if metc.Listen != "" {
		health := func(ctx context.Context) error { return errors.Join(failed.err(), srv.Engine().Health(ctx)) }
		ms, err := metrics.Listen(metc, metrics.Handler(metc, metrics.NewRegistry(srv.Active), health, log), log)
		if err != nil {
			for _, ln := range lns {
				_ = ln.Close()
			}
			eng.Retire()
			return fail(stderr, err)
		}
		defer ms.Close()
		go func() {
			if err := ms.Serve(); err != nil {
				log.Error("metrics endpoint failed", "err", err)
			}
		}()
		log.Info("metrics endpoint listening", "addr", ms.Addr().String(), "tls", metc.TLSCert != "")
	}
	stopReview, err := startReview(f, log)
	if err != nil {
		for _, ln := range lns {
			_ = ln.Close()
		}
		eng.Retire()
		return fail(stderr, err)
	}
	defer stopReview()
	log.Info("moat started", "version", policy.Version, "config", *path, "listen", strings.Join(mc.Listen, " "),
		"checks", orNone(eng.Checks()), "authserv_id", eng.Settings.AuthservID, "dry_run", eng.Settings.DryRun,
		"tag_score", eng.Settings.TagScore, "reject_score", eng.Settings.RejectScore, "user", runAsOrCurrent(runAs))

	var wg sync.WaitGroup
	for _, ln := range lns {
		wg.Add(1)
		go func(ln net.Listener) {
			defer wg.Done()
			if err := srv.Serve(ln); err != nil {
				log.Error("listener failed", "addr", ln.Addr().String(), "err", err)
				failed.add(ln.Addr().String(), err)
			}
		}(ln)
	}

	notify(log, sdnotify.Ready)
	for sig := range sigs {
		if sig == syscall.SIGHUP {
			notify(log, sdnotify.Reloading())
			// Log file first, so that a rotated log gets the reload's own lines.
			if err := logCloser.Reopen(); err != nil {
				log.Error("reopening the log file failed; still writing to the old one", "err", err)
			}
			metrics.ConfigReload(reload(*path, mc, lc, srv, log))
			notify(log, sdnotify.Ready)
			continue
		}
		notify(log, sdnotify.Stopping)
		log.Info("shutting down: no new connections, waiting for sessions in flight",
			"signal", sig.String(), "active", srv.Active(), "timeout", mc.ShutdownTimeout.String())
		ctx, cancel := context.WithTimeout(context.Background(), mc.ShutdownTimeout.D())
		err := srv.Shutdown(ctx)
		cancel()
		if err != nil {
			log.Warn("shutdown timed out; remaining sessions were closed", "err", err)
		}
		wg.Wait()
		removeSockets(mc)
		log.Info("moat stopped")
		return 0
	}
	return 0
}

// notify tells systemd (Type=notify) about a change of state; outside systemd it does nothing.
func notify(log *slog.Logger, state string) {
	if err := sdnotify.Notify(state); err != nil {
		log.Warn("telling systemd the service state failed", "state", state, "err", err)
	}
}

// failedListeners records the milter listeners that stopped serving, for the health endpoint.
type failedListeners struct {
	mu   sync.Mutex
	errs []error
}

func (f *failedListeners) add(addr string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.errs = append(f.errs, fmt.Errorf("milter listener %s stopped: %w", addr, err))
}

func (f *failedListeners) err() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return errors.Join(f.errs...)
}

// reload builds a new engine from the file and swaps it in atomically; an invalid file changes nothing. It
// reports whether the new configuration is in force.
func reload(path string, running milter.Config, runningLog logConfig, srv *milter.Server, log *slog.Logger) bool {
	f, err := config.Load(path)
	var lc logConfig
	if err == nil {
		lc, err = loadLogConfig(f)
	}
	var mc milter.Config
	if err == nil {
		mc, err = milter.LoadConfig(f)
	}
	var eng *policy.Engine
	if err == nil {
		eng, err = policy.Build(f, log, services())
	}
	if err == nil {
		_, err = metrics.LoadConfig(f)
	}
	if err == nil {
		_, err = web.LoadConfig(f) // validated; its changes take effect at restart
	}
	if err != nil {
		log.Error("reload failed; the running configuration stays in force", "err", err)
		return false
	}
	if !reflect.DeepEqual(mc, running) {
		log.Warn("reload: [milter] settings changed; they take effect at restart", "running_listen", strings.Join(running.Listen, " "))
	}
	if lc != runningLog {
		log.Warn("reload: [log] settings changed; they take effect at restart")
	}
	srv.Swap(eng)
	log.Info("configuration reloaded", "config", path, "checks", orNone(eng.Checks()))
	return true
}

// runAsOrCurrent names the user moat runs as for the start-up line.
func runAsOrCurrent(runAs string) string {
	if runAs != "" {
		return runAs
	}
	if u, err := user.Current(); err == nil {
		return u.Username
	}
	return strconv.Itoa(os.Geteuid())
}

func removeSockets(mc milter.Config) {
	for _, l := range mc.Listen {
		if p, ok := strings.CutPrefix(l, "unix:"); ok {
			_ = os.Remove(p)
		}
	}
}
