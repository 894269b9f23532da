"""Rules: the ``Rule`` type, its registries and decorators, and ``compose``.

A rule is written once, as a function over ``Rows`` (see ``byzjax.rows``),
and registered with a decorator that names it and says how to check its
bounds::

  @rule.aggregator("trimmed_mean", display="CWTM")
  def trimmed_mean(rows, *, f): ...

It is then called on an (n, d) array (the public contract: ``rule(x, f=4)``),
found by name (``rule.get("trimmed_mean")``) and chained with pre-aggregations
(``compose("nnm+trimmed_mean", f=4)``): the "+" grammar is parsed once, every
stage's bounds are checked for the number of rows it receives, and linear
pre-aggregations hand the next stage lazily mixed ``Rows``.

A rule's hyperparameters are the keyword arguments of its function: their
defaults are read from its signature, and an unknown name is refused with the
valid ones. The built-in rules are the catalogues ``byzjax.aggregators`` and
``byzjax.preaggregators``; a user's own rule registers the same way from any
module.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, Dict, NamedTuple, Optional, Tuple, Union

import jax

from byzjax import checks
from byzjax.registry import Registry, did_you_mean
from byzjax.rows import Rows

AGGREGATORS: "Registry[Rule]" = Registry("aggregator")
PREAGGREGATORS: "Registry[Rule]" = Registry("pre-aggregation")
# Arguments every rule function may take that are not hyperparameters.
_RESERVED = ("f", "key", "center")


def no_bounds(n: int, *, f: int, **hyper: Any) -> None:
  """The check of a rule with no bound beyond 2f < n."""
  del n, f, hyper


def _hyperparameters(impl: Callable[..., Any], name: str) -> Dict[str, Any]:
  """name -> default of every parameter after the first that is not ``f``,
  ``key`` or ``center`` (each is passed by keyword, so a positional-or-keyword
  one counts); a parameter that cannot be passed by keyword is refused here,
  at registration, rather than with "valid: none" when it is set."""
  params = list(inspect.signature(impl).parameters.values())
  if not params or params[0].kind in (inspect.Parameter.VAR_POSITIONAL,
                                      inspect.Parameter.VAR_KEYWORD):
    raise ValueError(f"rule {name!r}: its function must take the (n, d) rows "
                     f"as its first parameter")
  out = {}
  for p in params[1:]:
    if p.kind in (inspect.Parameter.POSITIONAL_ONLY,
                  inspect.Parameter.VAR_POSITIONAL):
      raise ValueError(
          f"rule {name!r}: parameter {p.name!r} cannot be passed by keyword; "
          f"byzjax passes f and every hyperparameter by name (write "
          f"def {name}(x, *, f, {p.name}=...))")
    if p.kind != inspect.Parameter.VAR_KEYWORD and p.name not in _RESERVED:
      out[p.name] = p.default
  return out


class Rule:
  """A registered aggregation (``kind="aggregator"``, (n, d) -> (d,)) or
  pre-aggregation (``kind="preaggregator"``, (n, d) -> (n', d)) rule.

  Calling it on an (n, d) array validates ``f`` and the hyperparameters (a
  ``ValueError`` naming the value and the bound, raised in Python before any
  compilation), then runs it.

  Attributes:
    name: the registry name (lower_snake_case).
    display: how tables and plots show it ("CWTM").
    kind: "aggregator" or "preaggregator".
    randomized: True when the rule takes a ``key``.
    uses_center: True when the rule takes a ``center`` (the previous aggregate).
    hyperparameters: name -> default, read from the function's signature
      (every parameter after the rows but ``f``, ``key`` and ``center``;
      ``inspect.Parameter.empty`` for one without a default).
  """

  def __init__(self, impl: Callable[..., Any], *, name: str, kind: str,
               display: Optional[str] = None,
               check: Callable[..., Optional[int]] = no_bounds,
               randomized: bool = False, uses_center: bool = False,
               forwards: Optional["Rule"] = None):
    functools.update_wrapper(self, impl)
    self.impl = impl
    self.name = name
    self.display = display or name
    self.kind = kind
    self.check = check
    self.randomized = randomized
    self.uses_center = uses_center
    self.hyperparameters: Dict[str, Any] = _hyperparameters(impl, name)
    if forwards is not None:  # **kwargs passed on to another rule
      self.hyperparameters.update(forwards.hyperparameters)

  def with_defaults(self, hyper: Dict[str, Any]) -> Dict[str, Any]:
    """``hyper`` with every hyperparameter's default filled in.

    Raises:
      ValueError: an unknown hyperparameter, naming the valid ones.
    """
    checks.check_names(f"{self.name}", list(hyper), list(self.hyperparameters))
    full = {k: v for k, v in self.hyperparameters.items()
            if v is not inspect.Parameter.empty}
    full.update(hyper)
    return full

  def validate(self, n: int, *, f: int, **hyper: Any) -> int:
    """Checks (n, f, hyper) and returns the number of rows the rule outputs."""
    f = checks.check_f(self.name, n, f) if self.name != "mean" else \
        checks.check_int("f", f, low=0, what="mean")
    out = self.check(n, f=f, **self.with_defaults(hyper))
    return n if out is None else out

  def run(self, rows: Rows, *, f: int, key: Optional[jax.Array] = None,
          center: Optional[jax.Array] = None, **hyper: Any):
    """Runs on ``Rows`` (no validation): returns a (d,) array or new ``Rows``."""
    extra = {}
    if self.randomized:
      if key is None:
        raise ValueError(f"{self.name} is randomized: pass key=jax.random.key(...)")
      extra["key"] = key
    if self.uses_center and center is not None:
      extra["center"] = center
    return self.impl(rows, f=f, **extra, **hyper)

  def __call__(self, x: jax.Array, *, f: int, key: Optional[jax.Array] = None,
               **hyper: Any) -> jax.Array:
    n, _ = checks.check_matrix(self.name, x)
    self.validate(n, f=f, **{k: v for k, v in hyper.items() if k != "center"})
    out = self.run(Rows(x), f=f, key=key, **hyper)
    return out.materialize() if isinstance(out, Rows) else out

  def __repr__(self) -> str:
    return f"<byzjax {self.kind} {self.name!r}>"


def _on_arrays(impl: Callable[..., Any], kind: str) -> Callable[..., Any]:
  """A rule over (n, d) arrays as a rule over ``Rows`` (same signature)."""

  @functools.wraps(impl)
  def on_rows(rows: Rows, **kwargs: Any):
    out = impl(rows.materialize(), **kwargs)
    return Rows(out) if kind == "preaggregator" else out

  return on_rows


def _decorator(registry: Registry, kind: str):
  def decorator(name: str, *, display: Optional[str] = None,
                check: Callable[..., Optional[int]] = no_bounds,
                randomized: bool = False, uses_center: bool = False,
                rows: bool = False, forwards: Optional[Rule] = None):
    def wrap(impl: Callable[..., Any]) -> Rule:
      body = impl if rows else _on_arrays(impl, kind)
      return registry.register(name)(Rule(
          body, name=name, kind=kind, display=display, check=check,
          randomized=randomized, uses_center=uses_center, forwards=forwards))
    return wrap
  return decorator


aggregator = _decorator(AGGREGATORS, "aggregator")
aggregator.__doc__ = """Registers ``impl(x, *, f, **hyper) -> (d,)`` as an aggregator.

  ``impl`` takes the (n, d) array of worker vectors (and ``key`` /
  ``center`` when it says so); with ``rows=True`` it takes ``Rows`` instead,
  the lazily mixed rows of ``byzjax.rows``, which lets a distance-based rule
  after a linear pre-aggregation work on n x n distances only (the built-in
  rules do).

  Args:
    name: its registry name (lower_snake_case, unique).
    display: how tables and plots show it (default: the name).
    check: ``check(n, *, f, **hyper)`` raising ``ValueError`` for a bound that
      n, f or a hyperparameter violates (every hyperparameter is passed, with
      its default when not given); may return the number of output rows.
    randomized: the function takes a ``key``.
    uses_center: the function takes ``center`` (the previous aggregate).
    rows: the function takes ``Rows`` rather than an (n, d) array.
    forwards: a rule to which the function passes its ``**kwargs``: their
      names are that rule's hyperparameters.

  Returns:
    A decorator returning the registered ``Rule``.
  """
preaggregator = _decorator(PREAGGREGATORS, "preaggregator")
preaggregator.__doc__ = """Registers ``impl(x, *, f, **hyper) -> (n', d)`` as a
  pre-aggregation (with ``rows=True``: ``impl(rows, ...) -> Rows``); its
  ``check`` returns n' when it differs from n (same arguments as
  ``aggregator``)."""


def get(name: str) -> Rule:
  """The aggregator or pre-aggregation registered as ``name``.

  Raises:
    ValueError: naming the closest valid names when ``name`` is unknown.
  """
  if name in PREAGGREGATORS:
    return PREAGGREGATORS.get(name)
  if name in AGGREGATORS:
    return AGGREGATORS.get(name)
  valid = PREAGGREGATORS.names() + AGGREGATORS.names()
  raise ValueError(f"unknown rule {name!r}.{did_you_mean(name, valid, count=3)}"
                   f" Valid pre-aggregations: {', '.join(PREAGGREGATORS.names())};"
                   f" aggregators: {', '.join(AGGREGATORS.names())}")


def display(aggregator_name: str) -> str:
  """How tables show a composition: "nnm+krum" -> "NNM + Krum"."""
  out = []
  for stage in aggregator_name.split("+"):
    known = stage in PREAGGREGATORS or stage in AGGREGATORS
    out.append(get(stage).display if known else stage)
  return " + ".join(out)


# ---------------------------------------------------------------------------
# Composition.

Stage = Union[str, Rule, Tuple[Any, Dict[str, Any]]]


def _parse(stage: Stage) -> Tuple[Rule, Dict[str, Any]]:
  if isinstance(stage, tuple):
    rule, hyper = stage
    rule, _ = _parse(rule)
    return rule, dict(hyper)
  if isinstance(stage, Rule):
    return stage, {}
  if isinstance(stage, str):
    return get(stage), {}
  raise ValueError(f"a stage is a name, a rule or a (rule, hyperparameters) "
                   f"pair, got {stage!r}")


class Composed:
  """Pre-aggregations followed by an aggregator, as one pure function.

  Call as ``composed(x, key=None, center=None)`` with x of shape (n, d).

  Attributes:
    name: the stages' names joined by "+", e.g. "nnm+trimmed_mean".
    f: the number of Byzantine workers every stage tolerates.
    randomized: True when a stage needs a key.
    uses_center: True when the aggregator takes the previous aggregate.
  """

  def __init__(self, stages, f: int, n: Optional[int]):
    self.stages = stages
    self.f = f
    self.name = "+".join(rule.name for rule, _ in stages)
    self.randomized = any(rule.randomized for rule, _ in stages)
    self.uses_center = stages[-1][0].uses_center
    if n is not None:
      self.validate(n)

  def validate(self, n: int) -> None:
    """Checks every stage for n input rows (ValueError naming the bound)."""
    m = n
    for rule, hyper in self.stages:
      m = rule.validate(m, f=self.f, **hyper)

  def __call__(self, x: jax.Array, *, key: Optional[jax.Array] = None,
               center: Optional[jax.Array] = None) -> jax.Array:
    n, _ = checks.check_matrix(self.name, x)
    self.validate(n)
    return self.run_rows(Rows(x), key=key, center=center)

  def run_rows(self, rows: Rows, *, key: Optional[jax.Array] = None,
               center: Optional[jax.Array] = None) -> jax.Array:
    """Runs the stages on ``Rows`` (no validation of the matrix).

    Lets a caller evaluate the rule on lazily mixed rows, e.g. the optimized
    attacks, whose candidate inputs all share the honest rows: with
    ``Rows(base).mixed(m)`` the distances of the base rows are computed once
    for every candidate.
    """
    if self.randomized and key is None:
      raise ValueError(f"{self.name} is randomized: pass key=jax.random.key(...)")
    for rule, hyper in self.stages[:-1]:
      sub = None
      if rule.randomized:
        key, sub = jax.random.split(key)
      rows = rule.run(rows, f=self.f, key=sub, **hyper)
    rule, hyper = self.stages[-1]
    sub = None
    if rule.randomized:
      key, sub = jax.random.split(key)
    return rule.run(rows, f=self.f, key=sub, center=center, **hyper)

  def bind(self, key: Optional[jax.Array] = None,
           center: Optional[jax.Array] = None) -> "Defence":
    """This rule with its round's key and centre fixed: a ``Defence``."""
    return Defence(self, key if self.randomized else None,
                   center if self.uses_center else None)

  def __repr__(self) -> str:
    return f"<byzjax composed rule {self.name!r}, f={self.f}>"


class Defence(NamedTuple):
  """The server's defence in one round: a composed rule, its key and centre.

  A pure function ``(n, d) -> (d,)`` that the training round and the attacks
  share. An omniscient attack that simulates the defence calls it on its
  candidate inputs; for a randomized rule (bucketing) it draws its own
  randomness with ``with_key`` unless it is told the server's
  (``knows_server_randomness``). ``run_rows`` evaluates it on lazily mixed
  ``Rows``, so that candidates sharing rows share their distances.

  Attributes:
    rule: the composed rule.
    key: the key of its randomized stages (None when it has none).
    center: the previous aggregate, for rules that start from it.
  """

  rule: Composed
  key: Optional[jax.Array] = None
  center: Optional[jax.Array] = None

  @property
  def randomized(self) -> bool:
    return self.rule.randomized

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.rule(x, key=self.key, center=self.center)

  def run_rows(self, rows: Rows) -> jax.Array:
    """The defence on ``Rows`` (e.g. ``Rows(base).mixed(m)``), unvalidated."""
    return self.rule.run_rows(rows, key=self.key, center=self.center)

  def with_key(self, key: Optional[jax.Array]) -> "Defence":
    """The same defence drawing its randomness from ``key``."""
    return self._replace(key=key if self.randomized else None)


def compose(*stages: Stage, f: int, n: Optional[int] = None) -> Composed:
  """Chains pre-aggregations and one aggregator into one function.

  ``compose("nnm", "trimmed_mean", f=4)`` is x -> trimmed_mean(nnm(x)). A
  stage is a registry name, a rule, or a ``(rule_or_name, {hyper})`` pair; a
  single string "nnm+trimmed_mean" is split on "+". Distance-based rules after
  linear pre-aggregations (NNM, bucketing, clipping, ARC) never materialize
  the pre-aggregated rows: NNM then Krum reads the data twice in all.

  Args:
    *stages: pre-aggregations, then the aggregator (last).
    f: number of Byzantine workers, passed to every stage.
    n: number of workers; when given, every bound is checked now.

  Returns:
    A ``Composed`` callable ``(x, *, key=None, center=None) -> (d,)``.

  Raises:
    ValueError: unknown names, an aggregator that is not last, or (with n)
      a violated bound.
  """
  if len(stages) == 1 and isinstance(stages[0], str) and "+" in stages[0]:
    stages = tuple(stages[0].split("+"))
  if not stages:
    raise ValueError("compose needs at least an aggregator")
  parsed = [_parse(s) for s in stages]
  for rule, _ in parsed[:-1]:
    if rule.kind != "preaggregator":
      raise ValueError(f"compose: {rule.name!r} is an aggregator; only the last "
                       f"stage may be one (stages: {[r.name for r, _ in parsed]})")
  if parsed[-1][0].kind != "aggregator":
    raise ValueError(f"compose: the last stage must be an aggregator, got "
                     f"pre-aggregation {parsed[-1][0].name!r}")
  f = checks.check_int("f", f, low=0, what="compose")
  return Composed(parsed, f, n)
