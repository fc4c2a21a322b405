package hl7

import (
	"encoding/hex"
	"strings"
	"unicode/utf8"
)

// Unescape replaces HL7 escape sequences in one primitive value: \F\ \S\ \T\ \R\ \E\ by the
// declared delimiters, \Xhh…\ by the bytes it encodes, \.br\ by a line break. Formatting and
// character-set sequences (\H\ \N\ \.sp\ \Cxxyy\ \Mxxyyzz\ \Zxx\) carry no text and are dropped.
// A lone or unterminated escape character is kept as it is: senders that forget to escape a
// backslash are common, and refusing the whole message for it would help no one.
func Unescape(s string, d Delimiters) string {
	if d.Escape == 0 || strings.IndexByte(s, d.Escape) < 0 {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != d.Escape {
			b.WriteByte(c)
			continue
		}
		end := strings.IndexByte(s[i+1:], d.Escape)
		if end < 0 {
			b.WriteString(s[i:])
			break
		}
		seq := s[i+1 : i+1+end]
		if rep, ok := unescapeSeq(seq, d); ok {
			b.WriteString(rep)
			i += end + 1
			continue
		}
		b.WriteByte(c) // not an escape we know: keep the character literally
	}
	return b.String()
}

func unescapeSeq(seq string, d Delimiters) (string, bool) {
	switch seq {
	case "F":
		return string(d.Field), true
	case "S":
		return str(d.Component), true
	case "T":
		return str(d.Subcomponent), true
	case "R":
		return str(d.Repetition), true
	case "E":
		return string(d.Escape), true
	case "H", "N", ".br":
		if seq == ".br" {
			return "\n", true
		}
		return "", true
	case "":
		return "", false
	}
	switch seq[0] {
	case 'X':
		raw, err := hex.DecodeString(seq[1:])
		if err != nil || len(seq) == 1 {
			return "", false
		}
		if !utf8.Valid(raw) {
			return latin1(raw), true // as for a whole message that is not UTF-8
		}
		return string(raw), true
	case 'C', 'M', 'Z':
		return "", true
	case '.':
		// .sp .fi .nf .in .ti .sk .ce: formatted text commands, no characters of their own
		return "", true
	}
	return "", false
}

func str(c byte) string {
	if c == 0 {
		return ""
	}
	return string(c)
}

// Escape makes s safe to place in a field of a message using d: delimiters become escape
// sequences and line breaks \.br\ (HL7 values cannot hold CR or LF).
func Escape(s string, d Delimiters) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == d.Escape && c != 0:
			b.WriteString(esc(d, "E"))
		case c == d.Field:
			b.WriteString(esc(d, "F"))
		case c == d.Component && c != 0:
			b.WriteString(esc(d, "S"))
		case c == d.Subcomponent && c != 0:
			b.WriteString(esc(d, "T"))
		case c == d.Repetition && c != 0:
			b.WriteString(esc(d, "R"))
		case c == '\r' || c == '\n':
			if c == '\r' && i+1 < len(s) && s[i+1] == '\n' {
				i++
			}
			b.WriteString(esc(d, ".br"))
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

func esc(d Delimiters, seq string) string {
	e := d.Escape
	if e == 0 {
		e = '\\'
	}
	return string(e) + seq + string(e)
}
