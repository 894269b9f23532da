"""Checkpoints of runs in progress (Orbax), so that a killed run resumes
with exactly the numbers of an uninterrupted one (``train.Checkpoints``)."""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

from byzjax.store import CHECKPOINTS_DIR


class OrbaxCheckpoints:
  """Checkpoints of runs in progress, every ``every_seconds``, with Orbax.

  The whole training state (parameters, worker momentums, attack and
  optimizer states, keys, the round) and the curves so far are saved under
  ``checkpoints/RUN_ID/seeds-S1-S2/`` atomically (Orbax writes a temporary
  directory, then renames it); a restarted run continues from the last one
  and ends with exactly the numbers of an uninterrupted run. Implements the
  ``train.Checkpoints`` protocol.

  Args:
    out_dir: the grid's output folder.
    run_id: the run.
    every_seconds: save when at least this long has passed since the last
      save (or the start); 0 saves after every evaluation chunk.
    on_restore: called with (seeds, chunks done) when a run resumes from a
      checkpoint (the grid says so).
  """

  def __init__(self, out_dir: str, run_id: str, every_seconds: float = 300.0,
               on_restore: Optional[Callable[[Sequence[int], int], None]] = None):
    self.folder = os.path.join(os.path.abspath(out_dir), CHECKPOINTS_DIR,
                               run_id)
    self.every_seconds = float(every_seconds)
    self.on_restore = on_restore
    self._last = time.monotonic()
    self._managers: Dict[Tuple[int, ...], Any] = {}

  def _manager(self, seeds: Sequence[int]):
    import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
    key = tuple(seeds)
    if key not in self._managers:
      path = os.path.join(self.folder, "seeds-" + "-".join(map(str, key)))
      self._managers[key] = ocp.CheckpointManager(
          path, options=ocp.CheckpointManagerOptions(
              max_to_keep=1, enable_async_checkpointing=False))
    return self._managers[key]

  def due(self) -> bool:
    """Whether enough time has passed to save again."""
    return time.monotonic() - self._last >= self.every_seconds

  def save(self, seeds: Sequence[int], chunks_done: int, state: Any,
           history: Any) -> None:
    """Saves the state after ``chunks_done`` evaluation chunks."""
    import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
    manager = self._manager(seeds)
    manager.save(chunks_done, args=ocp.args.Composite(
        state=ocp.args.StandardSave(_keys_as_data(state)),
        history=ocp.args.StandardSave(history)), force=True)
    manager.wait_until_finished()
    self._last = time.monotonic()

  def restore(self, seeds: Sequence[int], like_state: Any, like_history: Any
             ) -> Optional[Tuple[int, Any, Any]]:
    """(chunks done, state, history) of the last save, or None."""
    import jax  # pylint: disable=g-import-not-at-top
    import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
    if not os.path.isdir(self.folder):
      return None
    manager = self._manager(seeds)
    step = manager.latest_step()
    if step is None:
      return None
    abstract = lambda tree: jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract(_keys_as_data(like_state))),
        history=ocp.args.StandardRestore(abstract(like_history(step)))))
    if self.on_restore is not None:
      self.on_restore(seeds, step)
    return step, _data_as_keys(restored.state, like_state), restored.history

  def discard(self, seeds: Sequence[int]) -> None:
    """Removes the checkpoints of finished seeds."""
    manager = self._managers.pop(tuple(seeds), None)
    if manager is not None:
      manager.close()
    path = os.path.join(self.folder, "seeds-" + "-".join(map(str, seeds)))
    shutil.rmtree(path, ignore_errors=True)
    with contextlib.suppress(OSError):
      os.rmdir(self.folder)


def _keys_as_data(tree: Any) -> Any:
  import jax  # pylint: disable=g-import-not-at-top
  return jax.tree.map(
      lambda a: jax.random.key_data(a) if jax.dtypes.issubdtype(
          a.dtype, jax.dtypes.prng_key) else a, tree)


def _data_as_keys(tree: Any, like: Any) -> Any:
  import jax  # pylint: disable=g-import-not-at-top
  return jax.tree.map(
      lambda a, l: jax.random.wrap_key_data(a, impl=jax.random.key_impl(l))
      if jax.dtypes.issubdtype(l.dtype, jax.dtypes.prng_key) else a, tree, like)
