package stack

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// RSSKiB reads the resident set size of process pid from /proc, in KiB.
func RSSKiB(pid int) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// RSSPeak samples a process's resident set size every 5 ms from StartRSSPeak until Stop, for benchmarks that
// report how much memory one large message costs.
type RSSPeak struct {
	Base int64 // KiB at the start
	peak atomic.Int64
	stop chan struct{}
	wg   sync.WaitGroup
}

// StartRSSPeak takes the baseline and starts sampling.
func StartRSSPeak(pid int) (*RSSPeak, error) {
	base, err := RSSKiB(pid)
	if err != nil {
		return nil, err
	}
	r := &RSSPeak{Base: base, stop: make(chan struct{})}
	r.peak.Store(base)
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-r.stop:
				return
			case <-t.C:
			}
			if v, err := RSSKiB(pid); err == nil && v > r.peak.Load() {
				r.peak.Store(v)
			}
		}
	}()
	return r, nil
}

// Stop ends the sampling and returns the peak in KiB.
func (r *RSSPeak) Stop() int64 {
	close(r.stop)
	r.wg.Wait()
	return r.peak.Load()
}
