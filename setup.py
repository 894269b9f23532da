"""Build step that records the source commit in the built package.

Everything else about the package is in pyproject.toml. A result file names
the byzjax commit that trained it (``byzjax.provenance.versions``): from a
checkout git says it at run time; an installed copy (``pip install .``, a
wheel) has no checkout, so the build writes byzjax/_build.json with the
commit (and "+dirty" when byzjax/ had uncommitted changes) when it is built
from a git checkout.
"""

import json
import os
import subprocess

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))


def _git(*args):
  try:
    done = subprocess.run(["git", "-C", HERE, *args], capture_output=True,
                          text=True, timeout=30)
  except (OSError, subprocess.SubprocessError):
    return None
  return done.stdout.strip() if done.returncode == 0 else None


class BuildWithCommit(build_py):
  """build_py, then byzjax/_build.json with the commit (if git knows it)."""

  def run(self):
    super().run()
    top = _git("rev-parse", "--show-toplevel")
    commit = _git("rev-parse", "HEAD")
    changed = _git("status", "--porcelain", "--untracked-files=no", "--", "byzjax")
    if not (top and commit and os.path.samefile(top, HERE)) or changed is None:
      return
    folder = os.path.join(self.build_lib, "byzjax")
    if not os.path.isdir(folder):  # an editable install copies nothing
      return
    path = os.path.join(folder, "_build.json")
    with open(path, "w", encoding="utf-8") as fh:
      json.dump({"commit": commit + ("+dirty" if changed else "")}, fh)


setup(cmdclass={"build_py": BuildWithCommit})
