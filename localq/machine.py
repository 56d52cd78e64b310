"""This machine's profile, as the CLI and the app use it: the probe, with the bandwidth kept.

Measuring the memory bandwidth is the slow part of a probe, and the figure does
not change for a machine, so it is measured once and stored per machine in the
index (``localq.store.profiles``); later profiles read it back. The probe itself
(``localq.probe``) measures and stores nothing: storing is this module's job.
"""

from __future__ import annotations

import time

from localq.errors import LocalqError
from localq.paths import get_paths
from localq.probe import HardwareProfile, measure_into, probe
from localq.store.profiles import load_bandwidth, store_bandwidth


def machine_profile(*, remeasure: bool = False) -> HardwareProfile:
    """The probe with the stored bandwidth, or a new measurement that is then stored.

    ``remeasure=True`` measures again even if a figure is stored (``localq
    probe --remeasure``, the app's ``b``). An index that cannot be written costs
    only the reuse: the measured figure is still in the profile, saying so.
    """
    start = time.perf_counter()
    profile = probe(bandwidth=False)
    key = profile.machine_key
    stored = None if remeasure else load_bandwidth(get_paths().index_db, key)
    if stored:
        profile.bandwidth_gbps, when = stored
        profile.bandwidth_source = f"stored, measured {when}"
    else:
        try:
            measure_into(profile)
        except Exception as exc:  # the probe fails soft: a part it cannot read is an unknown
            profile.unknowns["bandwidth"] = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        else:
            try:
                when = store_bandwidth(key, profile.bandwidth_gbps, profile.to_dict())
                profile.bandwidth_source = f"measured {when}"
            except LocalqError as exc:
                profile.bandwidth_source = f"measured now (not stored: {exc.message})"
    profile.probe_seconds = round(time.perf_counter() - start, 3)
    return profile
