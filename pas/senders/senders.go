// Package senders decides which HL7 sending applications and facilities (MSH-3, MSH-4) each
// MLLP peer may speak for, by its client certificate's names or its source address, and
// answers AR to a message from any other. It sits in front of the SIU handler, so a refused
// message is never mapped or published.
package senders

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/nhsx/dnarisk/pas/hl7"
	"github.com/nhsx/dnarisk/pas/mllp"
)

// Rule lets one peer send for one application and facility. Exactly one of ClientCert and
// Source names the peer.
type Rule struct {
	// ClientCert matches a name of the peer's verified client certificate: its subject CN or
	// a DNS, URI or e-mail SAN (case-insensitive).
	ClientCert string `json:"client_cert,omitempty"`
	// Source matches the peer's IP address: one address or a CIDR prefix.
	Source string `json:"source,omitempty"`
	// Application is MSH-3 (its namespace id, else its universal id); "" or "*" is any.
	Application string `json:"sending_application,omitempty"`
	// Facility is MSH-4 (its namespace id, else its universal id, e.g. an ODS code); "*" is
	// any. Required.
	Facility string `json:"sending_facility"`

	prefix netip.Prefix
}

// List is an allow-list of senders. The zero List allows nobody.
type List struct {
	Rules []Rule `json:"senders"`
	// byCert says whether some rule names a client certificate (TLS must be on).
	byCert bool
}

// Load reads a list from a JSON file: {"senders": [{"client_cert": "engine.trust.nhs.uk",
// "sending_application": "PAS", "sending_facility": "RXX01"}, {"source": "10.20.0.0/16",
// "sending_facility": "RXX02"}]}. Unknown fields, a rule naming no peer or both kinds, a bad
// address and a rule without a facility are refused with the rule's number.
func Load(path string) (*List, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("senders file: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var l List
	if err := dec.Decode(&l); err != nil {
		return nil, fmt.Errorf("senders file %s: %w", path, err)
	}
	if len(l.Rules) == 0 {
		return nil, fmt.Errorf("senders file %s lists no sender", path)
	}
	for i := range l.Rules {
		r := &l.Rules[i]
		where := fmt.Sprintf("senders file %s rule %d", path, i+1)
		switch {
		case (r.ClientCert == "") == (r.Source == ""):
			return nil, fmt.Errorf("%s: give exactly one of client_cert and source", where)
		case r.Facility == "":
			return nil, fmt.Errorf("%s: sending_facility is required (\"*\" for any)", where)
		}
		if r.Source != "" {
			if r.prefix, err = parseSource(r.Source); err != nil {
				return nil, fmt.Errorf("%s: %w", where, err)
			}
		}
		l.byCert = l.byCert || r.ClientCert != ""
	}
	return &l, nil
}

func parseSource(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return p, fmt.Errorf("source %q is not an IP address or CIDR prefix", s)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("source %q is not an IP address or CIDR prefix", s)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// NeedsTLS reports whether some rule names a client certificate, which only MLLP over TLS
// with client certificates can present.
func (l *List) NeedsTLS() bool { return l.byCert }

// Allows reports whether peer may send for application and facility.
func (l *List) Allows(peer mllp.Peer, application, facility string) bool {
	return l.allows(peer, func(r Rule) bool {
		return match(r.Facility, facility) && (r.Application == "" || match(r.Application, application))
	})
}

// allows reports whether a rule that names peer passes ok (nil: any rule naming peer).
func (l *List) allows(peer mllp.Peer, ok func(Rule) bool) bool {
	var ip netip.Addr
	if ta, ok := peer.Addr.(*net.TCPAddr); ok {
		ip, _ = netip.AddrFromSlice(ta.IP)
		ip = ip.Unmap()
	}
	for _, r := range l.Rules {
		if ok != nil && !ok(r) {
			continue
		}
		if r.Source != "" && ip.IsValid() && r.prefix.Contains(ip) {
			return true
		}
		if r.ClientCert != "" {
			for _, n := range peer.CertNames {
				if strings.EqualFold(n, r.ClientCert) {
					return true
				}
			}
		}
	}
	return false
}

func match(want, got string) bool { return want == "*" || strings.EqualFold(want, got) }

// Handler answers AR to a message whose MSH-3/MSH-4 the peer may not send for, and passes
// every other message to Next. It implements mllp.Handler.
type Handler struct {
	// List returns the allow-list in force, asked on each message (so a file reloaded on
	// change takes effect without a restart: authn.WatchFiles).
	List func() *List
	Next mllp.Handler
	Log  *slog.Logger
	// Refused, when set, is told the trigger event (MSH-9.2) of each message refused here.
	Refused func(trigger string)
	// Now stamps acknowledgements; default time.Now.
	Now func() time.Time
}

// Message implements mllp.Handler.
func (h *Handler) Message(ctx context.Context, frame []byte) [][]byte {
	peer, _ := mllp.PeerFrom(ctx)
	hdr := header(frame)
	list := h.List()
	var app, fac, trigger, ctrl string
	if hdr != nil {
		msh := hdr.Header()
		app, fac, trigger, ctrl = hd(msh.Field(3)), hd(msh.Field(4)), msh.Get(9, 2), msh.Get(10, 1)
		if list.Allows(peer, app, fac) {
			return h.Next.Message(ctx, frame)
		}
	} else if list.allows(peer, nil) {
		// An unreadable header from a known peer: the next handler says what is wrong.
		return h.Next.Message(ctx, frame)
	}
	log := h.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var remote string
	if peer.Addr != nil {
		remote = peer.Addr.String()
	}
	log.Warn("hl7 message refused: sender not allowed for this connection", "ack", hl7.AR, "remote", remote,
		"client_cert", first(peer.CertNames), "sending_application", app, "sending_facility", fac, "control_id", ctrl)
	if h.Refused != nil {
		h.Refused(trigger)
	}
	now := time.Now()
	if h.Now != nil {
		now = h.Now()
	}
	return [][]byte{hl7.Ack(hdr, hl7.Reject(hl7.CodeTableValue, "MSH", 4,
		"this connection may not send for this sending application and facility (MSH-3, MSH-4)"), "", now)}
}

// TooLarge implements mllp.Handler: a message too large is refused whoever sent it.
func (h *Handler) TooLarge(ctx context.Context, prefix []byte) []byte {
	return h.Next.TooLarge(ctx, prefix)
}

// hd reads an HD field (MSH-3, MSH-4): its namespace id, else its universal id.
func hd(f hl7.Field) string {
	if v := f.Comp(1).String(); v != "" {
		return v
	}
	return f.Comp(2).String()
}

func first(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[0]
}

// header parses the first segment only: the allow-list needs MSH, and a message whose body
// is broken is still refused (or passed on) by its header.
func header(frame []byte) *hl7.Message {
	first := bytes.TrimLeft(frame, "\r\n\t ")
	if i := bytes.IndexAny(first, "\r\n"); i >= 0 {
		first = first[:i]
	}
	m, err := hl7.Parse(first)
	if err != nil {
		return nil
	}
	return m
}
