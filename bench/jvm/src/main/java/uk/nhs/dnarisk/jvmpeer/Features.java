package uk.nhs.dnarisk.jvmpeer;

import java.time.Instant;
import java.time.ZoneId;
import java.time.ZonedDateTime;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.regex.Pattern;

/**
 * The point-in-time features of a booking (featurestore.Compute, featurestore/features.go): only
 * facts known before the booking's event time, none about its own appointment.
 */
final class Features {
  static final List<String> NAMES = List.of("lead_time_days", "first_visit", "specialty", "age_band",
      "deprivation_decile", "weekday", "hour", "booking_version", "prior_appointments", "prior_dna",
      "prior_attended", "prior_dna_rate", "dna_last_365d", "days_since_last_dna",
      "days_since_last_attended", "prior_patient_cancellations", "prior_hospital_cancellations",
      "prior_reschedules", "open_bookings");
  static final int N = 19;
  private static final long DAY = 24 * 3600;
  private static final ZoneId LONDON = ZoneId.of("Europe/London");
  private static final Pattern SPECIALTY = Pattern.compile("[+-]?[0-9]+"); // what Go's strconv.Atoi accepts

  private static final class ApptState {
    byte outcome; // 0 when none
    long outcomeAt;
    boolean cancelled;
    int version; // highest booking version seen, 0 if none
    long start;
  }

  private Features() {}

  static double[] compute(Appointment ev, History h) {
    double[] v = new double[N];
    Appointment.Booking b = ev.booking;
    long asOf = ev.at;

    // time.Duration.Hours() of start - booked_at, then / 24
    long d = b.startNs - b.bookedNs;
    v[0] = ((double) (d / Appointment.HOUR_NS) + (double) (d % Appointment.HOUR_NS) / (60 * 60 * 1e9)) / 24;
    if (v[0] < 0) {
      v[0] = 0;
    }
    v[1] = b.firstVisit ? 1 : 0;
    v[2] = Double.NaN;
    if (SPECIALTY.matcher(b.specialty).matches()) {
      try {
        long code = Long.parseLong(b.specialty);
        if (code >= 0 && code < 1 << 20) {
          v[2] = code;
        }
      } catch (NumberFormatException e) {
        // out of int64 range: Atoi's error, so missing
      }
    }
    v[3] = Appointment.AGE_BANDS.indexOf(b.ageBand);
    v[4] = b.deprivation == null ? Double.NaN : b.deprivation;
    ZonedDateTime local = Instant.ofEpochSecond(Math.floorDiv(b.startNs, Appointment.NS)).atZone(LONDON);
    v[5] = local.getDayOfWeek().getValue() - 1; // Monday = 0
    v[6] = local.getHour();
    v[7] = ev.version;

    int dna = 0, att = 0, dna365 = 0, pc = 0, hc = 0, resched = 0;
    long lastDna = Long.MIN_VALUE, lastAtt = Long.MIN_VALUE;
    Map<String, ApptState> appts = new HashMap<>();
    if (h != null) {
      for (History.Fact f : h.facts) {
        if (f.at() >= asOf || f.appointment().equals(ev.appointmentId)) {
          continue;
        }
        ApptState a = appts.computeIfAbsent(f.appointment(), k -> new ApptState());
        switch (f.kind()) {
          case History.ATTENDED, History.DNA -> {
            a.outcome = f.kind();
            a.outcomeAt = f.at();
          }
          case History.PATIENT_CANCEL -> {
            pc++;
            a.cancelled = true;
          }
          case History.HOSPITAL_CANCEL -> {
            hc++;
            a.cancelled = true;
          }
          case History.RESCHEDULED, History.BOOKED -> {
            if (f.kind() == History.RESCHEDULED) {
              resched++;
            }
            if (f.version() >= a.version) {
              a.version = f.version();
              a.start = f.start();
            }
          }
          default -> {}
        }
      }
    }
    int open = 0;
    for (ApptState a : appts.values()) {
      if (a.outcome == History.DNA) {
        dna++;
        if (a.outcomeAt > asOf - 365 * DAY) {
          dna365++;
        }
        lastDna = Math.max(lastDna, a.outcomeAt);
      } else if (a.outcome == History.ATTENDED) {
        att++;
        lastAtt = Math.max(lastAtt, a.outcomeAt);
      } else if (a.version > 0 && !a.cancelled && a.start > asOf) {
        open++;
      }
    }
    v[8] = dna + att;
    v[9] = dna;
    v[10] = att;
    v[11] = dna + att > 0 ? (double) dna / (double) (dna + att) : Double.NaN;
    v[12] = dna365;
    v[13] = lastDna == Long.MIN_VALUE ? Double.NaN : (double) (asOf - lastDna) / DAY;
    v[14] = lastAtt == Long.MIN_VALUE ? Double.NaN : (double) (asOf - lastAtt) / DAY;
    v[15] = pc;
    v[16] = hc;
    v[17] = resched;
    v[18] = open;
    return v;
  }
}
