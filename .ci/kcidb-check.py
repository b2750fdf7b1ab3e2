#!/usr/bin/env python3
"""Validates KCIDB I/O files with the kcidb-io package's own validator
(its latest schema, exactly: the version the file says must be it), and
checks the fields uffdtest promises: every test has a path under `uffd.`,
a KCIDB status, and the checkout and build it points at are there.
Usage: .ci/kcidb-check.py FILE...   (pip install kcidb-io==141)"""
import collections
import json
import sys

import kcidb_io

schema = kcidb_io.schema.V5_3  # what src/runner/kcidb.rs writes
ok = True
for path in sys.argv[1:]:
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    try:
        schema.validate_exactly(data)
    except Exception as e:  # jsonschema's ValidationError, with the path into the document
        print(f"kcidb-check: {path}: INVALID against KCIDB {schema.major}.{schema.minor}: {e}")
        ok = False
        continue
    builds = {b["id"] for b in data.get("builds", [])}
    checkouts = {c["id"] for c in data.get("checkouts", [])}
    tests = data.get("tests", [])
    bad = [t["id"] for t in tests if t["build_id"] not in builds or not t.get("path", "").startswith("uffd.")]
    bad += [b["id"] for b in data.get("builds", []) if b["checkout_id"] not in checkouts]
    if not tests or bad:
        print(f"kcidb-check: {path}: {len(tests)} tests; dangling or unnamed: {bad[:5]}")
        ok = False
        continue
    counts = collections.Counter(t["status"] for t in tests)
    print(f"kcidb-check: {path}: valid KCIDB {schema.major}.{schema.minor} (kcidb-io): "
          f"{len(checkouts)} checkout, {len(builds)} build, {len(tests)} tests "
          + " ".join(f"{k}={v}" for k, v in sorted(counts.items())))
sys.exit(0 if ok else 1)
