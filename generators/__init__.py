"""One module per report section. Each declares ``SECTION`` and ``run(ctx)``; see builder.section."""
