package uk.nhs.dnarisk.jvmpeer;

import java.nio.file.Path;

/** The command line (see README.md and Main's usage). */
final class Config {
  String brokers = "127.0.0.1:9092";
  String group = "dna-scorer-jvm";
  String topicIn = "appointments", topicRisk = "risk", topicDlq = "appointments.dlq";
  String redis = "127.0.0.1:6379";
  String redisPrefix = "dna:";
  Path modelDir = Path.of("models/default");
  int threads = 1;
  long commitIntervalMs = 100;
  long lingerMs = 5;
  long sessionTimeoutMs = 0; // 0: the Kafka consumer's default
  int historyRetentionDays = 3 * 365;
  int maxFacts = 1000;

  History.Policy policy() {
    return new History.Policy(historyRetentionDays * 86400L, maxFacts);
  }

  /** Keys expire 30 days after the retention, as with cmd/consumer and the Python peer. */
  long ttlMs() {
    return (historyRetentionDays + 30) * 86400L * 1000;
  }

  static Config parse(String[] args) {
    Config c = new Config();
    for (int i = 0; i < args.length; i++) {
      String flag = args[i];
      if (flag.equals("-h") || flag.equals("--help")) {
        throw new IllegalArgumentException(USAGE);
      }
      if (i + 1 >= args.length) {
        throw new IllegalArgumentException(flag + " needs a value\n" + USAGE);
      }
      String v = args[++i];
      switch (flag) {
        case "--brokers" -> c.brokers = v;
        case "--group" -> c.group = v;
        case "--topic-in" -> c.topicIn = v;
        case "--topic-risk" -> c.topicRisk = v;
        case "--topic-dlq" -> c.topicDlq = v;
        case "--redis" -> c.redis = v;
        case "--redis-prefix" -> c.redisPrefix = v;
        case "--model-dir" -> c.modelDir = Path.of(v);
        case "--threads" -> c.threads = Integer.parseInt(v);
        case "--commit-interval-ms" -> c.commitIntervalMs = Long.parseLong(v);
        case "--linger-ms" -> c.lingerMs = Long.parseLong(v);
        case "--session-timeout-ms" -> c.sessionTimeoutMs = Long.parseLong(v);
        case "--history-retention-days" -> c.historyRetentionDays = Integer.parseInt(v);
        case "--max-facts" -> c.maxFacts = Integer.parseInt(v);
        default -> throw new IllegalArgumentException("unknown flag " + flag + "\n" + USAGE);
      }
    }
    if (c.threads < 1 || c.commitIntervalMs < 1 || c.historyRetentionDays < 1 || c.maxFacts < 1 || c.lingerMs < 0) {
      throw new IllegalArgumentException("--threads, --commit-interval-ms, --history-retention-days and --max-facts "
          + "must be positive, --linger-ms not negative");
    }
    return c;
  }

  static final String USAGE = """
      usage: java -jar bench/jvm/target/jvm-peer.jar [flags]
        --brokers host:port[,...]     Kafka bootstrap servers (127.0.0.1:9092)
        --group NAME                  Kafka Streams application.id, i.e. the consumer group (dna-scorer-jvm)
        --topic-in / --topic-risk / --topic-dlq   topics (appointments, risk, appointments.dlq)
        --redis host:port             Redis (127.0.0.1:6379)
        --redis-prefix P              prefix of every Redis key (dna:)
        --model-dir DIR               model.txt and contract.json (models/default)
        --threads N                   num.stream.threads (1)
        --commit-interval-ms MS       commit.interval.ms: histories are saved and offsets committed this often (100)
        --linger-ms MS                the producer's linger.ms (5)
        --session-timeout-ms MS       the consumer's session.timeout.ms (0: Kafka's default, 45 s): how soon
                                      a member that died without leaving loses its partitions
        --history-retention-days D    facts older than this are dropped (1095)
        --max-facts N                 facts kept per patient (1000)
      It runs until SIGTERM/SIGINT, then closes cleanly (a last commit) and prints one JSON line of counts.""";
}
