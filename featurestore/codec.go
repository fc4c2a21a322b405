package featurestore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"unsafe"
)

// History is stored in Redis in a compact binary form, read on every booking: JSON cost
// about ten times as much to decode (BenchmarkCodec). The format version is written twice:
// as the first byte of the encoding and in the hash field "codec" beside it, which binaries
// read from the release that introduced it on (absent: version 1, the only version written
// before, and still written without the field so that reading it costs nothing). The field is what
// tells a history written by a newer binary (during a rolling upgrade, or after a rollback)
// from corrupt bytes: a corrupt value is quarantined, a newer one is never touched (redis.go).
// A new version must therefore bump codecVersion and keep writing the field. Layout, version 1:
//
//	byte    1 (format version)
//	uvarint number of facts
//	per fact: uvarint len, appointment id bytes; byte kind; uvarint version;
//	          varint At (unix s, delta from the previous fact's At); varint Start (unix s, 0 if none)
const codecVersion = 1

// maxEncodedFacts bounds what a decoder will allocate for one history.
const maxEncodedFacts = 100_000

func appendFacts(dst []byte, facts []Fact) []byte {
	dst = append(dst, codecVersion)
	dst = binary.AppendUvarint(dst, uint64(len(facts)))
	return appendFactBodies(dst, facts, 0)
}

// appendFactBodies appends the encoding of facts without the header, the first At as a delta
// from prev (the At of the fact before them, 0 for none).
func appendFactBodies(dst []byte, facts []Fact, prev int64) []byte {
	for _, f := range facts {
		dst = binary.AppendUvarint(dst, uint64(len(f.Appointment)))
		dst = append(dst, f.Appointment...)
		dst = append(dst, byte(f.Kind))
		dst = binary.AppendUvarint(dst, uint64(f.Version))
		dst = binary.AppendVarint(dst, f.At-prev)
		dst = binary.AppendVarint(dst, f.Start)
		prev = f.At
	}
	return dst
}

// appendEncoding appends the encoding of h.Facts to dst. When h holds the stored encoding of a
// prefix of its facts (h.enc, as read), it copies that prefix's bytes and encodes only the
// facts after it, which is what a batch adds to most histories: byte for byte what
// appendFacts writes (TestEncodeAppendsToTheStoredEncoding), for a fraction of the work.
func (h *History) appendEncoding(dst []byte) []byte {
	n := h.encN
	if n == 0 || n > len(h.Facts) || len(h.enc) == 0 {
		return appendFacts(dst, h.Facts)
	}
	_, k := binary.Uvarint(unsafeBytes(h.enc[1:]))
	body := h.enc[1+k:]
	dst = slices.Grow(dst, 1+binary.MaxVarintLen64+len(body)+(len(h.Facts)-n)*32)
	dst = append(dst, codecVersion)
	dst = binary.AppendUvarint(dst, uint64(len(h.Facts)))
	dst = append(dst, body...)
	return appendFactBodies(dst, h.Facts[n:], h.Facts[n-1].At)
}

// unsafeBytes views s as bytes without copying; the bytes must only be read.
func unsafeBytes(s string) []byte {
	return unsafe.Slice(unsafe.StringData(s), len(s))
}

var errCorrupt = errors.New("corrupt history encoding")

// ErrNewerFormat marks a history written in a format version newer than this binary reads.
// Such a history is left exactly as it is: this binary neither decodes nor overwrites it.
var ErrNewerFormat = errors.New("history written in a newer format than this binary reads")

// formatVersion reads the "codec" field of a stored history (nil: absent, version 1). It
// returns ErrNewerFormat (wrapped) for a version above codecVersion and errCorrupt for a
// value that is not a version at all. The error never quotes the stored value.
func formatVersion(field any) (int, error) {
	if field == nil {
		return 1, nil
	}
	s, _ := field.(string)
	v, err := strconv.Atoi(s)
	switch {
	case err != nil || v < 1:
		return 0, fmt.Errorf("%w: codec field is not a format version", errCorrupt)
	case v > codecVersion:
		return v, fmt.Errorf("%w: format version %d, this binary reads up to %d", ErrNewerFormat, v, codecVersion)
	}
	return v, nil
}

// appendRoom is the spare capacity of a decoded history's facts.
const appendRoom = 4

// decodeFacts decodes s, as read from Redis. The facts' appointment ids are slices of s: no
// copy of the whole history, no allocation per fact.
func decodeFacts(s string) ([]Fact, error) {
	if len(s) == 0 {
		return nil, nil
	}
	b := unsafeBytes(s)
	if b[0] != codecVersion {
		return nil, fmt.Errorf("%w: format version %d, want %d", errCorrupt, b[0], codecVersion)
	}
	b = b[1:]
	n, k := binary.Uvarint(b)
	if k <= 0 || n > maxEncodedFacts || n > uint64(len(b)) {
		return nil, fmt.Errorf("%w: fact count", errCorrupt)
	}
	b = b[k:]
	ids := s
	off := 0 // offset of b within ids
	// Room for the facts a batch appends (History.Apply), so the first appends do not copy the
	// whole history (growslice was 6% of the consumer's CPU in docs/performance.md's profile).
	facts := make([]Fact, n, n+appendRoom)
	var prev int64
	for i := range facts {
		l, k := binary.Uvarint(b)
		if k <= 0 || l > uint64(len(b)-k) {
			return nil, fmt.Errorf("%w: fact %d appointment id", errCorrupt, i)
		}
		b = b[k:]
		off = len(ids) - len(b)
		f := &facts[i]
		f.Appointment = ids[off : off+int(l)]
		b = b[l:]
		if len(b) == 0 {
			return nil, fmt.Errorf("%w: fact %d truncated", errCorrupt, i)
		}
		f.Kind = Kind(b[0])
		b = b[1:]
		v, k := binary.Uvarint(b)
		if k <= 0 || v > math.MaxInt32 {
			return nil, fmt.Errorf("%w: fact %d version", errCorrupt, i)
		}
		f.Version = int32(v)
		b = b[k:]
		d, k := binary.Varint(b)
		if k <= 0 {
			return nil, fmt.Errorf("%w: fact %d time", errCorrupt, i)
		}
		f.At = prev + d
		prev = f.At
		b = b[k:]
		s, k := binary.Varint(b)
		if k <= 0 {
			return nil, fmt.Errorf("%w: fact %d start", errCorrupt, i)
		}
		f.Start = s
		b = b[k:]
	}
	if len(b) != 0 {
		return nil, fmt.Errorf("%w: %d trailing bytes", errCorrupt, len(b))
	}
	return facts, nil
}
