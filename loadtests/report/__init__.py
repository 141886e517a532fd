"""Report of a bench: aggregation of repeats, verdict table, plots, report.md and report.html."""
