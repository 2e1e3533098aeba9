"""Read-only questions about a lake: `dataset` (open a published version), `versions`
(what is in one, what changed), `tables`/`history`, `sql` and `report`."""
