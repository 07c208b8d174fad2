package spool

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSpoolStaysInMemoryUnderLimit(t *testing.T) {
	s := New(t.TempDir(), 100)
	defer s.Close()
	if _, err := s.Write([]byte("hello ")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Write([]byte("world")); err != nil {
		t.Fatal(err)
	}
	if !s.InMemory() {
		t.Error("11 bytes under a 100-byte limit should stay in memory")
	}
	got, _ := io.ReadAll(s.Open())
	if string(got) != "hello world" || s.Size() != 11 {
		t.Errorf("got %q size %d", got, s.Size())
	}
}

func TestSpoolSpillsToPrivateFileAndRemovesIt(t *testing.T) {
	dir := t.TempDir()
	s := New(dir, 10)
	want := bytes.Repeat([]byte("0123456789"), 1000)
	for i := 0; i < len(want); i += 999 {
		end := min(i+999, len(want))
		if _, err := s.Write(want[i:end]); err != nil {
			t.Fatal(err)
		}
	}
	if s.InMemory() {
		t.Fatal("10,000 bytes over a 10-byte limit should be in a file")
	}
	files, _ := filepath.Glob(filepath.Join(dir, Prefix+"*"))
	if len(files) != 1 {
		t.Fatalf("want one spool file, got %v", files)
	}
	st, err := os.Stat(files[0])
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("spool file mode %v, want 0600", st.Mode().Perm())
	}
	// Two readers at once read the same bytes.
	r1, r2 := s.Open(), s.Open()
	b1, _ := io.ReadAll(r1)
	b2, _ := io.ReadAll(r2)
	if !bytes.Equal(b1, want) || !bytes.Equal(b2, want) {
		t.Error("readers did not return the message")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if files, _ := filepath.Glob(filepath.Join(dir, Prefix+"*")); len(files) != 0 {
		t.Errorf("Close left %v", files)
	}
}

func TestCleanDirRemovesOnlyOrphans(t *testing.T) {
	dir := t.TempDir()
	orphan := filepath.Join(dir, Prefix+"999999999-0badc0de-abc")
	// An earlier process that had our PID (a container restart): not ours, so an orphan.
	samePID := filepath.Join(dir, fmt.Sprintf("%s%d-0badc0de-xyz", Prefix, os.Getpid()))
	mine := New(dir, 0)
	if _, err := mine.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	defer mine.Close()
	other := filepath.Join(dir, "unrelated")
	for _, p := range []string{orphan, other, samePID} {
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	n, err := CleanDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if n < 1 {
		t.Errorf("removed %d files, want the orphan", n)
	}
	for _, p := range []string{orphan, samePID} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("orphan spool file %s still there", p)
		}
	}
	if _, err := os.Stat(other); err != nil {
		t.Error("unrelated file removed")
	}
	if b, _ := io.ReadAll(mine.Open()); string(b) != "x" {
		t.Error("the running process's own spool file was removed")
	}
}

func TestSpoolWriteErrorIsReported(t *testing.T) {
	s := New(filepath.Join(t.TempDir(), "missing-dir"), 1)
	_, err := s.Write([]byte(strings.Repeat("x", 10)))
	if err == nil || s.Err() == nil {
		t.Fatal("a spool that cannot create its file must report an error")
	}
}

func TestSpoolMemoryNeverAboveLimit(t *testing.T) {
	const limit = 1 << 20
	s := New(t.TempDir(), limit)
	defer s.Close()
	chunk := bytes.Repeat([]byte("x"), 65535) // Postfix's milter body chunk
	for s.Size()+int64(len(chunk)) <= limit {
		if _, err := s.Write(chunk); err != nil {
			t.Fatal(err)
		}
		if c := cap(s.mem); c > limit {
			t.Fatalf("after %d bytes the buffer holds %d bytes of capacity, limit %d", s.Size(), c, limit)
		}
	}
	if !s.InMemory() {
		t.Fatal("spilled to a file below the limit")
	}
	if _, err := s.Write(chunk); err != nil {
		t.Fatal(err)
	}
	if s.InMemory() || s.mem != nil {
		t.Fatal("over the limit the message must move to the file and the memory be released")
	}
	if b, _ := io.ReadAll(s.Open()); int64(len(b)) != s.Size() {
		t.Fatalf("read back %d bytes of %d", len(b), s.Size())
	}
}
