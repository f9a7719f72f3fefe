"""Reports built from run directories only (never re-running a model)."""

from fgvc.report.report import collect_runs, write_report

__all__ = ["collect_runs", "write_report"]
