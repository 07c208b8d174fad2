package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"syscall"
)

// underJournald reports whether standard error is the journal's stream: systemd sets JOURNAL_STREAM to the
// device and inode of the stream it connected (systemd.exec(5)); a match means it was not redirected since.
func underJournald(stderr io.Writer) bool {
	f, ok := stderr.(*os.File)
	js := os.Getenv("JOURNAL_STREAM")
	if !ok || js == "" {
		return false
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		return false
	}
	return js == fmt.Sprintf("%d:%d", st.Dev, st.Ino)
}

// journalHandler writes each record as one line that starts with its syslog priority ("<3>" for errors,
// "<4>" warnings, "<6>" info, "<7>" debug), which journald reads as the entry's priority
// (SyslogLevelPrefix=, on by default), and without slog's time stamp: journald stamps every entry itself.
type journalHandler struct {
	mu    *sync.Mutex
	w     io.Writer
	buf   *bytes.Buffer
	inner slog.Handler // writes into buf
}

func newJournalHandler(w io.Writer, format string, opts *slog.HandlerOptions) slog.Handler {
	o := *opts
	prev := o.ReplaceAttr
	o.ReplaceAttr = func(groups []string, a slog.Attr) slog.Attr {
		if len(groups) == 0 && a.Key == slog.TimeKey {
			return slog.Attr{}
		}
		if prev != nil {
			return prev(groups, a)
		}
		return a
	}
	buf := new(bytes.Buffer)
	var inner slog.Handler = slog.NewTextHandler(buf, &o)
	if format == "json" {
		inner = slog.NewJSONHandler(buf, &o)
	}
	return &journalHandler{mu: new(sync.Mutex), w: w, buf: buf, inner: inner}
}

func priority(l slog.Level) string {
	switch {
	case l >= slog.LevelError:
		return "<3>"
	case l >= slog.LevelWarn:
		return "<4>"
	case l >= slog.LevelInfo:
		return "<6>"
	}
	return "<7>"
}

func (h *journalHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.inner.Enabled(ctx, l)
}

func (h *journalHandler) Handle(ctx context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.buf.Reset()
	h.buf.WriteString(priority(r.Level))
	if err := h.inner.Handle(ctx, r); err != nil {
		return err
	}
	_, err := h.w.Write(h.buf.Bytes())
	return err
}

// WithAttrs and WithGroup share the buffer and its lock: the derived inner handler writes into the same buf.
func (h *journalHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &journalHandler{mu: h.mu, w: h.w, buf: h.buf, inner: h.inner.WithAttrs(as)}
}

func (h *journalHandler) WithGroup(name string) slog.Handler {
	return &journalHandler{mu: h.mu, w: h.w, buf: h.buf, inner: h.inner.WithGroup(name)}
}
