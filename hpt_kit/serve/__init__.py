"""The policy server: one process, one shared trunk, many robots of different embodiments."""
