"""The `openeas` command line: server commands and a client of the control API."""
