package uk.nhs.dnarisk.jvmpeer;

import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import redis.clients.jedis.Jedis;
import redis.clients.jedis.Pipeline;

/**
 * The patient histories of one stream thread, in Redis as featurestore.RedisStore keeps them: one
 * hash per patient, {@code <prefix>{<pseudonym>}:history}, fields rev and facts (History's codec).
 *
 * <p>A history changed by this thread is kept in memory (the write-behind map) until {@link #save}
 * writes every changed history back in one pipeline; until then reads of that patient are served from
 * memory, so later events see earlier ones. {@link #save} runs only from the producer's flush, which
 * Kafka Streams calls when it commits, after the risk events are acknowledged and before it commits
 * the offsets (see {@link FlushHookProducer}): so, like cmd/consumer, publish, then save, then commit.
 */
final class Histories {
  private static final byte[] REV = bytes("rev"), FACTS = bytes("facts"), CODEC = bytes("codec");
  private static final ThreadLocal<Histories> BY_THREAD = new ThreadLocal<>();

  private final Jedis jedis;
  private final String prefix;
  private final long ttlMs;
  private final Map<String, History> dirty = new HashMap<>();
  long loads, saves;

  private Histories(Jedis jedis, String prefix, long ttlMs) {
    this.jedis = jedis;
    this.prefix = prefix;
    this.ttlMs = ttlMs;
  }

  /** The calling stream thread's histories, connected on first use. */
  static Histories forThisThread(Config c) {
    Histories h = BY_THREAD.get();
    if (h == null) {
      String[] hp = c.redis.split(":");
      h = new Histories(new Jedis(hp[0], Integer.parseInt(hp[1])), c.redisPrefix, c.ttlMs());
      BY_THREAD.set(h);
    }
    return h;
  }

  /** The calling thread's histories if it has any (the flush hook on a thread that has none). */
  static Histories ofThisThread() {
    return BY_THREAD.get();
  }

  String key(String patient) {
    return prefix + "{" + patient + "}:history";
  }

  /** The patient's history: the changed one in memory, else Redis's (empty if none). */
  History get(String patient) throws History.Corrupt {
    History h = dirty.get(patient);
    if (h != null) {
      return h;
    }
    loads++;
    List<byte[]> vals = jedis.hmget(bytes(key(patient)), REV, FACTS, CODEC);
    if (vals.get(2) != null && !new String(vals.get(2), StandardCharsets.UTF_8).equals("1")) {
      throw new History.Corrupt(key(patient) + ": codec field " + new String(vals.get(2), StandardCharsets.UTF_8)
          + ", this peer reads format 1");
    }
    long rev = 0;
    if (vals.get(0) != null) {
      try {
        rev = Long.parseLong(new String(vals.get(0), StandardCharsets.UTF_8));
      } catch (NumberFormatException e) {
        throw new History.Corrupt(key(patient) + ": rev is not a count");
      }
    }
    return new History(rev, new ArrayList<>(History.decode(vals.get(1))));
  }

  void changed(String patient, History h) {
    dirty.put(patient, h);
  }

  /**
   * Writes every changed history with rev+1, one pipeline. A plain HSET, not featurestore's
   * compare-and-set (README.md: deliberate simplifications).
   */
  void save() {
    if (dirty.isEmpty()) {
      return;
    }
    Pipeline p = jedis.pipelined();
    for (Map.Entry<String, History> e : dirty.entrySet()) {
      byte[] key = bytes(key(e.getKey()));
      History h = e.getValue();
      Map<byte[], byte[]> fields = new HashMap<>();
      fields.put(REV, bytes(Long.toString(h.rev + 1)));
      fields.put(FACTS, History.encode(h.facts));
      p.hset(key, fields);
      p.pexpire(key, ttlMs);
    }
    p.sync();
    saves += dirty.size();
    dirty.clear(); // the next read of these patients goes to Redis again
  }

  private static byte[] bytes(String s) {
    return s.getBytes(StandardCharsets.UTF_8);
  }
}
