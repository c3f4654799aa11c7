import re
import sys
from pathlib import Path

# Document the sources next to these docs, not whatever copy is installed
# (an editable install may point at another checkout).
sys.path.insert(0, str(Path(__file__).parent.parent))

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
