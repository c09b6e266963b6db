"""Reports: turn measurements files into one self-contained HTML page and a Markdown twin.

The content is built as plain blocks (tables, figures, notes) by one module per section under
`sections/`; the Jinja2 templates only lay blocks out. A new task (detection, segmentation...)
adds a section module and nothing else changes.
"""

#: the module holding the report kinds (the rest renders and need not load for listing)
NODE_MODULES = ("node",)
