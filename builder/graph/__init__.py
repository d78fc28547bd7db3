"""The build graph: sections found (registry), keyed and run one at a time (engine, compute, diagnose), and
the store's upkeep: freezes (freeze), re-keying them (rekey), build records and gc (cache_gc)."""
