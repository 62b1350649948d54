"""The `realname` command line: `main` builds the parser and serves; one module per command group.

`common` holds what the command modules share (exit codes, UsageError, the mTLS channel to the
server, the error guard, command groups); command modules import from it, never from each other.
"""
