"""valueledger: the application wiring (settings, servers, CLI) shared by every entry point."""
