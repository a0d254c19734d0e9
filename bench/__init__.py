"""`make bench`: ingestion throughput, latency, ledger and memory against the durable floor."""
