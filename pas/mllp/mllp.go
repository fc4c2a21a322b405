// Package mllp is the Minimal Lower Layer Protocol that carries HL7 v2 over TCP: each message
// is framed as 0x0B <message> 0x1C 0x0D. It reads and writes frames and runs a listener that
// hands each frame to a Handler and writes the Handler's reply before reading the next frame,
// so one connection's messages are processed, and acknowledged, in the order they were sent.
package mllp

import (
	"bufio"
	"errors"
	"fmt"
	"io"
)

// Frame bytes.
const (
	StartBlock   = 0x0B
	EndBlock     = 0x1C
	CarriageRet  = 0x0D
	DefaultLimit = 1 << 20
)

// Errors from Reader.Read. Each says what happened to the bytes read so far.
var (
	// ErrTruncated: the connection ended inside a frame; the partial frame is discarded.
	ErrTruncated = errors.New("mllp: connection closed inside a frame")
	// ErrRestarted: a start block arrived inside a frame (the sender gave up on a frame and
	// began another); the partial frame is discarded and reading goes on with the new one.
	ErrRestarted = errors.New("mllp: new frame started before the previous one ended")
	// ErrTooLarge: the frame exceeded the limit; Read returns its first bytes (for an
	// acknowledgement that names the message) and has skipped the rest of it.
	ErrTooLarge = errors.New("mllp: frame larger than the limit")
)

// Reader reads MLLP frames from a stream.
type Reader struct {
	r     *bufio.Reader
	limit int
	// Skipped counts bytes outside frames that were not white space: a sender speaking
	// something other than MLLP shows up here.
	Skipped int
}

// NewReader reads frames of at most limit bytes (DefaultLimit if limit <= 0).
func NewReader(r io.Reader, limit int) *Reader {
	if limit <= 0 {
		limit = DefaultLimit
	}
	return &Reader{r: bufio.NewReaderSize(r, 64<<10), limit: limit}
}

// Read returns the next frame's content. io.EOF means the stream ended cleanly between
// frames. Bytes between frames are skipped (white space silently; anything else is counted
// in Skipped). A frame's end block may lack its carriage return; some senders omit it.
func (r *Reader) Read() ([]byte, error) {
	for {
		c, err := r.r.ReadByte()
		if err != nil {
			return nil, err // io.EOF between frames is a clean end
		}
		if c == StartBlock {
			break
		}
		if c != ' ' && c != '\t' && c != '\r' && c != '\n' {
			r.Skipped++
		}
	}
	var buf []byte
	tooLarge := false
	for {
		c, err := r.r.ReadByte()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil, ErrTruncated
			}
			return nil, fmt.Errorf("mllp: read frame: %w", err)
		}
		switch c {
		case StartBlock:
			// Put the start block back so the next Read begins the new frame.
			_ = r.r.UnreadByte()
			return nil, ErrRestarted
		case EndBlock:
			if next, err := r.r.Peek(1); err == nil && next[0] == CarriageRet {
				_, _ = r.r.ReadByte()
			}
			if tooLarge {
				return buf, ErrTooLarge
			}
			return buf, nil
		}
		if len(buf) >= r.limit {
			tooLarge = true
			continue
		}
		buf = append(buf, c)
	}
}

// Write writes msg as one frame. It refuses content that holds a frame byte, which would
// end the frame early at the receiver.
func Write(w io.Writer, msg []byte) error {
	for _, c := range msg {
		if c == StartBlock || c == EndBlock {
			return errors.New("mllp: message contains a frame delimiter byte")
		}
	}
	frame := make([]byte, 0, len(msg)+3)
	frame = append(frame, StartBlock)
	frame = append(frame, msg...)
	frame = append(frame, EndBlock, CarriageRet)
	_, err := w.Write(frame)
	return err
}
