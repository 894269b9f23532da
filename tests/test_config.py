"""One validation policy for every setting: each field of ``RunConfig`` and
``Execution`` refuses a wrong type or value with a ``ValueError`` naming the
field and what it takes, before any data is loaded (table-driven)."""

import dataclasses

import pytest

from byzjax import config as config_lib

BASE = config_lib.RunConfig(dataset="digits", model="logistic_regression", n=5,
                            f=1, split="iid", alpha=None, steps=2)

# field -> (a wrong value, text of the one error line). Every field is here.
BAD = {
    "dataset": (3, "dataset must be a name (a string), got 3"),
    "data_dir": (["x"], "data_dir must be None or a folder (a string)"),
    "model": (None, "model must be a name (a string), got None"),
    "model_args": ("wide", "model_args must be a dict of hyperparameters"),
    "n": ("17", "n must be an int >= 1, got '17'"),
    "f": (2.0, "f must be an int >= 0, got 2.0"),
    "declared_f": (-1, "declared_f must be an int >= 0, got declared_f=-1"),
    "split": ("diriclet", "split must be one of"),
    "alpha": ("0.1", "alpha must be a finite real number, got '0.1'"),
    "byzantine_data": ("no", "byzantine_data must be True or False, got 'no'"),
    "aggregator": (["krum"], "aggregator must be a name (a string)"),
    "aggregator_args": ({"trimmed_mean": 2}, "aggregator_args['trimmed_mean'] "
                        "must be a dict"),
    "attack": (1, "attack must be a name (a string), got 1"),
    "attack_args": ([1], "attack_args must be a dict of hyperparameters"),
    "algorithm": ("adam", "algorithm must be one of"),
    "steps": (0, "steps must be an int >= 1, got steps=0"),
    "batch_size": (2.5, "batch_size must be an int >= 1, got 2.5"),
    "learning_rate": (-0.1, "learning_rate must be finite and > 0"),
    "schedule": ("cosine", "schedule must be one of"),
    "decay_every": (0, "decay_every must be an int >= 1"),
    "milestones": ((50, 20), "milestones must increase, got [50, 20]"),
    "decay_factor": (1.5, "decay_factor must be in (0, 1], got 1.5"),
    "momentum": ("0.9", "momentum must be a finite real number, got '0.9'"),
    "clip": (0.0, "clip must be None or finite and > 0, got clip=0.0"),
    "weight_decay": (float("nan"), "weight_decay must be finite"),
    "gradient_averaging": (1.0, "gradient_averaging must be in [0, 1)"),
    "eval_every": (True, "eval_every must be an int >= 1, got True"),
    "seeds": ((1.5,), "seeds must be an int >= 0, got 1.5"),
    "test_fraction": (1.0, "test_fraction must be in (0, 1), got test_fraction=1.0"),
    "data_seed": (-1, "data_seed must be an int >= 0, got data_seed=-1"),
    "hflip": ("yes", "hflip must be True or False, got 'yes'"),
    "diagnostics": (1, "diagnostics must be True or False, got 1"),
}


def test_the_table_covers_every_field():
  assert set(BAD) == {f.name for f in dataclasses.fields(config_lib.RunConfig)}


@pytest.mark.parametrize("field", sorted(BAD))
def test_a_wrong_value_is_one_value_error_naming_the_field(field):
  value, text = BAD[field]
  config = BASE.replace(**{field: value})
  with pytest.raises(ValueError) as err:
    config_lib.validate(config)
  assert text in str(err.value), str(err.value)
  assert field in str(err.value).split(":")[0] + str(err.value)


def test_the_base_config_and_sequences_from_json_are_valid():
  config_lib.validate(BASE)
  # JSON gives lists; NumPy gives its own ints: both are read as tuples of ints.
  import numpy as np  # pylint: disable=g-import-not-at-top
  config = BASE.replace(seeds=[np.int64(3), 4], milestones=[10, 20])
  assert config.seeds == (3, 4) and config.milestones == (10, 20)
  config_lib.validate(config)
  with pytest.raises(ValueError, match="seeds must be a list of ints, got 5"):
    config_lib.validate(BASE.replace(seeds=5))


EXECUTION_BAD = {
    "per_worker": ("loops", "per_worker must be one of"),
    "seed_batching": (True, "seed_batching must be one of"),
    "devices": ("2", "devices must be an int >= 1, got '2'"),
    "runs": (0, "runs must be an int >= 1, got runs=0"),
}


def test_execution_table_covers_every_field():
  assert set(EXECUTION_BAD) == {
      f.name for f in dataclasses.fields(config_lib.Execution)}


@pytest.mark.parametrize("field", sorted(EXECUTION_BAD))
def test_execution_refuses_each_wrong_value(field):
  value, text = EXECUTION_BAD[field]
  with pytest.raises(ValueError, match=text.replace("(", r"\(").replace(")", r"\)")):
    config_lib.Execution(**{field: value})
