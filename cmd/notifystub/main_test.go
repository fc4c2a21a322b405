package main

import (
	"strings"
	"testing"
)

func TestParseConfig(t *testing.T) {
	const key = "stub-26785a09-ab16-4eb0-8407-a37497a57506-3d844edf-8d35-48ac-975b-e847b4f122b0"
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	c, err := parseConfig([]string{"--template", "F33517FF-2a88-4f6e-b855-c550268ce08a=appointment_date,appointment_time"},
		env(map[string]string{"NOTIFY_API_KEY": key}))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.stub.Templates["f33517ff-2a88-4f6e-b855-c550268ce08a"]; len(got) != 2 {
		t.Fatalf("templates %v", c.stub.Templates)
	}
	for _, tc := range []struct {
		args []string
		key  string
		want string
	}{
		{[]string{"--template", "f33517ff-2a88-4f6e-b855-c550268ce08a"}, "nope", "invalid GOV.UK Notify API key"},
		{nil, key, "no templates"},
		{[]string{"--template", "f33517ff-2a88-4f6e-b855-c550268ce08a", "--fail-500", "0.8", "--fail-429", "0.5"}, key, "shares"},
		{[]string{"--template", "f33517ff-2a88-4f6e-b855-c550268ce08a", "--fail-500", "0.5", "--fail-created-late", "0.6"}, key, "shares"},
		{[]string{"--template", "f33517ff-2a88-4f6e-b855-c550268ce08a", "--created-late-min", "5s", "--created-late-max", "2s"}, key, "--created-late-min"},
	} {
		if _, err := parseConfig(tc.args, env(map[string]string{"NOTIFY_API_KEY": tc.key})); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want %q", tc.args, err, tc.want)
		}
	}
}
