package main

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"syscall"
	"testing"
)

func TestJournalHandler(t *testing.T) {
	var out bytes.Buffer
	log := slog.New(newJournalHandler(&out, "text", &slog.HandlerOptions{Level: slog.LevelDebug}))
	log.Error("listener failed", "addr", "127.0.0.1:7357")
	log.With("ref", "K3J9QW2PXA7T").Warn("slow")
	log.Info("message", "action", "accept")
	log.Debug("detail")
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	want := []string{
		`<3>level=ERROR msg="listener failed" addr=127.0.0.1:7357`,
		`<4>level=WARN msg=slow ref=K3J9QW2PXA7T`,
		`<6>level=INFO msg=message action=accept`,
		`<7>level=DEBUG msg=detail`,
	}
	if len(lines) != len(want) {
		t.Fatalf("got %d lines, want %d:\n%s", len(lines), len(want), out.String())
	}
	for i := range want {
		if lines[i] != want[i] {
			t.Errorf("line %d: got %q, want %q", i, lines[i], want[i])
		}
	}
}

func TestUnderJournald(t *testing.T) {
	t.Setenv("JOURNAL_STREAM", "")
	if underJournald(&bytes.Buffer{}) {
		t.Error("a buffer is not the journal")
	}
	t.Setenv("JOURNAL_STREAM", "1:2")
	if underJournald(&bytes.Buffer{}) {
		t.Error("a buffer is not the journal, whatever JOURNAL_STREAM says")
	}
}

func TestUnderJournaldMatchesTheStream(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "stderr")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	t.Setenv("JOURNAL_STREAM", fmt.Sprintf("%d:%d", st.Dev, st.Ino))
	if !underJournald(f) {
		t.Error("the stream JOURNAL_STREAM names was not recognised")
	}
	t.Setenv("JOURNAL_STREAM", fmt.Sprintf("%d:%d", st.Dev, st.Ino+1))
	if underJournald(f) {
		t.Error("another inode was taken for the journal")
	}
}
