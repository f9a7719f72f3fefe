"""Reports built from run directories only (never re-running a model): ``fgvc report RUNS_DIR``."""

from fgvc.report.collect import collect_runs
from fgvc.report.report import build_markdown, write_report

__all__ = ["build_markdown", "collect_runs", "write_report"]
