package uk.nhs.dnarisk.jvmpeer;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.github.metarank.lightgbm4j.LGBMException;
import java.nio.charset.StandardCharsets;
import java.time.Instant;
import java.util.Arrays;
import java.util.Base64;
import java.util.Map;
import java.util.concurrent.atomic.AtomicLong;
import org.apache.kafka.common.header.internals.RecordHeaders;
import org.apache.kafka.streams.processor.api.Processor;
import org.apache.kafka.streams.processor.api.ProcessorContext;
import org.apache.kafka.streams.processor.api.Record;
import org.apache.kafka.streams.processor.api.RecordMetadata;

/**
 * The job of scorer.Processor, one record at a time (the Processor API's unit): decode and validate,
 * dead-letter what is refused, load the patient's history, score a booking that is neither cancelled
 * nor superseded from the history as it stands, publish its risk.v1 event, and apply the event to the
 * history. Histories are saved, and offsets committed, by Kafka Streams' commit (see {@link Histories}).
 */
final class ScoreProcessor implements Processor<byte[], byte[], byte[], byte[]> {
  static final String RISK_SINK = "risk", DLQ_SINK = "dead-letters";
  static final AtomicLong CONSUMED = new AtomicLong(), SCORED = new AtomicLong(), SKIPPED = new AtomicLong(),
      DEAD_LETTERED = new AtomicLong(), APPLIED = new AtomicLong();
  private static final ObjectMapper JSON = new ObjectMapper();
  private static final byte[] RISK_SCHEMA = "risk.v1".getBytes(StandardCharsets.UTF_8);
  private static final byte[] DLQ_SCHEMA = "deadletter.v1".getBytes(StandardCharsets.UTF_8);

  private final Config config;
  private final Model model;
  private final History.Policy policy;
  private ProcessorContext<byte[], byte[]> ctx;
  private Histories histories;
  private Map<String, History> dirty; // this task's changed histories, until the next commit saves them

  ScoreProcessor(Config config, Model model) {
    this.config = config;
    this.model = model;
    this.policy = config.policy();
  }

  @Override
  public void init(ProcessorContext<byte[], byte[]> context) {
    ctx = context;
    histories = Histories.forThisThread(config);
    dirty = histories.openTask();
  }

  @Override
  public void close() {
    int dropped = histories.closeTask(dirty);
    if (dropped > 0) {
      System.err.printf("task closed without a commit: %d unsaved histories dropped (their events will be consumed again)%n", dropped);
    }
  }

  @Override
  public void process(Record<byte[], byte[]> record) {
    CONSUMED.incrementAndGet();
    byte[] value = record.value() == null ? new byte[0] : record.value();
    Appointment ev;
    try {
      ev = Appointment.decode(value);
      byte[] key = record.key() == null ? new byte[0] : record.key();
      if (!Arrays.equals(key, ev.patient.getBytes(StandardCharsets.UTF_8))) {
        throw new Appointment.Invalid(
            "message key is not the event's patient pseudonym (per-patient order depends on it)", "key_mismatch");
      }
    } catch (Appointment.Invalid e) {
      deadLetter(record, e);
      return;
    }
    try {
      History h = histories.get(dirty, ev.patient);
      if (ev.isBooking()) {
        if (h.cancelled(ev.appointmentId) || h.latestVersion(ev.appointmentId) > ev.version) {
          SKIPPED.incrementAndGet();
        } else {
          double[] x = model.vector(ev, Features.compute(ev, h));
          publish(ev, x, model.score(x));
        }
      }
      if (h.apply(History.factOf(ev), policy)) {
        APPLIED.incrementAndGet();
        dirty.put(ev.patient, h);
      }
    } catch (History.Corrupt | LGBMException e) {
      throw new IllegalStateException(e.getMessage(), e); // fails the task: nothing more is committed
    }
  }

  private void publish(Appointment ev, double[] x, double p) {
    ObjectNode r = JSON.createObjectNode();
    r.put("schema", "risk.v1");
    r.put("appointment_id", ev.appointmentId);
    r.put("booking_version", ev.version);
    r.put("patient", ev.patient);
    r.put("source_event_id", ev.eventId);
    r.put("appointment_start", ev.booking.startText);
    r.put("probability", p);
    r.put("risk_band", model.band(p));
    r.put("model_id", model.id);
    r.put("scored_at", Instant.now().toString());
    ObjectNode f = r.putObject("features");
    for (Map.Entry<String, Double> e : model.featureMap(x).entrySet()) {
      f.put(e.getKey(), e.getValue());
    }
    byte[] key = ev.patient.getBytes(StandardCharsets.UTF_8);
    RecordHeaders headers = new RecordHeaders();
    headers.add("schema", RISK_SCHEMA);
    // The wall clock, not the input's timestamp: a risk event is stamped when it is written.
    ctx.forward(new Record<>(key, bytes(r), System.currentTimeMillis(), headers), RISK_SINK);
    SCORED.incrementAndGet();
  }

  private void deadLetter(Record<byte[], byte[]> record, Appointment.Invalid e) {
    ObjectNode d = JSON.createObjectNode();
    RecordMetadata m = ctx.recordMetadata().orElseThrow();
    d.put("schema", "deadletter.v1");
    d.put("reason_code", e.code);
    d.put("reason", e.getMessage());
    d.put("topic", m.topic());
    d.put("partition", m.partition());
    d.put("offset", m.offset());
    Base64.Encoder b64 = Base64.getEncoder();
    if (record.key() == null) {
      d.putNull("key");
    } else {
      d.put("key", b64.encodeToString(record.key()));
    }
    if (record.value() == null) {
      d.putNull("value");
    } else {
      d.put("value", b64.encodeToString(record.value()));
    }
    d.put("failed_at", Instant.now().toString());
    RecordHeaders headers = new RecordHeaders();
    headers.add("schema", DLQ_SCHEMA);
    ctx.forward(new Record<>(record.key(), bytes(d), System.currentTimeMillis(), headers), DLQ_SINK);
    DEAD_LETTERED.incrementAndGet();
    // The reason may quote the event; only its code is logged (no identifiers in logs).
    System.err.printf("dead-lettered appointment event topic=%s partition=%d offset=%d reason_code=%s%n",
        m.topic(), m.partition(), m.offset(), e.code);
  }

  private static byte[] bytes(ObjectNode n) {
    try {
      return JSON.writeValueAsBytes(n);
    } catch (com.fasterxml.jackson.core.JsonProcessingException e) {
      throw new IllegalStateException(e);
    }
  }
}
