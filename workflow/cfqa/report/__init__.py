"""The report stage's building blocks: load results (inputs), turn them into tables, figures
and summary metrics (pure functions), assemble a document and render it as Markdown and
self-contained HTML."""
