"""CPU-noise control and denormal flushing shared by the round benchmarks.

Standard library only: ``round.py`` (jax) and ``byzfl_round.py`` (ByzFL's
PyTorch virtualenv, no jax) both import it from this folder.
"""

import ctypes
import ctypes.util
import os
import time


def flush_denormals():
  """Sets flush-to-zero and denormals-are-zero (MXCSR) on this thread.

  Threads started afterwards inherit it, so this must run before jax (or
  torch) creates its thread pools. Measured here: without it, a jitted round
  of case 1 takes 65-180 ms (median ~97 ms) and, for long stretches, 1.4 s;
  with it, 64-87 ms (median 68 ms): the round meets float32 subnormals
  (XLA:CPU does not flush them on every thread it runs kernels on).
  Measured later (Krum vs optimized ALIE, the same compiled 50-round chunk
  on identical inputs): chunks of ~700 ms/round instead of ~70 occur in some
  runs with and without FTZ/DAZ, so subnormals are not the only cause of
  slow stretches on this machine; the tables report medians.
  """
  libm = ctypes.CDLL(ctypes.util.find_library("m"))
  env = ctypes.create_string_buffer(64)  # glibc x86-64 fenv_t: mxcsr at 28
  if libm.fegetenv(env) != 0:
    raise OSError("fegetenv failed")
  mxcsr = int.from_bytes(env.raw[28:32], "little") | (1 << 15) | (1 << 6)
  env[28:32] = mxcsr.to_bytes(4, "little")
  if libm.fesetenv(env) != 0:
    raise OSError("fesetenv failed")


_HZ = os.sysconf("SC_CLK_TCK")


def _ticks():
  """(busy ticks of all cores, ticks of this process and its waited children)."""
  with open("/proc/stat") as fh:
    v = [int(x) for x in fh.readline().split()[1:]]
  with open("/proc/self/stat") as fh:
    mine = [int(x) for x in fh.read().rsplit(")", 1)[1].split()[11:15]]
  return sum(v) - v[3] - v[4], sum(mine)


class Window:
  """Wall time of a block, and the CPU that other processes used meanwhile.

  The machine is shared; others should hold /tmp/byzjax-cpu.lock while they
  time something, but tests and builds may not, and XLA:CPU slows down many
  times over when its threads share the cores. A window is clean when the
  others used at most 1 tick plus 5% of the cores' time.
  """

  def __enter__(self):
    self.busy0, self.mine0 = _ticks()
    self.t0 = time.perf_counter()
    return self

  def __exit__(self, *exc):
    self.seconds = time.perf_counter() - self.t0
    busy, mine = _ticks()
    self.others = (busy - self.busy0) - (mine - self.mine0)
    self.clean = self.others <= 1 + 0.05 * self.seconds * _HZ * os.cpu_count()


def wait_for_quiet(threshold=0.1, max_wait=300.0):
  """Waits (up to max_wait s) until other processes leave the CPU.

  Returns:
    The seconds waited.
  """
  start = time.perf_counter()
  while time.perf_counter() - start < max_wait:
    with Window() as w:
      time.sleep(0.5)
    if w.others <= threshold * w.seconds * _HZ * os.cpu_count():
      break
    time.sleep(2.0)
  return time.perf_counter() - start
