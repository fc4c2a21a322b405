package uk.nhs.dnarisk.jvmpeer;

import java.util.Map;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

/**
 * The stream thread's producer, which saves the thread's changed histories right after each flush.
 *
 * <p>On a commit Kafka Streams (4.4, at_least_once) flushes each task's record collector, i.e. calls
 * {@code Producer.flush()}, which returns once every risk and dead-letter record sent so far is
 * acknowledged, and only then commits the consumed offsets. Saving in that gap gives cmd/consumer's
 * order: outputs acknowledged, then histories saved, then offsets committed. A failed save throws out
 * of flush, the commit fails and the offsets stay where they were (the stream thread dies and the
 * process exits non-zero; the batch is consumed again on restart).
 */
final class FlushHookProducer extends KafkaProducer<byte[], byte[]> {
  FlushHookProducer(Map<String, Object> config) {
    super(config, new ByteArraySerializer(), new ByteArraySerializer());
  }

  @Override
  public void flush() {
    super.flush();
    Histories h = Histories.ofThisThread();
    if (h != null) {
      h.save();
    }
  }
}
