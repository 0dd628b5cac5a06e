"""The data audit: suspected label errors, near-duplicates and leakage, outliers ([docs/audit.md]).

`audit(data, ...)` (also `tunetext.audit`) runs it: `run` reads the data as training would and writes the
findings; `embed` makes the frozen features; `labels` the cross-fitted probabilities and cleanlab's
verdict; `duplicates`, `outliers` and `page` the rest; `findings` holds the records they share.
"""

from tunetext.audit.findings import AuditResult, DuplicateGroup, LabelIssue, Outlier, Row
from tunetext.audit.run import audit, findings_table

__all__ = ["AuditResult", "DuplicateGroup", "LabelIssue", "Outlier", "Row", "audit", "findings_table"]
