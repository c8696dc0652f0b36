"""A process that uses the embedded services the way the platform's processes do.

python runtime_probe.py DATA_DIR write|read|hold
  write: create a marker row and a marker Redis key, print them, exit
  read:  print the marker row and key, exit
  hold:  like write, then wait for a line on stdin before exiting
The first line printed is JSON with the URLs in use.
"""

import json
import sys

import psycopg
import redis

from exchange import runtime


def main(data_dir: str, action: str) -> None:
    database_url, redis_url = runtime.ensure_services(data_dir)
    print(json.dumps({"database_url": database_url, "redis_url": redis_url}), flush=True)
    client = redis.Redis.from_url(redis_url)
    with psycopg.connect(database_url, autocommit=True) as conn:
        if action in ("write", "hold"):
            conn.execute("CREATE TABLE IF NOT EXISTS marker (value text)")
            conn.execute("INSERT INTO marker VALUES ('written')")
            client.xadd("marker-stream", {"value": "written"})
        rows = conn.execute("SELECT value FROM marker").fetchall()
    entries = client.xrange("marker-stream")
    print(json.dumps({"rows": [row[0] for row in rows], "stream": len(entries)}), flush=True)
    if action == "hold":
        sys.stdin.readline()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
