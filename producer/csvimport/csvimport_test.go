package csvimport

import (
	"bytes"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nhsx/dnarisk/events"
	"github.com/nhsx/dnarisk/internal/pseudo"
	"github.com/nhsx/dnarisk/scoring"
)

func testPseudonymiser(tb testing.TB) *pseudo.Pseudonymiser {
	tb.Helper()
	ps, err := pseudo.New([]byte("csvimport-test-secret-0123456789abcdef"))
	if err != nil {
		tb.Fatal(err)
	}
	return ps
}

// checkStream checks the invariants every import must keep, whatever the input.
func checkStream(tb testing.TB, res Result) {
	tb.Helper()
	if res.Imported+len(res.Bad) != res.Rows {
		tb.Fatalf("%d rows read but %d imported and %d bad", res.Rows, res.Imported, len(res.Bad))
	}
	booked := map[string]bool{}
	ended := map[string]bool{}
	for i := range res.Events {
		ev := &res.Events[i]
		if err := ev.Validate(); err != nil {
			tb.Fatalf("event %d: %v", i, err)
		}
		if i > 0 && ev.EventTime.Before(res.Events[i-1].EventTime) {
			tb.Fatalf("event %d out of time order", i)
		}
		switch ev.Type {
		case events.Booked:
			booked[ev.AppointmentID] = true
		default:
			if !booked[ev.AppointmentID] || ended[ev.AppointmentID] {
				tb.Fatalf("appointment %q: %s without a booking before it, or twice", ev.AppointmentID, ev.Type)
			}
			ended[ev.AppointmentID] = true
		}
	}
}

func TestImportSample(t *testing.T) {
	f, err := os.Open("../../testdata/appointments_sample.csv")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ps := testPseudonymiser(t)
	res, err := Import(f, ps, Options{})
	if err != nil {
		t.Fatal(err)
	}
	checkStream(t, res)
	if res.Rows != 20 || res.Imported != 20 || len(res.Bad) != 0 {
		t.Fatalf("rows %d, imported %d, bad %v", res.Rows, res.Imported, res.Bad)
	}
	counts := map[events.Type]int{}
	byID := map[string][]events.Appointment{}
	for _, ev := range res.Events {
		counts[ev.Type]++
		byID[ev.AppointmentID] = append(byID[ev.AppointmentID], ev)
	}
	want := map[events.Type]int{events.Booked: 20, events.Attended: 10, events.DidNotAttend: 4, events.Cancelled: 3}
	for typ, n := range want {
		if counts[typ] != n {
			t.Errorf("%d %s events, want %d", counts[typ], typ, n)
		}
	}

	// The NHS number written with spaces is the same patient.
	if a, b := byID["RX1-2024-000101"][0].Patient, byID["RX1-2024-000106"][0].Patient; a != b || a != ps.Pseudonym("9990001014") {
		t.Error("patient 999 000 1014 did not get one pseudonym")
	}
	first := byID["RX1-2024-000101"]
	bk := first[0].Booking
	if !bk.Start.Equal(time.Date(2024, 4, 15, 8, 0, 0, 0, time.UTC)) || bk.Start.Location() != time.UTC {
		t.Errorf("09:00 UK summer time read as %s", bk.Start)
	}
	if !bk.BookedAt.Equal(time.Date(2024, 3, 4, 10, 12, 0, 0, time.UTC)) {
		t.Errorf("10:12 UK winter time read as %s", bk.BookedAt)
	}
	if bk.Specialty != "110" || bk.Clinic != "Fracture Clinic" || !bk.FirstVisit || bk.AgeBand != "45-54" ||
		bk.Deprivation == nil || *bk.Deprivation != 3 || !bk.Contact.SMS || bk.Extra["distance_km"] != 12.4 {
		t.Errorf("booking facts %+v", bk)
	}
	if v, ok := bk.Extra["interpreter_needed"]; !ok || v != 0 {
		t.Errorf("extra interpreter_needed = %v, %v; want 0, present", v, ok)
	}
	if first[1].Type != events.Attended || !first[1].EventTime.Equal(bk.Start) {
		t.Errorf("outcome %s at %s, want attended at the start", first[1].Type, first[1].EventTime)
	}
	if c := byID["RX1-2024-000104"][1]; c.CancelledBy != events.ByPatient || !c.EventTime.Equal(time.Date(2024, 5, 13, 7, 47, 0, 0, time.UTC)) {
		t.Errorf("cancellation with cancelled_at: %s by %s", c.EventTime, c.CancelledBy)
	}
	if c := byID["RX1-2024-000118"][1]; c.CancelledBy != events.ByPatient || !c.EventTime.Equal(byID["RX1-2024-000118"][0].Booking.Start) {
		t.Errorf("cancellation without cancelled_at at %s, want the start", c.EventTime)
	}
	if c := byID["RX1-2024-000108"][1]; c.CancelledBy != events.ByHospital {
		t.Errorf("hospital cancellation by %q", c.CancelledBy)
	}
	if evs := byID["RX1-2024-000109"]; len(evs) != 1 {
		t.Errorf("still-booked appointment has %d events, want 1", len(evs))
	}
	if byID["RX1-2024-000107"][0].Booking.Deprivation != nil {
		t.Error("empty deprivation_decile not missing")
	}

	// Importing again gives the same event ids, so replays deduplicate downstream.
	f2, _ := os.Open("../../testdata/appointments_sample.csv")
	defer f2.Close()
	again, err := Import(f2, ps, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range res.Events {
		if res.Events[i].EventID != again.Events[i].EventID {
			t.Fatal("event ids differ between two imports of the same file")
		}
	}
}

const goodHeader = "patient_id,appointment_id,booked_at,appointment_start,outcome,age_band"

func TestImportHeader(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		wantErr []string // substrings of the one error; none means success
	}{
		{"empty file", "", []string{"empty"}},
		{"missing several required columns", "patient_id,outcome,age_band\n",
			[]string{"appointment_id", "booked_at", "appointment_start"}},
		{"wrong names", "patient,appt,booked,start,result,age\n",
			[]string{"patient_id", "appointment_id", "booked_at", "appointment_start", "outcome"}},
		{"no age band nor age", "patient_id,appointment_id,booked_at,appointment_start,outcome\n", []string{"age_band (or age"}},
		{"duplicate and unnamed columns", goodHeader + ",outcome,,x\n", []string{"duplicate columns outcome", "unnamed columns at positions 8"}},
		{"too many extras", goodHeader + strings.Repeat(",x", 0) + extras(65) + "\n", []string{"65 extra columns"}},
		{"header only", goodHeader + "\n", nil},
		{"byte-order mark, spaces and capitals", "\ufeffPatient_ID , Appointment_ID,BOOKED_AT,appointment_start,Outcome,age\n", nil},
		{"columns in any order with age instead of age_band", "outcome,age,appointment_start,booked_at,appointment_id,patient_id\n", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Import(strings.NewReader(tt.in), testPseudonymiser(t), Options{})
			if len(tt.wantErr) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, ErrHeader) {
				t.Fatalf("error %v does not wrap ErrHeader", err)
			}
			for _, s := range tt.wantErr {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not mention %q", err, s)
				}
			}
		})
	}
}

func extras(n int) string {
	var b strings.Builder
	for i := range n {
		b.WriteString(",extra_")
		b.WriteByte(byte('a' + i/26))
		b.WriteByte(byte('a' + i%26))
	}
	return b.String()
}

func TestImportBadRows(t *testing.T) {
	const header = "patient_id,appointment_id,booked_at,appointment_start,outcome,age_band,deprivation_decile,first_visit,cancelled_at,distance_km\n"
	const good = "9990001014,A0,2024-03-04 10:00,2024-04-15 09:00,attended,45-54,3,true,,1.5\n"
	tests := []struct {
		name   string
		row    string
		reason string
	}{
		{"empty patient", ",A1,2024-03-04 10:00,2024-04-15 09:00,attended,45-54,3,true,,1", "patient_id is empty"},
		{"empty appointment id", "9990001014,,2024-03-04 10:00,2024-04-15 09:00,attended,45-54,3,true,,1", "appointment_id is empty"},
		{"unparseable booked_at", "9990001014,A1,04/03/2024 10:00,2024-04-15 09:00,attended,45-54,3,true,,1", "booked_at is not RFC 3339"},
		{"date-only start long before booking", "9990001014,A1,2024-03-04 10:00,2024-03-02,attended,45-54,3,true,,1", "is before booked_at"},
		{"empty start", "9990001014,A1,2024-03-04 10:00,,attended,45-54,3,true,,1", "appointment_start is empty"},
		{"unknown outcome", "9990001014,A1,2024-03-04 10:00,2024-04-15 09:00,DNA,45-54,3,true,,1", "outcome is not one of"},
		{"start long before booking", "9990001014,A1,2024-03-04 10:00,2024-03-01 09:00,attended,45-54,3,true,,1", "is before booked_at"},
		{"bad age band", "9990001014,A1,2024-03-04 10:00,2024-04-15 09:00,attended,45-55,3,true,,1", "age_band is not one of"},
		{"empty age band", "9990001014,A1,2024-03-04 10:00,2024-04-15 09:00,attended,,3,true,,1", "age_band (or age) is empty"},
		{"deprivation out of range", "9990001014,A1,2024-03-04 10:00,2024-04-15 09:00,attended,45-54,11,true,,1", "deprivation_decile"},
		{"bad boolean", "9990001014,A1,2024-03-04 10:00,2024-04-15 09:00,attended,45-54,3,maybe,,1", "first_visit is not"},
		{"NaN in an extra column", "9990001014,A1,2024-03-04 10:00,2024-04-15 09:00,attended,45-54,3,true,,NaN", "extra columns distance_km hold NaN, Inf"},
		{"a number in the text code range", "9990001014,A1,2024-03-04 10:00,2024-04-15 09:00,attended,45-54,3,true,,-4503599627370497", "beyond ±4.5e15"},
		{"long text in an extra column", "9990001014,A1,2024-03-04 10:00,2024-04-15 09:00,attended,45-54,3,true,," + strings.Repeat("x", 257), "longer than 256 bytes"},
		{"every bad column named", "9990001014,A1,2024-13-04 10:00,2024-04-15 09:00,DNA,45-55,0,maybe,,Inf",
			"booked_at is not RFC 3339, \"YYYY-MM-DD HH:MM\" local time or a date \"YYYY-MM-DD\" (local time zone Europe/London); first_visit is not true/false, 1/0, yes/no or y/n; age_band is not one of 0-17, 18-24, 25-34, 35-44, 45-54, 55-64, 65-74, 75-84, 85+; deprivation_decile is not a whole number from 1 to 10; extra columns distance_km hold NaN, Inf or a number beyond ±4.5e15; outcome is not one of"},
		{"cancelled_at on an attendance", "9990001014,A1,2024-03-04 10:00,2024-04-15 09:00,attended,45-54,3,true,2024-04-01 10:00,1", "cancelled_at is set but"},
		{"cancelled before booking", "9990001014,A1,2024-03-04 10:00,2024-04-15 09:00,cancelled_by_patient,45-54,3,true,2024-03-01 10:00,1", "cancelled_at is before booked_at"},
		{"too few fields", "9990001014,A1,2024-03-04 10:00", "wrong number of fields"},
		{"bare quote", `9990001014,A"1,2024-03-04 10:00,2024-04-15 09:00,attended,45-54,3,true,,1`, "malformed CSV"},
		{"repeated appointment", "9990001081,A0,2024-03-05 10:00,2024-04-16 09:00,attended,45-54,3,true,,1", "repeats the row on line 2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := header + good + tt.row + "\n" + strings.Replace(good, "A0", "A9", 1)
			res, err := Import(strings.NewReader(in), testPseudonymiser(t), Options{})
			if err != nil {
				t.Fatal(err)
			}
			checkStream(t, res)
			if res.Rows != 3 || res.Imported != 2 || len(res.Bad) != 1 {
				t.Fatalf("rows %d, imported %d, bad %v; want 3, 2, one bad", res.Rows, res.Imported, res.Bad)
			}
			bad := res.Bad[0]
			if bad.Line != 3 || !strings.Contains(bad.Reason, tt.reason) {
				t.Errorf("bad row %v, want line 3 with %q", bad, tt.reason)
			}
			for _, secret := range []string{"9990001014", "9990001081", "xxxxxxxx"} {
				if strings.Contains(bad.Error(), secret) {
					t.Errorf("row error %q quotes a cell value", bad)
				}
			}
		})
	}
}

func TestImportTimesAndWalkIns(t *testing.T) {
	in := "patient_id,appointment_id,booked_at,appointment_start,outcome,age\n" +
		// Booked after the appointment happened (a walk-in recorded later the same day).
		"9990001014,W1,2024-03-04 15:00,2024-03-04 09:00,attended,40\n" +
		"9990001014,W2,2024-03-04T09:00:00Z,2024-03-05 09:00:30,,17\n" +
		"9990001014,W3,2024-10-27 01:30,2024-10-28 09:00,did_not_attend,85\n"
	res, err := Import(strings.NewReader(in), testPseudonymiser(t), Options{})
	if err != nil || len(res.Bad) != 0 {
		t.Fatal(err, res.Bad)
	}
	checkStream(t, res)
	got := map[string][]events.Appointment{}
	for _, ev := range res.Events {
		got[ev.AppointmentID] = append(got[ev.AppointmentID], ev)
	}
	if w := got["W1"]; !w[1].EventTime.Equal(w[0].EventTime) {
		t.Errorf("walk-in outcome at %s, want at the booking %s", w[1].EventTime, w[0].EventTime)
	}
	if b := got["W2"][0].Booking; b.AgeBand != "0-17" || !b.Start.Equal(time.Date(2024, 3, 5, 9, 0, 30, 0, time.UTC)) {
		t.Errorf("W2 booking %+v", b)
	}
	// 01:30 on the day the clocks go back happens twice; either reading is accepted (the
	// docs tell users to give an offset for such times).
	if b := got["W3"][0].Booking; b.AgeBand != "85+" || (!b.BookedAt.Equal(time.Date(2024, 10, 27, 0, 30, 0, 0, time.UTC)) &&
		!b.BookedAt.Equal(time.Date(2024, 10, 27, 1, 30, 0, 0, time.UTC))) {
		t.Errorf("W3 booking %+v", b)
	}
}

func TestAgeBand(t *testing.T) {
	tests := []struct {
		age  string
		want string
	}{
		{"0", "0-17"}, {"17", "0-17"}, {"18", "18-24"}, {"24", "18-24"}, {"25", "25-34"},
		{"34", "25-34"}, {"35", "35-44"}, {"64", "55-64"}, {"75", "75-84"}, {"84", "75-84"},
		{"85", "85+"}, {"130", "85+"}, {"131", ""}, {"-1", ""}, {"forty", ""}, {"40.5", ""},
	}
	for _, tt := range tests {
		got, err := ageBand("", tt.age)
		if got != tt.want || (err != nil) != (tt.want == "") {
			t.Errorf("ageBand(age=%s) = %q, %v; want %q", tt.age, got, err, tt.want)
		}
	}
}

func FuzzImport(f *testing.F) {
	sample, err := os.ReadFile("../../testdata/appointments_sample.csv")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(sample)
	f.Add([]byte(goodHeader + "\nx,y,2024-01-01 10:00,2024-01-02 10:00,attended,85+\n"))
	f.Add([]byte(goodHeader + ",cancelled_at,z\nx,y,2024-01-01T10:00:00Z,2024-01-02 10:00,cancelled_by_hospital,18-24,2024-01-01 12:00,1e308\n"))
	f.Add([]byte("\ufeffoutcome,age,appointment_start,booked_at,appointment_id,patient_id\n\"a\nb\",3,,,,\n"))
	f.Add([]byte(goodHeader + "\n\"unterminated"))
	ps := testPseudonymiser(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		res, err := Import(bytes.NewReader(data), ps, Options{})
		if err != nil {
			if !errors.Is(err, ErrHeader) {
				t.Fatalf("error from an in-memory reader is not a header error: %v", err)
			}
			return
		}
		checkStream(t, res)
	})
}

// A CSV in a shape the simulator never writes, as a trust's extract comes: date-only
// appointment days, text categories (sex F/M, area names in mixed case, a numeric code in
// the same column), no optional columns but age, rows after the extract was cut (still
// booked, no outcome), a date-only cancellation.
func TestImportTrustShape(t *testing.T) {
	in := "patient_id,appointment_id,booked_at,appointment_start,outcome,Age,Sex,Area,cancelled_at\n" +
		"9990000001,P1,2024-03-01 10:15,2024-03-05,did_not_attend,34,F,North Leeds,\n" +
		"9990000001,P2,2024-03-05 14:00,2024-03-05,attended,34,F, north  leeds ,\n" + // same-day booking
		"9990000002,P3,2024-03-28,2024-04-02,cancelled_by_patient,70,M,0,2024-03-31\n" +
		"9990000002,P4,2024-03-30 09:00,2024-04-08,,70,M,Bradford,\n" + // after the cut: still booked
		"9990000003,P5,2024-03-29 16:00,2024-03-29,attended,19,,,\n"
	res, err := Import(strings.NewReader(in), testPseudonymiser(t), Options{})
	if err != nil {
		t.Fatal(err)
	}
	checkStream(t, res)
	if res.Imported != 5 || len(res.Bad) != 0 {
		t.Fatalf("imported %d, bad %v", res.Imported, res.Bad)
	}
	byID := map[string][]events.Appointment{}
	for _, ev := range res.Events {
		byID[ev.AppointmentID] = append(byID[ev.AppointmentID], ev)
	}
	london, _ := time.LoadLocation("Europe/London")
	at := func(y int, m time.Month, d, h, min int) time.Time { return time.Date(y, m, d, h, min, 0, 0, london) }
	// A date-only day is read at 23:59 local (GMT in March, BST in April); a date-only
	// booked_at at 00:00.
	if b := byID["P1"][0].Booking; !b.Start.Equal(at(2024, 3, 5, 23, 59)) || b.Specialty != UnknownSpecialty || b.FirstVisit || b.Deprivation != nil {
		t.Errorf("P1 booking %+v", b)
	}
	if b := byID["P3"][0].Booking; !b.BookedAt.Equal(at(2024, 3, 28, 0, 0)) || !b.Start.Equal(at(2024, 4, 2, 23, 59)) || b.Start.Hour() != 22 {
		t.Errorf("P3 booked %s, start %s (want 23:59 BST = 22:59Z)", b.BookedAt, b.Start)
	}
	if c := byID["P3"][1]; c.Type != events.Cancelled || !c.EventTime.Equal(at(2024, 3, 31, 23, 59)) {
		t.Errorf("P3 date-only cancellation %s at %s", c.Type, c.EventTime)
	}
	// The DNA of the day is placed at its end, after the same-day booking P2: no booking
	// made earlier that day sees an outcome that may not have happened yet.
	if dna, p2 := byID["P1"][1], byID["P2"][0]; !dna.EventTime.After(p2.EventTime) {
		t.Errorf("P1's DNA at %s is not after P2's booking at %s", dna.EventTime, p2.EventTime)
	}
	if len(byID["P4"]) != 1 {
		t.Errorf("P4, booked after the cut, has %d events; want its booking only", len(byID["P4"]))
	}
	// Text categories: carried as scoring.TextCode of the normalised text, listed in Texts.
	if x := byID["P2"][0].Booking.Extra; x["sex"] != scoring.TextCode("f") || x["area"] != scoring.TextCode("North Leeds") {
		t.Errorf("P2 extras %v", x)
	}
	if x := byID["P3"][0].Booking.Extra; x["area"] != 0 {
		t.Errorf("a number in a text column stays a number: %v", x)
	}
	if _, ok := byID["P5"][0].Booking.Extra["sex"]; ok {
		t.Error("an empty text cell is not missing")
	}
	want := map[string][]string{"sex": {"f", "m"}, "area": {"bradford", "north leeds"}}
	if len(res.Texts) != 2 || !slices.Equal(res.Texts["sex"], want["sex"]) || !slices.Equal(res.Texts["area"], want["area"]) {
		t.Errorf("Texts %v, want %v", res.Texts, want)
	}

	// The same file with the data's times in UTC and date-only days at 09:00.
	res2, err := Import(strings.NewReader(in), testPseudonymiser(t), Options{TimeZone: "UTC", DateOnlyTime: "09:00"})
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range res2.Events {
		if ev.AppointmentID == "P1" && ev.Type == events.Booked {
			if b := ev.Booking; !b.BookedAt.Equal(time.Date(2024, 3, 1, 10, 15, 0, 0, time.UTC)) || !b.Start.Equal(time.Date(2024, 3, 5, 9, 0, 0, 0, time.UTC)) {
				t.Errorf("UTC/09:00: booked %s, start %s", b.BookedAt, b.Start)
			}
		}
	}
}

func TestOptionsValidate(t *testing.T) {
	for _, o := range []Options{{}, {TimeZone: "UTC"}, {TimeZone: "Europe/London", DateOnlyTime: "00:00"}, {DateOnlyTime: "9:30"}} {
		if err := o.Validate(); err != nil {
			t.Errorf("%+v: %v", o, err)
		}
	}
	for _, o := range []Options{{TimeZone: "Local"}, {TimeZone: "BST"}, {TimeZone: "Europe/Lundun"}, {DateOnlyTime: "24:00"}, {DateOnlyTime: "noon"}, {DateOnlyTime: "09:00:00"}} {
		err := o.Validate()
		if err == nil {
			t.Errorf("%+v accepted", o)
			continue
		}
		if _, ierr := Import(strings.NewReader(goodHeader+"\n"), testPseudonymiser(t), o); ierr == nil || errors.Is(ierr, ErrHeader) {
			t.Errorf("%+v: Import error %v, want the settings error", o, ierr)
		}
	}
}
