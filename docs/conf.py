import doctest
import re
import sys
from pathlib import Path

# Document the sources next to these docs, not whatever copy is installed
# (an editable install may point at another checkout).
sys.path.insert(0, str(Path(__file__).parent.parent))

project = "flask-evstream"
copyright = "flask-evstream contributors"
release = re.search(
    r'^__version__ = "([^"]+)"',
    (Path(__file__).parent.parent / "flask_evstream" / "__init__.py").read_text(),
    re.M,
).group(1)
version = release

# General --------------------------------------------------------------

extensions = [
    "sphinx.ext.autodoc",
    # The ``>>>`` examples of these pages run: sphinx-build -b doctest docs ...
    "sphinx.ext.doctest",
    # Flask's own theme (Flask and the Pallets extensions use it).
    "pallets_sphinx_themes",
]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
exclude_patterns = ["_build", "examples"]
# The doctests of the pages start from a clean slate; each page imports
# what it shows.
doctest_global_setup = ""
# A literal block is Python unless it says otherwise (gunicorn commands say
# ``sh``, pages ``html``).
highlight_language = "python3"

# HTML -----------------------------------------------------------------

html_theme = "flask"
html_theme_options = {"index_sidebar_logo": False}
html_title = f"flask-evstream Documentation ({version})"
html_sidebars = {
    "index": ["project.html", "localtoc.html", "searchbox.html"],
    "**": ["localtoc.html", "relations.html", "searchbox.html"],
}
html_show_sourcelink = False

# Doctests compare the whole exception message, not only its type.
doctest_default_flags = doctest.ELLIPSIS | doctest.DONT_ACCEPT_TRUE_FOR_1
