#!/usr/bin/env python3
"""Generates (or advances by one day) a large WhatsApp-like SQLite database for bench/engine-v2.sh.

    gen_large_db.py create DB --bytes N [--seed S]      # a database of about N bytes
    gen_large_db.py day DB --messages 2000 --receipts 50 [--seed S]
    gen_large_db.py digest DB                          # row count + SHA-256 of the messages table
    gen_large_db.py media DIR --bytes N [--files K]     # incompressible media files

Rows: messages(_id, key_id, chat_row_id, from_me, timestamp, received_timestamp, status,
text_data ≈ 300–500 B of word text), an index on (chat_row_id, timestamp), a small chat table;
4096-byte pages, WAL journal at the end. (No index on the random key_id: 2 000 random inserts
into it would touch ≈ 2 000 scattered pages; the sample generator's store models that one.)
Built with journal_mode=OFF/synchronous=OFF for speed, then switched to WAL.
"""
import hashlib
import os
import random
import sqlite3
import sys
import time

WORDS = ("ok yes no thanks see you tomorrow lol haha where are we meeting tonight dinner at "
         "eight the kids school work meeting later call me when you can sounds good love it "
         "photo from the trip happy birthday congratulations what time is it train is late "
         "running ten minutes behind did you get my message send the address please great "
         "idea let's do that weekend plans coffee morning flight landed safely home now "
         "good night sleep well miss you talk soon busy today maybe next week").split()
CHATS = 150
ROW_GUESS = 495  # bytes of database per row (table + index), measured on 100 MB


POOL = None


def text(rng):
    """300–500 B of word text: a random slice of a 4 MB pool of random words (fast)."""
    global POOL
    if POOL is None:
        r = random.Random(7)
        POOL = " ".join(r.choice(WORDS) for _ in range(800_000))
    n = rng.randint(300, 500)
    at = rng.randint(0, len(POOL) - n)
    return POOL[at:at + n]


def rows(rng, start_id, count, t0, step):
    for i in range(count):
        ts = t0 + (i * step) + rng.randint(0, step)
        yield (start_id + i, "%016X" % rng.getrandbits(64), rng.randint(1, CHATS),
               rng.randint(0, 1), ts, ts + rng.randint(100, 5000), 13, text(rng))


def create(db, target, seed):
    rng = random.Random(seed)
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(db + suffix):
            os.unlink(db + suffix)
    con = sqlite3.connect(db)
    con.executescript("""
        PRAGMA page_size=4096; PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;
        PRAGMA cache_size=-1000000; PRAGMA temp_store=MEMORY;
        CREATE TABLE messages(_id INTEGER PRIMARY KEY, key_id TEXT NOT NULL,
            chat_row_id INTEGER NOT NULL, from_me INTEGER NOT NULL, timestamp INTEGER NOT NULL,
            received_timestamp INTEGER, status INTEGER, text_data TEXT);
        CREATE INDEX message_chat_ts ON messages(chat_row_id, timestamp);
        CREATE TABLE chat(_id INTEGER PRIMARY KEY, jid TEXT, subject TEXT, last_ts INTEGER);
    """)
    con.executemany("INSERT INTO chat VALUES (?,?,?,?)",
                    [(i, "%d@s.whatsapp.net" % (4915100000000 + i), "chat %d" % i, 0)
                     for i in range(1, CHATS + 1)])
    total = max(1000, target // ROW_GUESS)
    t0 = 1_600_000_000_000
    batch = 50_000
    done = 0
    start = time.time()
    while done < total:
        n = min(batch, total - done)
        con.executemany("INSERT INTO messages VALUES (?,?,?,?,?,?,?,?)",
                        rows(rng, done + 1, n, t0 + done * 3000, 3000))
        con.commit()
        done += n
        if done % 1_000_000 < batch:
            size = os.path.getsize(db)
            print(f"  {done} rows, {size / 1e9:.2f} GB, {time.time() - start:.0f} s", file=sys.stderr)
            if size >= target:
                break
    con.execute("PRAGMA journal_mode=WAL")
    con.close()
    print(f"{done} rows")


def day(db, messages, receipts, seed):
    rng = random.Random(seed)
    con = sqlite3.connect(db)
    con.execute("PRAGMA journal_mode=WAL")
    (max_id, max_ts) = con.execute("SELECT max(_id), max(timestamp) FROM messages").fetchone()
    con.executemany("INSERT INTO messages VALUES (?,?,?,?,?,?,?,?)",
                    rows(rng, max_id + 1, messages, max_ts + 1000, 40_000))
    # read receipts: the status of a few recent messages changes
    ids = [rng.randint(max(1, max_id - 200_000), max_id) for _ in range(receipts)]
    con.executemany("UPDATE messages SET status=5 WHERE _id=?", [(i,) for i in ids])
    con.execute("UPDATE chat SET last_ts=? WHERE _id<=30", (max_ts + 1000 + messages * 40_000,))
    con.commit()
    con.close()  # the last connection checkpoints the WAL
    print(f"{messages} messages appended, {receipts} receipts")


def digest(db):
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    h = hashlib.sha256()
    n = 0
    for r in con.execute("SELECT _id, key_id, chat_row_id, from_me, timestamp, received_timestamp,"
                         " status, text_data FROM messages ORDER BY _id"):
        h.update(repr(r).encode())
        n += 1
    con.close()
    print(f"{n} {h.hexdigest()}")


def media(d, total, files):
    os.makedirs(d, exist_ok=True)
    per = total // files
    for i in range(files):
        with open(os.path.join(d, "VID-%04d.mp4" % i), "wb") as f:
            f.write(b"\x00\x00\x00\x18ftypmp42")
            f.write(os.urandom(per - 12))


def main():
    a = sys.argv[1:]
    opt = lambda name, default: int(a[a.index(name) + 1]) if name in a else default
    if a[0] == "create":
        create(a[1], opt("--bytes", 100_000_000), opt("--seed", 1))
    elif a[0] == "day":
        day(a[1], opt("--messages", 2000), opt("--receipts", 50), opt("--seed", 2))
    elif a[0] == "digest":
        digest(a[1])
    elif a[0] == "media":
        media(a[1], opt("--bytes", 300_000_000), opt("--files", 30))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
