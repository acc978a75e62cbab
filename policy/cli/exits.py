"""The exit codes of every command: 0 allowed (warnings allowed), 1 denied, 2 bad input, rules
or usage (and a failed lookup, for `resolve`, `pin` and `tiers export`)."""

EXIT_ALLOWED, EXIT_DENIED, EXIT_USAGE = 0, 1, 2
