// Package spool implements the message spool: each message is kept in memory up to a limit and then in a
// private temporary file, so that the memory a session uses stays bounded whatever the message size, and the
// scanners can read the whole message as many times as they need, at the same time.
//
// Temporary files are created 0600 as "moat-spool-PID-*" and removed when the message ends (Close); a crash
// leaves them behind, and CleanDir removes them at the next start: those whose process is gone, so that two
// moat instances may share a directory.
package spool

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// Prefix starts the name of every spool file: "moat-spool-PID-INSTANCE-random".
const Prefix = "moat-spool-"

// instance tells this process's files from those of an earlier process with the same PID (a restart in a
// container or PID namespace often gets the same PID).
var instance = func() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}()

// Spool holds one message.
type Spool struct {
	dir      string
	memLimit int64

	mu   sync.RWMutex
	mem  []byte
	file *os.File
	size int64
	err  error
}

// New returns an empty spool that keeps up to memLimit bytes in memory and spills the rest into a file in dir
// ("" for the system's temporary directory).
func New(dir string, memLimit int64) *Spool {
	return &Spool{dir: dir, memLimit: memLimit}
}

// Write appends p to the message.
func (s *Spool) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return 0, s.err
	}
	if need := int64(len(s.mem)) + int64(len(p)); s.file == nil && need <= s.memLimit {
		if need > int64(cap(s.mem)) {
			// Grow by doubling as append would, but never past memLimit: the memory a session holds
			// stays within the configured limit, not twice it.
			grown := make([]byte, len(s.mem), min(max(2*int64(cap(s.mem)), need, 4096), s.memLimit))
			copy(grown, s.mem)
			s.mem = grown
		}
		s.mem = append(s.mem, p...)
		s.size += int64(len(p))
		return len(p), nil
	}
	if s.file == nil {
		f, err := os.CreateTemp(s.dir, fmt.Sprintf("%s%d-%s-*", Prefix, os.Getpid(), instance))
		if err != nil {
			s.err = fmt.Errorf("spool: %w", err)
			return 0, s.err
		}
		// CreateTemp makes the file 0600 already; say so explicitly for umask-independent clarity.
		_ = f.Chmod(0o600)
		if _, err := f.Write(s.mem); err != nil {
			s.err = fmt.Errorf("spool: %w", err)
			return 0, s.err
		}
		s.file, s.mem = f, nil
	}
	n, err := s.file.Write(p)
	s.size += int64(n)
	if err != nil {
		s.err = fmt.Errorf("spool: %w", err)
	}
	return n, s.err
}

// Err returns the first write error, if any: a message that could not be spooled must not be accepted unscanned.
func (s *Spool) Err() error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.err
}

// Size is the number of bytes written.
func (s *Spool) Size() int64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.size
}

// InMemory reports whether the message is still held in memory.
func (s *Spool) InMemory() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.file == nil
}

// Open returns a reader over the message written so far, from its first byte. Readers are independent.
func (s *Spool) Open() io.Reader {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.file == nil {
		return bytes.NewReader(s.mem[:len(s.mem):len(s.mem)])
	}
	return io.NewSectionReader(s.file, 0, s.size)
}

// Close releases the memory and removes the temporary file.
func (s *Spool) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mem = nil
	if s.file == nil {
		return nil
	}
	name := s.file.Name()
	err := s.file.Close()
	if rerr := os.Remove(name); err == nil {
		err = rerr
	}
	s.file = nil
	return err
}

// CleanDir removes spool files left by a crash from dir ("" for the system's temporary directory). It returns
// how many it removed.
func CleanDir(dir string) (int, error) {
	if dir == "" {
		dir = os.TempDir()
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0, fmt.Errorf("spool: clean %s: %w", dir, err)
	}
	n := 0
	for _, e := range entries {
		if !e.Type().IsRegular() || !strings.HasPrefix(e.Name(), Prefix) {
			continue
		}
		pidText, rest, _ := strings.Cut(strings.TrimPrefix(e.Name(), Prefix), "-")
		inst, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidText)
		if err == nil && pid == os.Getpid() && inst == instance {
			continue // ours, in use
		}
		if err == nil && pid != os.Getpid() && processAlive(pid) {
			continue // another moat's, in use
		}
		if err := os.Remove(filepath.Join(dir, e.Name())); err == nil {
			n++
		}
	}
	return n, nil
}

// processAlive reports whether pid runs; a zombie (killed, not yet reaped) does not.
func processAlive(pid int) bool {
	if stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		// The state follows the command name in parentheses: "PID (comm) S ...".
		if i := bytes.LastIndexByte(stat, ')'); i >= 0 && i+2 < len(stat) {
			return stat[i+2] != 'Z' && stat[i+2] != 'X'
		}
		return true
	}
	err := syscall.Kill(pid, 0)
	return err == nil || err == syscall.EPERM
}
