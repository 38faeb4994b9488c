"""The receipt ledger: canonical bytes, hashing, signing, the append-only store, verification."""
