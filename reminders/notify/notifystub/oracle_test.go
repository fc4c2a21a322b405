package notifystub_test

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/nhsx/dnarisk/internal/testenv"
	"github.com/nhsx/dnarisk/reminders/notify"
	"github.com/nhsx/dnarisk/reminders/notify/notifystub"
)

// root is the repository root, where `make python` builds .venv.
const root = "../../.."

// officialClient is the version pinned in training/requirements.txt.
const officialClient = "13.0.0"

// python returns an interpreter with GOV.UK Notify's official client (make test exports
// PYTHON, the venv scripts/python.sh builds). Without one the test skips loudly, or fails
// under CI=true.
func python(t *testing.T) string {
	t.Helper()
	p := os.Getenv("PYTHON")
	if p == "" {
		p = filepath.Join(root, ".venv", "bin", "python")
	}
	abs, err := filepath.Abs(p)
	if err == nil {
		err = exec.Command(abs, "-c", "import notifications_python_client").Run()
	}
	if err != nil {
		msg := "no Python with notifications-python-client (PYTHON, or .venv from `make python`): " + p
		if testenv.CI() {
			t.Fatal(msg)
		}
		t.Skip("SKIPPING: " + msg)
	}
	return abs
}

// oracleRun is what testdata/official_client.py prints.
type oracleRun struct {
	ClientVersion string `json:"client_version"`
	Sent          []struct {
		Response map[string]any `json:"response"`
		ByID     map[string]any `json:"by_id"`
		ByURI    map[string]any `json:"by_uri"`
	} `json:"sent"`
	Walks          map[string][]string `json:"walks"`
	FirstPageLinks map[string]string   `json:"first_page_links"`
	Errors         map[string]*struct {
		StatusCode int `json:"status_code"`
		Message    any `json:"message"`
	} `json:"errors"`
}

// The official Python client, unchanged, sends through the stub, reads every message back
// by id and by the uri it was given, and walks all notifications with its iterators across
// several pages and filters; what it saw must be exactly what the stub recorded. Our Go
// client shares the stub with it: each finds what the other sent.
func TestOfficialPythonClient(t *testing.T) {
	py := python(t)
	k, _ := notify.ParseKey(key)
	stub, err := notifystub.New(notifystub.Config{Key: k, PageSize: 5,
		Templates: map[string][]string{template: {"appointment_date", "appointment_time"}}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(stub)
	defer srv.Close()

	goClient, err := notify.New(notify.Config{BaseURL: srv.URL, Key: k})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	goSent, err := goClient.SendSMS(ctx, notify.SMS{PhoneNumber: "07700900009", TemplateID: template, Reference: "go-1",
		Personalisation: map[string]string{"appointment_date": "Tuesday 7 May", "appointment_time": "10:00"}})
	if err != nil {
		t.Fatal(err)
	}

	const badKey = "other-26785a09-ab16-4eb0-8407-a37497a57506-00000000-8d35-48ac-975b-e847b4f122b0"
	cmd := exec.CommandContext(ctx, py, "testdata/official_client.py")
	cmd.Env = append(os.Environ(), "NOTIFY_BASE_URL="+srv.URL, "NOTIFY_API_KEY="+key, "TEMPLATE_ID="+template,
		"BAD_API_KEY="+badKey, "GO_REFERENCE=go-1")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("official client: %v\n%s", err, stderr.String())
	}
	var run oracleRun
	if err := json.Unmarshal(out, &run); err != nil {
		t.Fatalf("official client output: %v\n%s", err, out)
	}
	if run.ClientVersion != officialClient {
		t.Errorf("notifications-python-client %s, pinned %s", run.ClientVersion, officialClient)
	}

	msgs := stub.Messages()
	if len(msgs) != 1+len(run.Sent) || len(run.Sent) != 13 || msgs[0].ID != goSent.ID {
		t.Fatalf("stub recorded %d messages, the clients sent 1 + %d", len(msgs), len(run.Sent))
	}
	for i, s := range run.Sent {
		m := msgs[1+i]
		if s.Response["id"] != m.ID || s.Response["uri"] != srv.URL+"/v2/notifications/"+m.ID {
			t.Fatalf("send %d answered %v, stub recorded %s", i, s.Response, m.ID)
		}
		if !reflect.DeepEqual(s.ByID, s.ByURI) {
			t.Errorf("send %d: by id %v, by uri %v", i, s.ByID, s.ByURI)
		}
		if s.ByID["id"] != m.ID || s.ByID["status"] != m.Status || s.ByID["phone_number"] != m.PhoneNumber ||
			s.ByID["reference"] != nullable(m.Reference) || s.ByID["type"] != "sms" {
			t.Errorf("send %d read back as %v, stub has %+v", i, s.ByID, m)
		}
	}

	newestFirst := func(keep func(i int, m notifystub.Message) bool) []string {
		ids := []string{}
		for i := len(msgs) - 1; i >= 0; i-- {
			if keep(i, msgs[i]) {
				ids = append(ids, msgs[i].ID)
			}
		}
		return ids
	}
	failed := []string{"technical-failure", "temporary-failure", "permanent-failure"}
	for name, want := range map[string][]string{
		"all":            newestFirst(func(int, notifystub.Message) bool { return true }),
		"sms":            newestFirst(func(int, notifystub.Message) bool { return true }),
		"failed":         newestFirst(func(_ int, m notifystub.Message) bool { return slices.Contains(failed, m.Status) }),
		"delivered":      newestFirst(func(_ int, m notifystub.Message) bool { return m.Status == "delivered" }),
		"reference py-5": newestFirst(func(_ int, m notifystub.Message) bool { return m.Reference == "py-5" }),
		"go reference":   {goSent.ID},
		// the 7th message the Python client sent is the stub's 8th
		"older than the 7th sent": newestFirst(func(i int, _ notifystub.Message) bool { return i < 7 }),
		"email":                   {},
	} {
		if got := run.Walks[name]; !slices.Equal(got, want) {
			t.Errorf("iterator %q yielded %v, want %v", name, got, want)
		}
	}
	if len(run.Walks["failed"]) == 0 || len(run.Walks["delivered"]) == 0 || len(run.Walks["all"]) <= 5 {
		t.Fatalf("the walks do not cross pages and statuses: %v", run.Walks)
	}
	if next := run.FirstPageLinks["next"]; !strings.HasPrefix(next, srv.URL+"/v2/notifications?older_than=") {
		t.Errorf("links.next %q", next)
	}

	for name, want := range map[string]struct {
		status    int
		kind, msg string
	}{
		"unknown id":              {404, "NoResultFound", "No result found"},
		"bad id":                  {400, "ValidationError", "is not a valid UUID"},
		"bad status":              {400, "ValidationError", "status elephant is not one of"},
		"wrong key":               {403, "AuthError", "Invalid token"},
		"landline":                {400, "ValidationError", "Not a UK mobile number"},
		"missing personalisation": {400, "BadRequestError", "Missing personalisation"},
	} {
		e := run.Errors[name]
		items, _ := e.Message.([]any) // the client hands back the body's errors list
		if e == nil || e.StatusCode != want.status || len(items) == 0 {
			t.Errorf("%s: the client raised %+v, want HTTP %d with an errors list", name, e, want.status)
			continue
		}
		it := items[0].(map[string]any)
		if it["error"] != want.kind || !strings.Contains(it["message"].(string), want.msg) {
			t.Errorf("%s: %v, want %s %q", name, it, want.kind, want.msg)
		}
	}

	// Our client finds what the official one sent, as the dispatcher does after a crash.
	found, err := goClient.FindByReference(ctx, "py-5")
	if err != nil || len(found) != 1 || found[0].ID != run.Sent[5].Response["id"] {
		t.Fatalf("Go FindByReference(py-5) = %+v, %v", found, err)
	}
}

func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}
