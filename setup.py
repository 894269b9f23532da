"""Build step that records the source commit in the built package.

Everything else about the package is in pyproject.toml. A result file names
the byzjax commit that trained it (``byzjax.provenance.versions``): from a
checkout git says it at run time; an installed copy (``pip install .``, a
wheel) has no checkout, so the build writes byzjax/_build.json with the
commit (and "+dirty" when byzjax/ had uncommitted changes) when it is built
from a git checkout, as ``byzjax.provenance.source_commit`` reads it.
"""

import importlib.util
import json
import os

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))


def _source_commit():
  """``byzjax.provenance.source_commit`` of this checkout's byzjax/.

  provenance.py is loaded by path: it needs the standard library only, while
  importing the package would import jax, which a build may not have yet.
  """
  spec = importlib.util.spec_from_file_location(
      "_byzjax_provenance", os.path.join(HERE, "byzjax", "provenance.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.source_commit(os.path.join(HERE, "byzjax"))


class BuildWithCommit(build_py):
  """build_py, then byzjax/_build.json with the commit (if git knows it)."""

  def run(self):
    super().run()
    commit = _source_commit()
    folder = os.path.join(self.build_lib, "byzjax")
    if commit is None or not os.path.isdir(folder):  # editable: nothing copied
      return
    with open(os.path.join(folder, "_build.json"), "w", encoding="utf-8") as fh:
      json.dump({"commit": commit}, fh)


setup(cmdclass={"build_py": BuildWithCommit})
