package uk.nhs.dnarisk.jvmpeer;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.math.BigInteger;
import java.nio.ByteBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.time.DateTimeException;
import java.time.LocalDate;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * One appointment.v1 event, decoded and validated as events.Appointment.Validate does (docs/events.md);
 * bench/peer/peer.py's decode_appointment is the line-by-line companion. {@link #decode} throws
 * {@link Invalid} with the dead-letter reason and reason code.
 */
final class Appointment {
  static final String SCHEMA = "appointment.v1";
  static final String BOOKED = "booked", RESCHEDULED = "rescheduled", CANCELLED = "cancelled",
      ATTENDED = "attended", DID_NOT_ATTEND = "did_not_attend";
  static final List<String> AGE_BANDS =
      List.of("0-17", "18-24", "25-34", "35-44", "45-54", "55-64", "65-74", "75-84", "85+");
  static final long NS = 1_000_000_000L, HOUR_NS = 3600 * NS;
  static final int MAX_EVENT_BYTES = 64 << 10;
  static final long MIN_NS = 631152000L * NS, MAX_NS = 4102444800L * NS; // 1990..2100
  static final long THREE_YEARS_NS = 3L * 365 * 24 * HOUR_NS;
  static final long GO_ZERO_NS = Long.MIN_VALUE; // Go's zero time, refused by the range check

  /** A refused event: the message is the dead-letter reason, code its reason_code. */
  static final class Invalid extends Exception {
    final String code;

    Invalid(String detail) {
      this(detail, "contract_violation");
    }

    Invalid(String detail, String code) {
      super("invalid appointment event: " + detail, null, false, false);
      this.code = code;
    }
  }

  static final class Booking {
    String specialty, clinic, ageBand, startText, bookedText;
    boolean firstVisit, sms, optOut;
    long startNs, bookedNs;
    Integer deprivation;
    Map<String, Double> extra;
  }

  String eventId, type, appointmentId, patient, cancelledBy;
  long at; // event_time in unix seconds, as featurestore.FactOf stamps it
  int version;
  Booking booking;

  private static final ObjectMapper JSON =
      new ObjectMapper().enable(DeserializationFeature.FAIL_ON_TRAILING_TOKENS);
  private static final Pattern PSEUDONYM = Pattern.compile("[0-9a-f]{64}");
  private static final Pattern RFC3339 = Pattern.compile(
      "(\\d{4})-(\\d{2})-(\\d{2})T(\\d{2}):(\\d{2}):(\\d{2})(?:\\.(\\d+))?(?:(Z)|([+-])(\\d{2}):(\\d{2}))");
  private static final Set<String> EVENT_FIELDS = Set.of("schema", "event_id", "type", "event_time",
      "appointment_id", "booking_version", "patient", "cancelled_by", "booking");
  private static final Set<String> BOOKING_FIELDS = Set.of("specialty", "clinic", "first_visit",
      "start", "booked_at", "age_band", "deprivation_decile", "contact", "extra");
  private static final Set<String> CONTACT_FIELDS = Set.of("sms", "opt_out");

  static Appointment decode(byte[] value) throws Invalid {
    if (value.length > MAX_EVENT_BYTES) {
      throw new Invalid("event is " + value.length + " bytes, limit " + MAX_EVENT_BYTES, "too_large");
    }
    try {
      StandardCharsets.UTF_8.newDecoder().onMalformedInput(CodingErrorAction.REPORT)
          .onUnmappableCharacter(CodingErrorAction.REPORT).decode(ByteBuffer.wrap(value));
    } catch (CharacterCodingException e) {
      throw new Invalid("event is not valid UTF-8", "not_utf8");
    }
    JsonNode root;
    try {
      root = JSON.readTree(value);
    } catch (JsonProcessingException e) {
      throw new Invalid("json: " + e.getOriginalMessage(), "malformed_json");
    } catch (java.io.IOException e) {
      throw new Invalid("json: " + e.getMessage(), "malformed_json");
    }
    if (root == null || root.isMissingNode()) {
      throw new Invalid("json: empty input", "malformed_json");
    }
    Map<String, JsonNode> d = fields(root, EVENT_FIELDS, "event");
    Appointment ev = new Appointment();
    long eventNs = time(d, "event_time");
    String eventText = text(d, "event_time");
    Long v = integer(d, "booking_version");
    ev.version = v == null ? 0 : (int) Math.max(Integer.MIN_VALUE, Math.min(Integer.MAX_VALUE, v));
    ev.eventId = str(d, "event_id");
    ev.type = str(d, "type");
    ev.at = Math.floorDiv(eventNs, NS);
    ev.appointmentId = str(d, "appointment_id");
    ev.patient = str(d, "patient");
    ev.cancelledBy = str(d, "cancelled_by");
    ev.booking = booking(d.get("booking"));
    String schema = str(d, "schema");
    // The checks of events.Appointment.Validate, in its order.
    if (!schema.equals(SCHEMA)) {
      throw new Invalid("schema \"" + schema + "\", want \"" + SCHEMA + "\"", "unknown_schema");
    }
    if (ev.eventId.isEmpty() || nbytes(ev.eventId) > 128) {
      throw new Invalid("event_id missing or longer than 128");
    }
    if (ev.appointmentId.isEmpty() || nbytes(ev.appointmentId) > 128) {
      throw new Invalid("appointment_id missing or longer than 128");
    }
    if (!PSEUDONYM.matcher(ev.patient).matches()) {
      throw new Invalid("patient must be a 64-hex-digit pseudonym");
    }
    if (v == null || v < 1 || v > 10000) {
      throw new Invalid("booking_version " + (v == null ? 0 : v) + " out of range 1..10000");
    }
    checkTime("event_time", eventNs, eventText);
    switch (ev.type) {
      case BOOKED, RESCHEDULED -> {
        if (ev.booking == null) {
          throw new Invalid(ev.type + " event without booking facts");
        }
        if (ev.type.equals(BOOKED) && ev.version != 1) {
          throw new Invalid("booked event with booking_version " + ev.version + ", want 1");
        }
      }
      case CANCELLED -> {
        if (!ev.cancelledBy.equals("patient") && !ev.cancelledBy.equals("hospital")) {
          throw new Invalid("cancelled_by \"" + ev.cancelledBy + "\", want patient or hospital");
        }
      }
      case ATTENDED, DID_NOT_ATTEND -> {}
      default -> throw new Invalid("unknown type \"" + ev.type + "\"");
    }
    if (ev.booking != null) {
      validate(ev.booking);
    }
    return ev;
  }

  boolean isBooking() {
    return type.equals(BOOKED) || type.equals(RESCHEDULED);
  }

  private static Booking booking(JsonNode node) throws Invalid {
    if (node == null || node.isNull()) {
      return null;
    }
    Map<String, JsonNode> b = fields(node, BOOKING_FIELDS, "booking");
    JsonNode contact = b.get("contact");
    Map<String, JsonNode> c =
        contact == null || contact.isNull() ? Map.of() : fields(contact, CONTACT_FIELDS, "booking.contact");
    Booking out = new Booking();
    JsonNode extra = b.get("extra");
    if (extra != null && !extra.isNull()) {
      if (!extra.isObject()) {
        throw new Invalid("json: booking.extra is not an object");
      }
      out.extra = new LinkedHashMap<>();
      for (Iterator<Map.Entry<String, JsonNode>> it = extra.fields(); it.hasNext(); ) {
        Map.Entry<String, JsonNode> e = it.next();
        JsonNode x = e.getValue();
        if (x.isNull()) {
          out.extra.put(e.getKey(), 0.0);
        } else if (x.isNumber()) {
          out.extra.put(e.getKey(), x.doubleValue());
        } else {
          throw new Invalid("json: booking.extra['" + e.getKey() + "'] is not a number");
        }
      }
    }
    out.startNs = time(b, "start");
    out.startText = text(b, "start");
    out.bookedNs = time(b, "booked_at");
    out.bookedText = text(b, "booked_at");
    out.specialty = str(b, "specialty");
    out.clinic = str(b, "clinic");
    out.firstVisit = bool(b, "first_visit");
    out.ageBand = str(b, "age_band");
    Long dep = integer(b, "deprivation_decile");
    out.deprivation = dep == null ? null : (int) Math.max(Integer.MIN_VALUE, Math.min(Integer.MAX_VALUE, dep));
    out.sms = bool(c, "sms");
    out.optOut = bool(c, "opt_out");
    return out;
  }

  private static void validate(Booking b) throws Invalid {
    if (b.specialty.isEmpty() || nbytes(b.specialty) > 16) {
      throw new Invalid("booking.specialty missing or longer than 16");
    }
    if (nbytes(b.clinic) > 64) {
      throw new Invalid("booking.clinic longer than 64");
    }
    checkTime("booking.start", b.startNs, b.startText);
    checkTime("booking.booked_at", b.bookedNs, b.bookedText);
    if (b.startNs < b.bookedNs - 24 * HOUR_NS) {
      throw new Invalid("booking.start " + b.startText + " is before booked_at " + b.bookedText);
    }
    if (b.startNs - b.bookedNs > THREE_YEARS_NS) {
      throw new Invalid("booking lead time over three years");
    }
    if (!AGE_BANDS.contains(b.ageBand)) {
      throw new Invalid("booking.age_band \"" + b.ageBand + "\" not one of " + AGE_BANDS);
    }
    if (b.deprivation != null && (b.deprivation < 1 || b.deprivation > 10)) {
      throw new Invalid("booking.deprivation_decile " + b.deprivation + " out of range 1..10");
    }
    if (b.extra != null) {
      if (b.extra.size() > 64) {
        throw new Invalid("booking.extra has " + b.extra.size() + " entries, limit 64");
      }
      for (Map.Entry<String, Double> e : b.extra.entrySet()) {
        if (!Double.isFinite(e.getValue())) {
          throw new Invalid("booking.extra['" + e.getKey() + "'] is not a finite number");
        }
      }
    }
  }

  /**
   * The object's fields, refusing unknown ones. Like Go's encoding/json, a key that is not an exact
   * field name may still match one case-insensitively, and null means "absent".
   */
  private static Map<String, JsonNode> fields(JsonNode obj, Set<String> known, String where) throws Invalid {
    if (!obj.isObject()) {
      throw new Invalid("json: " + where + " is not an object");
    }
    Map<String, JsonNode> out = new LinkedHashMap<>();
    for (Iterator<Map.Entry<String, JsonNode>> it = obj.fields(); it.hasNext(); ) {
      Map.Entry<String, JsonNode> e = it.next();
      String k = e.getKey();
      String name = known.contains(k) ? k : null;
      if (name == null) {
        String lower = k.toLowerCase(Locale.ROOT);
        name = known.contains(lower) ? lower : null;
      }
      if (name == null) {
        throw new Invalid("json: unknown field \"" + k + "\"");
      }
      out.put(name, e.getValue());
    }
    return out;
  }

  private static String str(Map<String, JsonNode> d, String name) throws Invalid {
    JsonNode v = d.get(name);
    if (v == null || v.isNull()) {
      return "";
    }
    if (!v.isTextual()) {
      throw new Invalid("json: " + name + " is not a string");
    }
    return replaceLoneSurrogates(v.textValue());
  }

  /** Go's decoder turns a lone surrogate escape into U+FFFD. */
  private static String replaceLoneSurrogates(String s) {
    StringBuilder sb = null;
    for (int i = 0; i < s.length(); i++) {
      char ch = s.charAt(i);
      boolean lone = false;
      if (Character.isHighSurrogate(ch)) {
        if (i + 1 < s.length() && Character.isLowSurrogate(s.charAt(i + 1))) {
          if (sb != null) {
            sb.append(ch).append(s.charAt(i + 1));
          }
          i++;
          continue;
        }
        lone = true;
      } else if (Character.isLowSurrogate(ch)) {
        lone = true;
      }
      if (lone && sb == null) {
        sb = new StringBuilder(s.length()).append(s, 0, i);
      }
      if (sb != null) {
        sb.append(lone ? '\ufffd' : ch);
      }
    }
    return sb == null ? s : sb.toString();
  }

  static int nbytes(String s) {
    return s.getBytes(StandardCharsets.UTF_8).length;
  }

  private static Long integer(Map<String, JsonNode> d, String name) throws Invalid {
    JsonNode v = d.get(name);
    if (v == null || v.isNull()) {
      return null;
    }
    if (!v.isIntegralNumber()) { // JSON 1.0 or 1e0 is not an int to Go either
      throw new Invalid("json: " + name + " is not an integer");
    }
    BigInteger b = v.bigIntegerValue();
    if (b.bitLength() > 63) {
      throw new Invalid("json: " + name + " overflows int64");
    }
    return b.longValue();
  }

  private static boolean bool(Map<String, JsonNode> d, String name) throws Invalid {
    JsonNode v = d.get(name);
    if (v == null || v.isNull()) {
      return false;
    }
    if (!v.isBoolean()) {
      throw new Invalid("json: " + name + " is not a boolean");
    }
    return v.booleanValue();
  }

  private static String text(Map<String, JsonNode> d, String name) {
    JsonNode v = d.get(name);
    return v == null || !v.isTextual() ? "" : v.textValue();
  }

  private static long time(Map<String, JsonNode> d, String name) throws Invalid {
    JsonNode v = d.get(name);
    if (v == null || v.isNull()) {
      return GO_ZERO_NS;
    }
    if (!v.isTextual()) {
      throw new Invalid("json: " + name + " is not a string");
    }
    try {
      return parseTime(v.textValue());
    } catch (IllegalArgumentException | DateTimeException | ArithmeticException e) {
      throw new Invalid("json: " + name + ": " + e.getMessage());
    }
  }

  /** An RFC 3339 time, as Go's time.Time JSON decoding reads it, in unix nanoseconds. */
  static long parseTime(String s) {
    Matcher m = RFC3339.matcher(s);
    if (!m.matches()) {
      throw new IllegalArgumentException("'" + s + "' is not an RFC 3339 time");
    }
    int y = Integer.parseInt(m.group(1)), mo = Integer.parseInt(m.group(2)), dd = Integer.parseInt(m.group(3));
    int hh = Integer.parseInt(m.group(4)), mi = Integer.parseInt(m.group(5)), ss = Integer.parseInt(m.group(6));
    if (hh > 23 || mi > 59 || ss > 59) {
      throw new IllegalArgumentException("'" + s + "': clock out of range");
    }
    if (y < 1) {
      throw new IllegalArgumentException("'" + s + "': year out of range");
    }
    long days = LocalDate.of(y, mo, dd).toEpochDay(); // DateTimeException on a bad date
    long sec = days * 86400 + hh * 3600L + mi * 60L + ss;
    if (m.group(8) == null) {
      int oh = Integer.parseInt(m.group(10)), om = Integer.parseInt(m.group(11));
      if (oh > 23 || om > 59) {
        throw new IllegalArgumentException("'" + s + "': offset out of range");
      }
      long off = oh * 3600L + om * 60L;
      sec -= m.group(9).equals("+") ? off : -off;
    }
    String frac = m.group(7) == null ? "0" : m.group(7);
    if (frac.length() > 9) {
      frac = frac.substring(0, 9);
    }
    StringBuilder f = new StringBuilder(frac);
    while (f.length() < 9) {
      f.append('0');
    }
    return Math.addExact(Math.multiplyExact(sec, NS), Long.parseLong(f.toString()));
  }

  private static void checkTime(String name, long t, String text) throws Invalid {
    if (t < MIN_NS || t >= MAX_NS) {
      throw new Invalid(name + " " + (text.isEmpty() ? "0001-01-01T00:00:00Z" : text) + " outside 1990..2100");
    }
  }
}
