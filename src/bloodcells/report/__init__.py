"""The HTML report: a view over run folders rendered from Jinja2 templates."""
