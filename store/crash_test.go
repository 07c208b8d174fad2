package store

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestCrashSafety kills a process with SIGKILL in the middle of a burst of greylisting decisions on SQLite
// and checks that the database opens, is intact, and holds every triplet whose pass the process had
// acknowledged (printed after its commit returned) before it died.
func TestCrashSafety(t *testing.T) {
	if path := os.Getenv("MOAT_STORE_CRASH_CHILD"); path != "" {
		crashChild(path)
		return
	}
	path := filepath.Join(t.TempDir(), "crash.db")
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashSafety$", "-test.count=1")
	cmd.Env = append(os.Environ(), "MOAT_STORE_CRASH_CHILD="+path)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	acked := map[int]bool{}
	sc := bufio.NewScanner(out)
	killed := false
	for sc.Scan() {
		line := sc.Text()
		n, ok := strings.CutPrefix(line, "passed ")
		if !ok {
			continue
		}
		i, err := strconv.Atoi(n)
		if err != nil {
			t.Fatalf("child wrote %q", line)
		}
		acked[i] = true
		if len(acked) == 400 && !killed {
			// Kill while the workers are in the middle of their transactions.
			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			killed = true
		}
	}
	err = cmd.Wait()
	if !killed {
		t.Fatalf("child ended before it was killed: %v", err)
	}
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("child did not die of SIGKILL: %v", cmd.ProcessState)
	}

	st, err := OpenSQLite(context.Background(), path, false)
	if err != nil {
		t.Fatalf("database does not open after the crash: %v", err)
	}
	defer st.Close()
	if err := st.IntegrityCheck(context.Background()); err != nil {
		t.Fatal(err)
	}
	passed := map[string]bool{}
	if err := st.GreyEntries(context.Background(), t0.Add(time.Hour), func(e GreyEntry) bool {
		if e.State == GreyPassed {
			passed[e.ID] = true
		}
		return true
	}); err != nil {
		t.Fatal(err)
	}
	lost := 0
	for i := range acked {
		if !passed[crashReq(i, t0).ID()] {
			lost++
		}
	}
	if lost > 0 {
		t.Fatalf("%d of %d acknowledged passed triplets lost after SIGKILL", lost, len(acked))
	}
	t.Logf("%d acknowledged passes before SIGKILL, all present; %d passed triplets in the database", len(acked), len(passed))
}

func crashReq(i int, now time.Time) GreyRequest {
	return req("192.0.2.0/24", fmt.Sprintf("sender%d@example.com", i), "rcpt@example.org", now)
}

// crashChild makes decisions until it is killed: each triplet is greylisted, then passes; "passed N" is
// printed once the pass is committed.
func crashChild(path string) {
	st, err := OpenSQLite(context.Background(), path, false)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	var mu sync.Mutex
	next := 0
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				i := next
				next++
				mu.Unlock()
				if _, err := st.Greylist(context.Background(), crashReq(i, t0)); err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(2)
				}
				res, err := st.Greylist(context.Background(), crashReq(i, t0.Add(10*time.Minute)))
				if err != nil || res.Outcome != GreyFirstPass {
					fmt.Fprintln(os.Stderr, "pass:", res.Outcome, err)
					os.Exit(2)
				}
				mu.Lock()
				os.Stdout.WriteString("passed " + strconv.Itoa(i) + "\n")
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
}
