#!/usr/bin/env python3
"""Differential check of our fingerprinter against Percona's pt-fingerprint.

Generates random processlist-like SQL from a fixed seed, fingerprints every
statement with `session-reaper fingerprint --batch` and with `pt-fingerprint
--query`, and prints the statements where they differ. Statements in the
categories where pt-fingerprint is plainly wrong (tests/data/fingerprint_cases.README.md,
"Left out on purpose") are not generated; the differences left are letters and
dots next to numbers, which we deliberately do not eat (src/fingerprint.rs).

    apt-get install percona-toolkit       # provides pt-fingerprint
    cargo build --release
    scripts/fingerprint-diff.py [--seed N] [--count N] [--bin target/release/session-reaper]
"""
import argparse, json, random, re, shutil, subprocess, sys

WORDS = ["SELECT", "select", "FROM", "from", "WHERE", "where", "AND", "OR", "IN", "in", "VALUES", "values",
         "VALUE", "INSERT", "INTO", "REPLACE", "IGNORE", "UPDATE", "SET", "DELETE", "ORDER", "BY", "order by",
         "ASC", "asc", "DESC", "LIMIT", "limit", "OFFSET", "UNION", "union", "ALL", "all", "NULL", "null", "TRUE",
         "FALSE", "CALL", "call", "USE", "use", "SHOW", "GROUP", "HAVING", "JOIN", "ON", "AS", "LIKE", "IS", "NOT",
         "t", "users", "orders", "id", "name", "a", "b", "c", "x", "db.tbl", "`t`", "`my col`", "@v", "col_a", "p"]
NUMS = ["1", "42", "007", "3.14", ".5", "1.", "1e10", "1.5e-3", "0x1f", "0xdeadbeef", "-5", "+3",
        "18446744073709551615", "0b1010"]
STRS = ["'abc'", "'it\\'s'", "\"dq\"", "'a b'", "''", "'x'", "'2024-01-01'", "x'ff'", "b'01'", "'%w%'", "'a\"b'", "\"a'b\""]
PUNCT = ["(", ")", ",", ";", "=", "<>", "!=", ">=", "<=", "*", "?", "(?, ?)", "()", "(1,2,3)", "('a','b')", ".", " ", "  ", "\n", "\t"]
COMMENTS = ["/* c */", "/*+ hint */", "/*!40101 SET */", "-- trailing", "# hash", "/**/", "/* x"]
# pt-fingerprint's plainly wrong categories, which the corpus does not test either way.
EXCLUDED = re.compile(r"''|\"\"|[0-9][A-FXB]|[A-Za-z_$][0-9]+[a-fA-F.xXbB+\-]|[A-Za-z_$0-9][xXbB]'"
                      r"|[A-Za-z_$0-9]\.[0-9]|(^|[^0-9A-Za-z_.])[+-]([^0-9.]|\.[^0-9]|$)|[xb]\?|[A-Za-z0-9_]\.\?")


def token(rng):
    r = rng.random()
    if r < 0.45: return rng.choice(WORDS)
    if r < 0.60: return rng.choice(NUMS)
    if r < 0.72: return rng.choice(STRS)
    if r < 0.95: return rng.choice(PUNCT)
    return rng.choice(COMMENTS)


def statements(seed, count):
    rng = random.Random(seed)
    out = []
    while len(out) < count:
        parts = []
        for _ in range(rng.randint(1, 25)):
            parts += [token(rng), rng.choice([" ", " ", " ", "", "\n"])]
        s = "".join(parts)
        if not EXCLUDED.search(s):
            out.append(s)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--bin", default="target/release/session-reaper")
    args = ap.parse_args()
    if not shutil.which("pt-fingerprint"):
        sys.exit("pt-fingerprint is not installed: apt-get install percona-toolkit")
    stmts = statements(args.seed, args.count)
    batch = "".join(json.dumps(s) + "\n" for s in stmts)
    ours = subprocess.run([args.bin, "fingerprint", "--batch"], input=batch, capture_output=True, text=True, check=True)
    ours = [json.loads(line) for line in ours.stdout.splitlines()]
    differ = 0
    for s, o in zip(stmts, ours):
        pt = subprocess.run(["pt-fingerprint", "--query", s], capture_output=True).stdout.decode("utf-8", "surrogateescape")
        pt = pt[:-1] if pt.endswith("\n") else pt
        if pt != o:
            differ += 1
            print(f"SQL  {json.dumps(s)}\npt   {json.dumps(pt)}\nours {json.dumps(o)}\n")
    print(f"seed {args.seed}: {len(stmts)} statements, {differ} differ")


if __name__ == "__main__":
    main()
