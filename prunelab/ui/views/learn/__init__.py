"""The Learn page's lessons, one module each (lesson5.py ... lesson8.py on this branch).

Stand-in on branch wt-learnB only: helper A's ``__init__`` (which discovers ``lessonN.py``
and takes over the code of the former ``learn.py``) replaces this file at merge. Until then a
package named ``learn`` hides the module ``learn.py`` that pages/7_Learn.py imports, so its
public names are served from here, loaded from that file.
"""

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "prunelab.ui.views._learn_page", Path(__file__).parent.parent / "learn.py"
)
_page = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_page)
globals().update({name: getattr(_page, name) for name in _page.__all__})
__all__ = list(_page.__all__)
