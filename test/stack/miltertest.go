package stack

import (
	"os/exec"
	"path/filepath"
	"sort"
	"testing"
	"time"
)

// Miltertest runs OpenDKIM's miltertest on a Lua script (the script text, not
// a path) with `-D name=value` for each var, and returns its combined output
// and exit error. A Lua error() only sets exit status 1, so scripts should
// print the reason with mt.echo first. It is bounded by timeout.
func Miltertest(t testing.TB, script string, vars map[string]string, timeout time.Duration) (string, error) {
	t.Helper()
	bin := mustBin(t, "miltertest")
	dir := TempDir(t, "miltertest")
	file := filepath.Join(dir, "script.lua")
	writeFile(t, file, script, 0o644)
	var args []string
	var names []string
	for k := range vars {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		args = append(args, "-D", k+"="+vars[k])
	}
	args = append(args, "-s", file)
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return "", err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return out.String(), err
	case <-time.After(timeout):
		cmd.Process.Kill()
		<-done
		t.Fatalf("stack: miltertest still running after %v\n%s", timeout, out.String())
		return "", nil
	}
}
