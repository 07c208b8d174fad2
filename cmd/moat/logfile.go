package main

import (
	"fmt"
	"os"
	"sync"
)

// reopenableFile is the log file: SIGHUP reopens it by name, so that logrotate can move the old file away
// (without copytruncate) and moat goes on writing into a new one.
type reopenableFile struct {
	path string
	mu   sync.Mutex
	f    *os.File
}

func openLogFile(path string) (*reopenableFile, error) {
	r := &reopenableFile{path: path}
	if err := r.Reopen(); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *reopenableFile) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.f.Write(p)
}

// Reopen opens the file by its name again (creating it) and closes the old one; on failure the old file stays
// in use, so that no log line is lost to a failed rotation.
func (r *reopenableFile) Reopen() error {
	f, err := os.OpenFile(r.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return fmt.Errorf("log file: %w", err)
	}
	r.mu.Lock()
	old := r.f
	r.f = f
	r.mu.Unlock()
	if old != nil {
		return old.Close()
	}
	return nil
}

func (r *reopenableFile) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.f.Close()
}
