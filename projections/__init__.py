"""The read side: projectors that build read models from the ledger, exactly once, and can
rebuild them from position 0 at any time; the ledger stays the only source of truth."""
