"""The `report` stage's library: paper-style tables (Markdown, LaTeX, CSV) and figures from tracked results.

Entry point: `cocu.reports.build.build_report(ReportConfig) -> ReportOutputs` (config in
`cocu.reports.config`). Inputs are DVC-tracked files only (results, training curves, curation
metrics, the paper reference numbers), never the MLflow store. This file imports nothing, so that
`cocu.config` can import `cocu.reports.config` without a cycle.
"""
