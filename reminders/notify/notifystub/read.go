package notifystub

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/nhsx/dnarisk/reminders/notify"
)

// What the stub answers where Notify would use the service's settings.
const (
	fromNumber      = "GOVUK"
	templateVersion = 1
)

// Notify's timestamps: UTC, microseconds, a literal Z (DATETIME_FORMAT in notifications-utils).
const timeFormat = "2006-01-02T15:04:05.000000Z"

// statuses are the values GET /v2/notifications accepts for status (Notify's
// NOTIFICATION_STATUS_TYPES); "failed" stands for every failure status.
var statuses = []string{"cancelled", "created", "sending", "sent", "delivered", "pending", "failed",
	"technical-failure", "temporary-failure", "permanent-failure", "pending-virus-check",
	"validation-failed", "virus-scan-failed", "returned-letter", "accepted", "received"}

var failedStatuses = []string{"technical-failure", "temporary-failure", "permanent-failure"}

var templateTypes = []string{"sms", "email", "letter"}

// statusFor is the delivery status Notify's test API key gives a number.
func statusFor(phone string) string {
	switch p := phoneJunk.Replace(phone); {
	case strings.HasSuffix(p, "7700900002"):
		return "permanent-failure"
	case strings.HasSuffix(p, "7700900003"):
		return "temporary-failure"
	}
	return "delivered"
}

// render stands in for the template's text: the placeholders' values in order.
func render(placeholders []string, values map[string]string) string {
	parts := make([]string, 0, len(placeholders))
	for _, p := range placeholders {
		parts = append(parts, values[p])
	}
	return strings.Join(parts, " ")
}

// baseURL is the scheme and host the caller reached the stub on, for the uri and links
// fields, which Notify gives as absolute URLs.
func baseURL(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// notification is one notification as GET /v2/notifications/{id} and the list return it.
func notification(m Message, base string) map[string]any {
	var completed any
	if m.Status != "created" && m.Status != "sending" && m.Status != "pending" {
		completed = m.CreatedAt.Format(timeFormat)
	}
	return map[string]any{
		"id":            m.ID,
		"reference":     nullable(m.Reference),
		"email_address": nil,
		"phone_number":  m.PhoneNumber,
		"line_1":        nil, "line_2": nil, "line_3": nil, "line_4": nil, "line_5": nil, "line_6": nil,
		"postcode":              nil,
		"postage":               nil,
		"type":                  "sms",
		"status":                m.Status,
		"template":              map[string]any{"id": m.TemplateID, "version": templateVersion, "uri": fmt.Sprintf("%s/v2/template/%s/version/%d", base, m.TemplateID, templateVersion)},
		"body":                  m.Body,
		"subject":               nil,
		"created_at":            m.CreatedAt.Format(timeFormat),
		"created_by_name":       nil,
		"sent_at":               m.CreatedAt.Format(timeFormat),
		"completed_at":          completed,
		"scheduled_for":         nil,
		"one_click_unsubscribe": nil,
		// The stub does not bill; Notify says the same while its cost data is not ready.
		"is_cost_data_ready": false,
		"cost_in_pounds":     nil,
		"cost_details":       map[string]any{},
	}
}

// get answers GET /v2/notifications/{id}.
func (s *Stub) get(w http.ResponseWriter, r *http.Request, id string) {
	if !uuidRE.MatchString(id) {
		s.fail(w, http.StatusBadRequest, "ValidationError", "notification_id is not a valid UUID")
		return
	}
	s.mu.Lock()
	i, ok := s.byID[strings.ToLower(id)]
	var m Message
	if ok {
		m = s.messages[i]
	}
	s.mu.Unlock()
	if !ok {
		s.fail(w, http.StatusNotFound, "NoResultFound", "No result found")
		return
	}
	s.reply(w, http.StatusOK, notification(m, baseURL(r)), 0)
}

// listQuery is a checked GET /v2/notifications query.
type listQuery struct {
	reference, olderThan string
	hasRef               bool
	statuses, types      []string
	raw                  url.Values // the query as accepted, for links.current
}

// parseList checks the query as Notify's schema does: only its four arguments (and
// include_jobs, which the clients send), statuses and template types from its lists, and
// older_than a UUID. The messages follow Notify's "<field> <problem>" form.
func parseList(q url.Values) (listQuery, []string) {
	var lq listQuery
	var problems []string
	for k := range q {
		switch k {
		case "reference", "status", "template_type", "older_than", "include_jobs":
		default:
			problems = append(problems, fmt.Sprintf("Additional properties are not allowed (%s was unexpected)", k))
		}
	}
	if v, ok := q["reference"]; ok {
		lq.reference, lq.hasRef = v[0], true
	}
	for _, st := range q["status"] {
		if !slices.Contains(statuses, st) {
			problems = append(problems, fmt.Sprintf("status %s is not one of [%s]", st, strings.Join(statuses, ", ")))
		}
		if st == "failed" {
			lq.statuses = append(lq.statuses, failedStatuses...)
		} else {
			lq.statuses = append(lq.statuses, st)
		}
	}
	for _, tt := range q["template_type"] {
		if !slices.Contains(templateTypes, tt) {
			problems = append(problems, fmt.Sprintf("template_type %s is not one of [%s]", tt, strings.Join(templateTypes, ", ")))
		}
		lq.types = append(lq.types, tt)
	}
	if v, ok := q["older_than"]; ok {
		if !uuidRE.MatchString(v[0]) {
			problems = append(problems, "older_than is not a valid UUID")
		}
		lq.olderThan = strings.ToLower(v[0])
	}
	lq.raw = q
	return lq, problems
}

func (lq *listQuery) match(m Message) bool {
	return (!lq.hasRef || m.Reference == lq.reference) &&
		(len(lq.statuses) == 0 || slices.Contains(lq.statuses, m.Status)) &&
		(len(lq.types) == 0 || slices.Contains(lq.types, "sms"))
}

// list answers GET /v2/notifications: one page, newest first, of the notifications that
// match, older than older_than if given (none if that id is unknown, as Notify compares
// with its created_at). links.next is there whenever the page is not empty, as Notify
// does: it repeats the query with older_than set to the last id on the page, first in the
// query, so the clients' iterators (which take the first UUID in the link) find it.
func (s *Stub) list(w http.ResponseWriter, r *http.Request) {
	lq, problems := parseList(r.URL.Query())
	if len(problems) > 0 {
		items := make([]notify.ErrorItem, len(problems))
		for i, p := range problems {
			items[i] = notify.ErrorItem{Error: "ValidationError", Message: p}
		}
		s.reply(w, http.StatusBadRequest, &notify.APIError{StatusCode: http.StatusBadRequest, Errors: items}, 0)
		return
	}
	base := baseURL(r)
	s.mu.Lock()
	end := len(s.messages)
	if lq.olderThan != "" {
		end = 0
		if i, ok := s.byID[lq.olderThan]; ok {
			end = i
		}
	}
	page := make([]map[string]any, 0, min(end, s.cfg.PageSize))
	last := ""
	for i := end - 1; i >= 0 && len(page) < s.cfg.PageSize; i-- {
		if m := s.messages[i]; lq.match(m) {
			page = append(page, notification(m, base))
			last = m.ID
		}
	}
	s.mu.Unlock()
	links := map[string]string{"current": base + listPath + query(lq.raw, "")}
	if last != "" {
		links["next"] = base + listPath + query(lq.raw, last)
	}
	s.reply(w, http.StatusOK, map[string]any{"notifications": page, "links": links}, 0)
}

// query encodes q with older_than replaced (when olderThan is set) and put first.
func query(q url.Values, olderThan string) string {
	rest := url.Values{}
	for k, v := range q {
		if k != "older_than" || olderThan == "" {
			rest[k] = v
		}
	}
	enc := rest.Encode()
	if olderThan != "" {
		enc = strings.TrimSuffix("older_than="+olderThan+"&"+enc, "&")
	}
	if enc == "" {
		return ""
	}
	return "?" + enc
}
