package main

import (
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
)

// TestPprofEndpoint: off without MOAT_PPROF, refused on a non-loopback address, and serving profiles on a
// loopback one.
func TestPprofEndpoint(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	t.Setenv(pprofEnv, "")
	stop, err := startPprof(log)
	if err != nil {
		t.Fatal(err)
	}
	stop()
	t.Setenv(pprofEnv, "0.0.0.0:0")
	if _, err := startPprof(log); err == nil || !strings.Contains(err.Error(), "loopback") {
		t.Fatalf("0.0.0.0 accepted: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	t.Setenv(pprofEnv, addr)
	stop, err = startPprof(log)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	resp, err := http.Get("http://" + addr + "/debug/pprof/allocs?debug=1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.Contains(string(body), "heap profile") {
		t.Fatalf("allocs profile: %s\n%.200s", resp.Status, body)
	}
}
