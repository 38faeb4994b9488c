"""The command side: thin handlers that load a stream, fold it, decide and append.

Handlers are plain async functions taking what they use (the store, the vault); the API, the
workers and the CLI call the same ones. Facts a decider needs from other streams are read
fresh from the ledger by the handler on every attempt, never from read models.
"""
