"""Trust and data protection: pinned definitions, poisoning checks and data rules."""
