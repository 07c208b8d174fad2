package spamc

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestParseResponse(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    *Response // compared on Code, Message, Spam, Score, Threshold, HasSpam, Body
		symbols []string
		wantErr error
	}{
		{
			name:    "symbols spam",
			in:      "SPAMD/1.1 0 EX_OK\r\nContent-length: 24\r\nSpam: True ; 1000.0 / 5.0\r\n\r\nGTUBE,MISSING_DATE,NO_RL",
			want:    &Response{Version: "1.1", Message: "EX_OK", Spam: true, Score: 1000, Threshold: 5, HasSpam: true, Body: []byte("GTUBE,MISSING_DATE,NO_RL")},
			symbols: []string{"GTUBE", "MISSING_DATE", "NO_RL"},
		},
		{
			name:    "symbols ham negative score",
			in:      "SPAMD/1.1 0 EX_OK\r\nContent-length: 10\r\nSpam: False ; -0.1 / 5.0\r\n\r\nALL_TRUSTE",
			want:    &Response{Version: "1.1", Message: "EX_OK", Score: -0.1, Threshold: 5, HasSpam: true, Body: []byte("ALL_TRUSTE")},
			symbols: []string{"ALL_TRUSTE"},
		},
		{
			name: "symbols none",
			in:   "SPAMD/1.1 0 EX_OK\r\nContent-length: 0\r\nSpam: False ; 0.0 / 5.0\r\n\r\n",
			want: &Response{Version: "1.1", Message: "EX_OK", Threshold: 5, HasSpam: true, Body: []byte{}},
		},
		{
			name: "check yes",
			in:   "SPAMD/1.1 0 EX_OK\r\nSpam: Yes ; 6.5 / 5.0\r\n\r\n",
			want: &Response{Version: "1.1", Message: "EX_OK", Spam: true, Score: 6.5, Threshold: 5, HasSpam: true, Body: []byte{}},
		},
		{
			name: "pong",
			in:   "SPAMD/1.5 0 PONG\r\n",
			want: &Response{Version: "1.5", Message: "PONG", Body: nil},
		},
		{
			name: "tell",
			in:   "SPAMD/1.1 0 EX_OK\r\nDidSet: local\r\n\r\n\r\n",
			want: &Response{Version: "1.1", Message: "EX_OK", Body: []byte("\r\n")},
		},
		{name: "protocol error", in: "SPAMD/1.0 76 Bad header line: (Content-Length mismatch: Expected 10 bytes, got 9 bytes)\r\n", wantErr: ErrSpamd},
		{name: "timeout", in: "SPAMD/1.0 79 Timeout: (30 second socket timeout reading input from client)\r\n", wantErr: ErrSpamd},
		{name: "unavailable no newline", in: "SPAMD/1.0 69 Service Unavailable: TELL commands are not enabled", wantErr: ErrSpamd},
		{name: "empty", in: "", wantErr: ErrProtocol},
		{name: "http", in: "HTTP/1.1 200 OK\r\n\r\n", wantErr: ErrProtocol},
		{name: "bad code", in: "SPAMD/1.1 x EX_OK\r\n\r\n", wantErr: ErrProtocol},
		{name: "bad version", in: "SPAMD/x 0 EX_OK\r\n\r\n", wantErr: ErrProtocol},
		{name: "short body", in: "SPAMD/1.1 0 EX_OK\r\nContent-length: 50\r\nSpam: True ; 1.0 / 5.0\r\n\r\nGTUBE", wantErr: ErrProtocol},
		{name: "long body", in: "SPAMD/1.1 0 EX_OK\r\nContent-length: 1\r\nSpam: True ; 1.0 / 5.0\r\n\r\nGTUBE", wantErr: ErrProtocol},
		{name: "bad length", in: "SPAMD/1.1 0 EX_OK\r\nContent-length: -5\r\n\r\n", wantErr: ErrProtocol},
		{name: "bad spam verdict", in: "SPAMD/1.1 0 EX_OK\r\nSpam: Maybe ; 1.0 / 5.0\r\n\r\n", wantErr: ErrProtocol},
		{name: "nan score", in: "SPAMD/1.1 0 EX_OK\r\nSpam: True ; NaN / 5.0\r\n\r\n", wantErr: ErrProtocol},
		{name: "inf score", in: "SPAMD/1.1 0 EX_OK\r\nSpam: True ; 1e999 / 5.0\r\n\r\n", wantErr: ErrProtocol},
		{name: "spam without slash", in: "SPAMD/1.1 0 EX_OK\r\nSpam: True ; 1.0\r\n\r\n", wantErr: ErrProtocol},
		{name: "header without colon", in: "SPAMD/1.1 0 EX_OK\r\nSpam True\r\n\r\n", wantErr: ErrProtocol},
		{name: "unterminated header", in: "SPAMD/1.1 0 EX_OK\r\nSpam: True ; 1.0 / 5.0", wantErr: ErrProtocol},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseResponse([]byte(tc.in))
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("error = %v, want %v", err, tc.wantErr)
				}
				if errors.Is(err, ErrSpamd) {
					// spamd's own text is kept.
					_, after, _ := strings.Cut(tc.in, " ")
					_, text, _ := strings.Cut(after, " ")
					if !strings.Contains(err.Error(), strings.TrimSpace(text)[:10]) {
						t.Fatalf("error %q lost spamd's text %q", err, text)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got.Headers = nil
			if len(got.Body) == 0 && len(tc.want.Body) == 0 {
				got.Body, tc.want.Body = nil, nil
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %+v\nwant %+v", got, tc.want)
			}
			syms, err := got.Symbols()
			if err != nil || !reflect.DeepEqual(syms, tc.symbols) && len(tc.symbols) > 0 {
				t.Fatalf("Symbols() = %v, %v; want %v", syms, err, tc.symbols)
			}
		})
	}
}

func TestSymbolsRejectsJunk(t *testing.T) {
	r := &Response{Body: []byte("GTUBE,<script>,X")}
	if _, err := r.Symbols(); !errors.Is(err, ErrProtocol) {
		t.Fatalf("Symbols() error = %v, want ErrProtocol", err)
	}
	r = &Response{Body: []byte("A,,B")}
	if _, err := r.Symbols(); !errors.Is(err, ErrProtocol) {
		t.Fatalf("empty symbol accepted: %v", err)
	}
}

func TestRequestHeader(t *testing.T) {
	tests := []struct {
		name string
		req  Request
		want string
		err  bool
	}{
		{"symbols", Request{Command: CmdSymbols, ContentLength: 42}, "SYMBOLS SPAMC/1.5\r\nContent-length: 42\r\n\r\n", false},
		{"user and zlib", Request{Command: CmdSymbols, ContentLength: 7, User: "example.com", Compress: true},
			"SYMBOLS SPAMC/1.5\r\nContent-length: 7\r\nCompress: zlib\r\nUser: example.com\r\n\r\n", false},
		{"tell spam", Request{Command: CmdTell, ContentLength: 3, MessageClass: "spam", Set: "local"},
			"TELL SPAMC/1.5\r\nContent-length: 3\r\nMessage-class: spam\r\nSet: local\r\n\r\n", false},
		{"tell forget", Request{Command: CmdTell, ContentLength: 3, Remove: "local"},
			"TELL SPAMC/1.5\r\nContent-length: 3\r\nRemove: local\r\n\r\n", false},
		{"ping", Request{Command: CmdPing, ContentLength: -1}, "PING SPAMC/1.5\r\n\r\n", false},
		{"header injection", Request{Command: CmdSymbols, ContentLength: 1, User: "a\r\nSet: local"}, "", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.req.Header()
			if (err != nil) != tc.err {
				t.Fatalf("error = %v, want error %v", err, tc.err)
			}
			if string(got) != tc.want {
				t.Fatalf("Header() = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestParseClass(t *testing.T) {
	for _, ok := range []string{"spam", "ham", "forget", "SPAM"} {
		if _, err := ParseClass(ok); err != nil {
			t.Errorf("ParseClass(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"", "eggs", "spam ", "local"} {
		if _, err := ParseClass(bad); err == nil {
			t.Errorf("ParseClass(%q) accepted", bad)
		}
	}
}

func FuzzParseResponse(f *testing.F) {
	for _, s := range []string{
		"SPAMD/1.1 0 EX_OK\r\nContent-length: 5\r\nSpam: True ; 1000.0 / 5.0\r\n\r\nGTUBE",
		"SPAMD/1.5 0 PONG\r\n",
		"SPAMD/1.1 0 EX_OK\r\nDidSet: local\r\n\r\n\r\n",
		"SPAMD/1.0 76 Bad header line: x\r\n",
		"SPAMD/1.1 0 EX_OK\r\nSpam: False ; -3.5 / 5.0\r\n\r\n",
		"",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := ParseResponse(data)
		if err != nil {
			if !errors.Is(err, ErrProtocol) && !errors.Is(err, ErrSpamd) {
				t.Fatalf("error %v wraps neither ErrProtocol nor ErrSpamd", err)
			}
			return
		}
		if r.Code != 0 {
			t.Fatalf("code %d without error", r.Code)
		}
		if r.HasSpam && (r.Score != r.Score || r.Score > 1e5 || r.Score < -1e5) {
			t.Fatalf("score %v accepted", r.Score)
		}
		if syms, err := r.Symbols(); err == nil {
			for _, s := range syms {
				if !validSymbol(s) {
					t.Fatalf("symbol %q accepted", s)
				}
			}
		}
	})
}
