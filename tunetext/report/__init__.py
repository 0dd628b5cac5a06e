"""`tunetext report RUN_DIR`: one self-contained HTML page about a finished run (`page.report`), built from
the sections in `sections`."""

from tunetext.report.page import report
from tunetext.report.sections import SECTIONS, TASK_SECTIONS, SplitScores, mistakes_table

__all__ = ["SECTIONS", "TASK_SECTIONS", "SplitScores", "mistakes_table", "report"]
