package mllp

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

func frame(s string) string { return "\x0b" + s + "\x1c\x0d" }

func TestReader(t *testing.T) {
	type out struct {
		msg string
		err error
	}
	for _, c := range []struct {
		name  string
		in    string
		limit int
		want  []out
		skip  int
	}{
		{name: "one", in: frame("MSH|a"), want: []out{{"MSH|a", nil}, {"", io.EOF}}},
		{name: "several", in: frame("A") + frame("B") + frame("C"), want: []out{{"A", nil}, {"B", nil}, {"C", nil}, {"", io.EOF}}},
		{name: "white space between frames", in: "\r\n " + frame("A") + "\n" + frame("B"), want: []out{{"A", nil}, {"B", nil}, {"", io.EOF}}},
		{name: "junk between frames counted", in: "GET / HTTP/1.1" + frame("A"), want: []out{{"A", nil}, {"", io.EOF}}, skip: 12},
		{name: "end block without CR", in: "\x0bA\x1c\x0bB\x1c\x0d", want: []out{{"A", nil}, {"B", nil}, {"", io.EOF}}},
		{name: "truncated", in: "\x0bMSH|a|b", want: []out{{"", ErrTruncated}}},
		{name: "restarted", in: "\x0bMSH|partial" + frame("MSH|whole"), want: []out{{"", ErrRestarted}, {"MSH|whole", nil}, {"", io.EOF}}},
		{name: "too large", in: frame("0123456789") + frame("ok"), limit: 4, want: []out{{"0123", ErrTooLarge}, {"ok", nil}, {"", io.EOF}}},
		{name: "empty frame", in: frame(""), want: []out{{"", nil}, {"", io.EOF}}},
		{name: "nothing", in: "", want: []out{{"", io.EOF}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := NewReader(strings.NewReader(c.in), c.limit)
			for i, w := range c.want {
				got, err := r.Read()
				if string(got) != w.msg || !errors.Is(err, w.err) {
					t.Fatalf("read %d = %q, %v; want %q, %v", i, got, err, w.msg, w.err)
				}
			}
			if r.Skipped != c.skip {
				t.Errorf("skipped %d, want %d", r.Skipped, c.skip)
			}
		})
	}
}

func TestWrite(t *testing.T) {
	var b bytes.Buffer
	if err := Write(&b, []byte("MSH|x\r")); err != nil {
		t.Fatal(err)
	}
	if b.String() != "\x0bMSH|x\r\x1c\x0d" {
		t.Fatalf("frame %q", b.String())
	}
	if err := Write(&b, []byte("a\x1cb")); err == nil {
		t.Fatal("wrote a message holding an end block")
	}
}

// FuzzReader: any byte stream yields frames without panicking, none over the limit, and
// never more content than was sent.
func FuzzReader(f *testing.F) {
	f.Add([]byte(frame("MSH|a") + frame("b")))
	f.Add([]byte("\x0b\x0b\x1c\x1c\r\x0bxx"))
	f.Fuzz(func(t *testing.T, in []byte) {
		r := NewReader(bytes.NewReader(in), 16)
		total := 0
		for i := 0; i <= len(in); i++ {
			msg, err := r.Read()
			if len(msg) > 16 {
				t.Fatalf("frame of %d bytes over the limit", len(msg))
			}
			total += len(msg)
			if err != nil && !errors.Is(err, ErrRestarted) && !errors.Is(err, ErrTooLarge) {
				break
			}
		}
		if total > len(in) {
			t.Fatalf("read %d bytes of content from %d", total, len(in))
		}
	})
}
