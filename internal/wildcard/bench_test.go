package wildcard

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/moatmail/moat/config"
)

// benchList builds an n-line list of the kinds of lines administrators write: exact addresses, whole domains,
// exclusions and digit patterns.
func benchList(n int) *List {
	ls := make([]config.ListLine, n)
	for i := range ls {
		var text string
		switch i % 5 {
		case 0:
			text = fmt.Sprintf("user%d@domain%d.example", i, i)
		case 1:
			text = fmt.Sprintf("*@domain%d.example", i)
		case 2:
			text = fmt.Sprintf("~boss%d@domain%d.example", i, i-1)
		case 3:
			text = fmt.Sprintf("*@*%%%%%%%%*.host%d.example", i)
		case 4:
			text = fmt.Sprintf("%%%%%%%%*@bulk%d.example", i)
		}
		ls[i] = config.ListLine{Text: text, Source: "bench", Line: i + 1}
	}
	l, err := ParseList(ls)
	if err != nil {
		panic(err)
	}
	return l
}

func benchAddrs(n int) []Subject {
	r := rand.New(rand.NewPCG(1, 2))
	out := make([]Subject, n)
	for i := range out {
		// Mostly addresses no line matches (the list is read to the top), some that hit.
		d := r.IntN(4000)
		out[i] = NewSubject(fmt.Sprintf("someone.%d@domain%d.example", r.IntN(100000), d))
	}
	return out
}

// BenchmarkList10kAddresses1kLines runs 10,000 addresses through a 1,000-line list per iteration (the figure the
// issue asks for). Metrics: ns per address and per address-line pair.
func BenchmarkList10kAddresses1kLines(b *testing.B) {
	l := benchList(1000)
	addrs := benchAddrs(10000)
	b.ResetTimer()
	hits := 0
	for b.Loop() {
		for _, a := range addrs {
			if barred, _ := l.Match(a); barred {
				hits++
			}
		}
	}
	ns := float64(b.Elapsed().Nanoseconds()) / float64(b.N) / float64(len(addrs))
	b.ReportMetric(ns, "ns/address")
	b.ReportMetric(ns/1000, "ns/address-line")
	if hits == 0 {
		b.Fatal("no address was barred: the benchmark list is wrong")
	}
}

// BenchmarkPathological matches a `*%*%*%…%x*` pattern (16 stars) against long all-digit addresses: the input
// that makes a backtracking matcher try every way to place the stars. Every iteration also matches a one-gap
// baseline pattern (`*q*`) that must scan the whole address too. Metrics: "x-baseline" is the pathological
// pattern's time as a multiple of the baseline's (flat across lengths means linear, like the baseline), and
// "ns/char" the pathological time per address character.
func BenchmarkPathological(b *testing.B) {
	evil := MustCompile(strings.Repeat("*%", 16) + "x*")
	baseline := MustCompile("*q*")
	for _, n := range []int{64, 256, 1024, 4096} {
		subject := NewSubject(strings.Repeat("1", n-12) + "@example.com")
		b.Run(fmt.Sprintf("len=%d", n), func(b *testing.B) {
			var tEvil, tBase time.Duration
			for b.Loop() {
				t0 := time.Now()
				if evil.MatchSubject(subject) {
					b.Fatal("matched")
				}
				t1 := time.Now()
				if baseline.MatchSubject(subject) {
					b.Fatal("matched")
				}
				tEvil += t1.Sub(t0)
				tBase += time.Since(t1)
			}
			b.ReportMetric(float64(tEvil)/float64(tBase), "x-baseline")
			b.ReportMetric(float64(tEvil.Nanoseconds())/float64(b.N)/float64(n), "ns/char")
		})
	}
}

// backtrack is the naive recursive matcher a first implementation would write; it is here only to show in
// BenchmarkBacktrackingContrast what the segment matcher avoids.
func backtrack(p, s []rune) bool {
	if len(p) == 0 {
		return len(s) == 0
	}
	if p[0] == '*' {
		for i := 1; i <= len(s); i++ {
			if backtrack(p[1:], s[i:]) {
				return true
			}
		}
		return false
	}
	if len(s) == 0 {
		return false
	}
	ok := p[0] == '?' || p[0] == s[0] || (p[0] == '%' && s[0] >= '0' && s[0] <= '9') || (p[0] == '$' && s[0] >= 'a' && s[0] <= 'z')
	return ok && backtrack(p[1:], s[1:])
}

// BenchmarkBacktrackingContrast: the same pathological input, short enough for a backtracking matcher to
// finish (40 characters, 6 stars); "x-segment" is its time as a multiple of the segment matcher's.
func BenchmarkBacktrackingContrast(b *testing.B) {
	pat := strings.Repeat("*%", 5) + "x*"
	p := MustCompile(pat)
	subject := strings.Repeat("1", 28) + "@example.com"
	subj := NewSubject(subject)
	var tBack, tSeg time.Duration
	for b.Loop() {
		t0 := time.Now()
		if backtrack([]rune(pat), []rune(subject)) {
			b.Fatal("matched")
		}
		t1 := time.Now()
		if p.MatchSubject(subj) {
			b.Fatal("matched")
		}
		tBack += t1.Sub(t0)
		tSeg += time.Since(t1)
	}
	b.ReportMetric(float64(tBack)/float64(tSeg), "x-segment")
}
