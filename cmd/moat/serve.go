package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"syscall"

	"github.com/moatmail/moat/config"
	"github.com/moatmail/moat/milter"
	"github.com/moatmail/moat/policy"
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

func newLogger(c logConfig, stderr io.Writer) (*slog.Logger, io.Closer, error) {
	var lv slog.Level
	_ = lv.UnmarshalText([]byte(c.Level))
	w, closer := stderr, io.Closer(io.NopCloser(nil))
	if c.File != "" && c.File != "-" {
		f, err := os.OpenFile(c.File, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
		if err != nil {
			return nil, nil, fmt.Errorf("log file: %w", err)
		}
		w, closer = f, f
	}
	opts := &slog.HandlerOptions{Level: lv}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts)), closer, nil
	}
	return slog.New(slog.NewTextHandler(w, opts)), closer, nil
}

func loadMilterConfig(f *config.File) (milter.Config, error) { return milter.LoadConfig(f) }

func runServe(args []string, _, stderr io.Writer) int {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := configFlag(fs)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	// Every error that stops start-up is printed plainly: a daemon that cannot read its configuration, bind its
	// sockets or open its state must not half-start and leave the MTA to milter_default_action.
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
	eng, err := policy.Build(f, log, services())
	if err != nil {
		return fail(stderr, err)
	}
	lns, err := milter.Listen(mc, log)
	if err != nil {
		eng.Retire()
		return fail(stderr, err)
	}
	srv := milter.NewServer(mc, eng, log)
	srv.CleanSpool()
	log.Info("moat started", "version", policy.Version, "config", *path, "listen", strings.Join(mc.Listen, " "),
		"checks", orNone(eng.Checks()), "authserv_id", eng.Settings.AuthservID, "dry_run", eng.Settings.DryRun,
		"tag_score", eng.Settings.TagScore, "reject_score", eng.Settings.RejectScore)

	var wg sync.WaitGroup
	for _, ln := range lns {
		wg.Add(1)
		go func(ln net.Listener) {
			defer wg.Done()
			if err := srv.Serve(ln); err != nil {
				log.Error("listener failed", "addr", ln.Addr().String(), "err", err)
			}
		}(ln)
	}

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	for sig := range sigs {
		if sig == syscall.SIGHUP {
			reload(*path, mc, lc, srv, log)
			continue
		}
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

// reload builds a new engine from the file and swaps it in atomically; an invalid file changes nothing.
func reload(path string, running milter.Config, runningLog logConfig, srv *milter.Server, log *slog.Logger) {
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
	if err != nil {
		log.Error("reload failed; the running configuration stays in force", "err", err)
		return
	}
	if !reflect.DeepEqual(mc, running) {
		log.Warn("reload: [milter] settings changed; they take effect at restart", "running_listen", strings.Join(running.Listen, " "))
	}
	if lc != runningLog {
		log.Warn("reload: [log] settings changed; they take effect at restart")
	}
	srv.Swap(eng)
	log.Info("configuration reloaded", "config", path, "checks", orNone(eng.Checks()))
}

func removeSockets(mc milter.Config) {
	for _, l := range mc.Listen {
		if p, ok := strings.CutPrefix(l, "unix:"); ok {
			_ = os.Remove(p)
		}
	}
}
