"""actors layer of rlaif (see docs/design.md §3)."""
