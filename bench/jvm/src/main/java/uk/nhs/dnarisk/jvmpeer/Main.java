package uk.nhs.dnarisk.jvmpeer;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Comparator;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import java.util.stream.Stream;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.consumer.Consumer;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.Producer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.apache.kafka.streams.KafkaClientSupplier;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler;

/**
 * The Kafka Streams peer of cmd/consumer (issue 15.4): appointments in, risk.v1 and deadletter.v1
 * out, patient histories in Redis in the Go feature store's format, LightGBM's model.txt scored by
 * LightGBM's own library. See README.md beside pom.xml.
 */
public final class Main {
  private Main() {}

  public static void main(String[] args) throws Exception {
    Config c;
    try {
      c = Config.parse(args);
    } catch (IllegalArgumentException e) {
      System.err.println(e.getMessage());
      System.exit(2);
      return;
    }
    Path stateDir = Files.createTempDirectory("dnarisk-jvm-peer-");
    Model model = new Model(c.modelDir);
    KafkaStreams streams = new KafkaStreams(topology(c, model), properties(c, stateDir), new Clients());
    CountDownLatch stopped = new CountDownLatch(1);
    streams.setUncaughtExceptionHandler(e -> {
      System.err.println("jvm-peer: stream thread failed: " + e);
      exitCode = 1;
      return StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
    });
    streams.setStateListener((now, before) -> {
      if (now == KafkaStreams.State.ERROR || now == KafkaStreams.State.NOT_RUNNING
          || now == KafkaStreams.State.PENDING_ERROR) {
        stopped.countDown();
      }
    });
    // SIGTERM/SIGINT: stop, keep the JVM up until the close below has committed and the counts are
    // printed, then exit with main's status (both threads halt with it, whichever is first).
    Runtime.getRuntime().addShutdownHook(new Thread(() -> {
      stopped.countDown();
      try {
        if (!done.await(60, java.util.concurrent.TimeUnit.SECONDS)) {
          exitCode = 1;
        }
      } catch (InterruptedException ignored) {
        Thread.currentThread().interrupt();
      }
      Runtime.getRuntime().halt(exitCode);
    }));
    long t0 = System.nanoTime();
    streams.start();
    stopped.await();
    // A clean close commits: the last risk events are flushed, the histories saved, the offsets committed.
    boolean closed = streams.close(Duration.ofSeconds(30));
    if (streams.state() == KafkaStreams.State.ERROR || !closed) {
      exitCode = 1;
    }
    model.close();
    deleteTree(stateDir);
    System.out.printf(
        "{\"consumed\":%d,\"scored\":%d,\"skipped\":%d,\"dead_lettered\":%d,\"applied\":%d,\"elapsed_s\":%.3f}%n",
        ScoreProcessor.CONSUMED.get(), ScoreProcessor.SCORED.get(), ScoreProcessor.SKIPPED.get(),
        ScoreProcessor.DEAD_LETTERED.get(), ScoreProcessor.APPLIED.get(), (System.nanoTime() - t0) / 1e9);
    System.out.flush();
    done.countDown();
    Runtime.getRuntime().halt(exitCode); // System.exit would wait for the shutdown hook, which waits for us
  }

  private static final CountDownLatch done = new CountDownLatch(1);
  private static volatile int exitCode;

  static Topology topology(Config c, Model model) {
    Topology t = new Topology();
    t.addSource("appointments", new ByteArrayDeserializer(), new ByteArrayDeserializer(), c.topicIn);
    t.addProcessor("score", () -> new ScoreProcessor(c, model), "appointments");
    t.addSink(ScoreProcessor.RISK_SINK, c.topicRisk, new ByteArraySerializer(), new ByteArraySerializer(), "score");
    t.addSink(ScoreProcessor.DLQ_SINK, c.topicDlq, new ByteArraySerializer(), new ByteArraySerializer(), "score");
    return t;
  }

  static Properties properties(Config c, Path stateDir) {
    Properties p = new Properties();
    p.put(StreamsConfig.APPLICATION_ID_CONFIG, c.group);
    p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, c.brokers);
    p.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.AT_LEAST_ONCE);
    p.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, c.threads);
    p.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, c.commitIntervalMs);
    p.put(StreamsConfig.STATE_DIR_CONFIG, stateDir.toString()); // no state stores; its own dir all the same
    p.put(StreamsConfig.consumerPrefix(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG), "earliest");
    p.put(StreamsConfig.producerPrefix(ProducerConfig.LINGER_MS_CONFIG), c.lingerMs);
    p.put(StreamsConfig.producerPrefix(ProducerConfig.ACKS_CONFIG), "all");
    if (c.sessionTimeoutMs > 0) {
      p.put(StreamsConfig.consumerPrefix(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG), (int) c.sessionTimeoutMs);
    }
    return p;
  }

  /** Kafka's own clients, except the producer, which saves histories after each flush. */
  static final class Clients implements KafkaClientSupplier {
    @Override
    public Admin getAdmin(Map<String, Object> config) {
      return Admin.create(config);
    }

    @Override
    public Producer<byte[], byte[]> getProducer(Map<String, Object> config) {
      return new FlushHookProducer(config);
    }

    @Override
    public Consumer<byte[], byte[]> getConsumer(Map<String, Object> config) {
      return new KafkaConsumer<>(config, new ByteArrayDeserializer(), new ByteArrayDeserializer());
    }

    @Override
    public Consumer<byte[], byte[]> getRestoreConsumer(Map<String, Object> config) {
      return getConsumer(config);
    }

    @Override
    public Consumer<byte[], byte[]> getGlobalConsumer(Map<String, Object> config) {
      return getConsumer(config);
    }
  }

  private static void deleteTree(Path dir) {
    try (Stream<Path> s = Files.walk(dir)) {
      s.sorted(Comparator.reverseOrder()).forEach(f -> f.toFile().delete());
    } catch (IOException ignored) {
      // a temporary directory
    }
  }
}
