"""Fashion ControlNet Workbench: the library behind the app and the CLI.

Everything the Streamlit pages do goes through this package (and ``db``), so it works the
same from a notebook, a script or ``python -m workbench``.
"""

__version__ = "0.1.0"
