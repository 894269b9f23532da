"""Where a result was computed: versions, byzjax's source, the machine.

Every result file keeps an ``environment()``: what, besides the run's
settings and seed, its float rounding depends on. ``byzjax report`` names the
environments of a folder's results (``environment_text``), so results that
are not bitwise comparable are never mistaken for ones that are.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import platform
import subprocess
import sys
from typing import Any, Dict, List, Mapping, Optional, Tuple

# Written into the installed package by setup.py's build step (`pip install
# .`, a wheel): the commit the source was built from, where git knew it.
BUILD_FILE = "_build.json"

# Environment variables that change what XLA:CPU compiles or how its
# libraries run (XLA_FLAGS itself is kept apart, under "xla_flags").
_NUMERIC_ENV_PREFIXES = ("XLA_", "ONEDNN_", "DNNL_", "TF_XLA_")
_NOT_NUMERIC_ENV = ("XLA_FLAGS", "XLA_PYTHON_CLIENT_")

# /proc/cpuinfo flags of x86 that name instruction-set extensions (what LLVM
# may compile XLA:CPU's kernels for); the rest (hypervisor, constant_tsc, ...)
# do not change code. Every ARM "Features" entry is an ISA extension.
_X86_ISA_PREFIXES = ("sse", "ssse", "avx", "fma", "f16c", "amx", "bmi", "adx",
                     "popcnt", "aes", "pclmul", "vaes", "vpclmul", "gfni",
                     "sha", "movbe", "lzcnt", "abm", "xsave", "prefetchw")
# The widest vector extensions, most capable first (shown in one line).
_VECTOR_ISA = ("amx_tile", "avx512_bf16", "avx512_vnni", "avx512f", "avx2",
               "avx", "sme", "sve2", "sve", "asimd")


def source_commit(package_dir: str) -> Optional[str]:
  """The git commit a package directory's source is at; None if unknown.

  ``package_dir`` counts as a checkout's only when its parent is the top of a
  git work tree (a package installed into a virtual environment inside some
  other repository is not that repository's). The commit gets "+dirty" when
  files of ``package_dir`` tracked by git differ from it.
  """
  root = os.path.dirname(os.path.abspath(package_dir))

  def git(*args: str) -> Optional[str]:
    try:
      done = subprocess.run(["git", "-C", root, *args], capture_output=True,
                            text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
      return None
    return done.stdout.strip() if done.returncode == 0 else None

  top = git("rev-parse", "--show-toplevel")
  if top is None or not os.path.samefile(top, root):
    return None
  commit = git("rev-parse", "HEAD")
  changed = git("status", "--porcelain", "--untracked-files=no", "--",
                os.path.basename(os.path.abspath(package_dir)))
  if commit is None or changed is None:
    return None
  return commit + ("+dirty" if changed else "")


def build_commit(package_dir: str) -> Optional[str]:
  """The commit an installed (built) package was built from, if recorded."""
  try:
    with open(os.path.join(package_dir, BUILD_FILE), encoding="utf-8") as fh:
      commit = json.load(fh).get("commit")
  except (OSError, ValueError, AttributeError):
    return None
  return commit if isinstance(commit, str) and commit else None


@functools.lru_cache(maxsize=None)
def _versions() -> Tuple[Tuple[str, str], ...]:
  import jax  # pylint: disable=g-import-not-at-top
  from importlib import metadata  # pylint: disable=g-import-not-at-top
  out = {"python": sys.version.split()[0], "jax": jax.__version__}
  with contextlib.suppress(metadata.PackageNotFoundError):
    out["byzjax"] = metadata.version("byzjax")
  package_dir = os.path.dirname(os.path.abspath(__file__))
  commit = source_commit(package_dir) or build_commit(package_dir)
  if commit:
    out["byzjax_commit"] = commit
  return tuple(out.items())


def versions() -> Dict[str, str]:
  """Python's, jax's and byzjax's versions, and the git commit of byzjax's
  source: the checkout's when byzjax runs from one (``source_commit``), else
  the one it was built from (``pip install .`` records it; a package built
  without git, e.g. from an sdist, has none).

  Read once per process, when first asked (``run_grid`` asks before it
  trains anything): the code a process runs is the code it imported,
  whatever the checkout holds later.
  """
  return dict(_versions())


def cpu_threads() -> int:
  """The cores this process may run on (what XLA:CPU sizes its pools by)."""
  if hasattr(os, "sched_getaffinity"):
    return len(os.sched_getaffinity(0))
  return os.cpu_count() or 1


def _cpuinfo() -> Dict[str, str]:
  """The first processor's block of /proc/cpuinfo ({} where there is none)."""
  fields: Dict[str, str] = {}
  try:
    with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
      for line in fh:
        if not line.strip():
          if fields:
            break
          continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
  except OSError:
    pass
  return fields


@functools.lru_cache(maxsize=None)
def _cpu() -> Tuple[Tuple[str, Any], ...]:
  info = _cpuinfo()
  if "flags" in info:  # x86
    features = [x for x in info["flags"].split()
                if x.startswith(_X86_ISA_PREFIXES)]
    ident = (f"{info.get('vendor_id', '?')} family {info.get('cpu family', '?')}"
             f" model {info.get('model', '?')}")
  elif "Features" in info:  # ARM
    features = info["Features"].split()
    ident = (f"implementer {info.get('CPU implementer', '?')} part "
             f"{info.get('CPU part', '?')}")
  else:
    features, ident = [], platform.machine()
  model = info.get("model name") or platform.processor() or platform.machine()
  return (("model", model), ("id", ident), ("features", sorted(set(features))))


def cpu() -> Dict[str, Any]:
  """The CPU this process runs on: its model name, its identity (x86: vendor,
  cpuid family and model, what LLVM picks its target by; ARM: implementer and
  part) and its instruction-set extensions (from /proc/cpuinfo on Linux;
  elsewhere the machine type only)."""
  return {k: list(v) if isinstance(v, list) else v for k, v in _cpu()}


def numeric_env() -> Dict[str, str]:
  """The environment variables set that may change XLA:CPU's code or its
  libraries' paths (XLA_*, ONEDNN_*, DNNL_*; XLA_FLAGS is kept apart)."""
  return {k: v for k, v in sorted(os.environ.items())
          if k.startswith(_NUMERIC_ENV_PREFIXES)
          and not k.startswith(_NOT_NUMERIC_ENV)}


def environment() -> Dict[str, Any]:
  """What, besides a run's settings and seed, its float rounding depends on.

  Measured with jax 0.10.2 on XLA:CPU: the same program gives results that
  differ in the last bits on one core and on two, because the row-axis sums
  that XLA hands to YNNPACK, and the first convolution's gradient, split their
  sums by the size of the thread pool (with YNNPACK turned off, the dots and
  convolutions do); no XLA flag of this version removes it
  (``benchmarks/rounding_by_cores.py``). Across machines the CPU matters too:
  XLA:CPU's oneDNN kernels pick their code by the instruction set, and
  committed runs retrained with oneDNN held to AVX2 (what a CPU without
  AVX-512 gets) differed from round 2-11 on, while XLA's own code limited to
  AVX2 changed nothing (``benchmarks/rerun.py``). So the record
  holds the versions, the devices, the processes, the CPU threads, the CPU
  (``cpu()``), XLA_FLAGS and the other variables of ``numeric_env()``; on
  one machine, results with equal environments are bitwise reproducible.
  """
  import jax  # pylint: disable=g-import-not-at-top
  devices = jax.devices()
  return {**versions(), "platform": devices[0].platform,
          "device_kind": devices[0].device_kind, "devices": len(devices),
          "processes": jax.process_count(), "cpu_threads": cpu_threads(),
          "xla_flags": os.environ.get("XLA_FLAGS", ""), "cpu": cpu(),
          "env": numeric_env()}


def cpu_text(info: Optional[Mapping[str, Any]]) -> str:
  """One line for a ``cpu()``: model, identity, widest vector extensions and
  a digest of the whole extension list (equal digests: same instruction set).
  """
  if not info:
    return "CPU not recorded"
  features = list(info.get("features", []))
  widest = [x for x in _VECTOR_ISA if x in features][:2]
  digest = hashlib.sha1(" ".join(features).encode()).hexdigest()[:8]
  return (f"{info.get('model', '?')} ({info.get('id', '?')}; "
          f"{', '.join(widest) or 'no vector ISA listed'}; ISA {digest})")


def environment_text(env: Optional[Mapping[str, Any]]) -> str:
  """One line for an ``environment()``: platform and devices, processes, CPU
  threads, jax, then the accelerator's kind or the CPU, and any XLA flags or
  numeric environment variables."""
  if not env:
    return "not recorded (saved before byzjax kept it)"
  text = (f"{env.get('platform', '?')} x {env.get('devices', '?')}, "
          f"{env.get('processes', 1)} process(es), "
          f"{env.get('cpu_threads', '?')} CPU thread(s), jax {env.get('jax', '?')}")
  if env.get("platform", "cpu") != "cpu":
    text += f", {env.get('device_kind', '?')}"
  text += f", {cpu_text(env.get('cpu'))}"
  extra: List[str] = []
  if env.get("xla_flags"):
    extra.append(f"XLA_FLAGS={env['xla_flags']}")
  extra += [f"{k}={v}" for k, v in (env.get("env") or {}).items()]
  return text + (f", {' '.join(extra)}" if extra else "")


def source_text(env: Optional[Mapping[str, Any]]) -> str:
  """One line for the byzjax source an ``environment()`` was saved by."""
  commit = (env or {}).get("byzjax_commit")
  version = (env or {}).get("byzjax", "?")
  if not commit:
    return f"byzjax {version}, source commit not recorded"
  return f"byzjax {version} at commit {commit}"
