"""merr package."""
