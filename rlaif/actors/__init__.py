"""actors layer of rlaif (see DESIGN §3)."""
