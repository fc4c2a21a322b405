package events

import (
	"math"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"
)

// AppendJSON appends r encoded exactly as json.Marshal encodes it (same field order, sorted
// feature names, same number formatting) without reflection: the scorer writes one risk
// event per booking, and encoding/json spent more time on it than scoring did
// (BenchmarkStageEncodeRisk). TestRiskAppendJSONMatchesMarshal holds the two together.
func (r *Risk) AppendJSON(dst []byte) []byte {
	dst = append(dst, `{"schema":`...)
	dst = appendString(dst, r.Schema)
	dst = append(dst, `,"appointment_id":`...)
	dst = appendString(dst, r.AppointmentID)
	dst = append(dst, `,"booking_version":`...)
	dst = strconv.AppendInt(dst, int64(r.Version), 10)
	dst = append(dst, `,"patient":`...)
	dst = appendString(dst, r.Patient)
	dst = append(dst, `,"source_event_id":`...)
	dst = appendString(dst, r.SourceEventID)
	dst = append(dst, `,"appointment_start":`...)
	dst = appendTime(dst, r.AppointmentStart)
	dst = append(dst, `,"probability":`...)
	dst = appendFloat(dst, r.Probability)
	dst = append(dst, `,"risk_band":`...)
	dst = appendString(dst, r.Band)
	dst = append(dst, `,"model_id":`...)
	dst = appendString(dst, r.ModelID)
	dst = append(dst, `,"scored_at":`...)
	dst = appendTime(dst, r.ScoredAt)
	if !r.ScoredAsOf.IsZero() {
		dst = append(dst, `,"scored_as_of":`...)
		dst = appendTime(dst, r.ScoredAsOf)
	}
	if r.Reason != "" {
		dst = append(dst, `,"reason":`...)
		dst = appendString(dst, r.Reason)
	}
	dst = append(dst, `,"features":`...)
	switch {
	case r.Features == nil && r.FeatureNames != nil:
		dst = append(dst, '{')
		for i, k := range r.FeatureNames {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendString(dst, k)
			dst = append(dst, ':')
			dst = appendFloat(dst, r.FeatureValues[i])
		}
		dst = append(dst, '}')
	case r.Features == nil:
		dst = append(dst, "null"...)
	default:
		var buf [32]string
		names := buf[:0]
		for k := range r.Features {
			names = append(names, k)
		}
		slices.Sort(names)
		dst = append(dst, '{')
		for i, k := range names {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendString(dst, k)
			dst = append(dst, ':')
			dst = appendFloat(dst, r.Features[k])
		}
		dst = append(dst, '}')
	}
	return append(dst, '}')
}

func appendTime(dst []byte, t time.Time) []byte {
	dst = append(dst, '"')
	dst = t.AppendFormat(dst, time.RFC3339Nano)
	return append(dst, '"')
}

// appendFloat formats like encoding/json: shortest representation, exponent form only for
// very small or large magnitudes. NaN and Inf are not valid JSON; callers never pass them
// (missing features are left out), and they are written as null rather than corrupt output.
func appendFloat(dst []byte, f float64) []byte {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return append(dst, "null"...)
	}
	abs := math.Abs(f)
	if abs < 1e15 && f == math.Trunc(f) && (f != 0 || !math.Signbit(f)) {
		// Most features are counts, codes and hours: whole numbers, which 'f' writes as
		// their integer digits (a float below 1e15 is within 1/8 of the next one, so no
		// shorter digits stand for it), at a third of strconv.AppendFloat's cost.
		return strconv.AppendInt(dst, int64(f), 10)
	}
	format := byte('f')
	if abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	dst = strconv.AppendFloat(dst, f, format, -1, 64)
	if format == 'e' {
		// clean up e-09 to e-9, as encoding/json does
		n := len(dst)
		if n >= 4 && dst[n-4] == 'e' && dst[n-3] == '-' && dst[n-2] == '0' {
			dst[n-2] = dst[n-1]
			dst = dst[:n-1]
		}
	}
	return dst
}

const hexDigits = "0123456789abcdef"

// appendString quotes s as encoding/json does with HTML escaping on (its default).
func appendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		b := s[i]
		if b < utf8.RuneSelf {
			if b >= 0x20 && b != '"' && b != '\\' && b != '<' && b != '>' && b != '&' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch b {
			case '"', '\\':
				dst = append(dst, '\\', b)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[b>>4], hexDigits[b&0xF])
			}
			i++
			start = i
			continue
		}
		c, size := utf8.DecodeRuneInString(s[i:])
		if c == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if c == '\u2028' || c == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[c&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
