package fhirin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/samply/golang-fhir-models/fhir-models/fhir"

	"github.com/nhsx/dnarisk/pas"
)

// entry is one Bundle entry after mapping.
type entry struct {
	change   *pas.Change
	ignored  string
	err      *Issue
	status   int
	msg      string
	expr     string // element at fault of a refusal
	location string // of a created appointment
}

// bundle takes a transaction or batch Bundle of Appointments (and the Patients they refer
// to). A transaction is checked whole before anything is published: one bad entry refuses
// it all. Its entries are then published in order; should Kafka fail half way, the answer is
// 503 and resending the whole Bundle is safe, since entries already published are unchanged
// and publish nothing the second time. A batch answers each entry on its own.
func (h *Handler) bundle(w http.ResponseWriter, r *http.Request) {
	body, ok := h.read(w, r)
	if !ok {
		return
	}
	switch rt := resourceType(body); rt {
	case "Bundle":
	case "Appointment":
		writeOutcome(w, http.StatusBadRequest, fhir.IssueTypeNotSupported, "POST a single Appointment to /Appointment; the base URL takes a Bundle", "")
		return
	default:
		writeOutcome(w, http.StatusBadRequest, fhir.IssueTypeNotSupported, "resourceType "+quote(rt)+" not accepted here; send a transaction or batch Bundle", "Bundle")
		return
	}
	b, err := fhir.UnmarshalBundle(body)
	if err != nil {
		writeOutcome(w, http.StatusBadRequest, fhir.IssueTypeStructure, "does not match the FHIR R4 Bundle structure: "+jsonReason(err), "Bundle")
		return
	}
	var top map[string]json.RawMessage
	_ = json.Unmarshal(body, &top)
	if _, ok := top["type"]; !ok || b.Type != fhir.BundleTypeTransaction && b.Type != fhir.BundleTypeBatch {
		writeOutcome(w, http.StatusBadRequest, fhir.IssueTypeNotSupported, "Bundle.type must be transaction or batch", "Bundle.type")
		return
	}
	txn := b.Type == fhir.BundleTypeTransaction
	entries := h.mapEntries(r.Context(), b.Entry)

	if txn {
		var issues []fhir.OperationOutcomeIssue
		status := 0
		for _, e := range entries {
			if e.err != nil {
				issues = append(issues, outcome(e.err.Code, e.err.Diagnostics, e.err.Expression).Issue...)
				status = max(status, statusOf(e.err.Code))
			}
		}
		if issues != nil {
			h.Log.Warn("fhir transaction refused", "entries", len(entries), "issues", len(issues))
			writeJSON(w, status, fhir.OperationOutcome{Issue: issues})
			return
		}
	}
	for i := range entries {
		e := &entries[i]
		if e.err != nil {
			e.status, e.msg, e.expr = statusOf(e.err.Code), e.err.Diagnostics, e.err.Expression
			continue
		}
		if e.change == nil && e.ignored == "" {
			e.status, e.msg = http.StatusOK, "used to resolve the appointments' patient"
			continue
		}
		e.status, e.msg, e.expr, e.location = h.apply(r.Context(), e.change, e.ignored)
		e.expr = relocate(&Issue{Expression: e.expr}, fmt.Sprintf("Bundle.entry[%d].resource", i)).Expression
		if txn && e.status >= 300 {
			writeOutcome(w, e.status, outcomeType(e.status), fmt.Sprintf("entry %d: %s", i, e.msg), fmt.Sprintf("Bundle.entry[%d]", i))
			return
		}
	}
	resp := fhir.Bundle{Type: fhir.BundleTypeBatchResponse}
	if txn {
		resp.Type = fhir.BundleTypeTransactionResponse
	}
	for _, e := range entries {
		oo, _ := json.Marshal(outcome(outcomeType(e.status), e.msg, e.expr))
		er := &fhir.BundleEntryResponse{Status: fmt.Sprintf("%d %s", e.status, http.StatusText(e.status)), Outcome: oo}
		if e.location != "" {
			er.Location = &e.location
		}
		resp.Entry = append(resp.Entry, fhir.BundleEntry{Response: er})
	}
	writeJSON(w, http.StatusOK, resp)
}

// mapEntries maps every entry; Patients are collected first so an Appointment may refer to
// one anywhere in the Bundle.
func (h *Handler) mapEntries(ctx context.Context, list []fhir.BundleEntry) []entry {
	out := make([]entry, len(list))
	pats := patients{}
	for i, be := range list {
		if resourceType(be.Resource) != "Patient" {
			continue
		}
		p, err := fhir.UnmarshalPatient(be.Resource)
		if err != nil {
			out[i].err = issue(fhir.IssueTypeStructure, fmt.Sprintf("Bundle.entry[%d].resource", i), "not a FHIR R4 Patient: %s", jsonReason(err))
			continue
		}
		if be.FullUrl != nil && *be.FullUrl != "" {
			pats[*be.FullUrl] = &p
		}
		if p.Id != nil {
			pats["Patient/"+*p.Id] = &p
		}
	}
	for i, be := range list {
		where := fmt.Sprintf("Bundle.entry[%d]", i)
		switch rt := resourceType(be.Resource); rt {
		case "Patient":
		case "Appointment":
			urlID := ""
			if be.Request != nil {
				switch be.Request.Method {
				case fhir.HTTPVerbPOST:
				case fhir.HTTPVerbPUT:
					urlID = strings.TrimPrefix(strings.SplitN(be.Request.Url, "?", 2)[0], "Appointment/")
				default:
					out[i].err = issue(fhir.IssueTypeNotSupported, where+".request.method", "only POST and PUT of an Appointment are accepted (cancel with status cancelled or entered-in-error)")
					continue
				}
			}
			c, ignored, err := h.Mapper.Map(be.Resource, urlID, pats)
			if err == nil && c != nil {
				if cerr := h.Gateway.Check(ctx, *c); cerr != nil {
					var is *Issue
					switch {
					case errors.As(cerr, &is):
						err = is
					case errors.Is(cerr, pas.ErrUnavailable):
						// Redis failed: publishing the entry will fail the same way, with 503.
					default:
						err = issue(fhir.IssueTypeBusinessRule, "Appointment", "%s", strings.TrimPrefix(cerr.Error(), pas.ErrRejected.Error()+": "))
					}
				}
			}
			if err != nil {
				var is *Issue
				if !errors.As(err, &is) {
					is = issue(fhir.IssueTypeProcessing, "", "%s", err.Error())
				}
				out[i].err = relocate(is, where+".resource")
				continue
			}
			out[i].change, out[i].ignored = c, ignored
		default:
			out[i].err = issue(fhir.IssueTypeNotSupported, where+".resource", "resourceType %s not accepted in the Bundle (Appointment and Patient only)", quote(rt))
		}
	}
	return out
}

// relocate rewrites an Appointment-relative expression to its place in the Bundle.
func relocate(is *Issue, prefix string) *Issue {
	out := *is
	switch {
	case strings.HasPrefix(is.Expression, "Appointment"):
		out.Expression = prefix + strings.TrimPrefix(is.Expression, "Appointment")
	case is.Expression == "":
		out.Expression = prefix
	}
	return &out
}
