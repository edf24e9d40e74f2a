"""vnet benchmark harness (bench/run)."""
