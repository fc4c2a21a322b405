"""Where Redis's CPU goes per history, on a keyspace the size of a trust's.

The Go stage benchmarks (BenchmarkStageRedisLoad/Save) run over a few thousand patients, whose
histories sit in the CPU's caches; a trust's Redis holds 10^5 to 10^6, and each history's first
touch misses them. This script fills a key prefix with --keys histories of realistic size, then
measures Redis's own CPU (INFO cpu, user+sys) per history for the history load (the consumer's
HMGET) and for the compare-and-set save as shipped (casScript, read from featurestore/redis.go,
--chunk histories a call) and for cut-down copies of it that stop after each of its steps, so
each step's cost is the difference between two rows. It deletes its keys when it ends.

    .venv-peer/bin/python bench/rediscost.py --redis 127.0.0.1:16379

docs/performance.md quotes its output. Needs redis-py (the peer's venv: make peer-venv).
"""

import argparse
import os
import pathlib
import random
import re

import redis

ROOT = pathlib.Path(__file__).resolve().parent.parent


def shipped_script() -> str:
    src = (ROOT / "featurestore" / "redis.go").read_text()
    m = re.search(r"var casScript = redis\.NewScript\(`(.*?)`\)", src, re.S)
    if not m:
        raise SystemExit("casScript not found in featurestore/redis.go")
    return m.group(1)


# Each cut-down copy keeps the shipped script's loop and arguments and stops after one more step.
STEPS = {
    "arguments only (the call, its KEYS and ARGV)": """
local out = {}
for i, key in ipairs(KEYS) do out[i] = 0 end
return out""",
    "+ HMGET rev, codec (the compare)": """
local out = {}
for i, key in ipairs(KEYS) do
  local cur = redis.call('HMGET', key, 'rev', 'codec')
  out[i] = 0
end
return out""",
    "+ HSET rev, facts (the write)": """
local out = {}
for i, key in ipairs(KEYS) do
  local a = 3 * i
  local cur = redis.call('HMGET', key, 'rev', 'codec')
  if (cur[1] or '0') ~= ARGV[a] then out[i] = 0 else
    redis.call('HSET', key, 'rev', ARGV[a + 1], 'facts', ARGV[a + 2])
    out[i] = 1
  end
end
return out""",
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--redis", default="127.0.0.1:16379")
    ap.add_argument("--keys", type=int, default=110_000, help="histories in the keyspace (make bench: 106,945)")
    ap.add_argument("--sample", type=int, default=50_000, help="histories loaded or saved per measurement")
    ap.add_argument("--chunk", type=int, default=128, help="histories per script call (featurestore saveChunk)")
    ap.add_argument("--repeat", type=int, default=3, help="measurements per row; the median is printed")
    args = ap.parse_args()
    host, port = args.redis.rsplit(":", 1)
    r = redis.Redis(host=host, port=int(port))
    rng = random.Random(1)
    prefix = f"rediscost{os.getpid()}:"
    keys = [f"{prefix}{{{rng.randbytes(32).hex()}}}:history" for _ in range(args.keys)]
    # A year of history at 10 bookings a year is 20-40 facts of ~40 bytes (featurestore/codec.go).
    facts = [rng.randbytes(rng.randint(900, 1500)) for _ in range(64)]
    revs = {}
    try:
        p = r.pipeline(transaction=False)
        for i, k in enumerate(keys):
            p.hset(k, mapping={"rev": "1", "facts": facts[i % 64]})
            p.pexpire(k, 86_400_000)
            revs[k] = 1
            if i % 1000 == 999:
                p.execute()
        p.execute()

        def cpu() -> float:
            info = r.info("cpu")
            return info["used_cpu_user"] + info["used_cpu_sys"]

        def load() -> float:
            sample = rng.sample(keys, args.sample)
            t = cpu()
            p = r.pipeline(transaction=False)
            for i, k in enumerate(sample):
                p.execute_command("HMGET", k, "rev", "facts", "codec")
                if i % 500 == 499:
                    p.execute()
            p.execute()
            return (cpu() - t) / len(sample) * 1e6

        def save(script: str) -> float:
            sha = r.script_load(script)
            sample = rng.sample(keys, args.sample)
            t = cpu()
            p = r.pipeline(transaction=False)
            for c in range(0, len(sample), args.chunk):
                ks = sample[c : c + args.chunk]
                argv = ["86400000", "1"]
                for i, k in enumerate(ks):
                    argv += [str(revs[k]), str(revs[k] + 1), facts[(c + i) % 64]]
                p.evalsha(sha, len(ks), *ks, *argv)
                if (c // args.chunk) % 4 == 3:
                    p.execute()
            p.execute()
            used = (cpu() - t) / len(sample) * 1e6
            p = r.pipeline(transaction=False)
            for k in sample:
                p.hget(k, "rev")
            for k, v in zip(sample, p.execute()):
                revs[k] = int(v)
            return used

        def median(f) -> float:
            xs = sorted(f() for _ in range(args.repeat))
            return xs[len(xs) // 2]

        print(f"Redis CPU per history, {args.keys:,} histories of 0.9-1.5 kB, median of {args.repeat} x {args.sample:,}:")
        rows = [("load: HMGET rev, facts, codec (500 a round trip)", load)]
        rows += [(f"save, {name}", lambda s=script: save(s)) for name, script in STEPS.items()]
        rows += [("save, as shipped (+ PEXPIRE, the TTL)", lambda: save(shipped_script()))]
        for name, f in rows:
            print(f"  {name:<58} {median(f):5.2f} us")
    finally:
        for c in range(0, len(keys), 1000):
            r.unlink(*keys[c : c + 1000])


if __name__ == "__main__":
    main()
