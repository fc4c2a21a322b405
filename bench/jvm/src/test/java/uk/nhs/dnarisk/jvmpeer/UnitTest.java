package uk.nhs.dnarisk.jvmpeer;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.HexFormat;
import java.util.List;
import org.junit.jupiter.api.Test;

/** The pieces parity rests on; the end-to-end parity with the Go scorer is bench/jvm/parity_test.go. */
class UnitTest {
  /** scoring/calibration_test.go's table: numpy.interp's values. */
  @Test
  void calibrationIsNumpyInterp() {
    double[] xs = {0.01, 0.1, 0.2, 0.5}, ys = {0.02, 0.05, 0.05, 0.6};
    double[][] cases = {{0, 0.02}, {0.005, 0.02}, {0.01, 0.02}, {0.055, 0.035}, {0.1, 0.05}, {0.15, 0.05},
        {0.2, 0.05}, {0.35, 0.325}, {0.5, 0.6}, {0.9, 0.6}, {1, 0.6}};
    for (double[] c : cases) {
      assertEquals(c[1], Model.interp(c[0], xs, ys), 1e-15, "interp(" + c[0] + ")");
    }
    assertTrue(Double.isNaN(Model.interp(Double.NaN, xs, ys)));
  }

  /** The codec: negative deltas, multi-byte varints, UTF-8 ids, and what a corrupt field looks like. */
  @Test
  void codecMatchesGo() throws Exception {
    List<History.Fact> facts = List.of(new History.Fact("A1", History.BOOKED, 1, 1_700_000_000L, 1_700_100_000L),
        new History.Fact("A1", History.DNA, 1, 1_699_000_000L, 0), new History.Fact("é", History.RESCHEDULED, 300, -5, -1));
    byte[] b = History.encode(facts);
    // What Go's appendFacts writes for them (here as bench/peer's encode_facts computes it, which
    // test_peer.py holds to Go's bytes; parity_test.go compares the peer's Redis bytes with Go's).
    assertEquals("0103024131620180c49fd50cc0deabd50c0241316401ff887a0002c3a972ac0289bba5d40c01",
        HexFormat.of().formatHex(b));
    assertEquals(facts, History.decode(b));
    assertEquals(List.of(), History.decode(new byte[0]));
    for (String bad : new String[] {"0200", "0105", "010105", HexFormat.of().formatHex(b) + "00"}) {
      assertThrows(History.Corrupt.class, () -> History.decode(HexFormat.of().parseHex(bad)), bad);
    }
  }

  /** History.Apply's idempotency: a replayed outcome, a correction, an older outcome, a replayed booking. */
  @Test
  void applyIsIdempotent() {
    History h = new History(0, new ArrayList<>());
    History.Policy p = History.Policy.DEFAULT;
    assertTrue(h.apply(new History.Fact("A", History.BOOKED, 1, 100, 500), p));
    assertTrue(!h.apply(new History.Fact("A", History.BOOKED, 1, 100, 500), p));
    assertTrue(h.apply(new History.Fact("A", History.DNA, 1, 600, 0), p));
    assertTrue(!h.apply(new History.Fact("A", History.DNA, 1, 700, 0), p)); // same kind
    assertTrue(!h.apply(new History.Fact("A", History.ATTENDED, 1, 600, 0), p)); // not newer
    assertTrue(h.apply(new History.Fact("A", History.ATTENDED, 1, 601, 0), p)); // a correction
    assertEquals(3, h.facts.size());
  }

  @Test
  void parseTimeAsGo() {
    assertEquals(1_738_400_400_000_000_000L, Appointment.parseTime("2025-02-01T09:00:00Z"));
    assertEquals(1_738_380_600_500_000_000L, Appointment.parseTime("2025-02-01T09:00:00.5+05:30"));
    assertEquals(1_738_400_400_123_456_789L, Appointment.parseTime("2025-02-01T09:00:00.1234567899Z"));
    assertThrows(RuntimeException.class, () -> Appointment.parseTime("2025-02-30T09:00:00Z"));
    assertThrows(RuntimeException.class, () -> Appointment.parseTime("2025-02-01 09:00:00Z"));
  }
}
