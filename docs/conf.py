import re
from pathlib import Path

project = "flask-evstream"
release = re.search(
    r'^__version__ = "([^"]+)"',
    (Path(__file__).parent.parent / "flask_evstream" / "__init__.py").read_text(),
    re.M,
).group(1)
extensions = ["sphinx.ext.autodoc"]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
html_theme = "alabaster"
