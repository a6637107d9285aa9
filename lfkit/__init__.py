"""lfkit: data tools, recipes, a LlamaFactory plugin and results tooling.

The distribution installs three import packages under one namespace:

* ``lfkit``             the command line, the planner, recipe checks and results tooling;
* ``lfkit.plugin``      (source folder ``plugin/``) the LlamaFactory plugin;
* ``lfkit.data_tools``  (source folder ``data_tools/``) the dataset converters.

This module stays import-light: the ``.pth`` hook imports ``lfkit.plugin`` in every
Python process, so nothing heavy may be imported here.
"""

from __future__ import annotations

import os

__version__ = "0.1.0"

# In a source checkout (editable install, or tests run from the repository) the folders
# plugin/ and data_tools/ sit beside lfkit/ rather than inside it; the built wheel moves
# them to lfkit/plugin and lfkit/data_tools. Adding the checkout root to this package's
# search path gives both layouts the same import names.
# os.path rather than pathlib: this module is imported at every interpreter start (the .pth hook),
# and pathlib alone would cost that start-up several milliseconds.
_checkout = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
if os.path.isfile(os.path.join(_checkout, "pyproject.toml")) and os.path.isfile(
    os.path.join(_checkout, "plugin", "__init__.py")
):
    __path__.append(_checkout)  # noqa: F821 (__path__ is defined for packages)
