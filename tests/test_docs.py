"""Documentation that cannot drift: what the READMEs show as output is a
committed result, byte for byte.

* The quick-start block of README.md is ``experiments/results/quickstart/
  table.md``, the table ``byzjax run`` printed and wrote there.
* Every Markdown table of a reproduction README (``experiments/results/*/
  README.md``) is a table of a file its folder's scripts or ``byzjax report``
  wrote (``table.md``, ``faults.md``, ``claims.md``, ...).
* Every ``text`` block of a README is a run of lines of a committed result
  file (``benchmarks/results/*.txt``, ``experiments/results/**/*.md``).
* The top README's own tables are documentation (settings, definitions);
  any other table there must be a committed result too.

``BYZJAX_SLOW=1`` adds the slow check: ``byzjax run`` from an empty folder
prints and writes exactly the committed quick-start table (about 5 minutes
on 2 cores).
"""

import glob
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICKSTART = os.path.join(ROOT, "experiments", "results", "quickstart")

# The top README's tables that are documentation, not output (first lines).
DOCUMENTATION_TABLES = (
    "| config | reproduces | runs x seeds |",
    "| rule | definition (defaults) |",
)


def read(path):
  with open(path, encoding="utf-8") as fh:
    return fh.read()


def markdown_tables(text):
  """The Markdown tables of ``text``, each as its lines joined by newlines."""
  tables, current = [], []
  for line in text.splitlines() + [""]:
    if line.startswith("|"):
      current.append(line)
    elif current:
      tables.append("\n".join(current))
      current = []
  return tables


def fenced_blocks(text):
  """(info string, body) of every fenced code block of ``text``."""
  blocks, info, body = [], None, []
  for line in text.splitlines():
    if line.startswith("```"):
      if info is None:
        info, body = line[3:].strip(), []
      else:
        blocks.append((info, "\n".join(body)))
        info = None
    elif info is not None:
      body.append(line)
  assert info is None, "unclosed code block"
  return blocks


def readmes():
  return [os.path.join(ROOT, "README.md")] + sorted(
      glob.glob(os.path.join(ROOT, "experiments", "results", "**", "README.md"),
                recursive=True))


def committed_outputs(folder):
  """The text of every result file under ``folder`` but its READMEs."""
  paths = [p for ext in ("md", "txt")
           for p in glob.glob(os.path.join(folder, "**", f"*.{ext}"), recursive=True)
           if os.path.basename(p) != "README.md"]
  return {os.path.relpath(p, ROOT): read(p) for p in sorted(paths)}


def quickstart_block():
  """The code block after "`byzjax run`" ... "It prints (the committed"."""
  text = read(os.path.join(ROOT, "README.md"))
  marker = "## Training grids: `byzjax run`"
  start = text.index("\n```\n", text.index("It prints (the committed", text.index(
      marker))) + len("\n```\n")
  return text[start:text.index("\n```", start)]


def test_quickstart_block_is_the_committed_table():
  table = read(os.path.join(QUICKSTART, "table.md"))
  assert quickstart_block() == table.rstrip("\n"), (
      "README.md's quick-start block is not experiments/results/quickstart/"
      "table.md: rerun `byzjax run --out experiments/results/quickstart` and "
      "paste its table.md")


def test_quickstart_folder_is_the_default_grid():
  """The committed folder is what `byzjax run` with no flag trains."""
  from byzjax import cli, experiments as ex  # pylint: disable=g-import-not-at-top
  saved = ex.load_grid_results(QUICKSTART)
  default = cli.run_grid_from_args(cli.run_parser().parse_args([]))
  assert ex.fingerprint(default) == ex.fingerprint(saved.grid)
  assert len(saved.records) == len(ex.expand(default)) * len(default.seeds)


@pytest.mark.parametrize("readme", readmes(), ids=lambda p: os.path.relpath(p, ROOT))
def test_readme_tables_are_committed_results(readme):
  folder = os.path.dirname(readme)
  top = folder == ROOT
  outputs = committed_outputs(os.path.join(ROOT, "experiments", "results") if top
                              else folder)
  if top:
    outputs.update(committed_outputs(os.path.join(ROOT, "benchmarks", "results")))
  for table in markdown_tables(read(readme)):
    if top and table.splitlines()[0].startswith(DOCUMENTATION_TABLES):
      continue
    where = [p for p, text in outputs.items() if table in text]
    assert where, (f"{os.path.relpath(readme, ROOT)} shows a table that no "
                   f"committed result file holds:\n{table}")


@pytest.mark.parametrize("readme", readmes(), ids=lambda p: os.path.relpath(p, ROOT))
def test_readme_text_blocks_are_committed_results(readme):
  outputs = committed_outputs(os.path.join(ROOT, "experiments", "results"))
  outputs.update(committed_outputs(os.path.join(ROOT, "benchmarks", "results")))
  for info, body in fenced_blocks(read(readme)):
    if info != "text":
      continue
    where = [p for p, text in outputs.items() if body in text]
    assert where, (f"{os.path.relpath(readme, ROOT)} shows output that no "
                   f"committed result file holds:\n{body}")


def test_the_checks_can_fail():
  """A table or block one digit away from a committed one is not found."""
  table = read(os.path.join(QUICKSTART, "table.md"))
  first = next(t for t in markdown_tables(table))
  digit = next(i for i, ch in enumerate(first) if ch.isdigit())
  changed = first[:digit] + str((int(first[digit]) + 1) % 10) + first[digit + 1:]
  assert first in table and changed not in table


@pytest.mark.skipif(not os.environ.get("BYZJAX_SLOW"),
                    reason="slow (about 5 minutes): set BYZJAX_SLOW=1")
def test_byzjax_run_reproduces_the_committed_table(tmp_path):
  out = tmp_path / "run"
  proc = subprocess.run(
      [sys.executable, "-m", "byzjax.cli", "run", "--out", str(out), "--no-progress",
       "--no-plots", "--no-compile-cache"],
      capture_output=True, text=True, check=True, cwd=ROOT)
  committed = read(os.path.join(QUICKSTART, "table.md"))
  assert read(out / "table.md") == committed
  assert committed.rstrip("\n") in proc.stdout


def test_quick_start_time_is_the_committed_measurement():
  """The README's "in about N minutes" is the committed cold run, rounded."""
  path = os.path.join(ROOT, "benchmarks", "results", "quickstart_time_cpu2.txt")
  cold = next(l for l in read(path).splitlines() if l.startswith("cold "))
  wall = cold.split()[1:5]  # "5 min 32 s"
  minutes = int(wall[0]) + int(wall[2]) / 60 if wall[1] == "min" else int(wall[0]) / 60
  text = read(os.path.join(ROOT, "README.md"))
  quick = text[text.index("## Quick start"):text.index("## Training from Python")]
  assert f"in about {round(minutes)} minutes" in " ".join(quick.split()), (
      f"README.md's quick start does not say the committed time ({cold})")
