package uk.nhs.dnarisk.jvmpeer;

import java.io.ByteArrayOutputStream;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;

/**
 * A patient's history as featurestore.History keeps it (featurestore/history.go): the facts, in the
 * order they were applied, with Apply's idempotency rules and the retention/cap pruning, and the
 * binary codec of featurestore/codec.go that Redis holds.
 */
final class History {
  static final byte BOOKED = 'b', RESCHEDULED = 'r', PATIENT_CANCEL = 'p', HOSPITAL_CANCEL = 'h',
      ATTENDED = 'a', DNA = 'd';
  static final int CODEC_VERSION = 1;
  static final int MAX_ENCODED_FACTS = 100_000;

  /** One fact: at and start in unix seconds, start 0 unless the fact is a booking. */
  record Fact(String appointment, byte kind, int version, long at, long start) {
    boolean isOutcome() {
      return kind == ATTENDED || kind == DNA;
    }

    boolean isBooking() {
      return kind == BOOKED || kind == RESCHEDULED;
    }
  }

  /** How much history is kept per patient (featurestore.Policy with its defaults). */
  record Policy(long retentionSeconds, int maxFacts) {
    static final Policy DEFAULT = new Policy(3L * 365 * 24 * 3600, 1000);
  }

  long rev;
  List<Fact> facts;

  History(long rev, List<Fact> facts) {
    this.rev = rev;
    this.facts = facts;
  }

  static Fact factOf(Appointment ev) {
    byte kind = switch (ev.type) {
      case Appointment.BOOKED -> BOOKED;
      case Appointment.RESCHEDULED -> RESCHEDULED;
      case Appointment.ATTENDED -> ATTENDED;
      case Appointment.DID_NOT_ATTEND -> DNA;
      default -> ev.cancelledBy.equals("patient") ? PATIENT_CANCEL : HOSPITAL_CANCEL;
    };
    long start = 0;
    if (ev.booking != null && (kind == BOOKED || kind == RESCHEDULED)) {
      start = Math.floorDiv(ev.booking.startNs, Appointment.NS);
    }
    return new Fact(ev.appointmentId, kind, ev.version, ev.at, start);
  }

  /** Records f; false if it is already known (featurestore.History.Apply). */
  boolean apply(Fact f, Policy p) {
    if (f.isOutcome()) {
      Fact latest = null;
      for (Fact g : facts) {
        if (g.appointment.equals(f.appointment) && g.isOutcome() && (latest == null || g.at >= latest.at)) {
          latest = g;
        }
      }
      if (latest != null && (latest.at >= f.at || latest.kind == f.kind)) {
        return false;
      }
    } else {
      for (Fact g : facts) {
        if (g.appointment.equals(f.appointment) && g.kind == f.kind && (!f.isBooking() || g.version == f.version)) {
          return false;
        }
      }
    }
    facts.add(f);
    prune(f.at, p);
    return true;
  }

  private void prune(long now, Policy p) {
    long cutoff = now - p.retentionSeconds;
    List<Fact> keep = new ArrayList<>(facts.size());
    for (Fact f : facts) {
      if (f.at >= cutoff) {
        keep.add(f);
      }
    }
    int over = keep.size() - p.maxFacts;
    if (over > 0) {
      keep = new ArrayList<>(keep.subList(over, keep.size()));
    }
    facts = keep;
  }

  boolean cancelled(String appt) {
    for (Fact f : facts) {
      if (f.appointment.equals(appt) && (f.kind == PATIENT_CANCEL || f.kind == HOSPITAL_CANCEL)) {
        return true;
      }
    }
    return false;
  }

  int latestVersion(String appt) {
    int v = 0;
    for (Fact f : facts) {
      if (f.appointment.equals(appt) && f.isBooking() && f.version > v) {
        v = f.version;
      }
    }
    return v;
  }

  // ------------------------------------------------------------------ codec (featurestore/codec.go)

  static byte[] encode(List<Fact> facts) {
    ByteArrayOutputStream out = new ByteArrayOutputStream(16 + facts.size() * 24);
    out.write(CODEC_VERSION);
    putUvarint(out, facts.size());
    long prev = 0;
    for (Fact f : facts) {
      byte[] a = f.appointment.getBytes(StandardCharsets.UTF_8);
      putUvarint(out, a.length);
      out.write(a, 0, a.length);
      out.write(f.kind);
      putUvarint(out, f.version);
      putVarint(out, f.at - prev);
      putVarint(out, f.start);
      prev = f.at;
    }
    return out.toByteArray();
  }

  private static void putUvarint(ByteArrayOutputStream out, long x) {
    while (Long.compareUnsigned(x, 0x80) >= 0) {
      out.write((int) (x & 0x7F) | 0x80);
      x >>>= 7;
    }
    out.write((int) x);
  }

  private static void putVarint(ByteArrayOutputStream out, long x) {
    putUvarint(out, (x << 1) ^ (x >> 63)); // zigzag, as Go's AppendVarint
  }

  /** A history's facts field that cannot be read. */
  static final class Corrupt extends Exception {
    Corrupt(String msg) {
      super("corrupt history encoding: " + msg);
    }
  }

  static List<Fact> decode(byte[] b) throws Corrupt {
    List<Fact> facts = new ArrayList<>();
    if (b == null || b.length == 0) {
      return facts;
    }
    if (b[0] != CODEC_VERSION) {
      throw new Corrupt("format version " + b[0] + ", want " + CODEC_VERSION);
    }
    int[] pos = {1};
    long n = uvarint(b, pos);
    if (Long.compareUnsigned(n, MAX_ENCODED_FACTS) > 0 || n > b.length - 1) {
      throw new Corrupt("fact count");
    }
    long prev = 0;
    for (int k = 0; k < n; k++) {
      long len = uvarint(b, pos);
      if (Long.compareUnsigned(len, b.length - pos[0]) > 0) {
        throw new Corrupt("fact " + k + " appointment id");
      }
      String appt = new String(b, pos[0], (int) len, StandardCharsets.UTF_8);
      pos[0] += (int) len;
      if (pos[0] >= b.length) {
        throw new Corrupt("fact " + k + " truncated");
      }
      byte kind = b[pos[0]++];
      long version = uvarint(b, pos);
      if (Long.compareUnsigned(version, 1L << 31) > 0) {
        throw new Corrupt("fact " + k + " version");
      }
      long ux = uvarint(b, pos);
      long d = (ux >>> 1) ^ -(ux & 1);
      long us = uvarint(b, pos);
      long start = (us >>> 1) ^ -(us & 1);
      prev += d;
      facts.add(new Fact(appt, kind, (int) version, prev, start));
    }
    if (pos[0] != b.length) {
      throw new Corrupt((b.length - pos[0]) + " trailing bytes");
    }
    return facts;
  }

  /** Go's binary.Uvarint at b[pos[0]:], advancing pos[0]. */
  private static long uvarint(byte[] b, int[] pos) throws Corrupt {
    long x = 0;
    int shift = 0;
    int i = pos[0];
    for (int j = 0; j < 10 && i + j < b.length; j++) {
      int c = b[i + j] & 0xFF;
      if (j == 9 && c > 1) {
        throw new Corrupt("varint overflows 64 bits");
      }
      x |= (long) (c & 0x7F) << shift;
      if (c < 0x80) {
        pos[0] = i + j + 1;
        return x;
      }
      shift += 7;
    }
    throw new Corrupt("truncated varint");
  }
}
