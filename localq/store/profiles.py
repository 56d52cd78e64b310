"""The ``hardware_profiles`` table: each machine's profile and measured memory bandwidth.

Keyed by ``HardwareProfile.machine_key``. Reading uses plain sqlite3, read-only
(about a millisecond, and no migration), since every start of localq reads it;
only a new measurement opens the index through ``localq.store.db``.
"""

from __future__ import annotations

import datetime
import json
import sqlite3
from pathlib import Path


def load_bandwidth(index_db: Path, machine_key: str) -> tuple[float, str] | None:
    """The stored bandwidth for this machine and when it was measured, or None."""
    if not Path(index_db).is_file():
        return None
    try:
        conn = sqlite3.connect(f"file:{index_db}?mode=ro", uri=True, timeout=1.0)
        try:
            row = conn.execute(
                "SELECT bandwidth_gbps, measured FROM hardware_profiles WHERE machine_key = ?",
                (machine_key,),
            ).fetchone()
        finally:
            conn.close()
    except sqlite3.Error:  # no table yet, a locked or damaged index: measure instead
        return None
    if not row or row[0] is None:
        return None
    return float(row[0]), str(row[1])


def store_bandwidth(machine_key: str, bandwidth_gbps: float, profile: dict) -> str:
    """Record this machine's profile and bandwidth in the index; returns the timestamp."""
    from localq.store.db import open_index

    measured = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    db = open_index()
    try:
        db["hardware_profiles"].upsert(
            {
                "machine_key": machine_key,
                "profile": json.dumps(profile, sort_keys=True),
                "bandwidth_gbps": bandwidth_gbps,
                "measured": measured,
            },
            pk="machine_key",
        )
    finally:
        db.conn.close()
    return measured
