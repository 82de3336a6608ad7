"""The `report` stage's library: paper-style tables (Markdown, LaTeX, CSV) and figures from tracked results.

Entry point: `cocu.reports.build.build_report(ReportConfig) -> ReportOutputs` (`ReportConfig` in
`cocu.config`, built by `ReportConfig.from_params`). Inputs are DVC-tracked files only (results,
training curves, curation metrics, the paper reference numbers), never the MLflow store.
"""
