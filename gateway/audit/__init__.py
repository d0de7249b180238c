"""The audit trail: every view of a child and every action on an alarm, append-only and hash-chained (issue 10)."""
