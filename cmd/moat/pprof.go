package main

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
)

// pprofEnv names the environment variable that turns on the profiling endpoint of `moat serve`: a loopback
// address ("127.0.0.1:6060") where net/http/pprof is served. It is for the benchmarks and for chasing a
// slowdown, not for production, so it is off unless set and not part of the configuration file.
const pprofEnv = "MOAT_PPROF"

// startPprof serves net/http/pprof on the address in MOAT_PPROF, when set; it refuses any address that is not
// a loopback one, since profiles reveal memory contents. The returned function stops it.
func startPprof(log *slog.Logger) (stop func(), err error) {
	addr := os.Getenv(pprofEnv)
	if addr == "" {
		return func() {}, nil
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("%s=%q: %w", pprofEnv, addr, err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return nil, fmt.Errorf("%s=%q: the profiling endpoint must be a loopback IP address", pprofEnv, addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", pprofEnv, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux}
	go func() { _ = srv.Serve(ln) }()
	log.Warn("profiling endpoint listening (MOAT_PPROF)", "addr", ln.Addr().String())
	return func() { _ = srv.Close() }, nil
}
