package uk.nhs.dnarisk.jvmpeer;

import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.IdentityHashMap;
import java.util.List;
import java.util.Map;
import redis.clients.jedis.Jedis;
import redis.clients.jedis.Pipeline;

/**
 * The patient histories of one stream thread, in Redis as featurestore.RedisStore keeps them: one
 * hash per patient, {@code <prefix>{<pseudonym>}:history}, fields rev and facts (History's codec).
 *
 * <p>A history changed by a task is kept in that task's write-behind map (a patient's events all
 * go to one partition, so to one task) until {@link #save} writes every changed history of the thread
 * back in one pipeline; until then reads of that patient are served from the map, so later events see
 * earlier ones. A task that closes drops its map: after a clean close (revocation, shutdown) Streams
 * has committed, so it is empty; after a dirty one (the task was lost to another member) its changes
 * were never committed and must not be saved, since the new owner consumes those events again. {@link #save} runs only from the producer's flush, which
 * Kafka Streams calls when it commits, after the risk events are acknowledged and before it commits
 * the offsets (see {@link FlushHookProducer}): so, like cmd/consumer, publish, then save, then commit.
 */
final class Histories {
  private static final byte[] REV = bytes("rev"), FACTS = bytes("facts"), CODEC = bytes("codec");
  private static final ThreadLocal<Histories> BY_THREAD = new ThreadLocal<>();

  private final Jedis jedis;
  private final String prefix;
  private final long ttlMs;
  private final Map<Map<String, History>, Boolean> taskMaps = new IdentityHashMap<>();
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

  /** A new task's write-behind map (patient → changed history), saved by {@link #save}. */
  Map<String, History> openTask() {
    Map<String, History> m = new HashMap<>();
    taskMaps.put(m, Boolean.TRUE);
    return m;
  }

  /** Forgets a closing task's map; returns how many unsaved histories it dropped. */
  int closeTask(Map<String, History> m) {
    taskMaps.remove(m);
    int n = m.size();
    m.clear();
    return n;
  }

  /** The patient's history: the task's changed one, else Redis's (empty if none). */
  History get(Map<String, History> dirty, String patient) throws History.Corrupt {
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

  /**
   * Writes every changed history with rev+1, one pipeline. A plain HSET, not featurestore's
   * compare-and-set (README.md: deliberate simplifications).
   */
  void save() {
    int n = 0;
    for (Map<String, History> m : taskMaps.keySet()) {
      n += m.size();
    }
    if (n == 0) {
      return;
    }
    Pipeline p = jedis.pipelined();
    for (Map.Entry<String, History> e : taskMaps.keySet().stream().flatMap(m -> m.entrySet().stream()).toList()) {
      byte[] key = bytes(key(e.getKey()));
      History h = e.getValue();
      Map<byte[], byte[]> fields = new HashMap<>();
      fields.put(REV, bytes(Long.toString(h.rev + 1)));
      fields.put(FACTS, History.encode(h.facts));
      p.hset(key, fields);
      p.pexpire(key, ttlMs);
    }
    p.sync();
    saves += n;
    taskMaps.keySet().forEach(Map::clear); // the next read of these patients goes to Redis again
  }

  private static byte[] bytes(String s) {
    return s.getBytes(StandardCharsets.UTF_8);
  }
}
