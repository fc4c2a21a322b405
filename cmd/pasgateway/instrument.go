package main

import (
	"bytes"
	"context"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/nhsx/dnarisk/internal/metrics"
	"github.com/nhsx/dnarisk/pas/hl7"
	"github.com/nhsx/dnarisk/pas/mllp"
	"github.com/nhsx/dnarisk/producer"
)

// countedMLLP counts every message it passes on by trigger and by the acknowledgement code
// the handler answered, and every AE/AR by the reason its ERR segment gives.
type countedMLLP struct {
	next mllp.Handler
	m    *metrics.Gateway
}

// Message counts the last reply: the application acknowledgement, or in enhanced mode the
// commit acknowledgement when no application acknowledgement follows it.
func (c countedMLLP) Message(ctx context.Context, frame []byte) [][]byte {
	replies := c.next.Message(ctx, frame)
	if len(replies) > 0 {
		c.count(trigger(frame), replies[len(replies)-1])
	}
	return replies
}

func (c countedMLLP) TooLarge(ctx context.Context, prefix []byte) []byte {
	reply := c.next.TooLarge(ctx, prefix)
	c.m.Message("mllp", trigger(prefix), ackCode(reply))
	c.m.Refused("mllp", "too_large")
	return reply
}

func (c countedMLLP) count(trig string, reply []byte) {
	code := ackCode(reply)
	c.m.Message("mllp", trig, code)
	if code != hl7.AA && code != "CA" {
		c.m.Refused("mllp", ackReason(reply, code))
	}
}

// trigger reads MSH-9.2 from a frame's first segment ("" when unreadable).
func trigger(frame []byte) string {
	first := bytes.TrimLeft(frame, "\r\n\t ")
	if i := bytes.IndexAny(first, "\r\n"); i >= 0 {
		first = first[:i]
	}
	m, err := hl7.Parse(first)
	if err != nil {
		return ""
	}
	return m.Header().Get(9, 2)
}

func parseAck(reply []byte) *hl7.Message {
	m, err := hl7.Parse(reply)
	if err != nil {
		return nil
	}
	return m
}

// ackCode is MSA-1 of a reply; "none" when there is no reply it can read.
func ackCode(reply []byte) string {
	m := parseAck(reply)
	if m == nil {
		return "none"
	}
	msa, ok := m.Segment("MSA")
	if !ok || msa.Get(1, 1) == "" {
		return "none"
	}
	switch c := msa.Get(1, 1); c {
	case hl7.AA, hl7.AE, hl7.AR, "CA", "CE", "CR":
		return c
	}
	return "other"
}

// reasons names the HL7 table 0357 codes the gateway answers with.
var reasons = map[string]string{
	"100": "segment_sequence", "101": "required_field_missing", "102": "data_type", "103": "table_value",
	"200": "unsupported_message_type", "201": "unsupported_event", "202": "unsupported_processing_id",
	"203": "unsupported_version", "204": "unknown_key",
}

// ackReason is the reason label of an AE/AR: the ERR segment's 0357 code by name. Code 207
// (internal) is "unavailable" on an AR (Kafka or Redis failed: the sender retries) and
// "business_rule" on an AE (the gateway refused the change).
func ackReason(reply []byte, code string) string {
	m := parseAck(reply)
	if m == nil {
		return "no_acknowledgement"
	}
	errSeg, ok := m.Segment("ERR")
	if !ok {
		return "unspecified"
	}
	c := errSeg.Get(3, 1) // 2.5 and later: ERR-3 error code
	if c == "" {
		c = errSeg.Field(1).Comp(4).Sub(1) // before 2.5: ERR-1.4 code
	}
	if r, ok := reasons[c]; ok {
		return r
	}
	if c == "207" {
		if code == hl7.AR || code == "CR" {
			return "unavailable"
		}
		return "business_rule"
	}
	return "other"
}

// timedWriter measures each write's time to Kafka's acknowledgement.
type timedWriter struct {
	producer.Writer
	m *metrics.Gateway
}

func (w timedWriter) WriteMessages(ctx context.Context, msgs ...kafka.Message) error {
	start := time.Now()
	err := w.Writer.WriteMessages(ctx, msgs...)
	w.m.KafkaAck(time.Since(start), err)
	return err
}
